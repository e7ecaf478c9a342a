"""The web view's collect path: reviewed images and findings for a fleet host, behind the
plant's bearer token."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from hil.line import sim_config
from node.audit.reader import AuditReader
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import ConfigError
from node.web.app import WebApp
from tests.unit.node.audit import factories as F

TOKEN = "s3cret-token-for-the-fleet-0123"


def _config(tmp_path: Path, **web: object) -> Config:
    return sim_config(
        load_config(DEFAULT_CONFIG),
        node={"state_dir": tmp_path},
        hmi={"endpoint": "opc.tcp://0.0.0.0:1/lineside/"},  # nothing listens there
        web=web,
    )


def _token_file(tmp_path: Path, token: str = TOKEN) -> Path:
    path = tmp_path / "collect.token"
    path.write_text(token + "\n", encoding="utf-8")
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    """Three kept parts — a scratch, a clean pass, a crack — reviewed: the scratch
    confirmed, the pass confirmed, the crack overridden to a dent; a fourth not reviewed."""
    with AuditStore(AuditSettings(sample_passes=1.0), tmp_path / "audit") as s:
        for part, kind in ((1, "scratch"), (2, None), (3, "crack"), (4, "scratch")):
            s.record(F.record(part, kind), F.image(part))
        s.flush()
        s.review("run1-1", "reject", None, "as the node said", "olga")
        s.review("run1-2", "pass", None, "", "olga")
        s.review("run1-3", "reject", "dent", "a dent, not a crack", "emil")
    yield tmp_path / "audit"


def _bearer(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _ready(client: TestClient) -> None:
    """Wait until the web has opened the audit store (until then the path says 503)."""
    end = time.monotonic() + 10
    while client.get("/status").json()["feed"] is None and time.monotonic() < end:
        time.sleep(0.02)


def test_without_a_token_configured_the_path_is_not_there(tmp_path: Path, store: Path) -> None:
    """No web.collect_token_file: /collect/... answers 404 whatever is presented."""
    with TestClient(WebApp(_config(tmp_path)).asgi()) as client:
        assert client.get("/collect/reviewed", headers=_bearer()).status_code == 404
        assert client.get("/collect/image/run1-1", headers=_bearer()).status_code == 404
        assert client.get("/status").json()["collect"]["enabled"] is False


def test_a_missing_or_wrong_token_is_refused_and_counted(tmp_path: Path, store: Path) -> None:
    """No Authorization, another scheme, a wrong token: 401 with WWW-Authenticate, nothing
    listed or served, each refusal counted in /status."""
    cfg = _config(tmp_path, collect_token_file=_token_file(tmp_path))
    with TestClient(WebApp(cfg).asgi()) as client:
        _ready(client)
        for headers in ({}, {"authorization": f"Basic {TOKEN}"}, _bearer(TOKEN + "x")):
            for path in ("/collect/reviewed", "/collect/image/run1-1"):
                r = client.get(path, headers=headers)
                assert r.status_code == 401, (path, headers)
                assert r.headers["www-authenticate"].startswith("Bearer")
                assert b"run1" not in r.content
        assert client.get("/status").json()["collect"]["refused"] == 6


def test_the_listing_gives_each_review_with_label_findings_and_digest(
    tmp_path: Path, store: Path
) -> None:
    """With the token, reviews after a seq come oldest first, each with its data set folder
    (the reviewer's verdict wins), caption, findings and recorded image digest; paging by
    ``after`` and ``limit`` neither repeats nor skips one."""
    cfg = _config(tmp_path, collect_token_file=_token_file(tmp_path))
    with TestClient(WebApp(cfg).asgi()) as client:
        _ready(client)
        r = client.get("/collect/reviewed?after=0", headers=_bearer())
        assert r.status_code == 200
        body = r.json()
        assert body["last_seq"] == 3 and body["node"] == cfg.node.name
        got = [(e["seq"], e["result_id"], e["label"], e["user"]) for e in body["reviews"]]
        assert got == [
            (1, "run1-1", "test/scratch", "olga"),
            (2, "run1-2", "train/good", "olga"),
            (3, "run1-3", "test/dent", "emil"),
        ]
        first = body["reviews"][0]
        assert first["caption"] and first["image"] is True
        assert first["record"]["findings"]["judged"], first["record"]["findings"]
        with AuditReader(store, read_only=True) as reader:
            assert first["image_sha256"] == reader.get("run1-1").image_sha256  # type: ignore[union-attr]
        assert body["reviews"][1]["caption"] is None  # a pass has none
        page = client.get("/collect/reviewed?after=1&limit=1", headers=_bearer()).json()
        assert [e["seq"] for e in page["reviews"]] == [2]
        assert client.get("/collect/reviewed?after=3", headers=_bearer()).json()["reviews"] == []
        for bad in ("after=-1", "after=x", "limit=0", "limit=501"):
            assert client.get(f"/collect/reviewed?{bad}", headers=_bearer()).status_code == 400


def test_an_image_is_served_only_as_recorded(tmp_path: Path, store: Path) -> None:
    """A reviewed part's kept image comes byte for byte with its digest; one not reviewed
    or unknown is 404; one altered on disk since it was recorded is 409, and counted."""
    cfg = _config(tmp_path, collect_token_file=_token_file(tmp_path))
    with AuditReader(store, read_only=True) as reader:
        rec = reader.get("run1-1")
        assert rec is not None
        path = reader.image_file(rec)
        altered = reader.image_file(reader.get("run1-3"))  # type: ignore[arg-type]
    assert path is not None and altered is not None
    with TestClient(WebApp(cfg).asgi()) as client:
        _ready(client)
        r = client.get("/collect/image/run1-1", headers=_bearer())
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == path.read_bytes()
        assert r.headers["x-image-sha256"] == hashlib.sha256(r.content).hexdigest()
        assert r.headers["x-image-sha256"] == rec.image_sha256
        assert client.get("/collect/image/run1-4", headers=_bearer()).status_code == 404
        assert client.get("/collect/image/nope", headers=_bearer()).status_code == 404
        altered.write_bytes(altered.read_bytes() + b"\0")
        assert client.get("/collect/image/run1-3", headers=_bearer()).status_code == 409
        status = client.get("/status").json()["collect"]
        assert (status["images"], status["altered"]) == (1, 1)


@pytest.mark.parametrize("token", ["", "short", "two words but long enough"])
def test_a_weak_or_unreadable_token_file_is_a_config_error(tmp_path: Path, token: str) -> None:
    """The token file must hold one word of at least 16 characters; a missing file or a
    weak token stops the start, naming web.collect_token_file."""
    missing = _config(tmp_path, collect_token_file=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"web\.collect_token_file: .*none"):
        WebApp(missing)
    weak = _config(tmp_path, collect_token_file=_token_file(tmp_path, token))
    with pytest.raises(ConfigError, match=r"web\.collect_token_file: .*16 characters"):
        WebApp(weak)
