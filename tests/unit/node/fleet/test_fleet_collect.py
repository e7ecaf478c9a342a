"""``lineside fleet --collect``: reviewed images from the nodes' collect paths, one MVTec
data set for all of them, a cursor per node so a restart neither repeats nor skips.

The node side is the real web application (``node.web.collect``) on a real audit store,
reached in-process through Starlette's test client instead of a socket."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from starlette.testclient import TestClient

from hil.line import sim_config
from models.data.mvtec import read_mvtec
from node.audit.reader import AuditReader
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.config import DEFAULT_CONFIG, load_config
from node.errors import ConfigError
from node.fleet.collect import MANIFEST, Collector, open_collector
from node.fleet.fetch import Reply, UrlFetcher
from node.fleet.state import Fleet, Kind, Message, NodeView
from node.fleet.table import render, snapshot, with_collect
from node.hmi.security import Pki, ensure_server_certificate
from node.north import metrics as M
from node.web.app import WebApp
from tests.unit.node.audit import factories as F

TOKEN = "s3cret-token-for-the-fleet-0123"
URL = "http://127.0.0.1:8080/collect"
KEY = ("plant", "line-1")


class ViaTestClient:
    """A fetcher that hands the request to the web application in this process."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.asked: list[str] = []

    def get(self, url: str, token: str) -> Reply:
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.asked.append(path)
        r = self.client.get(path, headers={"authorization": f"Bearer {token}"})
        return Reply(r.status_code, r.content)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[AuditStore, TestClient]]:
    """A node's audit store with four kept parts, and its web view serving the collect
    path with :data:`TOKEN`."""
    token = tmp_path / "token"
    token.write_text(TOKEN, encoding="utf-8")
    cfg = sim_config(
        load_config(DEFAULT_CONFIG),
        node={"state_dir": tmp_path / "node"},
        hmi={"endpoint": "opc.tcp://0.0.0.0:1/lineside/"},
        web={"collect_token_file": token},
    )
    with AuditStore(AuditSettings(sample_passes=1.0), cfg.audit_directory) as store:
        for part, kind in ((1, "scratch"), (2, None), (3, "crack"), (4, "scratch")):
            store.record(F.record(part, kind), F.image(part))
        store.flush()
        with TestClient(WebApp(cfg).asgi()) as client:
            end = time.monotonic() + 10  # until the web has opened the store (503 before)
            while client.get("/status").json()["feed"] is None and time.monotonic() < end:
                time.sleep(0.02)
            yield store, client


def _birth(collector: Collector, url: str | None = URL) -> None:
    view = NodeView(*KEY)
    collector.notice(Message(*KEY, Kind.NBIRTH, metrics={M.COLLECT_URL: url}), view)


def _announce(collector: Collector, seq: int) -> None:
    msg = Message(*KEY, Kind.DDATA, device="line", seq=2, metrics={M.REVIEW_SEQ: seq})
    collector.notice(msg, NodeView(*KEY))


def _manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def test_reviews_become_one_mvtec_set_with_a_manifest(
    node: tuple[AuditStore, TestClient], tmp_path: Path
) -> None:
    """Announced reviews are fetched into train/good and test/<type> under names that keep
    nodes apart, byte for byte as the node kept them; the manifest names node, result,
    reviewer, label and findings; read_mvtec reads the set."""
    store, client = node
    store.review("run1-1", "reject", None, "", "olga")
    store.review("run1-2", "pass", None, "", "olga")
    store.review("run1-3", "reject", "dent", "not a crack", "emil")
    out = tmp_path / "set"
    collector = Collector(out, TOKEN, ViaTestClient(client))
    _birth(collector)
    _announce(collector, 3)
    collector.sync(KEY)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [
        "test/dent/plant-line-1-run1-3.png",
        "test/scratch/plant-line-1-run1-1.png",
        "train/good/plant-line-1-run1-2.png",
    ]
    with AuditReader(store.directory, read_only=True) as reader:
        rec = reader.get("run1-3")
        assert rec is not None
        kept = reader.image_file(rec)
        assert kept is not None
        assert (out / files[0]).read_bytes() == kept.read_bytes()
    entries = {e["result_id"]: e for e in _manifest(out)}
    assert set(entries) == {"run1-1", "run1-2", "run1-3"}
    dent = entries["run1-3"]
    assert (dent["group"], dent["edge_node"], dent["reviewer"]) == ("plant", "line-1", "emil")
    assert (dent["label"], dent["node_defect_type"], dent["comment"]) == (
        "test/dent",
        "crack",
        "not a crack",
    )
    assert dent["findings"]["judged"]  # type: ignore[index]
    data = read_mvtec(out)
    assert sorted(data.defect_types) == ["dent", "scratch"]
    snap = collector.snapshot()
    assert (snap["images"], snap["collected"], snap["errors"], snap["pending"]) == (3, 3, 0, 0)


