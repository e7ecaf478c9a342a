"""The node end to end on the simulated line, scored against ground truth."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from structlog.testing import capture_logs

from drivers.camera.base import Camera, Frame
from drivers.plc.base import RejectCommand, RejectOutput
from hil.line import run_line, sim_config
from models.backend import Backend, Image
from models.findings import Findings
from node.config import Config
from node.line.results import PartResult

pytestmark = pytest.mark.slow


class SlowBackend:
    """Fault injection: a backend that takes longer than any part's budget."""

    def __init__(self, inner: Backend, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.name = f"slow-{inner.name}"

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        time.sleep(self.delay_s)
        return self.inner.infer(images)


class SlowFire:
    """A reject output whose every ``nth`` pulse leaves ``delay_s`` late (a stalled link)."""

    def __init__(self, inner: RejectOutput, nth: int, delay_s: float) -> None:
        self.inner, self.nth, self.delay_s = inner, nth, delay_s
        self.calls = 0
        self.slowed: list[int] = []

    @property
    def fire_lead_ns(self) -> int:
        return self.inner.fire_lead_ns

    def fire(self, command: RejectCommand) -> None:
        self.calls += 1
        if self.calls % self.nth == 0:
            self.slowed.append(command.part_id)
            time.sleep(self.delay_s)
        self.inner.fire(command)


async def test_a_pulse_too_late_for_its_part_is_reported_not_fired(
    taught_config: Config,
) -> None:
    """Every 3rd pulse leaves 35 ms late (22 mm of belt at 640 mm/s, more than half a
    24 mm part): each of those parts is published ``not_fired`` and counted, and every
    part published ``rejected`` was struck."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 8})
    slow: list[SlowFire] = []

    def wrap(output: RejectOutput) -> RejectOutput:
        slow.append(SlowFire(output, 3, 0.035))
        return slow[0]

    results: list[PartResult] = []
    report, node, _ = await run_line(cfg, 60, reject_wrapper=wrap, on_result=results.append)
    slowed = set(slow[0].slowed)
    assert len(slowed) >= 3
    actions = {r.part_id: r.action for r in results}
    assert all(actions[p] == "not_fired" for p in slowed), {p: actions[p] for p in slowed}
    assert node.summary.reject_fire_failures == len(slowed)
    assert report["missed_rejects"] == 0, report


async def test_defects_are_rejected_at_the_right_place(taught_config: Config) -> None:
    """300 parts, 30% defective: visible defects rejected on target, no good part rejected."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 5})
    report, node, _ = await run_line(cfg, 300)
    assert report["parts"] == 300
    assert report["missed_rejects"] == 0
    assert report["wrong_part_hits"] == 0
    assert report["false_rejects"] == 0, report
    # a shared machine can delay a software trigger; such parts are rejected, never misjudged
    assert set(report["failsafe_reasons"]) <= {"trigger_late"}, report["failsafe_reasons"]
    assert report["failsafe_rejects"] <= 0.03 * report["parts"]
    assert report["escapes"] <= 0.02 * report["defective_parts"], report
    assert report["budget_misses"] == 0
    # the actuator strikes the part's body (24 mm long); the ±2 mm precision target is
    # measured by bench/pipeline.py on a quiet machine, not on a shared CI runner
    assert report["reject_position_error_mm"]["max"] <= cfg.line.part_length_mm / 2
    assert node.summary.undecided_at_stop == 0


async def test_pitch_tracking_and_speed_changes(taught_config: Config) -> None:
    """Pitch tracking through a speed change and a belt stop still hits every reject.

    A stall of the shared machine may make a part late (trigger or verdict); it is
    then a fail-safe reject, never a pass. Budget misses are the pipeline bench's to count.
    """
    cfg = sim_config(
        taught_config,
        line={"tracking": "pitch"},
        sim={
            "defect_rate": 0.3,
            "placement_jitter_mm": 0.0,
            "seed": 9,
            "speed_profile": ((0.0, 600.0), (2.0, 1200.0), (4.0, 0.0), (4.5, 400.0)),
        },
    )
    report, _, _ = await run_line(cfg, 120, timeout_s=60)
    assert report["parts"] >= 120  # plus the empty pitch slots in flight at the stop
    late = {"trigger_late", "deadline_missed"}
    assert set(report["failsafe_reasons"]) <= {"no_part_in_frame", *late}
    assert report["missed_rejects"] == 0, report["missed_reject_parts"]
    assert report["false_rejects"] == 0
    assert report["reject_position_error_mm"]["max"] <= cfg.line.part_length_mm / 2


async def test_slow_backend_fails_safe_never_passes(taught_config: Config) -> None:
    """A model slower than the budget makes every part a fail-safe reject; none passes."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.2, "seed": 3})
    report, node, _ = await run_line(cfg, 40, backend_wrapper=lambda b: SlowBackend(b, delay_s=0.8))
    assert report["parts"] == 40
    assert node.stats.passed == 0
    assert report["failsafe_rejects"] == 40
    reasons = report["failsafe_reasons"]
    assert set(reasons) <= {"deadline_missed", "trigger_late"}
    assert reasons["deadline_missed"] >= 35
    assert report["budget_misses"] == reasons["deadline_missed"]
    assert report["missed_rejects"] == 0


async def test_missing_and_incomplete_frames_fail_safe(taught_config: Config) -> None:
    """Dropped and torn frames reject their parts with the matching reason; others judged."""
    cam = {**taught_config.camera.sim.model_dump(), "drop_rate": 0.15, "incomplete_rate": 0.15}
    cfg = sim_config(taught_config, camera={"sim": cam}, sim={"defect_rate": 0.2, "seed": 4})
    report, node, _ = await run_line(cfg, 100)
    reasons = report["failsafe_reasons"]
    assert reasons.get("frame_missing", 0) > 0 and reasons.get("frame_incomplete", 0) > 0
    assert set(reasons) <= {"frame_missing", "frame_incomplete", "trigger_late"}
    assert report["missed_rejects"] == 0
    assert report["false_rejects"] == 0
    assert node.stats.passed + node.stats.rejected == 100


async def test_a_camera_that_delivers_nothing_is_a_fault(taught_config: Config) -> None:
    """No frame for three parts in a row: the camera fault (Error, not healthy), every part
    a fail-safe reject; never a node that looks healthy while nothing is inspected."""
    cam = {**taught_config.camera.sim.model_dump(), "drop_rate": 1.0}
    cfg = sim_config(taught_config, camera={"sim": cam}, sim={"defect_rate": 0.2, "seed": 4})
    with capture_logs() as logs:
        report, node, _ = await run_line(cfg, 20)
    assert report["failsafe_reasons"].get("frame_missing", 0) >= 15
    assert report["escapes"] == 0
    raised = [e for e in logs if e["event"] == "fault_raised" and e["fault"] == "camera"]
    assert raised and "without a usable frame" in raised[0]["detail"]
    assert node.operation.state.value == "Error"
    assert "camera" in node.operation.active_faults


class LoopTriggered:
    """The sim camera without its thread-safe trigger: the node triggers it from the loop."""

    def __init__(self, inner: Camera) -> None:
        self._inner = inner

    async def trigger(self, part_id: int, encoder_count: int) -> None:
        await self._inner.trigger(part_id, encoder_count)

    def frames(self) -> AsyncIterator[Frame]:
        return self._inner.frames()

    @property
    def dropped(self) -> int:
        return self._inner.dropped


def _stalling(every: int, stall_s: float) -> Callable[[PartResult], None]:
    calls = 0

    def stall(_: PartResult) -> None:
        nonlocal calls
        calls += 1
        if calls % every == 0:
            time.sleep(stall_s)  # fault injection: a blocking call on the event loop

    return stall


async def test_a_stalled_loop_cannot_delay_a_timed_trigger(taught_config: Config) -> None:
    """A loop stalling 60 ms every 5th part: the triggers, armed on the timing thread well
    ahead, still go out on time — no trigger_late, every frame within the tolerance of the
    camera's centre and of its own part, every reject on target."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 8})
    report, _, sim = await run_line(cfg, 100, on_result=_stalling(5, 0.06))
    assert "trigger_late" not in report["failsafe_reasons"], report
    offsets = list(sim.camera.offsets_mm.values())
    assert len(offsets) >= 95 and max(abs(o) for o in offsets) <= cfg.camera.trigger_tolerance_mm
    assert report["wrong_part_hits"] == 0
    assert report["missed_rejects"] == 0
    assert report["false_rejects"] == 0
    assert report["escapes"] == 0


async def test_stalled_loop_rejects_late_triggers_never_the_wrong_frame(
    taught_config: Config,
) -> None:
    """A camera the node can only trigger from the loop, and a loop stalling 60 ms every 5th
    part: late triggers are failed safe; no frame goes astray."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 8})
    report, _, _ = await run_line(
        cfg, 100, on_result=_stalling(5, 0.06), camera_wrapper=LoopTriggered
    )
    assert report["failsafe_reasons"].get("trigger_late", 0) > 0, report
    assert report["wrong_part_hits"] == 0
    assert report["missed_rejects"] == 0
    assert report["false_rejects"] == 0
    assert report["escapes"] == 0


async def test_a_trigger_armed_too_late_for_its_part_is_refused(taught_config: Config) -> None:
    """A loop stalling 250 ms every 6th part (longer than a timed trigger is armed ahead):
    the timing thread fires what it was given too late as trigger_late, never a frame of
    the wrong place; a reject whose verdict the stall delayed until its part had left the
    actuator's reach strikes no other part."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 8})
    report, _, sim = await run_line(cfg, 60, on_result=_stalling(6, 0.25))
    assert report["failsafe_reasons"].get("trigger_late", 0) > 0, report
    offsets = list(sim.camera.offsets_mm.values())
    # the lateness is judged on the tracker's estimate of the belt: half a mm of slack
    assert max(abs(o) for o in offsets) <= cfg.camera.trigger_tolerance_mm + 0.5
    assert report["wrong_part_hits"] == 0
    assert report["missed_rejects"] == 0


async def test_the_trigger_lead_aims_each_frame_ahead_of_the_camera(taught_config: Config) -> None:
    """With camera.trigger_lead_mm = 4 each part is photographed about 4 mm before the
    camera's centre (plus what the loop's delay lets the belt carry it: under 1 mm at
    640 mm/s), without it about on the centre; every frame shows its own part."""
    medians = {}
    for lead in (0.0, 4.0):
        cam = {**taught_config.camera.model_dump(), "trigger_lead_mm": lead}
        cfg = sim_config(taught_config, camera=cam, sim={"defect_rate": 0.2, "seed": 12})
        report, _, sim = await run_line(cfg, 30)
        assert report["wrong_part_hits"] == 0 and report["missed_rejects"] == 0, report
        offsets = list(sim.camera.offsets_mm.values())
        assert len(offsets) >= 25
        medians[lead] = sorted(offsets)[len(offsets) // 2]
    assert -0.5 <= medians[0.0] <= 1.0, medians
    assert -4.5 <= medians[4.0] <= -3.0, medians
