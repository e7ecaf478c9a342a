"""The web view's pages, as a Starlette application.

Pages are rendered on the server (Jinja2); the live page gets new cards and the
node's status by server-sent events (``/live/events``). Actions are forms posted
with a CSRF token and carried out on the node as the logged-in person
(``node.web.auth``). See ``node.web`` for where everything comes from.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from node.audit.reader import AuditReader
from node.audit.record import AuditRecord
from node.audit.schema import AuditError
from node.config import Config
from node.web.actions import Actions
from node.web.auth import (
    SESSION_COOKIE,
    Login,
    Logins,
    prepare_certificate,
)
from node.web.collect import Collect
from node.web.feed import Feed, TooManyViewers
from node.web.follow import NodeFollower
from node.web.i18n import LANG_COOKIE, LANGUAGES, pick, words
from node.web.parts import Parts
from node.web.pictures import Pictures
from node.web.reports import Reports, model_types

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
_STORE_RETRY_S = 2.0
_EXPIRE_EVERY_S = 30.0
SEND_EVERY_S = 0.4
"""Least time between two updates to one live page: at 50 parts/s a page would otherwise
redraw cards 5 times a second for nobody's eyes (the browser's CPU, and the web's)."""
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def node_endpoint(cfg: Config) -> str:
    """The node's OPC UA server as a client on this machine reaches it."""
    if cfg.web.node_endpoint:
        return cfg.web.node_endpoint
    return cfg.hmi.endpoint.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//127.0.0.1:")


