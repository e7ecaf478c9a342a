"""The sd_notify protocol against a real unix datagram socket, as systemd would bind it."""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from node.service.sdnotify import SystemdNotifier, watchdog_interval_s


@dataclass
class Listener:
    """A bound notification socket and the NOTIFY_SOCKET value that names it."""

    sock: socket.socket
    notify_socket: str

    def recv(self) -> bytes:
        """The next datagram; fails the test if none arrives within a second."""
        return self.sock.recv(8192)

    def pending(self) -> list[bytes]:
        """Every datagram already queued, without waiting."""
        out: list[bytes] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(8192))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(1.0)


def _bind(address: str | bytes) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(1.0)
    return sock


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: sun_path holds only 108 bytes, pytest's tmp_path may not."""
    with tempfile.TemporaryDirectory(prefix="sdn") as d:
        yield Path(d)


@pytest.fixture
def path_listener(short_dir: Path) -> Iterator[Listener]:
    """A notification socket bound to a filesystem path."""
    path = short_dir / "notify"
    sock = _bind(str(path))
    yield Listener(sock, str(path))
    sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    """A notification socket in the abstract namespace (NOTIFY_SOCKET starts with '@')."""
    name = f"lineside-test-{uuid.uuid4().hex}"
    sock = _bind(b"\0" + name.encode())
    yield Listener(sock, "@" + name)
    sock.close()


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest) -> Listener:
    """Both address kinds systemd may hand us."""
    fixture = "path_listener" if request.param == "path" else "abstract_listener"
    result: Listener = request.getfixturevalue(fixture)
    return result


def test_disabled_without_notify_socket() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and every call is a no-op returning False."""
    n = SystemdNotifier({})
    assert not n.enabled
    assert not n.ready()
    assert not n.status("x")
    assert not n.watchdog()
    assert not n.stopping()
    assert not n.notify(READY=1)


def test_ready_datagram(listener: Listener) -> None:
    """ready() sends exactly READY=1 to a path or abstract socket."""
    with SystemdNotifier({"NOTIFY_SOCKET": listener.notify_socket}) as n:
        assert n.enabled
        assert n.ready()
    assert listener.recv() == b"READY=1"


def test_lifecycle_datagrams_in_order(listener: Listener) -> None:
    """status, watchdog and stopping each send their exact datagram, in call order."""
    with SystemdNotifier({"NOTIFY_SOCKET": listener.notify_socket}) as n:
        assert n.status("inspecting: 3 parts in flight")
        assert n.watchdog()
        assert n.stopping()
        assert n.watchdog_trigger()
    assert [listener.recv() for _ in range(4)] == [
        b"STATUS=inspecting: 3 parts in flight",
        b"WATCHDOG=1",
        b"STOPPING=1",
        b"WATCHDOG=trigger",
    ]


def test_ready_and_stopping_with_status(path_listener: Listener) -> None:
    """ready(status) and stopping(status) put both fields in one datagram."""
    with SystemdNotifier({"NOTIFY_SOCKET": path_listener.notify_socket}) as n:
        n.ready("running")
        n.stopping("draining 2 parts")
    assert path_listener.recv() == b"READY=1\nSTATUS=running"
    assert path_listener.recv() == b"STOPPING=1\nSTATUS=draining 2 parts"


def test_notify_fields_keep_argument_order(path_listener: Listener) -> None:
    """notify(**fields) sends KEY=value lines in argument order, ints rendered as decimals."""
    with SystemdNotifier({"NOTIFY_SOCKET": path_listener.notify_socket}) as n:
        assert n.notify(STATUS="ok", ERRNO=0, READY=1)
    assert path_listener.recv() == b"STATUS=ok\nERRNO=0\nREADY=1"


def test_reloading_and_extend_timeout(path_listener: Listener) -> None:
    """reloading() carries MONOTONIC_USEC from CLOCK_MONOTONIC; extend_timeout() converts to µs."""
    with SystemdNotifier({"NOTIFY_SOCKET": path_listener.notify_socket}) as n:
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        n.reloading()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        n.extend_timeout(2.5)
    first, second = path_listener.recv().split(b"\n")
    assert first == b"RELOADING=1"
    key, value = second.split(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert path_listener.recv() == b"EXTEND_TIMEOUT_USEC=2500000"


@pytest.mark.parametrize(
    "fields",
    [{"bad-key": 1}, {"lower": 1}, {"STATUS": "two\nlines"}, {"STATUS": "nul\0byte"}, {}],
)
def test_notify_rejects_malformed_fields(fields: dict[str, str | int]) -> None:
    """Keys that are not sd_notify names, values with newline or NUL, and no fields raise."""
    n = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/notify"})
    with pytest.raises(ValueError):
        n.notify(**fields)


@given(text=st.text(max_size=3000))
def test_status_always_sends_one_valid_line(text: str) -> None:
    """Any status text becomes one datagram of one line, without NUL, within systemd's limit."""
    name = f"lineside-test-{uuid.uuid4().hex}"
    with _bind(b"\0" + name.encode()) as sock, SystemdNotifier({"NOTIFY_SOCKET": "@" + name}) as n:
        assert n.status(text)
        data = sock.recv(8192)
    assert data.startswith(b"STATUS=")
    assert b"\n" not in data
    assert b"\0" not in data
    assert len(data) <= 4096


