"""Feed the systemd watchdog only while the pipeline makes progress.

A process that is alive but stuck (a hung camera call, a deadlocked inference worker, a
lost encoder link) must look dead to systemd and to the PLC, so both can fail safe.
Feeding the watchdog from a timer alone would prove only that the event loop turns; here
each pipeline stage proves progress by calling :meth:`ProgressWatchdog.beat`, and the
watchdog is fed only while every active stage has beaten within its stall limit.

A stage with legitimately nothing to do (belt stopped, no parts in flight) is marked
idle with :meth:`ProgressWatchdog.idle` and is then never stalled. When it becomes active
again its stall timer starts from that moment.

Typical wiring (``node/app.py`` owns the task)::

    wd_s = watchdog_interval_s()
    watchdog = ProgressWatchdog(notifier, feed_interval_s=wd_s / 2 if wd_s else 1.0,
                                stall_after_s=3.0)
    watchdog.register("encoder", stall_after_s=1.0)
    watchdog.register("pipeline", idle=True)
    watchdog.on_health_change(plc_heartbeat.set_enabled)
    tg.create_task(watchdog.run(stop_event), name="watchdog")
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

import structlog

__all__ = ["HealthCallback", "ProgressWatchdog", "WatchdogFeeder"]

_log = structlog.get_logger(__name__)

# Lower bound on one wait, so a clock that has not advanced past a deadline cannot spin
# the loop; far below any useful stall limit.
_MIN_WAIT_S: Final = 0.001

HealthCallback = Callable[[bool], None]
"""Called with the new health (True: feeding, False: starved) on every change."""


class WatchdogFeeder(Protocol):
    """What the watchdog feeds; :class:`node.service.sdnotify.SystemdNotifier` is one."""

    def watchdog(self) -> bool:
        """Send one keep-alive; return whether it was delivered (never raise)."""
        ...


@dataclass(slots=True)
class _Stage:
    stall_after_s: float
    last_progress_s: float
    idle: bool


def _positive(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
    return float(value)


class ProgressWatchdog:
    """Feeds a watchdog only while every active pipeline stage keeps beating.

    Args:
        notifier: receives ``watchdog()`` every ``feed_interval_s`` while healthy. A
            disabled :class:`~node.service.sdnotify.SystemdNotifier` is fine: health is still
            tracked and callbacks still fire (the PLC heartbeat needs them without systemd).
        feed_interval_s: seconds between feeds while healthy; use half of systemd's
            ``WatchdogSec`` (see :func:`node.service.sdnotify.watchdog_interval_s`).
        stall_after_s: default stall limit: an active stage whose last beat is this many
            seconds old (or older) is stalled.
        clock: monotonic seconds; injectable for tests of the sync queries. :meth:`run`
            converts its deadlines into real waits, so it needs a clock that advances like
            ``time.monotonic``.
        recheck_s: while starved, how often health is re-evaluated to detect recovery
            (default: half the smaller of ``feed_interval_s`` and ``stall_after_s``).
            :meth:`beat` stays a plain timestamp store, so recovery is noticed at the
            next recheck rather than instantly.

    Raises:
        ValueError: an interval is not a positive finite number.

    Threading: :meth:`beat` may be called from any thread (it only stores a float).
    :meth:`register`, :meth:`idle` and :meth:`on_health_change` belong on the event loop.
    """

    def __init__(
        self,
        notifier: WatchdogFeeder,
        feed_interval_s: float,
        stall_after_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        recheck_s: float | None = None,
    ) -> None:
        self._notifier = notifier
        self._feed_interval_s = _positive("feed_interval_s", feed_interval_s)
        self._stall_after_s = _positive("stall_after_s", stall_after_s)
        self._recheck_s = (
            min(self._feed_interval_s, self._stall_after_s) / 2
            if recheck_s is None
            else _positive("recheck_s", recheck_s)
        )
        self._clock = clock
        self._stages: dict[str, _Stage] = {}
        self._callbacks: list[HealthCallback] = []
        self._feeding: bool | None = None
        self._starved_at_s = 0.0

    # -- stages ---------------------------------------------------------------------------

    def register(
        self, stage: str, *, stall_after_s: float | None = None, idle: bool = False
    ) -> None:
        """Add a stage that must beat; its stall timer starts now.

        Args:
            stage: name used in logs, e.g. ``"encoder"`` or ``"pipeline"``.
            stall_after_s: this stage's stall limit (default: the watchdog's).
            idle: start idle (nothing to do yet), e.g. the pipeline before the first part.

        Raises:
            ValueError: the stage is already registered or the limit is not positive.
        """
        if stage in self._stages:
            raise ValueError(f"watchdog stage {stage!r} is already registered")
        limit = (
            self._stall_after_s
            if stall_after_s is None
            else _positive("stall_after_s", stall_after_s)
        )
        self._stages[stage] = _Stage(limit, self._clock(), idle)

    def beat(self, stage: str) -> None:
        """Record that ``stage`` made progress now. Hot path: one clock read, one store.

        Raises:
            KeyError: the stage was never registered (a programming error).
        """
        self._stages[stage].last_progress_s = self._clock()

    def idle(self, stage: str, is_idle: bool = True) -> None:
        """Mark ``stage`` idle (never stalled) or active again.

        Going from idle to active restarts the stage's stall timer, so a belt that stood
        still for an hour is not reported stalled the moment it moves. Marking an already
        active stage active changes nothing (so calling this on every update cannot hide a
        stall).

        Raises:
            KeyError: the stage was never registered.
        """
        st = self._stages[stage]
        if st.idle and not is_idle:
            st.last_progress_s = self._clock()
        st.idle = is_idle

    @property
    def stages(self) -> list[str]:
        """Registered stage names, in registration order."""
        return list(self._stages)

    def stalled_stages(self) -> list[str]:
        """Active stages whose last progress is at least their stall limit ago, sorted."""
        return self._stalled(self._clock())

    def healthy(self) -> bool:
        """True when no active stage is stalled (also with no stages registered)."""
        return not self._stalled(self._clock())

    @property
    def feeding(self) -> bool | None:
        """Health as of :meth:`run`'s last evaluation; None before it first ran."""
        return self._feeding

    # -- subscribers ----------------------------------------------------------------------

    def on_health_change(self, callback: HealthCallback) -> Callable[[], None]:
        """Call ``callback(healthy)`` from :meth:`run` on every change of health.

        The first evaluation of each :meth:`run` announces the starting state, so a
        subscriber never has to guess. Callbacks run on the event loop and must be quick
        and must not raise: an exception propagates out of :meth:`run` (to the task's
        supervisor), because a watchdog that cannot tell the PLC is no longer trusted.

        Returns:
            A function that unsubscribes ``callback``.
        """
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    # -- the task -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Evaluate health and feed while healthy, until ``stop`` is set.

        Sleeps until the next feed or the next possible stall, whichever is first (while
        starved: ``recheck_s``), always by waiting on ``stop``. Logs ``watchdog_starved``
        (with the stalled stages) once when feeding stops and ``watchdog_recovered`` when
        it resumes. Returns promptly once ``stop`` is set; cancellation propagates.

        Pass an event that is set when the node is about to exit, not at SIGTERM: while
        the pipeline drains, the stages still beat and the watchdog should keep proving it.
        """
        self._feeding = None
        next_feed_s = -math.inf
        while not stop.is_set():
            now = self._clock()
            stalled = self._stalled(now)
            healthy = not stalled
            if healthy is not self._feeding:
                self._announce(healthy, stalled, now)
                if not healthy:
                    next_feed_s = -math.inf  # feed at once on recovery
            if healthy:
                if now >= next_feed_s:
                    self._notifier.watchdog()
                    next_feed_s = now + self._feed_interval_s
                wait_s = min(next_feed_s, self._next_stall_s()) - now
            else:
                wait_s = self._recheck_s
            try:
                async with asyncio.timeout(max(wait_s, _MIN_WAIT_S)):
                    await stop.wait()
            except TimeoutError:
                continue

    # -- internals ------------------------------------------------------------------------

    def _stalled(self, now: float) -> list[str]:
        return sorted(
            name
            for name, st in self._stages.items()
            if not st.idle and now - st.last_progress_s >= st.stall_after_s
        )

    def _next_stall_s(self) -> float:
        """Earliest moment an active stage would stall if it stopped beating now."""
        return min(
            (st.last_progress_s + st.stall_after_s for st in self._stages.values() if not st.idle),
            default=math.inf,
        )

    def _announce(self, healthy: bool, stalled: list[str], now: float) -> None:
        previous = self._feeding
        self._feeding = healthy
        if healthy and previous is None:
            _log.info(
                "watchdog_started",
                stages=self.stages,
                feed_interval_s=self._feed_interval_s,
            )
        elif healthy:
            _log.info("watchdog_recovered", starved_s=round(now - self._starved_at_s, 3))
        else:
            self._starved_at_s = now
            _log.error(
                "watchdog_starved",
                stalled_stages=stalled,
                since_progress_s={
                    name: round(now - self._stages[name].last_progress_s, 3) for name in stalled
                },
            )
        for callback in list(self._callbacks):
            callback(healthy)
