"""ProgressWatchdog: health from stage beats, and feeding systemd only while healthy."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from node.service.sdnotify import SystemdNotifier
from node.service.watchdog import ProgressWatchdog


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, dt: float) -> None:
        self.now += dt


class Listener:
    """A real notification socket in the abstract namespace, and a notifier aimed at it."""

    def __init__(self) -> None:
        name = f"lineside-wd-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + name.encode())
        self.sock.setblocking(False)
        self.notifier = SystemdNotifier({"NOTIFY_SOCKET": "@" + name})

    def pending(self) -> list[bytes]:
        """Every datagram received so far, without waiting."""
        out: list[bytes] = []
        try:
            while True:
                out.append(self.sock.recv(256))
        except BlockingIOError:
            return out

    async def next(self, timeout_s: float = 1.0) -> bytes:
        """The next datagram, waiting up to ``timeout_s`` for it."""
        async with asyncio.timeout(timeout_s):
            return await asyncio.get_running_loop().sock_recv(self.sock, 256)

    def close(self) -> None:
        self.notifier.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """A bound systemd-style notification socket."""
    lst = Listener()
    yield lst
    lst.close()


class Health:
    """Records health-change callbacks and lets a test await a given state."""

    def __init__(self, wd: ProgressWatchdog) -> None:
        self.changes: list[bool] = []
        self._events = {True: asyncio.Event(), False: asyncio.Event()}
        wd.on_health_change(self)

    def __call__(self, healthy: bool) -> None:
        self.changes.append(healthy)
        self._events[not healthy].clear()
        self._events[healthy].set()

    async def wait_for(self, healthy: bool, timeout_s: float = 1.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self._events[healthy].wait()


# -- health from beats (fake clock) ---------------------------------------------------------


def _wd(clock: FakeClock, stall_after_s: float = 2.0) -> ProgressWatchdog:
    return ProgressWatchdog(
        SystemdNotifier({}), feed_interval_s=1.0, stall_after_s=stall_after_s, clock=clock
    )


def test_stage_stalls_after_limit_without_beat() -> None:
    """An active stage is healthy until stall_after_s passes without a beat, then stalled."""
    clock = FakeClock()
    wd = _wd(clock)
    wd.register("encoder")
    wd.register("pipeline")
    clock.advance(1.9)
    wd.beat("pipeline")
    assert wd.healthy()
    clock.advance(0.1)  # encoder: exactly 2.0 s since registration
    assert wd.stalled_stages() == ["encoder"]
    assert not wd.healthy()
    wd.beat("encoder")
    assert wd.healthy()
    clock.advance(2.5)
    assert wd.stalled_stages() == ["encoder", "pipeline"]


def test_idle_stage_is_never_stalled() -> None:
    """A stage marked idle stays healthy however long it does not beat."""
    clock = FakeClock()
    wd = _wd(clock)
    wd.register("pipeline", idle=True)
    clock.advance(3600)
    assert wd.healthy()
    wd.idle("pipeline")
    wd.register("encoder")
    clock.advance(3600)
    assert wd.stalled_stages() == ["encoder"]


def test_leaving_idle_restarts_the_stall_timer() -> None:
    """Going idle -> active starts a fresh stall period; active -> active does not extend it."""
    clock = FakeClock()
    wd = _wd(clock)
    wd.register("pipeline", idle=True)
    clock.advance(100)
    wd.idle("pipeline", False)
    assert wd.healthy()
    clock.advance(1.5)
    wd.idle("pipeline", False)  # repeated "still active" must not hide a stall
    clock.advance(0.5)
    assert wd.stalled_stages() == ["pipeline"]


def test_per_stage_stall_limit() -> None:
    """A stage registered with its own stall_after_s uses it instead of the default."""
    clock = FakeClock()
    wd = _wd(clock, stall_after_s=5.0)
    wd.register("encoder", stall_after_s=0.5)
    wd.register("pipeline")
    clock.advance(0.6)
    assert wd.stalled_stages() == ["encoder"]


def test_no_stages_is_healthy() -> None:
    """With nothing registered there is nothing to stall."""
    assert _wd(FakeClock()).healthy()


def test_misuse_raises() -> None:
    """Unknown stages, duplicate registration and non-positive intervals are programming errors."""
    wd = _wd(FakeClock())
    wd.register("encoder")
    with pytest.raises(ValueError):
        wd.register("encoder")
    with pytest.raises(KeyError):
        wd.beat("camera")
    with pytest.raises(KeyError):
        wd.idle("camera")
    with pytest.raises(ValueError):
        wd.register("x", stall_after_s=0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            ProgressWatchdog(SystemdNotifier({}), feed_interval_s=bad, stall_after_s=1.0)
        with pytest.raises(ValueError):
            ProgressWatchdog(SystemdNotifier({}), feed_interval_s=1.0, stall_after_s=bad)


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["beat", "wait"]), st.floats(min_value=0.0, max_value=3.0)),
        max_size=30,
    )
)
def test_stalled_iff_last_beat_too_old(steps: list[tuple[str, float]]) -> None:
    """For any beat/wait sequence, a stage is stalled exactly when its last beat is >= limit ago."""
    clock = FakeClock()
    wd = _wd(clock, stall_after_s=1.0)
    wd.register("encoder")
    last = clock.now
    for op, dt in steps:
        if op == "beat":
            wd.beat("encoder")
            last = clock.now
        else:
            clock.advance(dt)
        assert wd.healthy() == (clock.now - last < 1.0)


# -- feeding (real socket, small real intervals) --------------------------------------------


async def test_feeds_while_stages_beat(listener: Listener) -> None:
    """While every stage beats, WATCHDOG=1 arrives about every feed interval."""
    wd = ProgressWatchdog(listener.notifier, feed_interval_s=0.02, stall_after_s=0.2)
    wd.register("encoder")
    wd.register("pipeline")
    health = Health(wd)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(wd.run(stop))
        for _ in range(20):
            wd.beat("encoder")
            wd.beat("pipeline")
            await asyncio.sleep(0.01)
        stop.set()
    fed = listener.pending()
    assert len(fed) >= 3
    assert set(fed) == {b"WATCHDOG=1"}
    assert health.changes == [True]


async def test_stops_feeding_on_stall_and_resumes_on_recovery(listener: Listener) -> None:
    """A stalled stage stops the feeding (logged once); its next beat resumes it (logged)."""
    wd = ProgressWatchdog(listener.notifier, feed_interval_s=0.02, stall_after_s=0.1)
    wd.register("encoder")
    wd.register("pipeline")
    health = Health(wd)
    stop = asyncio.Event()
    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(wd.run(stop))
            await health.wait_for(True)
            wd.beat("pipeline")
            # The encoder keeps beating; the pipeline does not.
            async with asyncio.timeout(1.0):
                while health.changes[-1]:
                    wd.beat("encoder")
                    await asyncio.sleep(0.01)
            assert wd.stalled_stages() == ["pipeline"]
            listener.pending()  # feeds from before the stall
            for _ in range(20):
                wd.beat("encoder")
                await asyncio.sleep(0.01)
            assert listener.pending() == []  # starved: not a single feed
            wd.beat("pipeline")
            wd.beat("encoder")
            await health.wait_for(True)
            assert await listener.next() == b"WATCHDOG=1"
            stop.set()
    assert health.changes == [True, False, True]
    events = [e for e in logs if e["event"].startswith("watchdog_")]
    assert [e["event"] for e in events] == [
        "watchdog_started",
        "watchdog_starved",
        "watchdog_recovered",
    ]
    assert events[1]["stalled_stages"] == ["pipeline"]
    assert events[1]["log_level"] == "error"


async def test_idle_stage_keeps_feeding(listener: Listener) -> None:
    """A stage marked idle (belt stopped) does not stop the feeding."""
    wd = ProgressWatchdog(listener.notifier, feed_interval_s=0.02, stall_after_s=0.05)
    wd.register("encoder")
    wd.register("pipeline", idle=True)
    health = Health(wd)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(wd.run(stop))
        for _ in range(20):
            wd.beat("encoder")
            await asyncio.sleep(0.01)
        stop.set()
    assert health.changes == [True]
    assert len(listener.pending()) >= 3


async def test_starts_starved_when_stage_already_stale(listener: Listener) -> None:
    """A stage already stalled when run() starts is announced unhealthy and never fed."""
    clock = FakeClock()
    wd = ProgressWatchdog(listener.notifier, feed_interval_s=0.02, stall_after_s=0.05, clock=clock)
    wd.register("encoder")
    clock.advance(1.0)
    health = Health(wd)
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(wd.run(stop))
        await health.wait_for(False)
        await asyncio.sleep(0.1)  # several rechecks
        stop.set()
    assert health.changes == [False]
    assert wd.feeding is False
    assert listener.pending() == []


async def test_stop_returns_promptly_and_disabled_notifier_still_reports() -> None:
    """run() returns as soon as stop is set, even mid-interval; callbacks work without systemd."""
    wd = ProgressWatchdog(SystemdNotifier({}), feed_interval_s=30.0, stall_after_s=30.0)
    wd.register("encoder")
    health = Health(wd)
    stop = asyncio.Event()
    async with asyncio.timeout(1.0), asyncio.TaskGroup() as tg:
        tg.create_task(wd.run(stop))
        await health.wait_for(True)
        stop.set()
    assert health.changes == [True]


async def test_cancellation_propagates() -> None:
    """Cancelling the task running run() cancels it; CancelledError is not swallowed."""
    wd = ProgressWatchdog(SystemdNotifier({}), feed_interval_s=30.0, stall_after_s=30.0)
    health = Health(wd)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(wd.run(asyncio.Event()))
        await health.wait_for(True)
        task.cancel()
    assert task.cancelled()


async def test_callback_error_propagates_and_unsubscribe_works() -> None:
    """A raising callback ends run() with its error; an unsubscribed callback is not called."""
    wd = ProgressWatchdog(SystemdNotifier({}), feed_interval_s=30.0, stall_after_s=30.0)
    calls: list[bool] = []
    unsubscribe = wd.on_health_change(calls.append)
    unsubscribe()
    unsubscribe()  # idempotent

    def boom(healthy: bool) -> None:
        raise RuntimeError("heartbeat broke")

    wd.on_health_change(boom)
    with pytest.raises(RuntimeError, match="heartbeat broke"):
        await wd.run(asyncio.Event())
    assert calls == []
