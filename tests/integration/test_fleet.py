"""The primary host (``node.fleet``) and lineside edge nodes fed by real audit stores
through one real Mosquitto: nodes waiting for their host, holes asked for and filled, a
rebirth on request, a clean session. (Three full sim nodes under the real ``lineside fleet``
process: tests/integration/test_north.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.fleet.host import Broker, FleetHost
from node.north import metrics as M
from node.north.publisher import NorthPublisher
from node.north.settings import NorthSettings
from node.north.sparkplug import RESEND_FROM, DataType, Metric, Payload, encode
from tests.integration.mosquitto import Mosquitto
from tests.unit.node.audit import factories as F

pytestmark = pytest.mark.slow

NODES = ("line-1", "line-2", "line-3")
RATE = 40
"""Results per second each node commits."""
IDENTITY = M.Identity("demo", "1", "ab" * 32, "moulded-plastic", "cd" * 32)


def _feed(store: AuditStore, stop: threading.Event, first: int = 0) -> None:
    """A node's line: ``RATE`` results a second into its audit store until ``stop``."""
    part = first
    t0 = time.monotonic()
    while not stop.is_set():
        store.record(F.record(part, "scratch" if part % 5 == 0 else None), None)
        part += 1
        time.sleep(max(0.0, t0 + (part - first) / RATE - time.monotonic()))
    store.flush()