def test_a_restart_catches_up_from_its_cursor_without_repeating(
    node: tuple[AuditStore, TestClient], tmp_path: Path
) -> None:
    """A second collector on the same folder starts from the per-node cursor (and the URL
    it kept): it asks only for reviews after it, takes only the new ones, and a review
    that relabels a part moves its image."""
    store, client = node
    store.review("run1-1", "reject", None, "", "olga")
    out = tmp_path / "set"
    first = Collector(out, TOKEN, ViaTestClient(client))
    _birth(first)
    first.sync(KEY)
    store.review("run1-2", "pass", None, "", "olga")
    store.review("run1-1", "pass", None, "a stain, wiped off", "emil")  # relabelled

    fetcher = ViaTestClient(client)
    again = Collector(out, TOKEN, fetcher)  # no birth seen yet: the cursor file has the URL
    again.sync(KEY)
    assert fetcher.asked[0] == "/collect/reviewed?after=1&limit=100"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == [
        "train/good/plant-line-1-run1-1.png",
        "train/good/plant-line-1-run1-2.png",
    ]
    entries = _manifest(out)
    assert [(e["result_id"], e["review_seq"]) for e in entries] == [("run1-1", 3), ("run1-2", 2)]
    assert again.snapshot()["nodes"]["plant/line-1"]["collected"] == 2
    third = ViaTestClient(client)
    Collector(out, TOKEN, third).sync(KEY)
    assert len(third.asked) == 1  # nothing new: one listing, no image


def test_a_wrong_token_is_refused_counted_and_nothing_is_written(
    node: tuple[AuditStore, TestClient], tmp_path: Path
) -> None:
    """The node answers 401: counted as refused and as an error, retried later, no image
    and no cursor move."""
    store, client = node
    store.review("run1-1", "reject", None, "", "olga")
    out = tmp_path / "set"
    collector = Collector(out, "not-the-token-at-all-000", ViaTestClient(client))
    _birth(collector)
    collector.sync(KEY)
    row = collector.snapshot()["nodes"]["plant/line-1"]
    assert (row["refused"], row["errors"], row["review_seq"]) == (1, 1, 0)
    assert "refused (401)" in row["last_error"]
    assert list(out.rglob("*.png")) == [] and not (out / MANIFEST).exists()


def test_images_that_are_gone_or_altered_are_skipped_and_counted(
    node: tuple[AuditStore, TestClient], tmp_path: Path
) -> None:
    """A reviewed part whose image was altered on the node (409) or whose digest does not
    match what was received is skipped and counted; the cursor moves past it."""
    store, client = node
    with AuditReader(store.directory, read_only=True) as reader:
        rec = reader.get("run1-3")
        assert rec is not None
        path = reader.image_file(rec)
    assert path is not None
    path.write_bytes(path.read_bytes() + b"\0")
    store.review("run1-3", "reject", None, "", "olga")
    store.review("run1-1", "reject", None, "", "olga")
    out = tmp_path / "set"
    collector = Collector(out, TOKEN, ViaTestClient(client))
    _birth(collector)
    collector.sync(KEY)
    row = collector.snapshot()["nodes"]["plant/line-1"]
    assert (row["bad_image"], row["collected"], row["review_seq"]) == (1, 1, 2)
    assert [p.name for p in out.rglob("*.png")] == ["plant-line-1-run1-1.png"]


def test_a_node_may_not_name_a_folder_outside_the_set(tmp_path: Path) -> None:
    """A listing whose label would leave the data set is skipped (counted), never written."""

    class Evil:
        def get(self, url: str, token: str) -> Reply:
            if "/reviewed" in url:
                body = {
                    "last_seq": 1,
                    "reviews": [{"seq": 1, "result_id": "x", "label": "../../etc", "image": True}],
                }
                return Reply(200, json.dumps(body).encode())
            return Reply(200, b"\x89PNG\r\n\x1a\n")

    out = tmp_path / "set"
    collector = Collector(out, TOKEN, Evil())
    _birth(collector)
    collector.sync(KEY)
    assert collector.snapshot()["nodes"]["plant/line-1"]["bad_image"] == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file() and ".collect" not in p.parts] == []


