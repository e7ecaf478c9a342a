"""``lineside fleet --collect`` against the real pieces: reviews made in a node's audit store
are announced by its edge node through Mosquitto, fetched from the real ``lineside web``
process with the plant's token, and land as one MVTec-layout set; a fleet with a wrong
token is refused (401) and writes nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from models.data.mvtec import read_mvtec
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.config import DEFAULT_CONFIG
from node.north import metrics as M
from node.north.publisher import NorthPublisher
from node.north.settings import NorthSettings
from tests.integration.mosquitto import Mosquitto
from tests.unit.node.audit import factories as F

pytestmark = pytest.mark.slow

TOKEN = "plant-collect-token-0123456789"
IDENTITY = M.Identity("demo", "1", "ab" * 32, "moulded-plastic", "cd" * 32)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A ``lineside`` child process logging to ``log``; with ``report`` its stdout lines
    (``fleet --json``) are gathered by a thread, else they go to the log too."""

    def __init__(self, args: list[str], log: Path, *, report: bool = True) -> None:
        self.log = log
        with open(log, "w", encoding="utf-8") as err:
            self.p = subprocess.Popen(
                [sys.executable, "-m", "node", "--json-logs", *args],
                stdout=subprocess.PIPE if report else err,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        if self.p.stdout is None:
            return
        for line in self.p.stdout:
            self.lines.append(line)

    def last_json(self) -> dict[str, Any] | None:
        return json.loads(self.lines[-1]) if self.lines else None

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGINT)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self._reader.join(5)
        if self.p.stdout is not None:
            self.p.stdout.close()


def _wait(what: str, check: Callable[[], Any], timeout_s: float, *logs: Path) -> Any:
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        try:
            last = check()
        except (OSError, ValueError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.2)
    tails = "\n".join(f"{p.name}: {p.read_text()[-2000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})\n{tails}")


def _status(web_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/status", timeout=2) as r:
        return dict(json.loads(r.read()))


def _web_config(state: Path, web_port: int, token_file: Path) -> Path:
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    doc["node"]["state_dir"] = str(state)  # type: ignore[index]
    # the web view follows a node that is not there (retrying): it serves the store anyway
    doc["hmi"]["endpoint"] = f"opc.tcp://127.0.0.1:{_free_port()}/lineside/"  # type: ignore[index]
    doc["web"] = {
        "host": "127.0.0.1",
        "port": web_port,
        "collect_token_file": str(token_file),
        "nice": 0,
    }
    config = state / "node.toml"
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return config


def test_reviews_are_announced_fetched_and_gathered_and_a_wrong_token_gets_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Three reviews made on a node while two ``lineside fleet --collect`` follow it: the one
    with the plant's token writes train/good and test/<type> with the node's very images
    and a manifest naming node, reviewer and label; the one with a wrong token is refused
    (401, counted on both sides) and its folder holds no image."""
    state = tmp_path / "node"
    state.mkdir()
    good_token, bad_token = tmp_path / "token", tmp_path / "wrong"
    good_token.write_text(TOKEN + "\n")
    bad_token.write_text("not-the-plant-token-000000\n")
    web_port = _free_port()
    web = Proc(
        ["web", str(_web_config(state, web_port, good_token))], tmp_path / "web.log", report=False
    )
    sets = {"good": tmp_path / "set", "wrong": tmp_path / "set-wrong"}
    fleets = {
        name: Proc(
            [
                *("fleet", "--broker", f"127.0.0.1:{broker.port}", "--host-id", f"fleet-{name}"),
                *("--json", "--interval", "0.3", "--for", "45"),
                *("--collect", str(out), "--collect-token-file", str(token)),
            ],
            tmp_path / f"fleet-{name}.log",
        )
        for (name, out), token in zip(sets.items(), (good_token, bad_token), strict=True)
    }
    logs = [tmp_path / "web.log", *(f.log for f in fleets.values())]
    try:
        with AuditStore(AuditSettings(sample_passes=1.0), state / "audit") as store:
            for part, kind in ((1, "scratch"), (2, None), (3, "crack"), (4, "scratch")):
                store.record(F.record(part, kind), F.image(part))
            store.flush()
            for f in fleets.values():
                _wait(
                    "the fleet connected",
                    lambda f=f: (f.last_json() or {}).get("connected"),
                    30,
                    *logs,
                )
            _wait(
                "the web view serving",
                lambda: _status(web_port)["feed"] is not None,  # the store open
                60,
                *logs,
            )
            settings = NorthSettings(
                enabled=True,
                port=broker.port,
                poll_ms=10,
                reconnect_max_s=0.2,
                collect_url=f"http://127.0.0.1:{web_port}/collect",
            )
            publisher = NorthPublisher(
                settings,
                audit_dir=store.directory,
                state_file=state / "north.json",
                node_name="line-7",
                identity=IDENTITY,
            )
            with publisher:
                store.review("run1-1", "reject", None, "", "olga")
                store.review("run1-2", "pass", None, "", "olga")
                store.review("run1-3", "reject", "dent", "a dent, not a crack", "emil")
                _wait(
                    "three images gathered",
                    lambda: (
                        (fleets["good"].last_json() or {}).get("collect", {}).get("images") == 3
                    ),
                    30,
                    *logs,
                )
                _wait(
                    "the wrong token refused",
                    lambda: (fleets["wrong"].last_json() or {}).get("collect", {}).get("refused"),
                    30,
                    *logs,
                )
                _wait(
                    "each review announced, acknowledged by the broker",
                    lambda: publisher.snapshot()["reviews_announced"] == 3,
                    10,
                )
            assert _status(web_port)["collect"]["refused"] >= 1
            kept = {
                rid: (store.directory / "images" / rec.image_path).read_bytes()
                for rid in ("run1-1", "run1-2", "run1-3")
                if (rec := store.get(rid)) is not None and rec.image_path is not None
            }
    finally:
        for p in (*fleets.values(), web):
            p.stop()
    out = sets["good"]
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.png")}
    assert files == {
        "test/dent/lineside-line-7-run1-3.png": kept["run1-3"],
        "test/scratch/lineside-line-7-run1-1.png": kept["run1-1"],
        "train/good/lineside-line-7-run1-2.png": kept["run1-2"],
    }
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [(m["edge_node"], m["result_id"], m["reviewer"], m["label"]) for m in manifest] == [
        ("line-7", "run1-3", "emil", "test/dent"),
        ("line-7", "run1-1", "olga", "test/scratch"),
        ("line-7", "run1-2", "olga", "train/good"),
    ]
    assert sorted(read_mvtec(out).defect_types) == ["dent", "scratch"]
    assert list(sets["wrong"].rglob("*.png")) == []
    assert not (sets["wrong"] / "manifest.jsonl").exists()
    final = fleets["good"].last_json()
    assert final is not None
    node = final["collect"]["nodes"]["lineside/line-7"]
    assert (node["collected"], node["errors"], node["review_seq"]) == (3, 0, 3)
    row = next(r for r in final["nodes"] if r["node"] == "line-7")
    assert row["collected"] == 3
