"""The web application's gates, without a node: headers, logins, CSRF, redirects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hil.line import sim_config
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.config import DEFAULT_CONFIG, Config, load_config
from node.web.app import WebApp, node_endpoint
from node.web.auth import LOGIN_CSRF_COOKIE, safe_next
from tests.unit.node.audit import factories as F


def _config(tmp_path: Path, **web: object) -> Config:
    base = load_config(DEFAULT_CONFIG)
    return sim_config(
        base,
        node={"state_dir": tmp_path},
        hmi={"endpoint": "opc.tcp://0.0.0.0:1/lineside/"},  # nothing listens there
        web=web,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    with AuditStore(AuditSettings(sample_passes=1.0), tmp_path / "audit") as s:
        s.record(F.record(1, "scratch"), F.image(1))
        s.flush()
    yield tmp_path / "audit"


def test_every_response_carries_the_security_headers(tmp_path: Path, store: Path) -> None:
    """Pages, pictures and errors all say: scripts and styles from here only, no framing,
    no MIME sniffing."""
    with TestClient(WebApp(_config(tmp_path)).asgi()) as client:
        for path in ("/live", "/login", "/part/none", "/status", "/static/web.css"):
            r = client.get(path)
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"


def test_without_anonymous_view_nothing_is_shown_before_a_login(
    tmp_path: Path, store: Path
) -> None:
    """anonymous_view = false: pages redirect to the login, the event stream and pictures
    are refused, the login page itself is served."""
    with TestClient(WebApp(_config(tmp_path, anonymous_view=False)).asgi()) as client:
        for path in ("/live", "/review", "/trends", "/model", "/part/run1-1"):
            r = client.get(path, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), path
        assert client.get("/live/events").status_code == 403
        assert client.get("/part/run1-1/picture.png").status_code == 403
        assert client.get("/login").status_code == 200


def test_the_login_form_is_guarded_by_its_own_csrf_cookie(tmp_path: Path, store: Path) -> None:
    """The login page sets an HttpOnly, SameSite=Strict token; a POST without the matching
    token is refused before any password is tried, and with it a node that cannot be
    reached refuses the login with the reason."""
    with TestClient(WebApp(_config(tmp_path)).asgi()) as client:
        page = client.get("/login")
        cookie = page.headers["set-cookie"]
        assert LOGIN_CSRF_COOKIE in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        token = client.cookies[LOGIN_CSRF_COOKIE]
        form = {"user": "olga", "password": "x", "next": "/review"}
        assert client.post("/login", data={**form, "csrf": "forged"}).status_code == 403
        r = client.post("/login", data={**form, "csrf": token}, follow_redirects=False)
        assert r.status_code == 401 and "cannot be reached" in r.text


def test_acting_without_a_login_is_refused(tmp_path: Path, store: Path) -> None:
    """Reviews, commands and logout posted by someone not logged in are answered 403 (or
    sent back to the live page) and reach nothing."""
    with TestClient(WebApp(_config(tmp_path)).asgi()) as client:
        r = client.post("/review/run1-1", data={"csrf": "x", "action": "confirm"})
        assert r.status_code == 403
        assert client.post("/command", data={"csrf": "x", "command": "halt"}).status_code == 403
        r = client.post("/logout", data={"csrf": "x"}, follow_redirects=False)
        assert r.status_code == 303


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("/review?x=1", "/review?x=1"),
        ("//evil.example/x", "/live"),
        ("https://evil.example/", "/live"),
        ("/\\evil.example", "/live"),
        ("", "/live"),
    ],
)
def test_going_back_after_a_form_stays_on_this_site(given: str, safe: str) -> None:
    """The ``next`` a form carries is followed only when it is a path on this site."""
    assert safe_next(given) == safe


def test_the_node_is_reached_on_loopback_when_it_listens_everywhere(tmp_path: Path) -> None:
    """hmi.endpoint on 0.0.0.0 is followed at 127.0.0.1; web.node_endpoint overrides it."""
    assert node_endpoint(_config(tmp_path)) == "opc.tcp://127.0.0.1:1/lineside/"
    other = _config(tmp_path, node_endpoint="opc.tcp://10.0.0.5:4840/")
    assert node_endpoint(other) == "opc.tcp://10.0.0.5:4840/"
