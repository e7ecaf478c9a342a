"""The Sparkplug B edge node on its own, fed from a real audit store, through Mosquitto:
a backlog past ``north.max_backlog``, state changes, a clean stop, TLS with a password."""

from __future__ import annotations

import datetime
import ipaddress
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from structlog.testing import capture_logs

from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.north import metrics as M
from node.north.publisher import NorthPublisher
from node.north.settings import NorthSettings
from node.north.sparkplug import BD_SEQ, MessageType
from tests.integration.mosquitto import Mosquitto, Seen, SparkplugHost
from tests.integration.waiting import wait_for
from tests.unit.node.audit import factories as F

IDENTITY = M.Identity("classical", "1.2.0", "ab" * 32, "default", "cd" * 32)


def _wait(what: str, check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    return wait_for(what, check, timeout_s, poll_s=0.02)


def _of(seen: list[Seen], kind: MessageType) -> list[Seen]:
    return [s for s in seen if s.topic.message_type is kind]


def _data(seen: list[Seen]) -> list[Seen]:
    """The DDATA messages but the quiet line's progress note (``Result/Newest Seq`` alone)."""
    return [
        s
        for s in _of(seen, MessageType.DDATA)
        if s.payload is None or set(s.payload.values()) != {M.NEWEST_SEQ}
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(AuditSettings(), tmp_path / "audit") as s:
        yield s


def _add(store: AuditStore, first: int, n: int) -> None:
    for part in range(first, first + n):
        store.record(F.record(part, "scratch" if part % 3 == 0 else None), None)
    store.flush()


def test_a_backlog_past_its_limit_is_skipped_counted_and_the_rest_forwarded(
    tmp_path: Path, store: AuditStore
) -> None:
    """History from before the first start is not replayed; with the broker away, more than
    max_backlog results waiting: the oldest are skipped (logged, counted in the status and in
    Counters/North Skipped); the rest arrive, historical, in order, when it returns; a state
    change is a DDATA; a clean stop sends NDEATH and keeps the cursor."""
    broker = Mosquitto(tmp_path)
    broker.start()
    with SparkplugHost(broker.port):  # a persistent session: it misses nothing later
        pass
    broker.stop()
    _add(store, 1, 5)  # before the edge node ever ran
    settings = NorthSettings(
        enabled=True, port=broker.port, max_backlog=10, poll_ms=10, reconnect_max_s=0.2
    )
    cursor_file = tmp_path / "north" / "cursor.json"
    publisher = NorthPublisher(
        settings,
        audit_dir=store.directory,
        state_file=cursor_file,
        node_name="station/1",
        identity=IDENTITY,
    )
    host = SparkplugHost(broker.port)
    with capture_logs() as logs:
        with publisher:
            publisher.set_state("ContinuousExecution", "started")
            assert publisher.alarm() is None  # before the backlog: the thread may skip at once
            _add(store, 6, 30)
            _wait("the skip", lambda: publisher.snapshot()["skipped"] == 20)
            assert publisher.alarm() == (
                "20 results never sent north: more than north.max_backlog waited"
            )
            broker.start()
            host.__enter__()
            _wait("ten results", lambda: len(_data(host.messages())) >= 10)
            publisher.set_state("Error", "camera: no frames")
            _wait("the state", lambda: len(_data(host.messages())) >= 11)
            assert publisher.snapshot()["connected"] is True
        try:
            _wait("the NDEATH", lambda: _of(host.messages(), MessageType.NDEATH))
        finally:
            host.__exit__()
            broker.stop()
    assert any(e["event"] == "north_backlog_skipped" and e["skipped"] == 20 for e in logs)
    seen = host.messages()
    assert str(seen[0].topic) == "spBv1.0/lineside/NBIRTH/station-1"  # '/' made valid
    assert seen[0].payload is not None and seen[1].payload is not None
    bd = seen[0].payload.values()[BD_SEQ]
    birth = seen[1].payload.values()
    assert birth[M.SKIPPED] == 20 and birth[M.STATE] == "ContinuousExecution"
    assert birth[M.MODEL_SHA256] == "ab" * 32
    assert birth[M.PART_ID] == 5  # the result at its cursor: the newest when it first started
    data = [d.payload for d in _data(seen) if d.payload is not None]
    assert [d.values()[M.PART_ID] for d in data[:10]] == list(range(26, 36))
    assert all(d.get(M.VERDICT).is_historical for d in data[:10])  # type: ignore[union-attr]
    assert data[9].values()[M.INSPECTED] == 10 and data[9].values()[M.SKIPPED] == 20
    assert data[10].values() == {M.STATE: "Error", M.STATE_DETAIL: "camera: no frames"}
    (death,) = _of(seen, MessageType.NDEATH)
    assert death.payload is not None and death.payload.values() == {BD_SEQ: bd}
    assert json.loads(cursor_file.read_text()) == {
        "seq": 35,
        "bd_seq": 0,
        "skipped": 20,
        "review_seq": 0,  # no review in the store: none announced
    }


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM files."""
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("test CA"))
        .issuer_name(name("test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = (folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.parametrize("password", ["s3cret-pass", "wrong"])
def test_tls_and_a_password_from_the_environment(
    tmp_path: Path, store: AuditStore, monkeypatch: pytest.MonkeyPatch, password: str
) -> None:
    """Over TLS (the broker's certificate checked against north.ca_file) with the password
    from north.password_env, the node births and an independent TLS client sees it; a wrong
    password is refused, said in the status, and retried."""
    ca, cert, key = _certificates(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwd), "edge", "s3cret-pass"], check=True)
    broker = Mosquitto(
        tmp_path,
        extra=(
            f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
            f"allow_anonymous false\npassword_file {passwd}"
        ),
    )
    broker.start()
    monkeypatch.setenv("NORTH_PASSWORD", password)
    settings = NorthSettings(
        enabled=True,
        port=broker.port,
        tls=True,
        ca_file=ca,
        username="edge",
        password_env="NORTH_PASSWORD",
        reconnect_max_s=0.2,
    )
    sub_args = ["-h", "127.0.0.1", "-p", str(broker.port), "--cafile", str(ca)]
    sub_args += ["-u", "edge", "-P", "s3cret-pass", "-t", "spBv1.0/#", "-F", "%t", "-C", "1"]
    sub = subprocess.Popen(
        ["mosquitto_sub", *sub_args, "-W", "10"],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)  # subscribed before the node births
    publisher = NorthPublisher(
        settings,
        audit_dir=store.directory,
        state_file=tmp_path / "cursor.json",
        node_name="station-1",
        identity=IDENTITY,
        password=settings.password(),
    )
    try:
        with publisher:
            if password == "s3cret-pass":
                out, _ = sub.communicate(timeout=15)
                assert out.strip() == "spBv1.0/lineside/NBIRTH/station-1"
                assert publisher.snapshot()["connected"] is True
            else:
                _wait("the refusal", lambda: "refused" in publisher.snapshot()["last_error"])
                assert publisher.snapshot()["connected"] is False
                assert publisher.snapshot()["sessions"] == 0
    finally:
        sub.kill()
        sub.communicate(timeout=5)
        broker.stop()


def test_at_qos_0_results_go_out_in_order_as_the_specification_asks(
    tmp_path: Path, store: AuditStore
) -> None:
    """north.qos = 0: results written to the socket count as forwarded; all arrive in
    order and the cursor ends at the last one."""
    broker = Mosquitto(tmp_path)
    broker.start()
    settings = NorthSettings(enabled=True, port=broker.port, qos=0, poll_ms=10)
    cursor_file = tmp_path / "cursor.json"
    publisher = NorthPublisher(
        settings,
        audit_dir=store.directory,
        state_file=cursor_file,
        node_name="station-1",
        identity=IDENTITY,
    )
    try:
        with SparkplugHost(broker.port) as host:
            with publisher:
                _wait("the births", lambda: _of(host.messages(), MessageType.DBIRTH))
                _add(store, 1, 40)
                _wait("40 results", lambda: len(_data(host.messages())) >= 40)
                _wait("the cursor", lambda: publisher.snapshot()["cursor"] == 40)
            data = [d.payload for d in _data(host.messages()) if d.payload]
            assert [d.values()[M.RECORD_SEQ] for d in data] == list(range(1, 41))
            assert [d.seq for d in data] == list(range(2, 42))
    finally:
        broker.stop()
    assert json.loads(cursor_file.read_text())["seq"] == 40


@pytest.mark.parametrize("cursor", ['{"seq": 999, "bd_seq": 7, "skipped": 0}', "{not json"])
def test_a_cursor_that_does_not_fit_the_store_is_not_trusted(
    tmp_path: Path, store: AuditStore, cursor: str
) -> None:
    """A cursor past the store's newest record (the store was replaced) sends the whole new
    store; an unreadable one is logged and treated as a first start. A command that is no
    Sparkplug payload is logged and changes nothing."""
    broker = Mosquitto(tmp_path)
    broker.start()
    _add(store, 1, 5)
    cursor_file = tmp_path / "cursor.json"
    cursor_file.write_text(cursor)
    publisher = NorthPublisher(
        NorthSettings(enabled=True, port=broker.port, poll_ms=10),
        audit_dir=store.directory,
        state_file=cursor_file,
        node_name="station-1",
        identity=IDENTITY,
    )
    try:
        with capture_logs() as logs, SparkplugHost(broker.port) as host, publisher:
            _wait("the births", lambda: _of(host.messages(), MessageType.DBIRTH))
            host.publish("spBv1.0/lineside/NCMD/station-1", b"\xff\xff not protobuf")
            _add(store, 6, 2)
            _wait("the new results", lambda: publisher.snapshot()["cursor"] == 7)
            data = [d.payload for d in _data(host.messages()) if d.payload]
            assert publisher.snapshot()["connected"] is True
    finally:
        broker.stop()
    seqs = [d.values()[M.RECORD_SEQ] for d in data]
    events = {e["event"] for e in logs}
    assert "north_command_unreadable" in events
    if cursor.startswith("{not"):
        assert seqs == [6, 7] and "north_cursor_unreadable" in events
        assert json.loads(cursor_file.read_text())["bd_seq"] == 0
    else:
        assert seqs == [1, 2, 3, 4, 5, 6, 7] and "north_cursor_ahead_of_store" in events
        assert json.loads(cursor_file.read_text())["bd_seq"] == 8  # the next session's


def test_an_error_in_the_thread_ends_the_session_with_its_death_and_loses_nothing(
    tmp_path: Path, store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error while connected (injected once): the session says its NDEATH, a
    new one births with the next bdSeq, and the results go on from the cursor, none lost."""
    broker = Mosquitto(tmp_path)
    broker.start()
    publisher = NorthPublisher(
        NorthSettings(enabled=True, port=broker.port, poll_ms=10, reconnect_max_s=0.2),
        audit_dir=store.directory,
        state_file=tmp_path / "cursor.json",
        node_name="station-1",
        identity=IDENTITY,
    )
    pump = NorthPublisher._pump
    armed = {"fail": False}

    def failing_pump(self: NorthPublisher, reader: Any) -> None:
        if armed["fail"]:
            armed["fail"] = False
            raise RuntimeError("injected")
        pump(self, reader)

    monkeypatch.setattr(NorthPublisher, "_pump", failing_pump)
    try:
        with capture_logs() as logs, SparkplugHost(broker.port) as host, publisher:
            _wait("the births", lambda: _of(host.messages(), MessageType.DBIRTH))
            _add(store, 1, 5)
            _wait("five results", lambda: len(_data(host.messages())) >= 5)
            armed["fail"] = True
            _add(store, 6, 5)
            _wait("the second birth", lambda: len(_of(host.messages(), MessageType.NBIRTH)) == 2)
            _wait("ten results", lambda: publisher.snapshot()["cursor"] == 10)
            seen = host.messages()
    finally:
        broker.stop()
    assert any(e["event"] == "north_failed" for e in logs)
    kinds = [s.topic.message_type for s in seen]
    death = kinds.index(MessageType.NDEATH)
    assert kinds[death + 1] is MessageType.NBIRTH
    births = [s.payload.values()[BD_SEQ] for s in _of(seen, MessageType.NBIRTH) if s.payload]
    assert births == [0, 1] and seen[death].payload is not None
    assert seen[death].payload.values()[BD_SEQ] == 0
    data = [d.payload for d in _data(seen) if d.payload]
    assert sorted({d.values()[M.RECORD_SEQ] for d in data}) == list(range(1, 11))
