"""The web view's part page and the part pictures it and the cards show."""

from __future__ import annotations

import asyncio
import json
import math
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from node.audit.record import AuditRecord

if TYPE_CHECKING:
    from node.web.app import WebApp

log = structlog.get_logger(__name__)


class Parts:
    """The handlers of one part's page and picture, for ``web``."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    def routes(self) -> list[Route]:
        """Their routes."""
        return [
            Route("/part/{result_id:str}", self.part),
            Route("/part/{result_id:str}/picture.png", self.picture),
        ]

    async def part(self, request: Request) -> Response:
        """Everything recorded about one part."""
        if (gate := await self.web.need_look(request)) is not None:
            return gate
        rec = await self.web.record_of(request)
        if isinstance(rec, Response):
            return rec
        assert self.web.reader is not None
        reviews = await asyncio.to_thread(self.web.reader.reviews, rec.result_id)
        lang = self.web.language(request)
        return await self.web.render(
            request,
            "part.html",
            "live",
            r=rec,
            reviews=reviews,
            findings=self._findings_rows(rec, lang),
            recipe_name=_recipe_name(rec),
        )

    def _findings_rows(self, rec: AuditRecord, lang: str) -> list[dict[str, Any]]:
        try:
            findings = json.loads(rec.findings_json)
        except ValueError:
            return []
        names: dict[str, str] = {}
        for z in self.web.cfg.inspection.recipe.zones:
            by_lang = {str(k): v for k, v in z.names.items()}
            names[z.name] = by_lang.get(lang, z.name)
        rows = []
        for j in findings.get("judged") or []:
            if not isinstance(j, dict):
                continue
            p = j.get("placement") or {}
            zones = [names.get(z, z) for z in p.get("zones") or []]
            rows.append(
                {
                    "defect_type": j.get("defect_type", ""),
                    "zones": ", ".join(zones) or "—",
                    "length_mm": _mm(p.get("length_mm")),
                    "width_mm": _mm(p.get("width_mm")),
                    "rule": j.get("rule", ""),
                    "rejects": bool(j.get("rejects")),
                    "decision": "reject" if j.get("rejects") else "accept",
                }
            )
        return rows

    async def picture(self, request: Request) -> Response:
        """The part's image with its heat map and regions (PNG; ``?scale=2`` twice the size,
        ``?heat=0`` without the map)."""
        if not self.web.may_look(request):
            return PlainTextResponse("log in first", 403)
        rec = await self.web.record_of(request)
        if isinstance(rec, Response):
            return rec
        assert self.web.pictures is not None
        heat = request.query_params.get("heat") != "0"
        scale = 2 if request.query_params.get("scale") == "2" else 1
        try:
            png = await asyncio.to_thread(self.web.pictures.picture, rec, heat=heat, scale=scale)
        except (OSError, ValueError) as exc:
            log.warning("web_picture_unreadable", result_id=rec.result_id, error=str(exc))
            png = None
        if png is None:
            return PlainTextResponse("image not kept", 404)
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=3600"})


def _mm(value: object) -> str:
    return f"{value:.1f} mm" if isinstance(value, int | float) and math.isfinite(value) else "—"


def _recipe_name(rec: AuditRecord) -> str:
    try:
        thresholds = json.loads(rec.thresholds_json)
    except ValueError:
        return "—"
    return str(thresholds.get("name") or thresholds.get("recipe") or "—")
