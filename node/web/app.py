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
import math
import secrets
import time
from collections.abc import AsyncIterator, Mapping
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
from node.web.auth import (
    COMMANDS,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ActionRefused,
    Login,
    LoginRefused,
    Logins,
    prepare_certificate,
    same,
)
from node.web.feed import Feed, TooManyViewers
from node.web.follow import NodeFollower
from node.web.i18n import LANG_COOKIE, LANGUAGES, pick, words
from node.web.pictures import Pictures

log = structlog.get_logger(__name__)

HERE = Path(__file__).resolve().parent
_STORE_RETRY_S = 2.0
_EXPIRE_EVERY_S = 30.0
SEND_EVERY_S = 0.4
"""Least time between two updates to one live page: at 50 parts/s a page would otherwise
redraw cards 5 times a second for nobody's eyes (the browser's CPU, and the web's)."""
_REVIEW_PAGE = 30
_PASS_REASONS = {
    "false_alarm": ("no defect: false alarm", "kein Fehler: Fehlalarm", "欠陥なし: 誤検出"),
    "cosmetic": ("within spec: cosmetic", "in Toleranz: kosmetisch", "規格内: 外観のみ"),
    "other": ("other", "anderes", "その他"),
}
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


def _safe_next(value: object) -> str:
    """A local path to go back to (never another site)."""
    text = str(value or "")
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/live"
    return text


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
        env.globals["override_reasons"] = self._override_reasons
        self._lang = cfg.web.language
        self._awaiting = (0, 0.0)
        self._types = self._model_types()

    # -- the application -------------------------------------------------------------------
    def asgi(self) -> Starlette:
        """The Starlette application (give it to uvicorn)."""
        routes = [
            Route("/", self.home),
            Route("/live", self.live),
            Route("/live/events", self.events),
            Route("/part/{result_id:str}", self.part),
            Route("/part/{result_id:str}/picture.png", self.picture),
            Route("/review", self.review_page),
            Route("/review/{result_id:str}", self.review_post, methods=["POST"]),
            Route("/command", self.command_post, methods=["POST"]),
            Route("/trends", self.trends_page),
            Route("/trends.png", self.trends_png),
            Route("/trends.csv", self.trends_csv),
            Route("/model", self.model_page),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login_post, methods=["POST"]),
            Route("/logout", self.logout_post, methods=["POST"]),
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
    def _login(self, request: Request) -> Login | None:
        assert self.logins is not None
        return self.logins.get(request.cookies.get(SESSION_COOKIE))

    def _language(self, request: Request) -> str:
        return pick(
            request.query_params.get("lang"),
            request.cookies.get(LANG_COOKIE),
            request.headers.get("accept-language"),
            self._lang,
        )

    def _may_look(self, request: Request) -> bool:
        return self.settings.anonymous_view or self._login(request) is not None

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

    async def _awaiting_count(self) -> int:
        n, at = self._awaiting
        if self.reader is not None and time.monotonic() - at > 2.0:
            n = await asyncio.to_thread(self.reader.count_awaiting_review)
            self._awaiting = (n, time.monotonic())
        return n

    async def _render(
        self,
        request: Request,
        template: str,
        page: str,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        lang = self._language(request)
        login = self._login(request)
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
                LANG_COOKIE, lang, max_age=365 * 86400, samesite="strict", secure=self._https
            )
        return response

    @property
    def _https(self) -> bool:
        return self.settings.https

    async def _refuse(self, request: Request, status: int, message: str) -> Response:
        log.warning("web_request_refused", path=request.url.path, status=status, why=message)
        return await self._render(request, "error.html", "error", status, message=message)

    async def _need_look(self, request: Request) -> Response | None:
        if self._may_look(request):
            return None
        return RedirectResponse(f"/login?next={request.url.path}", 303)

    # -- pages ------------------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        """The live page is home."""
        return RedirectResponse("/live", 303)

    async def live(self, request: Request) -> Response:
        """The node's state and figures, and the newest results as cards."""
        if (gate := await self._need_look(request)) is not None:
            return gate
        lang = self._language(request)
        rejects_only = request.query_params.get("only") == "rejects"
        records: list[AuditRecord] = []
        if self.feed is not None:
            src = self.feed.recent_rejects if rejects_only else self.feed.recent
            records = list(reversed(src))
        return await self._render(
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
        if not self._may_look(request):
            return PlainTextResponse("log in first", 403)
        if self.feed is None:
            return PlainTextResponse("the audit store is not there yet", 503)
        lang = self._language(request)
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

    async def _record(self, request: Request) -> AuditRecord | Response:
        if self.reader is None:
            return await self._refuse(request, 503, "the audit store is not there yet")
        rid = request.path_params["result_id"]
        rec = await asyncio.to_thread(self.reader.get, rid)
        if rec is None:
            return await self._refuse(request, 404, f"no result {rid}")
        return rec

    async def part(self, request: Request) -> Response:
        """Everything recorded about one part."""
        if (gate := await self._need_look(request)) is not None:
            return gate
        rec = await self._record(request)
        if isinstance(rec, Response):
            return rec
        assert self.reader is not None
        reviews = await asyncio.to_thread(self.reader.reviews, rec.result_id)
        lang = self._language(request)
        return await self._render(
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
        for z in self.cfg.inspection.recipe.zones:
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
        if not self._may_look(request):
            return PlainTextResponse("log in first", 403)
        rec = await self._record(request)
        if isinstance(rec, Response):
            return rec
        assert self.pictures is not None
        heat = request.query_params.get("heat") != "0"
        scale = 2 if request.query_params.get("scale") == "2" else 1
        try:
            png = await asyncio.to_thread(self.pictures.picture, rec, heat=heat, scale=scale)
        except (OSError, ValueError) as exc:
            log.warning("web_picture_unreadable", result_id=rec.result_id, error=str(exc))
            png = None
        if png is None:
            return PlainTextResponse("image not kept", 404)
        return Response(png, media_type="image/png", headers={"cache-control": "max-age=3600"})

    # -- review -----------------------------------------------------------------------------------
    def _override_reasons(self, rec: AuditRecord) -> list[tuple[str, str]]:
        """The choices an override offers: why a reject should pass, or which defect a pass
        has (the model's types)."""
        lang_i = 0
        if rec.verdict == "reject":
            return [(k, v[lang_i]) for k, v in _PASS_REASONS.items()]
        return [(t, t) for t in self._types] + [("other", "other")]

    async def review_page(self, request: Request) -> Response:
        """Rejects and sampled passes nobody has reviewed, newest first."""
        if (gate := await self._need_look(request)) is not None:
            return gate
        if self.reader is None:
            return await self._refuse(request, 503, "the audit store is not there yet")
        records = await asyncio.to_thread(self.reader.awaiting_review, _REVIEW_PAGE)
        total = await asyncio.to_thread(self.reader.count_awaiting_review)
        self._awaiting = (total, time.monotonic())
        return await self._render(request, "review.html", "review", records=records, total=total)

    async def review_post(self, request: Request) -> Response:
        """Confirm or override one result, on the node, as the logged-in person."""
        form = await request.form()
        login = self._login(request)
        if login is None:
            return await self._refuse(request, 403, "log in to review")
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self._refuse(request, 403, "the form is stale or forged (CSRF)")
        rec = await self._record(request)
        if isinstance(rec, Response):
            return rec
        comment = str(form.get("comment", "") or "").strip()
        if form.get("action") == "confirm":
            verdict = rec.verdict
            defect = (rec.defect_type or "") if verdict == "reject" else ""
            comment = comment or "confirmed"
        elif form.get("reason"):
            reason = str(form.get("reason"))
            verdict = "pass" if rec.verdict == "reject" else "reject"
            if verdict == "pass":
                defect = ""
                label = _PASS_REASONS.get(reason, (reason,))[0]
            else:
                defect = reason if reason in self._types else "unknown anomaly"
                label = f"missed defect: {reason}"
            comment = f"{label}: {comment}" if comment else label
        else:
            return await self._refuse(request, 400, "choose confirm or a reason to override")
        assert self.logins is not None
        w = words(self._language(request))
        try:
            await self.logins.review(login, rec.result_id, verdict, defect, comment)
        except ActionRefused as exc:
            login.flash = (f"{w['refused']}: {exc}", "error")
        else:
            login.flash = (f"{w['saved']}: {w['part']} {rec.part_id}", "ok")
            self._awaiting = (0, 0.0)
        return RedirectResponse(_safe_next(form.get("next")), 303)

    async def command_post(self, request: Request) -> Response:
        """Halt, Reset, modes: a 40100 method on the node as the logged-in person."""
        form = await request.form()
        login = self._login(request)
        if login is None:
            return await self._refuse(request, 403, "log in to command the node")
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self._refuse(request, 403, "the form is stale or forged (CSRF)")
        name = str(form.get("command", ""))
        if name not in COMMANDS:
            return await self._refuse(request, 400, f"no command {name!r}")
        assert self.logins is not None
        w = words(self._language(request))
        cause = str(form.get("cause", "") or "").strip() or f"from the web view by {login.name}"
        try:
            await self.logins.command(login, name, cause)
        except ActionRefused as exc:
            login.flash = (f"{w['refused']}: {w['cmd_' + name]}: {exc}", "error")
        else:
            login.flash = (f"{w['cmd_' + name]}: {w['done']}", "ok")
        return RedirectResponse(_safe_next(form.get("next")), 303)

    # -- trends -----------------------------------------------------------------------------------
    def _hours(self, request: Request) -> int:
        try:
            hours = int(request.query_params.get("hours", "8"))
        except ValueError:
            hours = 8
        return max(1, min(hours, 24 * 31))

    async def trends_page(self, request: Request) -> Response:
        """Rejects by type, fail-safes by reason, latency and budget use over the shift."""
        if (gate := await self._need_look(request)) is not None:
            return gate
        return await self._render(request, "trends.html", "trends", hours=self._hours(request))

    async def _trends(self, request: Request) -> Any:
        from node.web.trends import read_trends

        until = time.time_ns()
        since = until - self._hours(request) * 3600 * 10**9
        return await asyncio.to_thread(
            read_trends, self.cfg.audit_directory, since_ns=since, until_ns=until
        )

    async def trends_png(self, request: Request) -> Response:
        """The trend plots (PNG)."""
        if not self._may_look(request):
            return PlainTextResponse("log in first", 403)
        from node.web.trends import trends_png

        t = await self._trends(request)
        png = await asyncio.to_thread(trends_png, t, self._language(request))
        return Response(png, media_type="image/png", headers={"cache-control": "no-store"})

    async def trends_csv(self, request: Request) -> Response:
        """The trend figures per hour (CSV download)."""
        if not self._may_look(request):
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
    def _model_types(self) -> list[str]:
        manifest = _manifest(self.cfg.inspection.model.package)
        types = manifest.get("types") if isinstance(manifest, dict) else None
        if isinstance(types, list):
            return [str(t) for t in types]
        return ["scratch", "crack", "spot", "contamination", "missing_feature", "unknown anomaly"]

    async def model_page(self, request: Request) -> Response:
        """The active package, a shadow candidate, the recipe and its rules."""
        if (gate := await self._need_look(request)) is not None:
            return gate
        cfg = self.cfg
        manifest = await asyncio.to_thread(_manifest, cfg.inspection.model.package)
        package: dict[str, Any] = {
            "backend": cfg.inspection.backend,
            "folder": str(cfg.inspection.model.package),
            "package_sha256": manifest.get("package_sha256", "—"),
            "created": manifest.get("created_utc", "—"),
            "types": ", ".join(map(str, manifest.get("types") or [])),
            "running": self.follower.values.get("Health.Model", "—"),
        }
        last = self.feed.recent[-1] if self.feed is not None and self.feed.recent else None
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
        return await self._render(
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

        pkg = self.cfg.inspection.shadow.package
        if pkg is None:
            return {}, []
        manifest = _manifest(pkg)
        sha = str(manifest.get("package_sha256", ""))
        info: dict[str, Any] = {"folder": str(pkg), "package_sha256": sha or "—"}
        v = self.follower.values
        info["judged (node)"] = v.get("Shadow.Judged", "—")
        try:
            report = read_report(shadow_dir(self.cfg.node.state_dir, sha), examples=10)
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

    # -- login ------------------------------------------------------------------------------
    async def login_page(self, request: Request, flash: str | None = None) -> Response:
        """The login form, with a fresh double-submit CSRF token."""
        token = secrets.token_urlsafe(32)
        response = await self._render(
            request,
            "login.html",
            "login",
            401 if flash else 200,
            login_csrf=token,
            next=_safe_next(request.query_params.get("next")),
            flash=flash,
            flash_kind="error",
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self._https,
            path="/login",
        )
        return response

    async def login_post(self, request: Request) -> Response:
        """Log in as a user of the node's HMI server (the node checks the password)."""
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not same(str(form.get("csrf", "")), cookie):
            return await self._refuse(request, 403, "the form is stale or forged (CSRF)")
        assert self.logins is not None
        try:
            login = await self.logins.login(
                str(form.get("user", "")), str(form.get("password", ""))
            )
        except LoginRefused as exc:
            return await self.login_page(request, flash=str(exc))
        response = RedirectResponse(_safe_next(form.get("next")), 303)
        response.set_cookie(
            SESSION_COOKIE,
            login.token,
            httponly=True,
            samesite="strict",
            secure=self._https,
            path="/",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout_post(self, request: Request) -> Response:
        """End the login (its OPC UA session too)."""
        form = await request.form()
        login = self._login(request)
        if login is None:
            return RedirectResponse("/live", 303)
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self._refuse(request, 403, "the form is stale or forged (CSRF)")
        assert self.logins is not None
        await self.logins.logout(login.token)
        response = RedirectResponse("/live", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def status(self, request: Request) -> Response:
        """The web process's own figures (JSON): the follower, the feed, the logins."""
        return JSONResponse(
            {
                "node": self.follower.snapshot() | {"endpoint": self.endpoint},
                "feed": self.feed.snapshot() if self.feed is not None else None,
                "logins": self.logins.count if self.logins is not None else 0,
                "store_error": self.store_error,
            }
        )


def _sse(event: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {event}\n{lines}\n"


def _mm(value: object) -> str:
    return f"{value:.1f} mm" if isinstance(value, int | float) and math.isfinite(value) else "—"


def _round(value: object) -> object:
    return round(value, 4) if isinstance(value, float) else value


def _side(side: object) -> str:
    if not isinstance(side, Mapping):
        return "?"
    verdict = "reject" if side.get("reject") else "pass"
    kind = side.get("defect_type") or ""
    return f"{verdict} {kind}".strip()


def _recipe_name(rec: AuditRecord) -> str:
    try:
        thresholds = json.loads(rec.thresholds_json)
    except ValueError:
        return "—"
    return str(thresholds.get("name") or thresholds.get("recipe") or "—")


def _manifest(package: Path | None) -> dict[str, Any]:
    if package is None:
        return {}
    try:
        data = json.loads((Path(package) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
