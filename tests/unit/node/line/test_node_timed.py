"""Node-timed rejects: a pulse that can no longer reach its part is refused, not fired."""

from __future__ import annotations

import asyncio
import threading
import time

from drivers.plc.base import EncoderSample, RejectCommand
from node.line.actuation.node_timed import NodeTimedActuation
from node.line.judge import Judge, Reason
from node.line.parts import InFlightPart
from node.line.results import Action
from node.line.tracker import TrackedPart, Tracker
from tests.unit.node.line.test_tracker import PITCH

COUNTS_PER_MM = 10.0
PART_LENGTH_MM = 10.0  # the actuator reaches a part up to 5 mm (50 counts) past its fire point
SPEED_CPS = 200.0  # 20 mm/s: a slow belt, so a slow test machine moves it little


class Output:
    """A reject output that records the parts it struck."""

    fire_lead_ns = 0

    def __init__(self) -> None:
        self.fired: list[int] = []

    def fire(self, command: RejectCommand) -> None:
        self.fired.append(command.part_id)


def belt_at(position: int) -> Tracker:
    """A tracker whose belt ran at ``SPEED_CPS`` and reached ``position`` just now."""
    tracker = Tracker(PITCH, 32)
    now = time.monotonic_ns()
    for i in range(20, -1, -1):
        t = now - i * 10_000_000
        tracker.update(EncoderSample(position - round(SPEED_CPS * i / 100), t, None))
    return tracker


def rejected(part_id: int, fire_count: int) -> InFlightPart:
    part = TrackedPart(part_id, 0, 0, 0, fire_count, fire_count + 40, 0)
    st = InFlightPart(part)
    st.decide(Judge.fail_safe(part_id, Reason.FAILSAFE_DEADLINE))
    return st


async def strike_late(past_counts: int) -> tuple[list[int], list[Action]]:
    """Strike a part whose fire point the belt passed ``past_counts`` ago (negative: still
    ahead); what was struck and what the node was told. No encoder sample comes after the
    pulse is armed."""
    tracker = belt_at(100_000)
    output = Output()
    acted: list[Action] = []
    done = threading.Event()

    def on_acted(_: InFlightPart, action: Action) -> None:
        acted.append(action)
        done.set()

    with NodeTimedActuation(
        output, tracker, on_acted, counts_per_mm=COUNTS_PER_MM, part_length_mm=PART_LENGTH_MM
    ) as actuation:
        actuation.strike(rejected(7, 100_000 - past_counts))
        for _ in range(200):
            if done.is_set():
                break
            await asyncio.sleep(0.01)
    return output.fired, acted


async def test_a_verdict_that_comes_after_its_part_left_reach_fires_nothing() -> None:
    """A reject armed when its part is already 20 mm past the fire point (a verdict delayed
    by a stalled loop) is refused on the timing thread: nothing is struck — the actuator
    would hit the belt or a neighbour — and the part is reported not fired."""
    fired, acted = await strike_late(200)
    assert fired == []
    assert acted == ["not_fired"]


async def test_a_reject_just_past_its_fire_point_still_strikes_its_part() -> None:
    """A reject armed when its part is 1 mm past the fire point (within half its length)
    still goes out and is reported rejected."""
    fired, acted = await strike_late(10)
    assert fired == [7]
    assert acted == ["rejected"]


async def test_a_pulse_due_after_the_encoder_went_quiet_strikes_but_is_not_claimed() -> None:
    """A part 20 counts ahead (100 ms at 20 mm/s) with no encoder sample after the pulse
    is armed: when it is due, the belt's position has been unknown for longer than the
    tracker extrapolates (50 ms) — it may have stopped. The actuator still strikes (the
    safe side), and the part is reported not fired, never a confirmed reject."""
    fired, acted = await strike_late(-20)
    assert fired == [7]
    assert acted == ["not_fired"]


async def test_a_pulse_due_within_the_extrapolation_limit_is_a_reject() -> None:
    """The same with the part 4 counts ahead (20 ms): the prediction is trusted, the strike
    is reported rejected."""
    fired, acted = await strike_late(-4)
    assert fired == [7]
    assert acted == ["rejected"]
