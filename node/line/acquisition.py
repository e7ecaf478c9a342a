"""The camera stage: trigger each part as it reaches the camera, and match its frame.

A part at the camera is queued for a software trigger (aimed
``camera.trigger_lead_mm`` ahead of it); the trigger is refused (fail-safe
``trigger_late``) once the belt has carried the part further past the camera
than ``camera.trigger_tolerance_mm``, since the frame would show the wrong
place. Frames come back in their own stream and are matched to their part by
``part_id``: a complete frame goes on to inspection, a bad one is a fail-safe
reject with its reason, and no frame within ``camera.timeout_ms`` is
``frame_missing``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from drivers.camera.base import Camera, Frame, FrameStatus
from drivers.errors import DriverError
from node.config import Config
from node.errors import CameraError
from node.line.judge import Judge, Reason, Verdict
from node.line.parts import InFlightPart, PartBook
from node.line.tracker import Tracker

log = structlog.get_logger(__name__)

Decide = Callable[[InFlightPart, Verdict], None]

_FRAME_REASONS = {
    FrameStatus.INCOMPLETE: Reason.FAILSAFE_FRAME_INCOMPLETE,
    FrameStatus.MISSING: Reason.FAILSAFE_FRAME_MISSING,
}

UNUSABLE_IN_A_ROW = 3
"""Parts in a row without a usable frame that make the camera a fault."""


class Acquisition:
    """Triggers the camera for each part and hands each good frame on.

    ``decide(part, verdict)`` takes the fail-safe verdicts made here;
    ``inspect(frame)`` takes complete frames; ``camera_error(detail)`` is
    told when a trigger fails (the node goes to Error). ``camera_down(detail)`` is told
    when ``UNUSABLE_IN_A_ROW`` parts in a row got no usable frame (missing or broken:
    the camera is down or degraded, a fault), ``camera_up()`` when a complete frame
    comes again.
    """

    def __init__(
        self,
        cfg: Config,
        camera: Camera,
        tracker: Tracker,
        book: PartBook,
        *,
        decide: Decide,
        inspect: Callable[[Frame], None],
        camera_error: Callable[[str], None],
        camera_down: Callable[[str], None] | None = None,
        camera_up: Callable[[], None] | None = None,
    ) -> None:
        self._camera = camera
        self._tracker = tracker
        self._book = book
        self._decide = decide
        self._inspect = inspect
        self._camera_error = camera_error
        self._camera_down = camera_down
        self._camera_up = camera_up
        self._unusable = 0
        """Parts in a row that got no usable frame."""
        self._counts_per_mm = cfg.line.counts_per_mm
        self._timeout_s = cfg.camera.timeout_ms / 1000
        self._tolerance_counts = cfg.camera.trigger_tolerance_mm * cfg.line.counts_per_mm
        self._triggers: asyncio.Queue[InFlightPart] = asyncio.Queue()
        self.late_frames = 0
        """Frames that came for a part already decided or gone."""

    def trigger(self, st: InFlightPart) -> None:
        """``st`` is at the camera now: queue its trigger and start waiting for its frame."""
        st.trigger_t_ns = time.monotonic_ns()
        st.deadline_t_ns = self._tracker.eta_ns(st.part.decide_count)
        self._triggers.put_nowait(st)
        asyncio.get_running_loop().call_later(self._timeout_s, self._frame_timeout, st)

    def _frame_timeout(self, st: InFlightPart) -> None:
        if not st.frame_seen and st.verdict is None:
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_FRAME_MISSING))
            self._no_usable_frame("no frame")

    async def trigger_loop(self) -> None:
        """Send the queued triggers, one at a time, each within ``camera.timeout_ms``."""
        while True:
            st = await self._triggers.get()
            # A trigger sent after the part has moved on would photograph the wrong place
            # (or the next part): such a part is rejected, never judged on that frame.
            # Aimed ahead by camera.trigger_lead_mm, it may also be sent before the camera
            # position: the frame is off the centre either way, within the tolerance.
            late = self._tracker.estimate_position(time.monotonic_ns()) - st.part.trigger_count
            if abs(late) > self._tolerance_counts:
                late_mm = late / self._counts_per_mm
                where = "past" if late > 0 else "before"
                verdict = Judge.fail_safe(
                    st.part_id,
                    Reason.FAILSAFE_TRIGGER_LATE,
                    f"{abs(late_mm):.1f} mm {where} the camera",
                )
                self._decide(st, verdict)
                continue
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._camera.trigger(st.part_id, st.part.trigger_count)
            except (TimeoutError, CameraError, DriverError) as exc:
                log.error("camera_trigger_failed", part_id=st.part_id, error=str(exc))
                self._camera_error(str(exc))
                self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_CAMERA, str(exc)))

    async def frame_loop(self) -> None:
        """Match every frame the camera delivers to its part."""
        async for frame in self._camera.frames():
            st = self._book.undecided(frame.part_id)
            if st is None:
                self.late_frames += 1
                log.warning("frame_late", part_id=frame.part_id, status=frame.status.value)
                continue
            st.frame_seen = True
            if frame.status is FrameStatus.COMPLETE:
                if self._unusable >= UNUSABLE_IN_A_ROW and self._camera_up is not None:
                    self._camera_up()
                self._unusable = 0
                self._inspect(frame)
                continue
            reason = _FRAME_REASONS.get(frame.status, Reason.FAILSAFE_CAMERA)
            self._decide(st, Judge.fail_safe(frame.part_id, reason, frame.detail))
            self._no_usable_frame(f"frame {frame.status.value}: {frame.detail}")

    def _no_usable_frame(self, detail: str) -> None:
        self._unusable += 1
        if self._unusable == UNUSABLE_IN_A_ROW and self._camera_down is not None:
            self._camera_down(f"{self._unusable} parts in a row without a usable frame ({detail})")
