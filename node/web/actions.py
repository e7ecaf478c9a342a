"""The web view's actions: the review queue and reviews, commands, logging in and out.

Each is carried out on the node as the logged-in person (``node.web.auth``); the pages
around them are drawn by :class:`node.web.app.WebApp`.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from node.audit.record import AuditRecord
from node.web.auth import (
    COMMANDS,
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    ActionRefused,
    LoginRefused,
    safe_next,
    same,
)
from node.web.i18n import words

if TYPE_CHECKING:
    from node.web.app import WebApp

_REVIEW_PAGE = 30
_PASS_REASONS = {
    "false_alarm": ("no defect: false alarm", "kein Fehler: Fehlalarm", "欠陥なし: 誤検出"),
    "cosmetic": ("within spec: cosmetic", "in Toleranz: kosmetisch", "規格内: 外観のみ"),
    "other": ("other", "anderes", "その他"),
}


class Actions:
    """The handlers of the review queue, reviews, commands and logins, for ``web``."""

    def __init__(self, web: WebApp) -> None:
        self.web = web

    def routes(self) -> list[Route]:
        """Their routes."""
        return [
            Route("/review", self.review_page),
            Route("/review/{result_id:str}", self.review_post, methods=["POST"]),
            Route("/command", self.command_post, methods=["POST"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login_post, methods=["POST"]),
            Route("/logout", self.logout_post, methods=["POST"]),
        ]

    # -- review -----------------------------------------------------------------------------------
    def override_reasons(self, rec: AuditRecord) -> list[tuple[str, str]]:
        """The choices an override offers: why a reject should pass, or which defect a pass
        has (the model's types)."""
        lang_i = 0
        if rec.verdict == "reject":
            return [(k, v[lang_i]) for k, v in _PASS_REASONS.items()]
        return [(t, t) for t in self.web.types] + [("other", "other")]

    async def review_page(self, request: Request) -> Response:
        """Rejects and sampled passes nobody has reviewed, newest first."""
        if (gate := await self.web.need_look(request)) is not None:
            return gate
        if self.web.reader is None:
            return await self.web.refuse(request, 503, "the audit store is not there yet")
        records = await asyncio.to_thread(self.web.reader.awaiting_review, _REVIEW_PAGE)
        total = await asyncio.to_thread(self.web.reader.count_awaiting_review)
        self.web.awaiting_counted(total)
        return await self.web.render(request, "review.html", "review", records=records, total=total)

    async def review_post(self, request: Request) -> Response:
        """Confirm or override one result, on the node, as the logged-in person."""
        form = await request.form()
        login = self.web.login_of(request)
        if login is None:
            return await self.web.refuse(request, 403, "log in to review")
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self.web.refuse(request, 403, "the form is stale or forged (CSRF)")
        rec = await self.web.record_of(request)
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
                defect = reason if reason in self.web.types else "unknown anomaly"
                label = f"missed defect: {reason}"
            comment = f"{label}: {comment}" if comment else label
        else:
            return await self.web.refuse(request, 400, "choose confirm or a reason to override")
        assert self.web.logins is not None
        w = words(self.web.language(request))
        try:
            await self.web.logins.review(login, rec.result_id, verdict, defect, comment)
        except ActionRefused as exc:
            login.flash = (f"{w['refused']}: {exc}", "error")
        else:
            login.flash = (f"{w['saved']}: {w['part']} {rec.part_id}", "ok")
            self.web.awaiting_changed()
        return RedirectResponse(safe_next(form.get("next")), 303)

    async def command_post(self, request: Request) -> Response:
        """Halt, Reset, modes: a 40100 method on the node as the logged-in person."""
        form = await request.form()
        login = self.web.login_of(request)
        if login is None:
            return await self.web.refuse(request, 403, "log in to command the node")
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self.web.refuse(request, 403, "the form is stale or forged (CSRF)")
        name = str(form.get("command", ""))
        if name not in COMMANDS:
            return await self.web.refuse(request, 400, f"no command {name!r}")
        assert self.web.logins is not None
        w = words(self.web.language(request))
        cause = str(form.get("cause", "") or "").strip() or f"from the web view by {login.name}"
        try:
            await self.web.logins.command(login, name, cause)
        except ActionRefused as exc:
            login.flash = (f"{w['refused']}: {w['cmd_' + name]}: {exc}", "error")
        else:
            login.flash = (f"{w['cmd_' + name]}: {w['done']}", "ok")
        return RedirectResponse(safe_next(form.get("next")), 303)

    # -- login ------------------------------------------------------------------------------
    async def login_page(self, request: Request, flash: str | None = None) -> Response:
        """The login form, with a fresh double-submit CSRF token."""
        token = secrets.token_urlsafe(32)
        response = await self.web.render(
            request,
            "login.html",
            "login",
            401 if flash else 200,
            login_csrf=token,
            next=safe_next(request.query_params.get("next")),
            flash=flash,
            flash_kind="error",
        )
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            httponly=True,
            samesite="strict",
            secure=self.web.https,
            path="/login",
        )
        return response

    async def login_post(self, request: Request) -> Response:
        """Log in as a user of the node's HMI server (the node checks the password)."""
        form = await request.form()
        cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
        if not cookie or not same(str(form.get("csrf", "")), cookie):
            return await self.web.refuse(request, 403, "the form is stale or forged (CSRF)")
        assert self.web.logins is not None
        try:
            login = await self.web.logins.login(
                str(form.get("user", "")), str(form.get("password", ""))
            )
        except LoginRefused as exc:
            return await self.login_page(request, flash=str(exc))
        response = RedirectResponse(safe_next(form.get("next")), 303)
        response.set_cookie(
            SESSION_COOKIE,
            login.token,
            httponly=True,
            samesite="strict",
            secure=self.web.https,
            path="/",
        )
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    async def logout_post(self, request: Request) -> Response:
        """End the login (its OPC UA session too)."""
        form = await request.form()
        login = self.web.login_of(request)
        if login is None:
            return RedirectResponse("/live", 303)
        if not same(str(form.get("csrf", "")), login.csrf):
            return await self.web.refuse(request, 403, "the form is stale or forged (CSRF)")
        assert self.web.logins is not None
        await self.web.logins.logout(login.token)
        response = RedirectResponse("/live", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
