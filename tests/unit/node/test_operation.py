"""The node's operating state follows start, errors and the operator's commands."""

from __future__ import annotations

import pytest

from node.operation import Operation
from node.state import InvalidTransition, VisionState

S = VisionState


def _recorded(op: Operation) -> list[VisionState]:
    seen: list[VisionState] = []
    op.listen(lambda state, detail: seen.append(state))
    return seen


async def test_auto_start_goes_to_continuous_and_inspects() -> None:
    """Start: Preoperational → Initialized → Ready → ContinuousExecution, inspecting."""
    op = Operation("r1")
    seen = _recorded(op)
    assert not op.inspecting
    op.started()
    assert seen == [S.PREOPERATIONAL, S.INITIALIZED, S.READY, S.CONTINUOUS]
    assert op.inspecting


async def test_without_auto_start_the_node_waits_in_ready() -> None:
    """With auto_start off the node is Ready and does not inspect until StartContinuous."""
    op = Operation("r1", auto_start=False)
    op.started()
    assert op.state is S.READY and not op.inspecting
    await op.start_continuous()
    assert op.state is S.CONTINUOUS and op.inspecting


async def test_error_is_shown_until_reset_and_inspection_goes_on() -> None:
    """A camera error moves to Error; parts are still inspected; Reset returns to Continuous."""
    op = Operation("r1")
    op.started()
    op.error("camera", "link lost")
    assert op.state is S.ERROR and op.machine.detail == "camera: link lost"
    assert op.inspecting and op.fault == "camera"
    op.error("model", "again")  # already in Error: no second transition
    assert op.fault == "camera"
    await op.reset()
    assert op.state is S.CONTINUOUS and op.fault is None


async def test_halt_stops_inspection_and_reset_leads_back_to_ready() -> None:
    """Halt stops inspecting; errors do not leave Halted; Reset goes to Ready, not running."""
    op = Operation("r1")
    op.started()
    await op.halt()
    assert op.state is S.HALTED and not op.inspecting
    op.error("camera", "x")
    assert op.state is S.HALTED
    seen = _recorded(op)
    await op.reset()
    assert seen == [S.HALTED, S.PREOPERATIONAL, S.INITIALIZED, S.READY]
    assert not op.inspecting


async def test_commands_out_of_place_are_refused() -> None:
    """Stop outside ContinuousExecution, Reset in Ready, an unknown recipe: all refused."""
    op = Operation("r1")
    op.started()
    await op.stop()
    assert op.state is S.READY and not op.inspecting
    with pytest.raises(InvalidTransition):
        await op.stop()
    with pytest.raises(InvalidTransition):
        await op.reset()
    assert op.recipes() == ["r1"]
    await op.prepare_recipe("r1")
    with pytest.raises(KeyError):
        await op.prepare_recipe("other")
