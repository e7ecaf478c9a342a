"""PLC-tracked actuation: a reject the PLC did not take is handed over again while there is
time before its fire point, and reported not fired only when there is none."""

from __future__ import annotations

import asyncio
import time

from drivers.plc.base import EncoderSample
from node.errors import PlcError
from node.line.actuation.plc_tracked import PlcTrackedActuation
from node.line.judge import Judge, Reason, Verdict
from node.line.parts import InFlightPart
from node.line.tracker import TrackedPart, Tracker
from tests.unit.node.line.test_tracker import PITCH

SPEED_CPS = 10_000.0


class FlakyPlc:
    """A PLC whose first ``failures`` reports fail (fault injection), then take the result."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.taken: list[int] = []

    async def report(self, part_id: int, origin_raw_count: int, verdict: Verdict) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise PlcError("read input_register 2: no answer within 50 ms")
        self.taken.append(part_id)


def _moving_tracker() -> Tracker:
    tracker = Tracker(PITCH, bits=32)
    now = time.monotonic_ns()
    for i in range(5, -1, -1):
        t = now - i * 2_000_000
        tracker.update(EncoderSample(int(SPEED_CPS * (t - now) / 1e9) + 100_000, t))
    return tracker


def _reject(part_id: int, fire_in_s: float, tracker: Tracker) -> InFlightPart:
    here = tracker.position
    fire = here + int(SPEED_CPS * fire_in_s)
    part = TrackedPart(part_id, here - 1000, here - 700, fire - 100, fire, fire + 40, 0)
    st = InFlightPart(part)
    st.verdict = Judge.fail_safe(part_id, Reason.FAILSAFE_DEADLINE)
    return st


async def _run(plc: FlakyPlc, st: InFlightPart, tracker: Tracker) -> list[str]:
    acted: list[str] = []
    done = asyncio.Event()

    def on_acted(part: InFlightPart, action: str) -> None:
        acted.append(action)
        done.set()

    actuation = PlcTrackedActuation(plc, tracker, on_acted, timeout_s=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(actuation.tasks()["plc-reports"]())
    actuation.strike(st)
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    return acted


async def test_a_report_that_failed_is_handed_over_again_before_the_fire_point() -> None:
    """Two failed tries with half a second to go: the third takes, the part is rejected."""
    tracker = _moving_tracker()
    plc = FlakyPlc(failures=2)
    acted = await _run(plc, _reject(7, 0.5, tracker), tracker)
    assert acted == ["rejected"]
    assert plc.calls == 3 and plc.taken == [7]


async def test_a_report_with_no_time_left_is_not_fired_never_passed() -> None:
    """A failed try 20 ms before the fire point: no time for another, reported not fired."""
    tracker = _moving_tracker()
    plc = FlakyPlc(failures=1)
    acted = await _run(plc, _reject(8, 0.02, tracker), tracker)
    assert acted == ["not_fired"]
    assert plc.calls == 1 and plc.taken == []
