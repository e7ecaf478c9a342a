"""What a panel reads under Health.*: every active fault and the audit alarm in words."""

from __future__ import annotations

from node.hmi.process import health_words
from node.operation import Operation


def _started() -> Operation:
    op = Operation("recipe-a")
    op.started()
    return op


def test_a_healthy_node_reads_ok_everywhere() -> None:
    """No fault, link up, store writing: ok, the link state, the model's name, ok."""
    words = health_words(_started(), {"plc": {"state": "up"}, "audit": {}}, "onnxruntime")
    assert words == {"camera": "ok", "plc": "up", "model": "onnxruntime", "audit": "ok"}


def test_active_faults_are_shown_on_their_resource() -> None:
    """A camera and a PLC fault at once: each resource says ``fault:`` with its reason; the
    model, untouched, keeps its name."""
    op = _started()
    op.raise_fault("camera", "3 parts in a row without a usable frame")
    op.raise_fault("plc", "PLC link down: connection refused")
    words = health_words(op, {"plc": {"state": "down"}}, "onnxruntime")
    assert words["camera"] == "fault: 3 parts in a row without a usable frame"
    assert words["plc"] == "fault: PLC link down: connection refused"
    assert words["model"] == "onnxruntime"


def test_the_audit_alarm_and_unrecorded_parts_are_shown() -> None:
    """Records waiting on a failing store: ``alarm:``; after on_failure "continue" lost some:
    the count; no PLC configured: ``not used``."""
    op = _started()
    alarm = {"alarms": {"audit": "cannot write (disk full)"}, "audit": {"unrecorded_parts": 0}}
    assert health_words(op, alarm, "m")["audit"] == "alarm: cannot write (disk full)"
    lost = {"alarms": {}, "audit": {"unrecorded_parts": 12}}
    assert health_words(op, lost, "m")["audit"] == "12 parts unrecorded"
    assert health_words(op, lost, "m")["plc"] == "not used"


def test_an_error_that_holds_the_node_is_shown_until_reset() -> None:
    """A model error (no lasting condition) holds Error: the model reads ``error:``."""
    op = _started()
    op.error("model", "output refused: NaN")
    assert health_words(op, {}, "m")["model"] == "error: model: output refused: NaN"
