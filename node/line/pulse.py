"""Precise reject pulses: a dedicated timing thread fires each armed pulse on time.

The event loop wakes on timers with about a millisecond of resolution and can be
busy for a few more; at 1 m/s every millisecond is a millimetre. So the loop only
decides *that* a part is rejected and keeps its pulse *armed* with the latest
predicted time (re-armed after every encoder sample); this thread sleeps until
just before that time, spins the last fraction of a millisecond, and calls the
output's ``fire`` itself. The camera's timed triggers (``node.line.acquisition``)
run on a timer of the same kind with their own command.
"""

from __future__ import annotations

import heapq
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)

_SPIN_NS = 2_000_000  # sleep until this close to the deadline, then spin: a wake-up can be late
# A thread that wakes must take the GIL from whichever thread holds it, which Python
# only forces every switch interval (5 ms by default: 3 mm of belt at 640 mm/s).
# While pulses are being timed the interval is shortened to this.
_SWITCH_INTERVAL_S = 0.0005
_RT_PRIORITY = 10  # SCHED_FIFO priority of the pulse thread (1..99); LimitRTPRIO in the unit


class Timed(Protocol):
    """What a timer fires: a command for one part."""

    @property
    def part_id(self) -> int:
        """The part the command is for (one armed command per part)."""
        ...


C = TypeVar("C", bound=Timed)


class PulseTimer(Generic[C]):
    """Fires armed commands (reject pulses) at their monotonic deadline, on its own thread.

    ``fire`` is the output's thread-safe pulse call; ``on_fired(command, late_ns,
    took_ns, error)`` is called on the timing thread after each pulse: how late the
    call started, how long it took (the output acted somewhere in between), and
    ``error`` (None on success). It must be quick and thread-safe. ``spin_ns`` is how
    long before a deadline the thread stops sleeping and spins; ``name`` the thread's.
    """

    def __init__(
        self,
        fire: Callable[[C], None],
        on_fired: Callable[[C, int, int, BaseException | None], None],
        *,
        spin_ns: int = _SPIN_NS,
        name: str = "reject-pulse",
    ) -> None:
        self._fire = fire
        self._on_fired = on_fired
        self._spin_ns = spin_ns
        self._cond = threading.Condition()
        self._armed: dict[int, tuple[int, C]] = {}
        # Fired but not yet acknowledged by the node (``forget``): re-arming one of these
        # (the loop had not heard of the pulse yet) must not fire it a second time.
        self._fired: set[int] = set()
        self._heap: list[tuple[int, int]] = []  # (deadline_ns, part_id), stale entries skipped
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._saved_switch_s: float | None = None

    def __enter__(self) -> PulseTimer[C]:
        self._saved_switch_s = sys.getswitchinterval()
        sys.setswitchinterval(min(self._saved_switch_s, _SWITCH_INTERVAL_S))
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Fire nothing more; pulses still armed are dropped (and logged)."""
        with self._cond:
            self._stopping = True
            if self._armed:
                log.warning("pulses_dropped_at_stop", part_ids=sorted(self._armed))
            self._armed.clear()
            self._cond.notify()
        self._thread.join(2.0)
        if self._saved_switch_s is not None:
            sys.setswitchinterval(self._saved_switch_s)

    def arm(self, command: C, deadline_ns: int) -> None:
        """Arm (or move) the pulse for ``command.part_id`` to ``deadline_ns``.

        A pulse that already fired is never armed again (until ``forget``).
        """
        with self._cond:
            if command.part_id in self._fired:
                return
            current = self._armed.get(command.part_id)
            if current is not None and current[0] == deadline_ns:
                return
            earliest = self._next()
            self._armed[command.part_id] = (deadline_ns, command)
            heapq.heappush(self._heap, (deadline_ns, command.part_id))
            # The thread sleeps until spin_ns before the earliest pulse it knew, then spins
            # to the deadline it finds then: wake it only when this one is due before that
            # wake-up (a pulse moved later is found stale then and the wait renewed).
            if earliest is None or deadline_ns < earliest[0] - self._spin_ns // 2:
                self._cond.notify()

    def disarm(self, part_id: int) -> bool:
        """Hold the pulse of ``part_id`` (e.g. the belt stopped); True if it was armed."""
        with self._cond:
            return self._armed.pop(part_id, None) is not None

    def forget(self, part_id: int) -> None:
        """The node has recorded that ``part_id``'s pulse fired; stop remembering it."""
        with self._cond:
            self._fired.discard(part_id)

    @property
    def armed(self) -> int:
        """How many pulses are waiting."""
        return len(self._armed)

    def _next(self) -> tuple[int, C] | None:
        """The earliest live entry, dropping stale heap entries; call with the lock held."""
        while self._heap:
            deadline, part_id = self._heap[0]
            live = self._armed.get(part_id)
            if live is not None and live[0] == deadline:
                return live
            heapq.heappop(self._heap)
        return None

    def _run(self) -> None:
        _raise_priority()
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    nxt = self._next()
                    if nxt is None:
                        self._cond.wait()
                        continue
                    wait_ns = nxt[0] - self._spin_ns - time.monotonic_ns()
                    if wait_ns <= 0:
                        break
                    self._cond.wait(wait_ns / 1e9)
            deadline, command = nxt
            while time.monotonic_ns() < deadline:
                pass  # the last few hundred microseconds: sleeping would overshoot
            with self._cond:
                # it may have been moved or disarmed while we spun
                if self._armed.get(command.part_id) != (deadline, command):
                    continue
                del self._armed[command.part_id]
                self._fired.add(command.part_id)
            started = time.monotonic_ns()
            error: BaseException | None = None
            try:
                self._fire(command)
            except Exception as exc:  # noqa: BLE001 - reported to the node; the thread must live on
                error = exc
            took_ns = time.monotonic_ns() - started
            self._on_fired(command, started - deadline, took_ns, error)


def may_have_missed(late_ns: int, took_ns: int, lead_ns: int, window_ns: float) -> bool:
    """Whether a pulse whose call started ``late_ns`` after its deadline and took ``took_ns``
    may have acted outside ``±window_ns`` of the planned instant.

    The call was timed to act ``lead_ns`` after it started (the output's transport lead);
    the output acted somewhere between the call's start and its return.
    """
    early, latest = late_ns - lead_ns, late_ns + took_ns - lead_ns
    return early < -window_ns or latest > window_ns


def _raise_priority() -> None:
    """Ask the OS to run this thread ahead of the rest: real-time FIFO, else nice −10.

    When the machine is busy, a pulse thread that waits for a CPU is a late pulse.
    FIFO priority needs CAP_SYS_NICE (or an RLIMIT_RTPRIO, which the systemd unit
    grants); the thread only ever spins for ``_SPIN_NS``, so it cannot starve the
    machine.
    """
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(_RT_PRIORITY))
        return
    except (OSError, AttributeError) as exc:
        log.info("pulse_thread_not_realtime", reason=getattr(exc, "strerror", str(exc)))
    try:
        os.setpriority(os.PRIO_PROCESS, tid, -10)
    except OSError as exc:
        log.info("pulse_thread_priority_unchanged", reason=exc.strerror)
