"""The web view's reports: trends over the shift and the model and recipe in force."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from node.config import Config

if TYPE_CHECKING:
    from node.web.app import WebApp


def model_types(cfg: Config) -> list[str]:
    """The defect types of the configured model package (what an override may name)."""
    manifest = _manifest(cfg.inspection.model.package)
    types = manifest.get("types") if isinstance(manifest, dict) else None
    if isinstance(types, list):
        return [str(t) for t in types]
    return ["scratch", "crack", "spot", "contamination", "missing_feature", "unknown anomaly"]


class Reports:
    """The handlers of the trends and the model & recipe page, for ``web``."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    def routes(self) -> list[Route]:
        """Their routes."""
        return [
            Route("/trends", self.trends_page),
            Route("/trends.png", self.trends_png),
            Route("/trends.csv", self.trends_csv),
            Route("/model", self.model_page),
        ]

    # -- trends -----------------------------------------------------------------------------------
    def _hours(self, request: Request) -> int:
        try:
            hours = int(request.query_params.get("hours", "8"))
        except ValueError:
            hours = 8
        return max(1, min(hours, 24 * 31))

    async def trends_page(self, request: Request) -> Response:
        """Rejects by type, fail-safes by reason, latency and budget use over the shift."""
        if (gate := await self.web.need_look(request)) is not None:
            return gate
        return await self.web.render(request, "trends.html", "trends", hours=self._hours(request))

    async def _trends(self, request: Request) -> Any:
        from node.web.trends import read_trends

        until = time.time_ns()
        since = until - self._hours(request) * 3600 * 10**9
        return await asyncio.to_thread(
            read_trends, self.web.cfg.audit_directory, since_ns=since, until_ns=until
        )

    async def trends_png(self, request: Request) -> Response:
        """The trend plots (PNG)."""
        if not self.web.may_look(request):
            return PlainTextResponse("log in first", 403)
        from node.web.trends import trends_png

        t = await self._trends(request)
        png = await asyncio.to_thread(trends_png, t, self.web.language(request))
        return Response(png, media_type="image/png", headers={"cache-control": "no-store"})

    async def trends_csv(self, request: Request) -> Response:
        """The trend figures per hour (CSV download)."""
        if not self.web.may_look(request):
            return PlainTextResponse("log in first", 403)
        from node.web.trends import trends_csv

        t = await self._trends(request)
        name = f"lineside-trends-{datetime.now(UTC):%Y%m%dT%H%M}.csv"
        return Response(
            trends_csv(t),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    # -- model and recipe -----------------------------------------------------------------------
    async def model_page(self, request: Request) -> Response:
        """The active package, a shadow candidate, the recipe and its rules."""
        if (gate := await self.web.need_look(request)) is not None:
            return gate
        cfg = self.web.cfg
        manifest = await asyncio.to_thread(_manifest, cfg.inspection.model.package)
        package: dict[str, Any] = {
            "backend": cfg.inspection.backend,
            "folder": str(cfg.inspection.model.package),
            "package_sha256": manifest.get("package_sha256", "—"),
            "created": manifest.get("created_utc", "—"),
            "types": ", ".join(map(str, manifest.get("types") or [])),
            "running": self.web.follower.values.get("Health.Model", "—"),
        }
        last = (
            self.web.feed.recent[-1] if self.web.feed is not None and self.web.feed.recent else None
        )
        if last is not None:
            package["judging now"] = f"{last.model_name}, manifest sha256 {last.model_sha256[:12]}"
        metrics = {k: _round(v) for k, v in (manifest.get("metrics") or {}).items()}
        data = manifest.get("data") or {}
        training = {
            **{f"dataset {k}": v for k, v in (manifest.get("dataset") or {}).items()},
            "images seen in training": len(data.get("seen_sha256") or []),
            "holdout fraction": data.get("holdout_fraction", "—"),
            **{
                k: v
                for k, v in (manifest.get("training") or {}).items()
                if not isinstance(v, dict | list)
            },
        }
        shadow, disagreements = await asyncio.to_thread(self._shadow)
        recipe = cfg.inspection.recipe
        rules = [
            {
                "name": r.cited_name if hasattr(r, "cited_name") else r.name,
                "zone": r.zone,
                "types": list(r.types),
                "action": r.action,
                "limits": ", ".join(
                    f"{k} {v}"
                    for k, v in (
                        ("length ≤", r.max_length_mm),
                        ("area ≤", r.max_area_mm2),
                        ("count ≤", r.max_count),
                    )
                    if v is not None
                )
                or "—",
            }
            for r in recipe.rules
        ]
        return await self.web.render(
            request,
            "model.html",
            "model",
            package=package,
            metrics=metrics,
            training=training,
            shadow=shadow,
            disagreements=disagreements,
            recipe={
                "name": recipe.name,
                "zones": recipe.zones,
                "rules": rules,
                "reject_score": recipe.reject_score,
            },
        )

    def _shadow(self) -> tuple[dict[str, Any], list[str]]:
        from node.shadow import read_report, shadow_dir

        pkg = self.web.cfg.inspection.shadow.package
        if pkg is None:
            return {}, []
        manifest = _manifest(pkg)
        sha = str(manifest.get("package_sha256", ""))
        info: dict[str, Any] = {"folder": str(pkg), "package_sha256": sha or "—"}
        v = self.web.follower.values
        info["judged (node)"] = v.get("Shadow.Judged", "—")
        try:
            report = read_report(shadow_dir(self.web.cfg.node.state_dir, sha), examples=10)
        except (FileNotFoundError, OSError, ValueError, KeyError) as exc:
            info["report"] = str(exc)
            return info, []
        for key in ("judged", "agreement", "active_only", "candidate_only", "type_differs"):
            info[key] = report.get(key)
        lines = [
            f"part {e.get('part_id', '?')}: active {_side(e.get('active'))}, "
            f"candidate {_side(e.get('candidate'))}"
            for e in report.get("examples") or []
        ]
        return info, lines


def _round(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _side(side: object) -> str:
    if not isinstance(side, Mapping):
        return "?"
    verdict = "reject" if side.get("reject") else "pass"
    kind = side.get("defect_type") or ""
    return f"{verdict} {kind}".strip()


def _manifest(package: Path | None) -> dict[str, Any]:
    if package is None:
        return {}
    try:
        data = json.loads((Path(package) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
