"""The collect path: reviewed images and their findings, for a fleet host that retrains.

``lineside web`` serves it (never the node's process: the line's path serves no files),
from the audit store it reads anyway, to a machine that presents the bearer token the
plant gave it (``web.collect_token_file``):

- ``GET /collect/reviewed?after=N&limit=M`` — JSON: the node's name, the newest review's
  seq (``last_seq``) and up to ``M`` (default 100, at most 500) reviews stored after
  review seq ``N``, oldest first, each with the result it is about (the audit record as
  ``lineside audit export --format jsonl`` writes it: findings, heat map, explanation,
  model), the data set folder it belongs in (``label``: ``train/good`` or
  ``test/<type>``), its training caption and the recorded SHA-256 of the kept image.
- ``GET /collect/image/<result id>`` — the kept image of a reviewed result (PNG), after
  checking it against its recorded SHA-256 (``x-image-sha256`` carries it): ``409`` when
  the file was altered since it was recorded, ``404`` when none is kept.

No token configured: ``404`` (the path is not there). A missing or wrong token: ``401``
with ``WWW-Authenticate: Bearer``, counted (``collect.refused`` in ``/status``) and logged
as ``web_collect_refused``. Tokens are compared in constant time. With ``web.https`` the
path is served over HTTPS like every page.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from node.audit.export import caption_of, json_object, label_of, utc_iso
from node.audit.reader import AuditReader
from node.north.collect_path import (
    IMAGE,
    IMAGE_SHA256_HEADER,
    PREFIX,
    REVIEWED,
    is_loopback,
    read_token,
)

if TYPE_CHECKING:
    from node.web.app import WebApp

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 500


def reviewed_entries(reader: AuditReader, after: int, limit: int) -> list[dict[str, Any]]:
    """The reviews after review seq ``after`` (at most ``limit``) as the collect path lists
    them. Blocking (the store)."""
    entries: list[dict[str, Any]] = []
    for seq, review in reader.reviews_after(after, limit):
        record = reader.get(review.result_id)
        if record is None:  # pruned meanwhile (its reviews go with it)
            continue
        entries.append(
            {
                "seq": seq,
                "result_id": review.result_id,
                "verdict": review.verdict,
                "defect_type": review.defect_type,
                "comment": review.comment,
                "user": review.user,
                "reviewed_utc": utc_iso(review.wall_time_ns),
                "label": label_of(record, review),
                "caption": caption_of(record, review),
                "image": record.image_path is not None,
                "image_sha256": record.image_sha256,
                "record": json_object(record),
            }
        )
    return entries


class Collect:
    """The collect path's handlers, for ``web``. Raises ``ConfigError`` naming
    ``web.collect_token_file`` when the token cannot be read."""

    def __init__(self, web: WebApp) -> None:
        self.web = web
        path = web.settings.collect_token_file
        self._token = None if path is None else read_token(path, "web.collect_token_file")
        s = web.settings
        if self._token is not None and not s.https and not is_loopback(f"http://{s.host}/"):
            # the token would cross the plant's network in clear in every request
            log.warning("web_collect_without_https", host=s.host, hint="set web.https = true")
        self.refused = 0
        self.listed = 0
        self.images = 0
        self.altered = 0

    def routes(self) -> list[Route]:
        """Their routes."""
        return [
            Route(PREFIX + REVIEWED, self.reviewed),
            Route(PREFIX + IMAGE + "{result_id:str}", self.image),
        ]

    def snapshot(self) -> dict[str, Any]:
        """For ``/status``."""
        return {
            "enabled": self._token is not None,
            "refused": self.refused,
            "listed": self.listed,
            "images": self.images,
            "altered": self.altered,
        }

    def _gate(self, request: Request) -> Response | None:
        """None when the request carries the token; else the answer to give."""
        if self._token is None:
            return PlainTextResponse("Not Found", 404)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            hashlib.sha256(given.strip().encode()).digest(),
            hashlib.sha256(self._token.encode()).digest(),
        )
        if ok:
            return None
        self.refused += 1
        log.warning(
            "web_collect_refused",
            path=request.url.path,
            client=request.client.host if request.client else "",
            token_given=bool(given.strip()),
            refused=self.refused,
        )
        return PlainTextResponse(
            "a valid bearer token is needed",
            401,
            headers={"www-authenticate": 'Bearer realm="lineside collect"'},
        )

    async def reviewed(self, request: Request) -> Response:
        """Reviews after ``?after=N`` with their records, labels and image digests (JSON)."""
        if (gate := self._gate(request)) is not None:
            return gate
        try:
            after = int(request.query_params.get("after", "0"))
            limit = int(request.query_params.get("limit", str(DEFAULT_LIMIT)))
        except ValueError:
            return PlainTextResponse("after and limit must be whole numbers", 400)
        if after < 0 or not 1 <= limit <= MAX_LIMIT:
            return PlainTextResponse(f"after >= 0 and 1 <= limit <= {MAX_LIMIT}", 400)
        reader = self.web.reader
        if reader is None:
            return PlainTextResponse("the audit store is not there yet", 503)
        last = await asyncio.to_thread(reader.last_review_seq)
        entries = await asyncio.to_thread(reviewed_entries, reader, after, limit)
        self.listed += len(entries)
        body = {
            "node": self.web.cfg.node.name,
            "after": after,
            "last_seq": last,
            "reviews": entries,
        }
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def image(self, request: Request) -> Response:
        """The kept image of a reviewed result, checked against its recorded digest."""
        if (gate := self._gate(request)) is not None:
            return gate
        reader = self.web.reader
        if reader is None:
            return PlainTextResponse("the audit store is not there yet", 503)
        rid = request.path_params["result_id"]
        record = await asyncio.to_thread(reader.get, rid)
        if record is None or record.review is None:
            return PlainTextResponse(f"no reviewed result {rid}", 404)
        path = reader.image_file(record)
        try:
            data, digest = await asyncio.to_thread(_read, path)
        except FileNotFoundError:
            return PlainTextResponse("image not kept", 404)
        except OSError as exc:
            log.warning("web_collect_image_unreadable", result_id=rid, error=str(exc))
            return PlainTextResponse("image unreadable", 500)
        if data is None:
            return PlainTextResponse("image not kept", 404)
        if record.image_sha256 is not None and digest != record.image_sha256:
            self.altered += 1
            log.warning("web_collect_image_altered", result_id=rid, path=str(path))
            return PlainTextResponse("the image was altered since it was recorded", 409)
        self.images += 1
        return Response(
            data,
            media_type="image/png",
            headers={IMAGE_SHA256_HEADER: digest, "cache-control": "no-store"},
        )


def _read(path: Path | None) -> tuple[bytes | None, str]:
    if path is None:
        return None, ""
    data = path.read_bytes()
    return data, hashlib.sha256(data).hexdigest()
