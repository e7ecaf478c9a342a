"""PLC-tracked rejects: the node hands each verdict to the PLC, the PLC's shift register fires.

In ``reject_mode = "plc_tracked"`` the node does not time the pulse itself. At
the decision point it calls :meth:`PlcReporter.report` with the part's origin
count; the PLC adds its own configured distance (reject station minus actuator
lead) and fires when *its* counter reaches that count, so timing is exact in
counts whatever the network latency. The transfer is a ResultValid/Ack
handshake, documented in ``docs/plc.md``.

The integer codes below are what the PLC sees; they are part of the PLC
interface and must never be renumbered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

REASON_CODES: Final[dict[str, int]] = {
    "ok": 0,
    "defect": 1,
    "deadline_missed": 10,
    "frame_missing": 11,
    "frame_incomplete": 12,
    "no_part_in_frame": 13,
    "camera_error": 14,
    "model_error": 15,
    "node_stopping": 16,
    "trigger_late": 17,
    "not_inspecting": 18,
    "tracking_lost": 19,
    "audit_unavailable": 20,
}
"""Verdict reason (``node.line.judge.Reason`` values) → code written to the PLC."""

REASON_UNKNOWN: Final = 99

ERROR_CODES: Final[dict[str, int]] = {
    "camera": 3,
    "plc": 4,
    "model": 5,
    "encoder": 6,
    "audit": 7,
}
"""The node's ``error_code`` output: which fault holds it in Error (or, with ``node_error``
clear, which alarm is raised); 0 none, 99 any other. Camera, PLC and model match the
``lineside`` exit codes of the same errors."""

ERROR_OTHER: Final = 99

DEFECT_CODES: Final[dict[str, int]] = {
    "scratch": 1,
    "crack": 2,
    "spot": 3,
    "contamination": 4,
    "missing_feature": 5,
}
"""Defect type → code written to the PLC; 0 is "no defect", 99 any other type."""

DEFECT_OTHER: Final = 99

VERDICT_NONE: Final = 0
VERDICT_PASS: Final = 1
VERDICT_REJECT: Final = 2
VERDICT_FAILSAFE_REJECT: Final = 3
"""Codes of the ``last_verdict`` output."""


def reason_code(reason: str) -> int:
    """The PLC code of a verdict reason; unknown reasons map to ``REASON_UNKNOWN`` (99)."""
    return REASON_CODES.get(reason, REASON_UNKNOWN)


def error_code(fault: str) -> int:
    """The PLC code of a node fault or alarm; unknown ones map to ``ERROR_OTHER`` (99)."""
    return ERROR_CODES.get(fault, ERROR_OTHER)


def defect_code(defect_type: str | None) -> int:
    """The PLC code of a defect type: 0 for None, 99 for a type not in ``DEFECT_CODES``."""
    if defect_type is None:
        return 0
    return DEFECT_CODES.get(defect_type, DEFECT_OTHER)


@dataclass(frozen=True, slots=True)
class PlcResult:
    """One part's verdict as handed to the PLC.

    ``origin_raw_count`` is the PLC counter value (wrapped to the counter's
    width, i.e. the unwrapped count modulo ``2**encoder_bits``) at which the
    part's centre was at the origin line; the PLC fires at
    ``origin_raw_count + reject distance - actuator lead`` in its own counts.
    ``part_id`` is sent modulo 2**32. ``reason_code`` and ``defect_code`` use
    :data:`REASON_CODES` and :data:`DEFECT_CODES`.
    """

    part_id: int
    reject: bool
    origin_raw_count: int
    reason_code: int
    defect_code: int


class PlcReporter(Protocol):
    """Hands verdicts to the PLC's shift register (PLC-tracked reject mode)."""

    async def report(self, result: PlcResult) -> None:
        """Transfer one result and wait for the PLC's Ack.

        Results are transferred one at a time in call order. Raises
        ``PlcLinkError`` (``PlcHandshakeTimeout``) when the link is down or the
        PLC does not acknowledge within the handshake timeout, and
        ``PlcWriteRefused`` when the PLC refuses the write.
        """
        ...
