"""The count scheduler against a simulated belt on the real monotonic clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from drivers.plc.base import EncoderSample
from node.line.geometry import LineGeometry
from node.line.scheduler import CountScheduler
from node.line.tracker import Tracker, TrackerConfig

SAMPLE_PERIOD_S = 0.002
CFG = TrackerConfig(
    mode="pitch",
    geometry=LineGeometry(
        pitch_counts=1_000_000,  # parts are not what these tests are about
        camera_counts=100,
        reject_counts=500,
        lead_counts=10,
        max_speed_cps=50_000.0,
        jitter_counts=2,
    ),
)
# How far from its count the true belt may be when a callback runs. Firing is
# never early by design (floored counts make the estimate lag the truth);
# late by up to ~1 ms of event-loop timer granularity plus scheduling noise on
# a shared machine, which 8 ms of travel leaves room for.
EARLY_COUNTS = 1.5
LATE_S = 0.008


@dataclass
class Belt:
    """A belt whose true position is integrated from speed changes on the monotonic clock."""

    speed_cps: float
    t_ns: int = field(default_factory=time.monotonic_ns)
    base_counts: float = 0.0

    def position(self, t_ns: int | None = None) -> float:
        """The true position in counts at t_ns (now if None)."""
        t = time.monotonic_ns() if t_ns is None else t_ns
        return self.base_counts + self.speed_cps * (t - self.t_ns) / 1e9

    def set_speed(self, speed_cps: float) -> None:
        """Change speed from now on."""
        now = time.monotonic_ns()
        self.base_counts = self.position(now)
        self.t_ns, self.speed_cps = now, speed_cps


@dataclass
class Rig:
    """A tracker, its scheduler and the belt feeding them, with a record of callback calls."""

    belt: Belt
    tracker: Tracker
    scheduler: CountScheduler
    calls: list[tuple[int, float, int]] = field(default_factory=list)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    def recorder(self, count: int) -> Callable[[], None]:
        """A callback that records (count, true belt position, t_ns) when it runs."""

        def record() -> None:
            t = time.monotonic_ns()
            self.calls.append((count, self.belt.position(t), t))
            self.called.set()

        return record

    def assert_on_time(self) -> None:
        """Every recorded call ran with the true belt at its count, not early, not far late."""
        for count, true_pos, _ in self.calls:
            assert true_pos >= count - EARLY_COUNTS, (count, true_pos)
            assert true_pos <= count + LATE_S * max(self.belt.speed_cps, 2000.0), (count, true_pos)


async def feed(rig: Rig, stop: asyncio.Event) -> None:
    """Sample the belt every 2 ms like a PLC poll, updating the tracker and waking the scheduler."""
    while not stop.is_set():
        t = time.monotonic_ns()
        raw = int(rig.belt.position(t)) % (1 << 32)
        rig.tracker.update(EncoderSample(raw, t))
        rig.scheduler.notify_update()
        await asyncio.sleep(SAMPLE_PERIOD_S)


@asynccontextmanager
async def running(speed_cps: float, *, feeder: bool = True) -> AsyncIterator[Rig]:
    """Run a belt at speed_cps with its feeder and scheduler until the block ends."""
    tracker = Tracker(CFG, 32)
    rig = Rig(Belt(speed_cps), tracker, CountScheduler(tracker))
    stop = asyncio.Event()
    async with asyncio.timeout(5), asyncio.TaskGroup() as tg:
        if feeder:
            tg.create_task(feed(rig, stop), name="feeder")
        tg.create_task(rig.scheduler.run(stop), name="scheduler")
        try:
            yield rig
        finally:
            stop.set()


async def wait_for_calls(rig: Rig, n: int, timeout_s: float = 2.0) -> None:
    """Wait until n callbacks have been recorded."""
    async with asyncio.timeout(timeout_s):
        while len(rig.calls) < n:
            rig.called.clear()
            await rig.called.wait()


async def test_callbacks_run_in_count_order_near_their_counts() -> None:
    """Callbacks scheduled out of order run in count order, each as the belt reaches its count."""
    async with running(2000.0) as rig:
        counts = [300, 120, 650, 480, 481, 200, 800]
        for c in counts:
            rig.scheduler.schedule(c, rig.recorder(c), label=f"c{c}")
        await wait_for_calls(rig, len(counts))
    assert [c for c, _, _ in rig.calls] == sorted(counts)
    rig.assert_on_time()
    stats = rig.scheduler.lateness
    assert stats.samples == len(counts)
    assert 0 <= stats.p50_ns <= stats.max_ns
    assert rig.scheduler.pending == 0


async def test_cancelled_callback_never_runs() -> None:
    """A cancelled handle is skipped; cancelling one that already ran reports False."""
    async with running(4000.0) as rig:
        first = rig.scheduler.schedule(100, rig.recorder(100))
        middle = rig.scheduler.schedule(300, rig.recorder(300))
        rig.scheduler.schedule(500, rig.recorder(500))
        assert middle.cancel() is True
        assert rig.scheduler.pending == 2
        await wait_for_calls(rig, 2)
        await asyncio.sleep(0.02)
    assert [c for c, _, _ in rig.calls] == [100, 500]
    assert first.done and first.cancel() is False
    assert middle.cancelled and not middle.done


async def test_stopped_belt_defers_callback_until_it_moves() -> None:
    """While the belt stands short of a count its callback waits; it runs once the belt restarts."""
    async with running(2000.0) as rig:
        rig.scheduler.schedule(300, rig.recorder(300))
        await asyncio.sleep(0.1)  # belt at ~200
        rig.belt.set_speed(0.0)
        await asyncio.sleep(0.3)  # stopped, still sampled
        assert rig.calls == []
        assert rig.tracker.eta_ns(300) is None
        restart_ns = time.monotonic_ns()
        rig.belt.set_speed(2000.0)
        await wait_for_calls(rig, 1)
    (_, true_pos, t_ns) = rig.calls[0]
    assert t_ns > restart_ns
    rig.assert_on_time()
    assert true_pos < 300 + 20


async def test_speed_up_replans_the_timer() -> None:
    """When the belt speeds up after scheduling, the callback follows the new, earlier ETA."""
    async with running(500.0) as rig:
        await asyncio.sleep(0.06)  # a speed estimate exists: 500 counts/s
        rig.scheduler.schedule(400, rig.recorder(400))  # ~0.7 s away at this speed
        rig.belt.set_speed(4000.0)  # now ~0.1 s away
        await wait_for_calls(rig, 1, timeout_s=0.5)
    rig.assert_on_time()


async def test_passed_count_runs_at_once() -> None:
    """A callback for a count the belt already passed runs on the scheduler's next turn."""
    async with running(2000.0) as rig:
        await asyncio.sleep(0.1)
        t_ns = time.monotonic_ns()
        rig.scheduler.schedule(10, rig.recorder(10))
        await wait_for_calls(rig, 1, timeout_s=0.1)
    assert rig.calls[0][2] - t_ns < 20_000_000
    assert rig.scheduler.lateness.samples == 0  # not a timed call: nothing to measure