def test_the_token_goes_over_plain_http_to_this_machine_only(tmp_path: Path) -> None:
    """An http:// collect URL of another machine is not asked (the token would travel in
    clear) unless --collect-allow-http; it is counted as an error. A node announcing
    reviews without a collect URL shows why they stay pending."""

    class Nothing:
        asked = 0

        def get(self, url: str, token: str) -> Reply:
            Nothing.asked += 1
            return Reply(200, b'{"last_seq": 0, "reviews": []}')

    collector = Collector(tmp_path / "set", TOKEN, Nothing())
    _birth(collector, "http://line-1.plant.example:8080/collect")
    collector.sync(KEY)
    row = collector.snapshot()["nodes"]["plant/line-1"]
    assert Nothing.asked == 0 and row["errors"] == 1 and "plain HTTP" in row["last_error"]
    silent = Collector(tmp_path / "set3", TOKEN, Nothing())
    _birth(silent, None)
    _announce(silent, 1)
    row = silent.snapshot()["nodes"]["plant/line-1"]
    assert row["pending"] and "north.collect_url" in row["last_error"]
    allowed = Collector(tmp_path / "set2", TOKEN, Nothing(), allow_http=True)
    _birth(allowed, "http://line-1.plant.example:8080/collect")
    allowed.sync(KEY)
    assert Nothing.asked == 1


def test_bad_arguments_name_the_argument(tmp_path: Path) -> None:
    """--collect without a token file, a weak token, a token file without --collect, a CA
    that is not a file: a ConfigError naming the argument."""
    token = tmp_path / "t"
    token.write_text(TOKEN)
    cases = [
        ((tmp_path / "o", None, None), r"--collect-token-file: --collect needs"),
        ((tmp_path / "o", tmp_path / "none", None), r"--collect-token-file: .*none"),
        ((None, token, None), r"--collect-token-file: only with --collect"),
        ((tmp_path / "o", token, tmp_path / "no-ca"), r"--collect-ca: .*not a file"),
    ]
    for (out, tok, ca), match in cases:
        with pytest.raises(ConfigError, match=match):
            open_collector(out, tok, ca)
    assert open_collector(None, None, None) is None


def test_the_command_line_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    """``lineside fleet --collect DIR`` without a token file exits 2 with one line naming
    the argument, no traceback."""
    r = subprocess.run(
        [sys.executable, "-m", "node", "fleet", "--collect", str(tmp_path / "o"), "--for", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and "invalid configuration" not in ln]
    assert len(lines) == 1 and "--collect-token-file" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_https_is_checked_against_the_given_ca_and_redirects_are_not_followed(
    tmp_path: Path,
) -> None:
    """Over HTTPS with the node's own certificate (as ``web.https`` serves it) the fetcher
    gets through only with that certificate as ``--collect-ca``; a redirect is answered,
    not followed (the token would go with it)."""
    pki = Pki(tmp_path / "pki")
    ensure_server_certificate(pki, "urn:lineside:test", "test")
    pem = tmp_path / "node.pem"
    cert = x509.load_der_x509_certificate(pki.cert.read_bytes())
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("authorization"))
            if self.path == "/moved":
                self.send_response(302)
                self.send_header("location", "https://elsewhere.example/")
                self.end_headers()
                return
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem, pki.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"https://localhost:{server.server_address[1]}"
        assert UrlFetcher(pem).get(url + "/x", TOKEN) == Reply(200, b"ok")
        assert seen == [f"Bearer {TOKEN}"]
        assert UrlFetcher(pem).get(url + "/moved", TOKEN).status == 302
        with pytest.raises(OSError):  # the system's CAs do not know the node's certificate
            UrlFetcher(None).get(url + "/x", TOKEN)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_table_shows_what_was_collected_per_node(tmp_path: Path) -> None:
    """With --collect each node's row carries collected, errors and pending, and the table
    grows a column for each; without it the table is as before."""
    collector = Collector(tmp_path / "set", TOKEN, ViaTestClient(None))  # type: ignore[arg-type]
    _birth(collector)
    _announce(collector, 4)
    fleet = Fleet()
    fleet.apply(Message(*KEY, Kind.NBIRTH, seq=0, bd_seq=0))
    rows = snapshot(fleet)
    plain = Console(width=300, record=True)
    plain.print(render(rows))
    assert "collected" not in plain.export_text()
    with_collect(rows, collector.snapshot())
    assert (rows[0]["collected"], rows[0]["collect_errors"], rows[0]["collect_pending"]) == (
        0,
        0,
        True,
    )
    console = Console(width=300, record=True)
    console.print(render(rows))
    text = console.export_text()
    assert "collected" in text and "collect err" in text and "0…" in text
