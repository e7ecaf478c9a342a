"""The pure state rules the HMI server mirrors into the OPC 40100 VisionStateMachine."""

from __future__ import annotations

import pytest

from node.state import Command, InvalidTransition, StateMachine, VisionState

S = VisionState


def test_start_select_run_stop_path() -> None:
    """Preoperational → Initialized → Ready → ContinuousExecution → Ready, step by step."""
    m = StateMachine()
    for target in (S.INITIALIZED, S.READY, S.CONTINUOUS, S.READY):
        assert m.move(target) is not None
    assert m.state == S.READY


def test_camera_error_then_reset_back_to_initialized() -> None:
    """ContinuousExecution may fail to Error; Reset is then accepted, back to Initialized."""
    m = StateMachine(S.CONTINUOUS)
    t = m.move(S.ERROR, "camera: link lost")
    assert t is not None and (t.source, t.target, t.detail) == (S.CONTINUOUS, S.ERROR, t.detail)
    assert m.detail == "camera: link lost"
    assert m.allows(Command.RESET) and not m.allows(Command.START_CONTINUOUS)
    m.move(S.INITIALIZED)
    assert m.state == S.INITIALIZED


def test_halted_is_left_only_by_reset() -> None:
    """Halted accepts only Reset, and only moves to Preoperational or Initialized."""
    m = StateMachine(S.READY)
    m.move(S.HALTED)
    assert [c for c in Command if m.allows(c)] == [Command.RESET]
    for bad in (S.READY, S.CONTINUOUS, S.ERROR):
        with pytest.raises(InvalidTransition):
            m.move(bad)
    m.move(S.PREOPERATIONAL)
    assert m.state == S.PREOPERATIONAL


def test_commands_are_refused_in_the_wrong_state() -> None:
    """StartContinuous needs Ready, Stop needs ContinuousExecution; check() names both."""
    m = StateMachine(S.INITIALIZED)
    with pytest.raises(InvalidTransition, match="StartContinuous is not allowed in Initialized"):
        m.check(Command.START_CONTINUOUS)
    with pytest.raises(InvalidTransition):
        m.check(Command.STOP)
    m.check(Command.SELECT_MODE_AUTOMATIC)
    m.check(Command.HALT)


def test_staying_is_a_no_op_and_keeps_the_sequence() -> None:
    """Moving to the current state returns None and only updates the detail."""
    m = StateMachine(S.ERROR)
    assert m.move(S.ERROR, "plc: timeout") is None
    assert m.detail == "plc: timeout"
    t = m.move(S.READY)
    assert t is not None and t.seq == 1


@pytest.mark.parametrize(
    ("state", "top", "automatic"),
    [
        (S.PREOPERATIONAL, "Preoperational", None),
        (S.INITIALIZED, "Operational", "Initialized"),
        (S.READY, "Operational", "Ready"),
        (S.CONTINUOUS, "Operational", "ContinuousExecution"),
        (S.ERROR, "Error", None),
        (S.HALTED, "Halted", None),
    ],
)
def test_states_map_to_40100_names(state: VisionState, top: str, automatic: str | None) -> None:
    """Each node state names its 40100 top-level state and automatic-mode sub-state."""
    assert (state.top, state.automatic) == (top, automatic)