async def test_failing_callback_is_logged_and_others_still_run() -> None:
    """A callback that raises is logged as scheduled_callback_failed and the next one still runs."""

    def boom() -> None:
        raise RuntimeError("actuator write failed")

    with capture_logs() as logs:
        async with running(4000.0) as rig:
            rig.scheduler.schedule(100, boom, label="reject 7")
            rig.scheduler.schedule(150, rig.recorder(150))
            await wait_for_calls(rig, 1)
    assert rig.scheduler.failures == 1
    failed = [e for e in logs if e["event"] == "scheduled_callback_failed"]
    assert len(failed) == 1
    assert failed[0]["label"] == "reject 7" and failed[0]["count"] == 100


async def test_stop_event_ends_run_promptly() -> None:
    """Setting the stop event ends run() within milliseconds, even with callbacks pending."""
    tracker = Tracker(CFG, 32)
    scheduler = CountScheduler(tracker)
    tracker.update(EncoderSample(0, time.monotonic_ns()))
    scheduler.schedule(10_000, lambda: None)
    stop = asyncio.Event()
    async with asyncio.timeout(1), asyncio.TaskGroup() as tg:
        task = tg.create_task(scheduler.run(stop))
        await asyncio.sleep(0.02)
        assert not task.done()
        t0 = time.monotonic()
        stop.set()
        await task
        assert time.monotonic() - t0 < 0.05
    assert scheduler.pending == 1


async def test_run_twice_at_once_is_refused() -> None:
    """A second concurrent run() raises RuntimeError instead of double-firing callbacks."""
    scheduler = CountScheduler(Tracker(CFG, 32))
    stop = asyncio.Event()
    async with asyncio.timeout(1), asyncio.TaskGroup() as tg:
        tg.create_task(scheduler.run(stop))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match="already running"):
            await scheduler.run(stop)
        stop.set()
