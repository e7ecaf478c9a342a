"""Node-timed rejects: the node's pulse thread fires the output when the part arrives.

A reject verdict arms a pulse at once, for the latest predicted instant its part
reaches the fire point (less the output's transport lead); every encoder sample
moves it to the newest prediction, and a stopped belt holds it. The pulse thread
(``node.line.pulse.PulseTimer``) calls the output's ``fire`` itself, so no
event-loop wake-up sits between the deadline and the output. A pulse the thread could
only start after its part has left the actuator's reach (the verdict came after the
part got there, or the thread itself was held up) is refused there, not fired: it
would strike whatever is under the actuator then — the belt or a neighbouring part.
A pulse due while no encoder sample came for longer than the tracker extrapolates (a
stalled loop) still goes out on the last prediction, but is reported ``not_fired``:
the belt may have slowed or stopped meanwhile, and a strike nobody can vouch for is
not recorded as a reject.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import structlog

from drivers.plc.base import RejectCommand, RejectOutput
from node.line.actuation import Acted, ActuationStats
from node.line.parts import InFlightPart
from node.line.pulse import PulseTimer, may_have_missed
from node.line.tracker import Tracker

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class TimedPulse:
    """One part's pulse as armed on the timing thread: the command, the instant the
    call should start, and the belt's travel per nanosecond then (to tell lateness in mm)."""

    command: RejectCommand
    deadline_ns: int
    mm_per_ns: float

    @property
    def part_id(self) -> int:
        """The part the pulse is for."""
        return self.command.part_id


class PulseLate(Exception):
    """The timing thread could only start a pulse after its part had left reach."""


class PulseBlind(Exception):
    """A pulse went out on a prediction older than the tracker trusts: no encoder sample
    for longer than it extrapolates, so the belt may have slowed or stopped meanwhile."""


class NodeTimedActuation:
    """Arms, re-times and fires one pulse per rejected part (an ``Actuation``).

    ``counts_per_mm`` and ``part_length_mm`` size the window a pulse may be off by
    and still strike its part: half a part at the belt's speed.
    """

    def __init__(
        self,
        output: RejectOutput,
        tracker: Tracker,
        on_acted: Acted,
        *,
        counts_per_mm: float,
        part_length_mm: float,
    ) -> None:
        self.stats = ActuationStats()
        self._output = output
        self._tracker = tracker
        self._on_acted = on_acted
        self._counts_per_mm = counts_per_mm
        self._part_length_mm = part_length_mm
        self._pulses: dict[int, tuple[RejectCommand, InFlightPart]] = {}
        self._timer: PulseTimer[TimedPulse] = PulseTimer(self._fire, self._fired_threadsafe)
        self._loop: asyncio.AbstractEventLoop | None = None

    def __enter__(self) -> NodeTimedActuation:
        self._loop = asyncio.get_running_loop()
        self._timer.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Fire nothing more; pulses still armed are dropped (and logged by the timer)."""
        self._timer.__exit__(et, e, tb)

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """None: the pulse thread does the work."""
        return {}

    def strike(self, part: InFlightPart) -> None:
        """Arm at once: the timing thread then fires on time even if the loop is busy
        when the part reaches the fire point."""
        assert part.verdict is not None
        cmd = RejectCommand(part.part_id, part.part.reject_count, part.verdict.reason.value)
        self._pulses[cmd.part_id] = (cmd, part)
        self._rearm()

    def belt_moved(self) -> None:
        """Move every armed pulse to its part's newest predicted arrival."""
        if self._pulses:
            self._rearm()

    def _rearm(self) -> None:
        lead_ns = self._output.fire_lead_ns
        mm_per_ns = max(self._tracker.speed_cps, 0.0) / self._counts_per_mm / 1e9
        for cmd, st in self._pulses.values():
            # a part the belt already carried past the fire point (a verdict that came
            # late) is timed from when it got there, so the timing thread sees how late
            eta = self._tracker.reached_ns(st.part.fire_count)
            if eta is None:  # belt stopped: hold the pulse until it moves again
                self._timer.disarm(cmd.part_id)
            else:
                deadline = eta - lead_ns
                self._timer.arm(TimedPulse(cmd, deadline, mm_per_ns), deadline)

    def _fire(self, pulse: TimedPulse) -> None:
        """On the timing thread: fire now, unless even the earliest the output can act
        (a call acts between its start and its return, planned for ``fire_lead_ns`` after
        the deadline) finds the part carried more than half its length past the actuator."""
        now = time.monotonic_ns()
        late_ns = now - pulse.deadline_ns
        past_mm = (late_ns - self._output.fire_lead_ns) * pulse.mm_per_ns
        if past_mm > self._part_length_mm / 2:
            raise PulseLate(f"the part is {past_mm:.1f} mm past the actuator")
        blind_ms = self._tracker.blind_ms(now)
        self._output.fire(pulse.command)
        # Struck all the same (a strike is the safe side), but not claimed: the part may
        # not have been where the last samples said it would be.
        if blind_ms is not None:
            raise PulseBlind(f"belt position unknown for {blind_ms:.0f} ms")

    def _fired_threadsafe(
        self, pulse: TimedPulse, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        """Called on the timing thread after a pulse; hands the outcome to the loop."""
        assert self._loop is not None
        # a closed loop means the run is over: there is nobody left to tell
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._fired, pulse.command, late_ns, took_ns, error)

    def _fired(
        self, cmd: RejectCommand, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        self._timer.forget(cmd.part_id)
        entry = self._pulses.pop(cmd.part_id, None)
        if entry is None:
            return
        st = entry[1]
        if isinstance(error, PulseLate):
            log.error("reject_fire_refused_late", part_id=cmd.part_id, why=str(error))
            self._on_acted(st, "not_fired")
            return
        if isinstance(error, PulseBlind):
            log.error("reject_fire_unsure", part_id=cmd.part_id, why=str(error))
            self._on_acted(st, "not_fired")
            return
        if error is not None:
            log.error("reject_fire_failed", part_id=cmd.part_id, error=str(error))
            self._on_acted(st, "not_fired")
            return
        self.stats.pulse_late_ms.append(late_ns / 1e6)
        missed = self._missed_part(late_ns, took_ns)
        if missed is not None:
            log.error("reject_fire_late", part_id=cmd.part_id, **missed)
            self._on_acted(st, "not_fired")
            return
        self._on_acted(st, "rejected")

    def _missed_part(self, late_ns: int, took_ns: int) -> dict[str, float] | None:
        """Why a pulse may have missed its part (ms figures), or None when it cannot have.

        When the output may have acted farther from the planned instant than half a part
        at the belt's speed (``may_have_missed``), the actuator may have struck the belt
        beside the part: the part is then ``not_fired``, never reported rejected on a guess.
        """
        speed_mm_ns = self._tracker.speed_cps / self._counts_per_mm / 1e9
        if speed_mm_ns <= 0:
            return None
        window_ns = self._part_length_mm / 2 / speed_mm_ns
        if not may_have_missed(late_ns, took_ns, self._output.fire_lead_ns, window_ns):
            return None
        return {
            "late_ms": round(late_ns / 1e6, 3),
            "took_ms": round(took_ns / 1e6, 3),
            "window_ms": round(window_ns / 1e6, 3),
        }