def test_a_host_that_joins_late_asks_for_a_rebirth_and_then_trusts_the_node(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A node born before the host subscribed: its data are not trusted at first, the host
    sends NCMD Rebirth, and after the new birth the node is online and its results count."""
    settings = NorthSettings(enabled=True, port=broker.port, poll_ms=10, reconnect_max_s=0.2)
    stop = threading.Event()
    with AuditStore(AuditSettings(), tmp_path / "audit") as store:
        pub = NorthPublisher(
            settings,
            audit_dir=store.directory,
            state_file=tmp_path / "north.json",
            node_name="late",
            identity=IDENTITY,
        )
        with pub:
            feeder = threading.Thread(target=_feed, args=(store, stop))
            feeder.start()
            time.sleep(1.0)
            host = FleetHost(Broker("127.0.0.1", broker.port), rebirth_every_s=1.0)
            host.start()
            try:
                end = time.monotonic() + 10
                view: Any = None
                while time.monotonic() < end:
                    host.drain(0.2)
                    view = host.fleet.nodes.get(("lineside", "late"))
                    if view is not None and view.online and view.results > 20:
                        break
            finally:
                stop.set()
                feeder.join()
                host.stop()
    assert view is not None and view.online, view
    assert view.untrusted > 0 and host.rebirths_asked >= 1 and pub.rebirths >= 1
    assert view.births == 1 and view.results > 20 and view.missing == 0


def _publisher(
    settings: NorthSettings, store: AuditStore, state_file: Path, name: str
) -> NorthPublisher:
    """An edge node named ``name`` fed by ``store``."""
    return NorthPublisher(
        settings,
        audit_dir=store.directory,
        state_file=state_file,
        node_name=name,
        identity=IDENTITY,
    )


def _until(check: Any, host: FleetHost | None = None, timeout_s: float = 15.0) -> bool:
    """Wait for ``check()`` (draining ``host`` meanwhile); whether it came true."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if host is not None:
            host.drain(0.05)
        else:
            time.sleep(0.05)
        if check():
            return True
    return False


def test_nodes_wait_for_their_primary_host_and_it_misses_nothing(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Two nodes naming the host their primary host: before its STATE says online they
    publish nothing; an NCMD ``Resend From`` makes a node send its results from there again
    (the host counts them as duplicates); across a broker restart (the host's will says
    offline, the nodes wait for its next session) the host ends with exactly the results
    each store holds, none missing; the host stopping ends the nodes' sessions."""
    settings = NorthSettings(
        enabled=True,
        port=broker.port,
        poll_ms=10,
        reconnect_max_s=0.2,
        primary_host_id="plant-host",
    )
    names = NODES[:2]
    stop = threading.Event()
    host = FleetHost(Broker("127.0.0.1", broker.port), host_id="plant-host", resend_every_s=0.5)
    with ExitStack() as stack:
        stores, publishers = [], []
        for name in names:
            store = stack.enter_context(AuditStore(AuditSettings(), tmp_path / name / "audit"))
            pub = _publisher(settings, store, tmp_path / name / "north.json", name)
            stack.enter_context(pub)
            stores.append(store)
            publishers.append(pub)
        feeders = [threading.Thread(target=_feed, args=(s, stop)) for s in stores]
        for t in feeders:
            t.start()
        try:
            assert _until(lambda: all(p.sessions for p in publishers))
            time.sleep(0.5)
            waiting = [p.snapshot() for p in publishers]
            assert all(not w["connected"] and w["primary_host"] == "offline" for w in waiting)
            host.start()
            views = lambda: [host.fleet.nodes.get(("lineside", n)) for n in names]  # noqa: E731
            assert _until(lambda: all(v is not None and v.results > 40 for v in views()), host)
            asker = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="asker")
            asker.connect("127.0.0.1", broker.port)
            asker.loop_start()
            ask = Payload((Metric(RESEND_FROM, DataType.UINT64, 11),), None, 0)  # up to the newest
            asker.publish("spBv1.0/lineside/NCMD/line-1", encode(ask), qos=1).wait_for_publish(5)
            asker.disconnect()
            asker.loop_stop()
            first = views()[0]
            assert _until(lambda: first is not None and first.duplicates >= 30, host)
            broker.stop()
            time.sleep(1.0)
            broker.start()
            time.sleep(1.5)
        finally:
            stop.set()
            for t in feeders:
                t.join()
        written = [s.writer.committed for s in stores]
        done = lambda: all(  # noqa: E731
            v is not None and v.results == w for v, w in zip(views(), written, strict=True)
        )
        filled = _until(done, host, timeout_s=20)
        final = views()
        host.stop()
        ended = _until(lambda: not any(p.snapshot()["connected"] for p in publishers))
    assert filled, (written, final)
    for v in final:
        assert v is not None and v.missing == 0, v
    assert [p.resends for p in publishers] == [1, 0]
    assert ended and all(p.snapshot()["primary_host"] == "offline" for p in publishers)


def test_a_host_that_dies_without_a_word_ends_its_nodes_sessions_by_its_will(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """``lineside fleet`` killed (SIGKILL: no offline STATE, no DISCONNECT): the broker
    publishes its will, an offline STATE stamped like its birth, and the node takes it as
    the host's death — it ends its session and waits — rather than as a stale retained
    STATE older than the host's online one."""
    settings = NorthSettings(
        enabled=True, port=broker.port, poll_ms=10, primary_host_id="plant-host"
    )
    host = subprocess.Popen(
        [
            *(sys.executable, "-m", "node", "fleet", "--broker", f"127.0.0.1:{broker.port}"),
            *("--host-id", "plant-host", "--json", "--interval", "0.5"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with AuditStore(AuditSettings(), tmp_path / "audit") as store:
            pub = _publisher(settings, store, tmp_path / "north.json", "line-1")
            with pub:
                live = lambda: pub.snapshot()["connected"]  # noqa: E731
                assert _until(live, timeout_s=30), pub.snapshot()
                host.send_signal(signal.SIGKILL)
                host.wait(5)
                ended = _until(lambda: not live(), timeout_s=5)
                after = pub.snapshot()
    finally:
        if host.poll() is None:
            host.kill()
            host.wait(5)
    assert ended, after
    assert after["primary_host"] == "offline"


def test_results_the_broker_dropped_for_the_host_are_asked_for_and_filled(tmp_path: Path) -> None:
    """A broker that holds at most 5 messages for a client behind (Mosquitto's
    max_queued_messages) drops most of a 600-result backlog the node forwards the moment its
    primary host is online: the host finds the holes, asks for them, and ends with all 600
    in order, none missing."""
    (tmp_path / "broker").mkdir()
    small = Mosquitto(tmp_path / "broker", extra="allow_anonymous true\nmax_queued_messages 5")
    small.start()
    settings = NorthSettings(
        enabled=True, port=small.port, poll_ms=10, window=200, primary_host_id="plant-host"
    )
    host = FleetHost(Broker("127.0.0.1", small.port), host_id="plant-host", resend_every_s=0.3)
    try:
        with AuditStore(AuditSettings(), tmp_path / "audit") as store:
            pub = _publisher(settings, store, tmp_path / "north.json", "burst")
            with pub:
                assert _until(lambda: pub.sessions > 0)
                for part in range(600):  # committed while no host is there: held by the node
                    store.record(F.record(part, None), None)
                store.flush()
                host.start()
                view = lambda: host.fleet.nodes.get(("lineside", "burst"))  # noqa: E731
                done = _until(lambda: (v := view()) is not None and v.results == 600, host, 30)
                final = view()
                resent = pub.resent
    finally:
        host.stop()
        small.stop()
    assert done, final
    assert final is not None and final.missing == 0 and final.record_seq == 600, final
    assert host.resends_asked >= 1 and resent > 0


def test_a_host_stopped_on_purpose_finds_nothing_stale_when_it_starts_again(
    broker: Mosquitto,
) -> None:
    """The host's session is clean: what the nodes publish while it is away is not queued
    for it, and its next start does not replay old messages as news."""
    first = FleetHost(Broker("127.0.0.1", broker.port))
    first.start()
    end = time.monotonic() + 10
    while not first.connected and time.monotonic() < end:
        first.drain(0.05)
    assert first.connected
    first.stop()
    node = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="a-node")
    node.connect("127.0.0.1", broker.port)
    node.loop_start()
    body = encode(Payload(seq=0, timestamp_ms=int(time.time() * 1000)))
    node.publish("spBv1.0/lineside/NBIRTH/away", body, qos=1).wait_for_publish(5)
    node.disconnect()
    node.loop_stop()
    second = FleetHost(Broker("127.0.0.1", broker.port))
    second.start()
    try:
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            second.drain(0.05)
        assert second.connected
        assert second.fleet.nodes == {}, second.fleet.nodes
    finally:
        second.stop()