def test_missing_socket_fails_quietly_and_logs_once_per_streak(short_dir: Path) -> None:
    """A send to an absent socket returns False, never raises, and logs once per failure streak."""
    path = short_dir / "notify"
    n = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
    with capture_logs() as logs:
        assert not n.watchdog()
        assert not n.watchdog()
        assert not n.watchdog()
        with _bind(str(path)) as sock:
            assert n.watchdog()
            assert sock.recv(64) == b"WATCHDOG=1"
        path.unlink()
        assert not n.watchdog()
    n.close()
    events = [e["event"] for e in logs]
    assert events == ["sd_notify_failed", "sd_notify_recovered", "sd_notify_failed"]
    assert logs[1]["failed_sends"] == 3


def test_full_receiver_queue_does_not_block(path_listener: Listener) -> None:
    """When systemd does not read, sends fail with EAGAIN instead of blocking the caller."""
    with SystemdNotifier({"NOTIFY_SOCKET": path_listener.notify_socket}) as n:
        t0 = time.monotonic()
        results = [n.watchdog() for _ in range(5000)]
        elapsed = time.monotonic() - t0
    assert results[0]
    assert not results[-1]
    assert elapsed < 1.0


@pytest.mark.parametrize("value", ["vsock:2:1234", "relative/path", "@"])
def test_unsupported_address_disables(value: str) -> None:
    """A NOTIFY_SOCKET that is neither a unix path nor an abstract name disables, with a warning."""
    with capture_logs() as logs:
        n = SystemdNotifier({"NOTIFY_SOCKET": value})
    assert not n.enabled
    assert not n.ready()
    assert [e["event"] for e in logs] == ["sd_notify_unsupported_address"]


def test_reads_os_environ_by_default(
    path_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no mapping given, NOTIFY_SOCKET comes from the process environment."""
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.notify_socket)
    with SystemdNotifier() as n:
        assert n.ready()
    assert path_listener.recv() == b"READY=1"


# -- WATCHDOG_USEC / WATCHDOG_PID -----------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "10000000"}, 10.0),
        ({"WATCHDOG_USEC": "250000", "WATCHDOG_PID": "4242"}, 0.25),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "ten"}, None),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "me"}, None),
    ],
)
def test_watchdog_interval_parsing(environ: dict[str, str], expected: float | None) -> None:
    """WATCHDOG_USEC gives seconds only when valid and WATCHDOG_PID is unset or names us."""
    assert watchdog_interval_s(environ, pid=4242) == expected


def test_watchdog_interval_defaults_to_own_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without explicit arguments the environment and os.getpid() decide."""
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 3.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None


@given(usec=st.integers(min_value=1, max_value=2**63 - 1))
def test_watchdog_interval_is_usec_in_seconds(usec: int) -> None:
    """Any positive WATCHDOG_USEC converts to the same duration in seconds."""
    assert watchdog_interval_s({"WATCHDOG_USEC": str(usec)}) == usec / 1_000_000
