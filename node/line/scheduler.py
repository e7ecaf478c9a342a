"""Run callbacks when the belt reaches an encoder count.

The scheduler keeps a heap of target counts. For the nearest one it asks the
tracker when the belt will get there and arms one event-loop timer for that
instant; every encoder update re-plans the timer with the new speed. When the
timer fires, the belt position is re-checked and every callback whose count is
reached runs, in count order. A stopped belt arms no timer: the next update,
a new schedule or the stop event wakes the scheduler. Nothing polls.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

from node.line.tracker import Tracker

_log: Final = structlog.get_logger(__name__)

_NS_PER_S: Final = 1_000_000_000

_DUE_EPSILON_COUNTS: Final = 1e-6
"""Float slack in the due check, so a timer armed for the exact ETA finds its count reached."""

_LATENESS_HISTORY: Final = 1024


class Handle:
    """A scheduled callback; :meth:`cancel` it before it runs to drop it."""

    __slots__ = ("_callback", "_cancelled", "_done", "_timed", "count", "label")

    def __init__(self, count: int, callback: Callable[[], None], label: str, timed: bool) -> None:
        self.count: Final = count
        self.label: Final = label
        self._callback = callback
        self._cancelled = False
        self._done = False
        self._timed = timed

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called before the callback ran."""
        return self._cancelled

    @property
    def done(self) -> bool:
        """True once the callback has been run (whether or not it raised)."""
        return self._done

    def cancel(self) -> bool:
        """Drop the callback; return False if it already ran, True otherwise."""
        if self._done:
            return False
        self._cancelled = True
        return True

    def __repr__(self) -> str:
        state = "done" if self._done else "cancelled" if self._cancelled else "pending"
        return f"<Handle count={self.count} label={self.label!r} {state}>"


@dataclass(frozen=True, slots=True)
class LatenessStats:
    """How late callbacks ran after the moment the belt was estimated to reach their count.

    Only callbacks scheduled for a count not yet reached are measured; the
    percentiles cover the most recent 1024 of them. All zero until one ran.
    """

    samples: int
    last_ns: int
    max_ns: int
    p50_ns: int
    p99_ns: int


class CountScheduler:
    """Runs sync callbacks when the tracker's belt reaches given encoder counts.

    ``clock_ns`` must be the clock the encoder samples are stamped with
    (``time.monotonic_ns`` in production). Callbacks run from :meth:`run`'s
    task, never from inside :meth:`schedule` or :meth:`notify_update`; a callback
    that raises is logged and does not stop the others.
    """

    def __init__(self, tracker: Tracker, clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        self._tracker = tracker
        self._clock_ns = clock_ns
        self._heap: list[tuple[int, int, Handle]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._lateness: deque[int] = deque(maxlen=_LATENESS_HISTORY)
        self._lateness_samples = 0
        self._lateness_last_ns = 0
        self._lateness_max_ns = 0
        self._failures = 0

    @property
    def pending(self) -> int:
        """How many callbacks are scheduled and neither run nor cancelled."""
        return sum(1 for _, _, h in self._heap if not h.cancelled)

    @property
    def failures(self) -> int:
        """How many callbacks raised."""
        return self._failures

    @property
    def lateness(self) -> LatenessStats:
        """Lateness of timed callbacks, in ns (see :class:`LatenessStats`)."""
        recent = self._lateness
        if not recent:
            return LatenessStats(0, 0, 0, 0, 0)
        ordered = sorted(recent)
        return LatenessStats(
            samples=self._lateness_samples,
            last_ns=self._lateness_last_ns,
            max_ns=self._lateness_max_ns,
            p50_ns=round(statistics.median(ordered)),
            p99_ns=ordered[min(len(ordered) - 1, (99 * len(ordered)) // 100)],
        )

    def schedule(self, count: int, callback: Callable[[], None], *, label: str = "") -> Handle:
        """Run ``callback`` once the belt reaches unwrapped encoder count ``count``.

        A count already reached runs on the scheduler's next turn. Callbacks
        for equal counts run in the order they were scheduled.
        """
        timed = self._tracker.estimate_position(self._clock_ns()) < count
        handle = Handle(count, callback, label, timed)
        heapq.heappush(self._heap, (count, next(self._seq), handle))
        if self._loop is not None:
            self._replan()
        return handle

    def notify_update(self) -> None:
        """Re-plan after ``tracker.update``: the belt speed or position changed.

        Call from the event loop's thread, like every method here; costs a few µs.
        """
        if self._loop is not None:
            self._replan()

    async def run(self, stop: asyncio.Event) -> None:
        """Run due callbacks until ``stop`` is set; returns promptly once it is.

        Raises:
            RuntimeError: the scheduler is already running.
        """
        if self._loop is not None:
            raise RuntimeError("CountScheduler.run is already running")
        loop = self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.TaskGroup() as tg:
                # The stop event only wakes us; it is re-checked on every turn.
                relay = tg.create_task(self._relay(stop), name="count_scheduler_stop_relay")
                while True:
                    self._wakeup = loop.create_future()
                    self._run_due()
                    self._replan()
                    if stop.is_set():
                        break
                    await self._wakeup
                relay.cancel()
        finally:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._wakeup = None
            self._loop = None

    # -- internals ------------------------------------------------------------

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake()

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def _is_due(self, count: int, now_ns: int) -> bool:
        return self._tracker.estimate_position(now_ns) + _DUE_EPSILON_COUNTS >= count

    def _replan(self) -> None:
        """Arm one timer for the nearest count's ETA, or wake at once if it is due."""
        loop = self._loop
        assert loop is not None
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not heap:
            return
        count = heap[0][0]
        now_ns = self._clock_ns()
        # Read the loop clock after now_ns so the timer lands at or after the ETA.
        loop_now = loop.time()
        if self._is_due(count, now_ns):
            self._wake()
            return
        eta_ns = self._tracker.eta_ns(count)
        if eta_ns is None or eta_ns <= now_ns:
            # Stopped, or reachable only past the tracker's extrapolation limit:
            # the next update re-plans.
            return
        self._timer = loop.call_at(loop_now + (eta_ns - now_ns) / _NS_PER_S, self._wake)

    def _run_due(self) -> None:
        heap = self._heap
        while heap:
            count, _, handle = heap[0]
            if handle.cancelled:
                heapq.heappop(heap)
                continue
            now_ns = self._clock_ns()
            if not self._is_due(count, now_ns):
                return
            heapq.heappop(heap)
            handle._done = True
            if handle._timed:
                self._record_lateness(count, now_ns)
            try:
                handle._callback()
            # A scheduled callback is foreign code run from our loop: one that
            # fails must not stop the rejects and triggers queued behind it.
            except Exception:  # noqa: BLE001 - see the comment above
                self._failures += 1
                _log.exception("scheduled_callback_failed", label=handle.label, count=count)

    def _record_lateness(self, count: int, now_ns: int) -> None:
        eta_ns = self._tracker.eta_ns(count)
        if eta_ns is None:
            return
        late_ns = now_ns - eta_ns
        self._lateness.append(late_ns)
        self._lateness_samples += 1
        self._lateness_last_ns = late_ns
        self._lateness_max_ns = max(self._lateness_max_ns, late_ns)
