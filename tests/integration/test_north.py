"""The node as a Sparkplug B edge node, through a real Mosquitto broker on loopback.

Three sim nodes (``python -m node run`` on configs/sim.toml with ``[north]`` on, each
naming ``lineside fleet`` its primary host) and the real ``lineside fleet --json`` are
shared by the tests, in order: births and one DDATA per part; rebirth on NCMD; the broker
stopped and restarted mid-run; every result of every node in the fleet once and in order;
a node SIGKILLed (the broker's NDEATH, offline in the fleet) and started again. The first
node runs at the sim's 20 parts/s and is followed closely; the other two at 5 parts/s.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import tomlkit

from node.audit.reader import AuditReader
from node.config import DEFAULT_CONFIG
from node.north import metrics as M
from node.north.sparkplug import (
    BD_SEQ,
    REBIRTH,
    DataType,
    MessageType,
    Metric,
    Payload,
    encode,
    topic,
)
from tests.integration.mosquitto import Mosquitto, Seen, SparkplugHost
from tests.integration.nodeproc import start_node, stop_node
from tests.integration.waiting import wait_for

pytestmark = pytest.mark.slow

KEEPALIVE_S = 2
GROUP = "plant-a"
EDGE = "station-1"
DEVICE = "line-3"
OTHERS = ("station-2", "station-3")
HOST_ID = "plant-host"


@dataclass
class SimNode:
    """One more sim node of the rig, with its own state folder and config."""

    name: str
    state: Path
    config: Path
    proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = start_node(self.config, self.state / "node.log")

    def stop(self) -> None:
        stop_node(self.proc)

    def reader(self) -> AuditReader:
        return AuditReader(self.state / "audit", read_only=True)


class FleetView:
    """``lineside fleet --json`` as a process; its JSON lines kept as they come."""

    def __init__(self, port: int, log: Path) -> None:
        with open(log, "w", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "node", "fleet", "--broker", f"127.0.0.1:{port}"),
                    *("--host-id", HOST_ID, "--json", "--interval", "0.25"),
                ],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self.lines: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def rows(self) -> dict[str, dict[str, Any]]:
        """The newest table: rows by edge node."""
        return {r["node"]: r for r in self.lines[-1]["nodes"]} if self.lines else {}

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Rig:
    state: Path
    config: Path
    broker: Mosquitto
    host: SparkplugHost
    sub: subprocess.Popen[bytes]
    sub_out: Path
    node: subprocess.Popen[str]
    others: list[SimNode]
    fleet: FleetView

    def start_node(self) -> None:
        self.node = start_node(self.config, self.state / "node.log")

    def stop_node(self, sig: int = signal.SIGTERM) -> None:
        stop_node(self.node, sig)

    def reader(self) -> AuditReader:
        return AuditReader(self.state / "audit", read_only=True)

    def log(self) -> str:
        return (self.state / "node.log").read_text(encoding="utf-8")[-4000:]


def _wait(what: str, check: Callable[[], Any], timeout_s: float, rig: Rig) -> Any:
    return wait_for(what, check, timeout_s, context=rig.log)


def _results(seen: list[Seen]) -> list[Seen]:
    """The result DDATA messages (those carrying a record seq)."""
    return [
        s
        for s in seen
        if s.topic.message_type is MessageType.DDATA
        and s.payload is not None
        and s.payload.get(M.RECORD_SEQ) is not None
    ]


def _record_seq(s: Seen) -> int:
    assert s.payload is not None
    value = s.payload.values()[M.RECORD_SEQ]
    assert isinstance(value, int)
    return value


def _births(seen: list[Seen]) -> list[int]:
    return [i for i, s in enumerate(seen) if s.topic.message_type is MessageType.NBIRTH]


def _bd_seq(s: Seen) -> int:
    assert s.payload is not None
    value = s.payload.values()[BD_SEQ]
    assert isinstance(value, int)
    return value


def _seq_runs_without_gaps(seen: list[Seen]) -> None:
    """From each NBIRTH (seq 0) on, every message of the edge node has the next seq."""
    session: int | None = None
    for s in seen:
        if s.topic.message_type is MessageType.NDEATH or s.payload is None:
            session = None
            continue
        if s.topic.message_type is MessageType.NBIRTH:
            assert s.payload.seq == 0
            session = 0
            continue
        if session is None or s.topic.message_type in (MessageType.NCMD, MessageType.DCMD):
            continue  # commands are the host's, with the host's numbering
        assert s.payload.seq == (session + 1) % 256, (s.topic, s.payload.seq, session)
        session = s.payload.seq


def _stored(rig: Rig, seqs: list[int]) -> list[tuple[int, Any]]:
    with rig.reader() as r:
        return r.after(seqs[0] - 1, len(seqs))


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A broker, a persistent Sparkplug subscriber, mosquitto_sub, and the sim node."""
    state = tmp_path_factory.mktemp("north")
    broker = Mosquitto(state)
    broker.start()
    config = _node_config(state, broker.port, EDGE)
    others = []
    for name in OTHERS:
        folder = state / name
        folder.mkdir()
        others.append(SimNode(name, folder, _node_config(folder, broker.port, name, speed=160.0)))
    sub_out = state / "mosquitto_sub.txt"
    sub_bin = shutil.which("mosquitto_sub")
    if sub_bin is None:
        pytest.skip("mosquitto_sub is not installed (make sysdeps)")
    with open(sub_out, "wb") as out:
        sub = subprocess.Popen(
            [sub_bin, "-p", str(broker.port), "-v", "-t", "spBv1.0/#", "-F", "%t"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    fleet = FleetView(broker.port, state / "fleet.log")  # the nodes wait for it
    with SparkplugHost(broker.port, topics=f"spBv1.0/{GROUP}/+/{EDGE}/#") as host:
        rig = Rig(state, config, broker, host, sub, sub_out, None, others, fleet)  # type: ignore[arg-type]
        rig.start_node()
        for other in others:
            other.start()
        try:
            yield rig
        finally:
            rig.stop_node()
            for other in others:
                other.stop()
            fleet.stop()
            sub.terminate()
            sub.wait(5)
    broker.stop()


def _node_config(state: Path, port: int, edge: str, speed: float | None = None) -> Path:
    """configs/sim.toml for one rig node: its state folder, no HMI, ``[north]`` on with
    ``lineside fleet`` its primary host; ``speed``: the belt (mm/s; 32 mm a part)."""
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    doc["node"]["state_dir"] = str(state)  # type: ignore[index]
    doc["node"]["name"] = edge  # type: ignore[index]
    doc["hmi"]["enabled"] = False  # type: ignore[index]
    if speed is not None:
        doc["sim"]["speed_mm_s"] = speed  # type: ignore[index]
    north = tomlkit.table()
    north.update(
        {
            "enabled": True,
            "port": port,
            "group_id": GROUP,
            "edge_node_id": edge,
            "device_id": DEVICE,
            "keepalive_s": KEEPALIVE_S,
            "reconnect_max_s": 0.5,
            "poll_ms": 20.0,
            "primary_host_id": HOST_ID,
        }
    )
    doc["north"] = north
    config = state / "node.toml"
    config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return config


def test_births_then_one_ddata_per_part_in_order(rig: Rig) -> None:
    """NBIRTH (seq 0, bdSeq) and DBIRTH with every metric and its type come first; then
    each committed result arrives once, in the audit store's order, as one DDATA whose
    metrics are the record's; mosquitto_sub sees the same topics."""
    _wait("40 results", lambda: len(_results(rig.host.messages())) >= 40, 30, rig)
    seen = rig.host.messages()
    assert [s.topic.message_type for s in seen[:2]] == [MessageType.NBIRTH, MessageType.DBIRTH]
    nbirth, dbirth = seen[0], seen[1]
    assert str(nbirth.topic) == topic(GROUP, MessageType.NBIRTH, EDGE)
    assert str(dbirth.topic) == topic(GROUP, MessageType.DBIRTH, EDGE, DEVICE)
    assert nbirth.payload is not None and dbirth.payload is not None
    assert nbirth.payload.seq == 0 and dbirth.payload.seq == 1
    assert nbirth.payload.get(BD_SEQ) == Metric(
        BD_SEQ, DataType.INT64, 0, nbirth.payload.get(BD_SEQ).timestamp_ms
    )  # type: ignore[union-attr]
    assert nbirth.payload.values()[REBIRTH] is False
    announced = {m.name: m.datatype for m in dbirth.payload.metrics}
    assert announced == {m.name: m.datatype for m in M.DEVICE_METRICS}
    _seq_runs_without_gaps(seen)

    results = _results(seen)
    seqs = [_record_seq(s) for s in results]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # exactly once, in order
    stored = _stored(rig, seqs)
    for s, (seq, rec) in zip(results, stored, strict=True):
        assert s.payload is not None
        v = s.payload.values()
        assert v[M.RECORD_SEQ] == seq and v[M.PART_ID] == rec.part_id
        assert v[M.RESULT_ID] == rec.result_id and v[M.VERDICT] == rec.verdict
        assert v[M.DEFECT_TYPE] == rec.defect_type and v[M.RULE] == rec.rule
        assert v[M.SENTENCE + "en"] == rec.explanations.get("en", rec.explanation)
        assert v[M.SENTENCE + "ja"] == rec.explanations.get("ja")
        assert v[M.LATENCY_MS] == rec.latency_ms and v[M.FAIL_SAFE] == rec.fail_safe
        assert v[M.RESULT_MODEL_SHA256] == rec.model_sha256
        assert s.payload.get(M.VERDICT).is_historical is False  # type: ignore[union-attr]

    def north_status() -> dict[str, Any] | None:
        lines = [ln for ln in rig.log().splitlines() if '"node_status"' in ln]
        return json.loads(lines[-1])["north"] if lines else None

    status = _wait("the node's status", north_status, 5, rig)
    assert status["connected"] is True and status["skipped"] == 0
    assert status["edge_node_id"] == EDGE and status["sessions"] == 1

    topics = set(rig.sub_out.read_text().split("\n"))
    assert {
        f"spBv1.0/{GROUP}/NBIRTH/{EDGE}",
        f"spBv1.0/{GROUP}/DBIRTH/{EDGE}/{DEVICE}",
        f"spBv1.0/{GROUP}/DDATA/{EDGE}/{DEVICE}",
    } <= topics


def test_an_ncmd_rebirth_gets_new_births_and_loses_no_result(rig: Rig) -> None:
    """Node Control/Rebirth in an NCMD: NBIRTH (seq 0, same bdSeq) and DBIRTH again, and the
    results go on without a gap or a repeat."""
    mark = len(rig.host.messages())
    bd = _bd_seq(rig.host.messages()[_births(rig.host.messages())[-1]])
    command = Payload((Metric(REBIRTH, DataType.BOOLEAN, True),), seq=0, timestamp_ms=1)
    rig.host.publish(topic(GROUP, MessageType.NCMD, EDGE), encode(command))
    _wait("a new NBIRTH", lambda: _births(rig.host.messages(mark)), 10, rig)
    _wait("results after it", lambda: len(_results(rig.host.messages(mark))) >= 10, 10, rig)
    after = rig.host.messages(mark)
    i = _births(after)[0]
    assert _bd_seq(after[i]) == bd
    assert after[i + 1].topic.message_type is MessageType.DBIRTH
    seen = rig.host.messages()
    _seq_runs_without_gaps(seen)
    seqs = [_record_seq(s) for s in _results(seen)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_a_broker_restart_loses_no_result_and_costs_the_line_nothing(rig: Rig) -> None:
    """Broker stopped for 5 s and started again: a new session (NBIRTH seq 0, bdSeq + 1),
    then every result committed meanwhile, flagged historical, in order, none missing or
    repeated; the line made no fail-safe reject in that time."""
    seen = rig.host.messages()
    bd = _bd_seq(seen[_births(seen)[-1]])
    mark = len(seen)
    t0 = time.time_ns()
    rig.broker.stop()
    time.sleep(5.0)
    rig.broker.start()
    t_back = time.time_ns()
    births = _wait("a new NBIRTH", lambda: _births(rig.host.messages(mark)), 15, rig)
    with rig.reader() as r:
        last = r.last_seq()
    _wait(
        "every result committed so far",
        lambda: any(_record_seq(s) >= last for s in _results(rig.host.messages(mark))),
        15,
        rig,
    )
    after = rig.host.messages(mark)
    assert _bd_seq(after[births[0]]) == (bd + 1) % 256
    seen = rig.host.messages()
    _seq_runs_without_gaps(seen)
    seqs = [_record_seq(s) for s in _results(seen)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # nothing lost, nothing twice
    historical = [
        s
        for s in _results(after)
        if s.payload is not None and s.payload.get(M.VERDICT).is_historical  # type: ignore[union-attr]
    ]
    assert len(historical) >= 50  # 5 s of a 20 parts/s line waited in the store
    t2 = time.time_ns()  # the backlog is through: the outage is over for the line too
    with rig.reader() as r:
        records = [rec for _, rec in r.after(0, 100_000)]
    during = [rec for rec in records if t0 <= rec.wall_time_ns <= t2]
    before = [rec for rec in records if 2 * t0 - t2 <= rec.wall_time_ns < t0]
    assert len(during) >= 80
    # The machine is shared: a busy neighbour costs fail-safes (trigger_late: the process
    # was not scheduled for tens of ms) at any time. The broker's absence must cost none
    # beyond that noise: no more than in as long a time just before, give or take 2.
    failed, failed_before = sum(r.fail_safe for r in during), sum(r.fail_safe for r in before)
    assert failed <= 2 * failed_before + 2, (
        f"broker back at {(t_back - t0) / 1e9:.1f} s, backlog through at {(t2 - t0) / 1e9:.1f} s",
        [
            (r.part_id, r.reason, round((r.wall_time_ns - t0) / 1e9, 2))
            for r in during
            if r.fail_safe
        ],
        [(r.part_id, r.reason) for r in before if r.fail_safe],
    )


def test_lineside_fleet_has_every_result_of_every_node_once_in_order(rig: Rig) -> None:
    """After the broker restart, ``lineside fleet`` (the nodes' primary host, a process of
    its own) holds for each of the three nodes exactly the results its audit store
    committed — every one, none missing, none held past a hole — each node online."""
    readers = [("station-1", rig.reader)] + [(o.name, o.reader) for o in rig.others]

    def committed() -> dict[str, int]:
        out = {}
        for name, reader in readers:
            with reader() as r:
                out[name] = r.last_seq()
        return out

    def caught_up() -> dict[str, Any] | None:
        rows, want = rig.fleet.rows(), committed()
        done = all(
            name in rows and rows[name]["results"] >= n and rows[name]["online"]
            for name, n in want.items()
        )
        return rows if done else None

    rows = _wait("the fleet has every result", caught_up, 20, rig)
    for name, _ in readers:
        r = rows[name]
        # every record since the node's first start (record seqs count from 1); a few more
        # may have come since the stores were read
        assert r["missing"] == 0 and r["held"] == 0, r
        assert r["results"] >= 20 and r["inspected"] is not None, r
        assert r["model_sha256"] and r["births"] >= 1, r
    assert rig.fleet.lines[-1]["bad_messages"] == 0
    with rig.reader() as reader:
        assert rows["station-1"]["results"] <= reader.last_seq()


def test_a_killed_node_dies_on_the_bus_and_resumes_where_it_left(rig: Rig) -> None:
    """SIGKILL: the broker publishes the node's NDEATH (its bdSeq that of the NBIRTH) within
    the keep-alive; started again, the node births with the next bdSeq and forwards from
    its cursor: no result is missing."""
    seen = rig.host.messages()
    bd = _bd_seq(seen[_births(seen)[-1]])
    mark = len(seen)
    killed = time.monotonic()
    rig.stop_node(signal.SIGKILL)

    def death() -> Seen | None:
        deaths = [s for s in rig.host.messages(mark) if s.topic.message_type is MessageType.NDEATH]
        return deaths[0] if deaths else None

    ndeath = _wait("the NDEATH", death, 1.5 * KEEPALIVE_S + 1, rig)
    assert ndeath.t - killed <= 1.5 * KEEPALIVE_S
    offline = _wait(
        "offline in lineside fleet", lambda: not rig.fleet.rows()[EDGE]["online"], 2, rig
    )
    assert offline and time.monotonic() - killed <= 1.5 * KEEPALIVE_S + 1
    assert ndeath.payload is not None and _bd_seq(ndeath) == bd and ndeath.payload.seq is None
    last_before = max(_record_seq(s) for s in _results(rig.host.messages()))

    mark = len(rig.host.messages())
    rig.start_node()
    births = _wait("the restarted node's NBIRTH", lambda: _births(rig.host.messages(mark)), 30, rig)
    assert _bd_seq(rig.host.messages(mark)[births[0]]) == (bd + 1) % 256
    _wait(
        "results after the restart", lambda: len(_results(rig.host.messages(mark))) >= 20, 20, rig
    )
    resumed = [_record_seq(s) for s in _results(rig.host.messages(mark))]
    # the cursor is saved every 0.2 s or 20 results: what the broker acknowledged since may
    # come again (at 20 parts/s, after a backlog burst up to 20), but nothing is skipped
    assert last_before - 25 <= resumed[0] <= last_before + 1
    assert resumed == list(range(resumed[0], resumed[0] + len(resumed)))
    rig.stop_node()
    deaths = [s for s in rig.host.messages(mark) if s.topic.message_type is MessageType.NDEATH]
    assert deaths and _bd_seq(deaths[-1]) == (bd + 1) % 256  # the clean stop says goodbye