def _clock(ns: int, full: bool = False) -> str:
    t = datetime.fromtimestamp(ns / 1e9, UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC" if full else "%H:%M:%S")


class _Headers:
    """Adds the security headers to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, sending)


class WebApp:
    """Everything one ``lineside web`` process holds: the follower, the feed, the logins."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.settings = cfg.web
        self.endpoint = node_endpoint(cfg)
        self.follower = NodeFollower(
            self.endpoint,
            on_change=self._node_changed,
            on_result=self._node_result,
            session_timeout_s=cfg.hmi.max_session_timeout_s,
        )
        self.reader: AuditReader | None = None
        self.feed: Feed | None = None
        self.pictures: Pictures | None = None
        self.logins: Logins | None = None
        self.store_error = ""
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.filters["clock"] = _clock
        self.actions = Actions(self)
        self.parts = Parts(self)
        self.reports = Reports(self)
        self.collect = Collect(self)  # the fleet's authenticated path to reviewed images
        env.globals["override_reasons"] = self.actions.override_reasons
        self._lang = cfg.web.language
        self._awaiting = (0, 0.0)
        self.types = model_types(cfg)
        """The model's defect types (what an override to reject may name)."""

    # -- the application -------------------------------------------------------------------
    def asgi(self) -> Starlette:
        """The Starlette application (give it to uvicorn)."""
        routes = [
            Route("/", self.home),
            Route("/live", self.live),
            Route("/live/events", self.events),
            *self.parts.routes(),
            *self.actions.routes(),
            *self.reports.routes(),
            *self.collect.routes(),
            Route("/status", self.status),
            Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ]
        app = Starlette(routes=routes, lifespan=self._lifespan)
        app.add_middleware(_Headers)
        return app

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        cfg = self.cfg
        pki = await asyncio.to_thread(
            prepare_certificate, cfg.node.state_dir, cfg.node.name, cfg.web, cfg.hmi
        )
        self.logins = Logins(
            cfg.web, cfg.hmi, endpoint=self.endpoint, pki=pki, node_name=cfg.node.name
        )
        tasks = [
            asyncio.create_task(self.follower.run(), name="web-follower"),
            asyncio.create_task(self._follow_store(), name="web-feed"),
            asyncio.create_task(self._expire_logins(), name="web-logins"),
        ]
        log.info("web_started", node=self.endpoint, audit=str(cfg.audit_directory))
        try:
            yield
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.logins.close()
            if self.reader is not None:
                self.reader.close()
            log.info("web_stopped")

    async def _follow_store(self) -> None:
        """Open the audit store read-only (waiting for the node to make it), then feed."""
        while self.reader is None:
            try:
                self.reader = await asyncio.to_thread(
                    AuditReader, self.cfg.audit_directory, read_only=True
                )
            except AuditError as exc:
                if self.store_error != str(exc):
                    log.warning("web_audit_store_unavailable", error=str(exc))
                self.store_error = str(exc)
                await asyncio.sleep(_STORE_RETRY_S)
        self.store_error = ""
        self.pictures = Pictures(self.reader.image_dir)
        s = self.settings
        feed = Feed(
            self.reader, cards=s.cards, viewer_queue=s.viewer_queue, max_viewers=s.max_viewers
        )
        await feed.prime()
        self.feed = feed
        await feed.run()

    async def _expire_logins(self) -> None:
        """Close the node sessions of logins gone idle, so they do not hold the node's
        session slots until someone else logs in."""
        assert self.logins is not None
        while True:
            await asyncio.sleep(_EXPIRE_EVERY_S)
            await self.logins.expire()

    def _node_changed(self, paths: set[str]) -> None:
        if self.feed is not None:
            self.feed.status_changed()

    def _node_result(self, result_id: str) -> None:
        if self.feed is not None:
            self.feed.wake(result_id)

    # -- shared by the pages --------------------------------------------------------------------
    def login_of(self, request: Request) -> Login | None:
        assert self.logins is not None
        return self.logins.get(request.cookies.get(SESSION_COOKIE))

    def language(self, request: Request) -> str:
        return pick(
            request.query_params.get("lang"),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("accept-language"),
            self._lang,
        )

    def may_look(self, request: Request) -> bool:
        return self.settings.anonymous_view or self.login_of(request) is not None

    def _node_view(self) -> dict[str, str]:
        f = self.follower
        if not f.connected:
            return {"state": words("en")["unreachable"], "css": "bad"}
        state = str(f.values.get("Health.State", ""))
        css = "ok" if state == "ContinuousExecution" else "bad" if state == "Error" else "warn"
        detail = str(f.values.get("Health.StateDetail", ""))
        return {"state": f"{state} {detail}".strip(), "css": css}

    def _status_view(self, lang: str) -> dict[str, Any]:
        v = self.follower.values
        inspected = int(v.get("Counters.Inspected") or 0)
        rejected = int(v.get("Counters.Rejected") or 0)
        by = self.follower.fail_safe_by_reason
        health = ", ".join(
            f"{k.lower()} {v.get(f'Health.{k}', '?')}" for k in ("Camera", "Plc", "Model", "Audit")
        )
        repeat = ""
        if int(v.get("Repeats.Active") or 0):
            key = {"en": "Repeats.Text", "de": "Repeats.TextDe", "ja": "Repeats.TextJa"}[lang]
            repeat = str(v.get(key) or v.get("Repeats.Text") or "")
        return {
            "pps": float(v.get("Stats.PartsPerS") or 0.0),
            "inspected": inspected,
            "reject_pct": 100.0 * rejected / inspected if inspected else 0.0,
            "fail_safe": int(v.get("Counters.FailSafe") or 0),
            "fail_safe_by": ", ".join(f"{k} {n}" for k, n in sorted(by.items()) if n),
            "budget_p99": float(v.get("Stats.BudgetUsedP99") or 0.0),
            "latency_p99": float(v.get("Stats.LatencyP99Ms") or 0.0),
            "health": health,
            "repeat": repeat,
        }

    def awaiting_counted(self, n: int) -> None:
        """``n`` results await review, as just counted (kept for 2 s)."""
        self._awaiting = (n, time.monotonic())

    def awaiting_changed(self) -> None:
        """A review was stored: count again on the next page."""
        self._awaiting = (0, 0.0)

    async def _awaiting_count(self) -> int:
        n, at = self._awaiting
        if self.reader is not None and time.monotonic() - at > 2.0:
            n = await asyncio.to_thread(self.reader.count_awaiting_review)
            self._awaiting = (n, time.monotonic())
        return n

    async def render(
        self,
        request: Request,
        template: str,
        page: str,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        lang = self.language(request)
        login = self.login_of(request)
        flash = login.flash if login is not None else None
        if login is not None:
            login.flash = None
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        given_flash = context.pop("flash", None)
        given_kind = context.pop("flash_kind", "")
        ctx = {
            "lang": lang,
            "languages": LANGUAGES,
            "w": words(lang),
            "page": page,
            "title": words(lang).get(page, page),
            "node_name": self.cfg.node.name,
            "node": self._node_view(),
            "login": login,
            "awaiting": await self._awaiting_count(),
            "here": here,
            "flash": flash[0] if flash else given_flash,
            "flash_kind": flash[1] if flash else given_kind,
        } | context
        response = self.templates.TemplateResponse(request, template, ctx, status_code=status_code)
        if request.query_params.get("lang") in LANGUAGES:
            response.set_cookie(
                LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", secure=self.https
            )
        return response

    @property
    def https(self) -> bool:
        return self.settings.https

    async def refuse(self, request: Request, status: int, message: str) -> Response:
        log.warning("web_request_refused", path=request.url.path, status=status, why=message)
        return await self.render(request, "error.html", "error", status, message=message)

    async def need_look(self, request: Request) -> Response | None:
        if self.may_look(request):
            return None
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    # -- pages ------------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        """The live page is home."""
        return RedirectResponse("/live", 303)

    async def live(self, request: Request) -> Response:
        """The node's state and figures, and the newest results as cards."""
        if (gate := await self.need_look(request)) is not None:
            return gate
        lang = self.language(request)
        rejects_only = request.query_params.get("only") == "rejects"
        records: list[AuditRecord] = []
        if self.feed is not None:
            src = self.feed.recent_rejects if rejects_only else self.feed.recent
            records = list(reversed(src))
        return await self.render(
            request,
            "live.html",
            "live",
            records=records,
            rejects_only=rejects_only,
            status=self._status_view(lang),
            max_cards=self.settings.cards,
            flash=None if not self.store_error else self.store_error,
            flash_kind="error",
        )

    async def events(self, request: Request) -> Response:
        """Server-sent events: ``cards`` (HTML of new result cards, oldest first) and
        ``status`` (the node's figures), to the live page."""
        if not self.may_look(request):
            return PlainTextResponse("log in first", 403)
        if self.feed is None:
            return PlainTextResponse("the audit store is not there yet", 503)
        lang = self.language(request)
        try:
            viewer = self.feed.subscribe(rejects_only=request.query_params.get("only") == "rejects")
        except TooManyViewers as exc:
            return PlainTextResponse(str(exc), 503)
        feed, cards_max = self.feed, self.settings.cards
        card_macro = getattr(self.templates.env.get_template("_card.html").module, "card")  # noqa: B009
        w = words(lang)

        async def stream() -> AsyncIterator[str]:
            sent = 0.0
            try:
                yield "retry: 2000\n\n"
                while True:
                    if not await viewer.wait():
                        yield ": keepalive\n\n"
                        continue
                    # one update per SEND_EVERY_S at most: a fast line's results are
                    # gathered, and only the newest `cards` of them drawn
                    await asyncio.sleep(max(0.0, sent + SEND_EVERY_S - time.monotonic()))
                    sent = time.monotonic()
                    cards, status_due = viewer.take()
                    if cards:
                        html = "".join(str(card_macro(r, w, lang)) for r in cards[-cards_max:])
                        yield _sse("cards", html)
                    if status_due:
                        yield _sse("status", json.dumps(self._status_event(lang)))
            finally:
                feed.unsubscribe(viewer)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    def _status_event(self, lang: str) -> dict[str, Any]:
        s = self._status_view(lang)
        node = self._node_view()
        return {
            "state_text": f"{words(lang)['node_state']}: {node['state']}",
            "state_css": node["css"],
            "fields": {
                "s-pps": f"{s['pps']:.1f}",
                "s-inspected": str(s["inspected"]),
                "s-reject-pct": f"{s['reject_pct']:.1f}",
                "s-failsafe": str(s["fail_safe"]),
                "s-failsafe-by": s["fail_safe_by"],
                "s-budget": f"{s['budget_p99'] * 100:.0f} %",
                "s-latency": f"{s['latency_p99']:.1f} ms",
                "s-health": s["health"],
                "s-repeat": s["repeat"],
            },
        }

    async def record_of(self, request: Request) -> AuditRecord | Response:
        if self.reader is None:
            return await self.refuse(request, 503, "the audit store is not there yet")
        rid = request.path_params["result_id"]
        rec = await asyncio.to_thread(self.reader.get, rid)
        if rec is None:
            return await self.refuse(request, 404, f"no result {rid}")
        return rec

    async def status(self, request: Request) -> Response:
        """The web process's own figures (JSON): the follower, the feed, the logins."""
        return JSONResponse(
            {
                "node": self.follower.snapshot() | {"endpoint": self.endpoint},
                "feed": self.feed.snapshot() if self.feed is not None else None,
                "logins": self.logins.count if self.logins is not None else 0,
                "store_error": self.store_error,
                "collect": self.collect.snapshot(),
            }
        )


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"
