"""The pulse timer fires armed rejects on time, follows re-arms, and honours disarm."""

from __future__ import annotations

import sys
import threading
import time

from drivers.plc.base import RejectCommand
from node.line.pulse import PulseTimer, may_have_missed


class Recorder:
    """A thread-safe output that records when each pulse started."""

    def __init__(self, fail_for: int | None = None) -> None:
        self.fired: list[tuple[int, int]] = []
        self.outcomes: list[tuple[int, int, BaseException | None]] = []
        self.done = threading.Event()
        self.fail_for = fail_for

    def fire(self, cmd: RejectCommand) -> None:
        if cmd.part_id == self.fail_for:
            raise OSError("coil write refused")
        self.fired.append((cmd.part_id, time.monotonic_ns()))

    def on_fired(
        self, cmd: RejectCommand, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        assert took_ns >= 0
        self.outcomes.append((cmd.part_id, late_ns, error))
        self.done.set()


def cmd(part_id: int) -> RejectCommand:
    return RejectCommand(part_id, 1000 + part_id, "defect")


def test_pulses_fire_in_deadline_order_close_to_their_deadline() -> None:
    """Armed out of order, pulses fire by deadline, never early and within 5 ms.

    (The precision on a quiet machine is measured by bench/pipeline.py; a test on a
    shared CI machine can only bound it loosely.)
    """
    rec = Recorder()
    now = time.monotonic_ns()
    deadlines = {1: now + 60_000_000, 2: now + 20_000_000, 3: now + 40_000_000}
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        for pid, t in deadlines.items():
            timer.arm(cmd(pid), t)
        time.sleep(0.12)
    assert [pid for pid, _ in rec.fired] == [2, 3, 1]
    for pid, t in rec.fired:
        assert 0 <= t - deadlines[pid] < 5_000_000


def test_rearm_moves_the_pulse() -> None:
    """Re-arming a pulse later fires it once, at the new deadline."""
    rec = Recorder()
    now = time.monotonic_ns()
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        timer.arm(cmd(7), now + 10_000_000)
        timer.arm(cmd(7), now + 50_000_000)
        time.sleep(0.1)
    assert len(rec.fired) == 1
    assert rec.fired[0][1] >= now + 50_000_000


def test_a_pulse_moved_sooner_wakes_the_timer_and_fires_on_its_new_deadline() -> None:
    """The timer sleeps towards the earliest pulse it knows; a pulse re-armed 40 ms sooner
    (or a new one due sooner) fires at its own deadline, not at the one it slept for."""
    rec = Recorder()
    now = time.monotonic_ns()
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        timer.arm(cmd(8), now + 80_000_000)
        time.sleep(0.01)  # the timer is asleep until 2 ms before 80 ms
        timer.arm(cmd(8), now + 40_000_000)
        timer.arm(cmd(9), now + 30_000_000)
        time.sleep(0.12)
    assert [pid for pid, _ in rec.fired] == [9, 8]
    fired = dict(rec.fired)
    assert 0 <= fired[9] - (now + 30_000_000) < 5_000_000
    assert 0 <= fired[8] - (now + 40_000_000) < 5_000_000


def test_disarmed_pulse_never_fires() -> None:
    """A disarmed pulse (belt stopped) does not fire; disarm reports it was armed."""
    rec = Recorder()
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        timer.arm(cmd(3), time.monotonic_ns() + 30_000_000)
        assert timer.disarm(3)
        time.sleep(0.06)
        assert not timer.disarm(3)
    assert rec.fired == []


def test_failed_fire_is_reported_and_the_timer_lives_on() -> None:
    """An output that raises is reported with its error; later pulses still fire."""
    rec = Recorder(fail_for=1)
    now = time.monotonic_ns()
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        timer.arm(cmd(1), now + 5_000_000)
        timer.arm(cmd(2), now + 15_000_000)
        time.sleep(0.05)
    assert [pid for pid, _ in rec.fired] == [2]
    errors = {pid: err for pid, _, err in rec.outcomes}
    assert isinstance(errors[1], OSError) and errors[2] is None


def test_a_fired_pulse_is_not_fired_again_by_a_late_rearm() -> None:
    """Re-arming a pulse that already fired (the node had not heard yet) does not fire it twice."""
    rec = Recorder()
    with PulseTimer(rec.fire, rec.on_fired) as timer:
        timer.arm(cmd(5), time.monotonic_ns() + 5_000_000)
        assert rec.done.wait(1.0)
        timer.arm(cmd(5), time.monotonic_ns() + 5_000_000)
        time.sleep(0.03)
        assert [pid for pid, _ in rec.fired] == [5]
        timer.forget(5)
        timer.arm(cmd(5), time.monotonic_ns() + 5_000_000)
        time.sleep(0.03)
    assert [pid for pid, _ in rec.fired] == [5, 5]


def test_switch_interval_is_short_while_timing_and_restored_after() -> None:
    """While pulses are timed, a waking pulse thread gets the GIL within 0.5 ms; after, the
    interpreter's own switch interval is back."""
    before = sys.getswitchinterval()
    rec = Recorder()
    with PulseTimer(rec.fire, rec.on_fired):
        assert sys.getswitchinterval() <= 0.0005
    assert sys.getswitchinterval() == before


def test_may_have_missed_bounds_where_the_output_acted() -> None:
    """The output acted between the call's start and return, timed for ``lead`` after the
    start: inside the window either way is a hit, a late start or a slow call is not."""
    ms = 1_000_000
    window = 10 * ms
    assert not may_have_missed(late_ns=0, took_ns=1 * ms, lead_ns=1 * ms, window_ns=window)
    assert not may_have_missed(late_ns=5 * ms, took_ns=4 * ms, lead_ns=0, window_ns=window)
    assert may_have_missed(late_ns=5 * ms, took_ns=6 * ms, lead_ns=0, window_ns=window)
    assert may_have_missed(late_ns=11 * ms, took_ns=0, lead_ns=0, window_ns=window)
    assert may_have_missed(late_ns=0, took_ns=0, lead_ns=11 * ms, window_ns=window)
