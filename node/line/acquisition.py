"""The camera stage: trigger each part as it reaches the camera, and match its frame.

A part at the camera is queued for a software trigger (aimed
``camera.trigger_lead_mm`` ahead of it); the trigger is refused (fail-safe
``trigger_late``) once the belt has carried the part further past the camera
than ``camera.trigger_tolerance_mm``, since the frame would show the wrong
place. A camera whose trigger may be sent from any thread
(``drivers.camera.base.TimedTriggerCamera``: the sim, Aravis and Harvesters
drivers) is triggered by a timing thread of its own, like the reject pulses
(``node.line.pulse``): the loop arms each part's trigger ``TRIGGER_PREPARE_MS``
of top-speed travel early and keeps it on the part's predicted arrival after
every encoder sample, and the thread fires it on time however busy the loop
is. A trigger that thread could only fire too late is refused the same way.

Frames come back in their own stream and are matched to their part by
``part_id``: a complete frame goes on to inspection, a bad one is a fail-safe
reject with its reason, and no frame within ``camera.timeout_ms`` is
``frame_missing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from drivers.camera.base import Camera, Frame, FrameStatus, TimedTriggerCamera
from drivers.errors import DriverError
from node.config import Config
from node.errors import CameraError
from node.line.judge import Judge, Reason, Verdict
from node.line.parts import InFlightPart, PartBook
from node.line.pulse import PulseTimer
from node.line.tracker import Tracker

log = structlog.get_logger(__name__)

Decide = Callable[[InFlightPart, Verdict], None]

_FRAME_REASONS = {
    FrameStatus.INCOMPLETE: Reason.FAILSAFE_FRAME_INCOMPLETE,
    FrameStatus.MISSING: Reason.FAILSAFE_FRAME_MISSING,
}

UNUSABLE_IN_A_ROW = 3
"""Parts in a row without a usable frame that make the camera a fault."""

TRIGGER_PREPARE_MS = 20.0
"""How early (travel at ``line.max_speed_mm_s``) the loop arms a timed trigger: more than
the loop is ever late, so the timing thread, not the loop, decides the instant."""
TRIGGER_SPIN_NS = 300_000
"""The trigger thread spins this long before a trigger instead of sleeping to it."""


@dataclass(frozen=True, slots=True)
class TimedTrigger:
    """A part's trigger as armed on the timing thread: where the belt should be, when it is
    predicted there, and the travel per nanosecond then (to tell lateness in mm)."""

    part_id: int
    count: int
    deadline_ns: int
    mm_per_ns: float


class TriggerLate(Exception):
    """The timing thread could only fire a trigger this far past the camera (or could not
    tell where the part was: ``why``)."""

    def __init__(self, late_mm: float, why: str = "") -> None:
        super().__init__(why or f"{late_mm:.1f} mm past the camera")
        self.late_mm = late_mm


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
        self._tolerance_mm = cfg.camera.trigger_tolerance_mm
        self._lead_mm = cfg.camera.trigger_lead_mm
        self._lead_counts = round(cfg.camera.trigger_lead_mm * cfg.line.counts_per_mm)
        self._triggers: asyncio.Queue[InFlightPart] = asyncio.Queue()
        self.late_frames = 0
        """Frames that came for a part already decided or gone."""
        self._timer: PulseTimer[TimedTrigger] | None = None
        self._armed: dict[int, InFlightPart] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._prepare_counts = 0
        if isinstance(camera, TimedTriggerCamera):
            self._timer = PulseTimer(
                self._fire, self._fired_threadsafe, spin_ns=TRIGGER_SPIN_NS, name="camera-trigger"
            )
            max_cps = cfg.line.max_speed_mm_s * cfg.line.counts_per_mm
            self._prepare_counts = round(max_cps * TRIGGER_PREPARE_MS / 1000)

    def __enter__(self) -> Acquisition:
        """Start the trigger thread (a camera triggered from the loop has none)."""
        self._loop = asyncio.get_running_loop()
        if self._timer is not None:
            self._timer.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop the trigger thread; triggers still armed are dropped (and logged)."""
        if self._timer is not None:
            self._timer.__exit__(None, None, None)

    @property
    def timed(self) -> bool:
        """Whether triggers are fired by the timing thread (else from the loop)."""
        return self._timer is not None

    def call_count(self, trigger_count: int) -> int:
        """The count at which the node must call ``trigger`` for a part that should be
        photographed at ``trigger_count``: aimed ``camera.trigger_lead_mm`` ahead, and
        with a timed trigger ``TRIGGER_PREPARE_MS`` earlier still, to arm it."""
        return trigger_count - self._lead_counts - self._prepare_counts

    def trigger(self, st: InFlightPart) -> None:
        """``st`` is (about) at the camera: trigger it and start waiting for its frame —
        timed: arm its trigger on the timing thread; else queue it for the loop."""
        if self._timer is not None:
            self._armed[st.part_id] = st
            self._arm(st)
            return
        st.trigger_t_ns = time.monotonic_ns()
        st.deadline_t_ns = self._tracker.eta_ns(st.part.decide_count)
        self._triggers.put_nowait(st)
        asyncio.get_running_loop().call_later(self._timeout_s, self._frame_timeout, st)

    def belt_moved(self) -> None:
        """Keep every armed trigger on its part's newest predicted arrival."""
        for st in self._armed.values():
            self._arm(st)

    def _arm(self, st: InFlightPart) -> None:
        assert self._timer is not None
        aim = st.part.trigger_count - self._lead_counts
        speed = self._tracker.speed_cps
        now = time.monotonic_ns()
        past = self._tracker.estimate_position(now) - aim
        if past >= 0:  # armed after the belt got there (a late loop): when that was
            eta: int | None = now - round(past / speed * 1e9) if speed > 0 else now
        else:
            eta = self._tracker.eta_ns(aim)
        if eta is None:  # belt stopped: hold the trigger until it moves again
            self._timer.disarm(st.part_id)
            return
        mm_per_ns = speed / self._counts_per_mm / 1e9
        self._timer.arm(TimedTrigger(st.part_id, aim, eta, mm_per_ns), eta)

    def _fire(self, t: TimedTrigger) -> None:
        """On the timing thread: trigger now, unless it is too late to photograph the part
        within the tolerance of the camera's centre — or the belt's position is no longer
        known well enough to tell (no encoder sample for longer than the tracker
        extrapolates: a stalled loop)."""
        now = time.monotonic_ns()
        blind_ms = self._tracker.blind_ms(now)
        if blind_ms is not None:
            raise TriggerLate(self._tolerance_mm, f"belt position unknown for {blind_ms:.0f} ms")
        late_mm = (now - t.deadline_ns) * t.mm_per_ns - self._lead_mm
        if late_mm > self._tolerance_mm:
            raise TriggerLate(late_mm)
        assert isinstance(self._camera, TimedTriggerCamera)
        self._camera.trigger_now(t.part_id, t.count)

    def _fired_threadsafe(
        self, t: TimedTrigger, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: the run is over
            self._loop.call_soon_threadsafe(self._fired, t, late_ns, error)

    def _fired(self, t: TimedTrigger, late_ns: int, error: BaseException | None) -> None:
        """On the loop: the trigger went out (or was refused); wait for its frame."""
        assert self._timer is not None
        self._timer.forget(t.part_id)
        st = self._armed.pop(t.part_id, None)
        if st is None:
            return
        if isinstance(error, TriggerLate):
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_TRIGGER_LATE, str(error)))
            return
        if error is not None:
            log.error("camera_trigger_failed", part_id=st.part_id, error=str(error))
            self._camera_error(str(error))
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_CAMERA, str(error)))
            return
        st.trigger_t_ns = t.deadline_ns + late_ns
        st.deadline_t_ns = self._tracker.eta_ns(st.part.decide_count)
        waited_s = (time.monotonic_ns() - st.trigger_t_ns) / 1e9
        assert self._loop is not None
        self._loop.call_later(self._timeout_s - waited_s, self._frame_timeout, st)

    def forget(self, st: InFlightPart) -> None:
        """``st`` is decided before its trigger went out: no trigger for it."""
        if self._armed.pop(st.part_id, None) is not None and self._timer is not None:
            self._timer.disarm(st.part_id)

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
