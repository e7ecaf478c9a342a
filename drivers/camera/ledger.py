"""Trigger bookkeeping shared by the GenICam drivers: order, deadlines, hand-off.

Every ``trigger()`` appends a :class:`PendingTrigger` to the ledger. Each
pending trigger is resolved exactly once — with the frame the acquisition
thread received for it, or with an explicit MISSING frame when its deadline
passes first — and frames leave the ledger strictly in trigger order, so
N triggers yield N frames in order and a late frame can never be attached to
a later part (it finds its trigger already resolved and is discarded).

Deadlines are enforced on the event loop with ``loop.call_at``, so a part
still gets its MISSING frame on time while the acquisition thread is stuck in
a blocking vendor call (a GigE Vision command to a dead camera blocks for
seconds). Resolved frames cross to the loop with ``call_soon_threadsafe``
into a bounded ``asyncio.Queue``; when it is full the newest frame is dropped
and counted (``dropped``), and the node times that part out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import structlog

from drivers.camera.base import Frame, FrameStatus
from drivers.camera.pixelformats import Image

log = structlog.get_logger(__name__)

NO_PIXELS: Image = np.zeros((0, 0), dtype=np.uint8)
"""The pixels of a frame that has none (MISSING, or data the producer discarded)."""


@dataclass(eq=False, slots=True)
class PendingTrigger:
    """One requested frame: the part, when it was asked for (monotonic ns), its deadline."""

    seq: int
    part_id: int
    encoder_count: int
    t_ns: int
    deadline_ns: int
    frame: Frame | None = None

    @property
    def done(self) -> bool:
        """True once a frame (possibly MISSING) has been attached."""
        return self.frame is not None


@dataclass(frozen=True, slots=True)
class CameraStats:
    """Counters since the camera was opened; frames are counted by final status."""

    triggers: int = 0
    complete: int = 0
    incomplete: int = 0
    missing: int = 0
    error: int = 0
    dropped: int = 0
    stale_frames: int = 0
    unmatched_frames: int = 0
    reconnects: int = 0
    connected: bool = False


@dataclass
class _Counts:
    triggers: int = 0
    by_status: collections.Counter[FrameStatus] = field(default_factory=collections.Counter)
    stale_frames: int = 0
    unmatched_frames: int = 0


class TriggerLedger:
    """Pending triggers in order; resolves each once; hands frames to the loop in order.

    Create it on the event loop that will consume ``frames()``. ``add`` runs on
    the loop; ``resolve``, ``oldest_pending`` and the counters may be used
    from any thread.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, camera: str, timeout_ms: float, queue_size: int
    ) -> None:
        self._loop = loop
        self._camera = camera
        self._timeout_ms = timeout_ms
        self._lock = threading.Lock()
        self._pending: collections.deque[PendingTrigger] = collections.deque()
        self._frames: asyncio.Queue[Frame] = asyncio.Queue(maxsize=queue_size)
        self._seq = 0
        self._counts = _Counts()
        self.dropped = 0

    # -- loop side ------------------------------------------------------------
    def add(self, part_id: int, encoder_count: int) -> PendingTrigger:
        """Record a trigger for ``part_id`` now; it expires after ``timeout_ms``."""
        now = time.monotonic_ns()
        with self._lock:
            self._seq += 1
            p = PendingTrigger(
                self._seq, part_id, encoder_count, now, now + int(self._timeout_ms * 1e6)
            )
            self._pending.append(p)
            self._counts.triggers += 1
        self._loop.call_later(self._timeout_ms / 1000, self._expire, p)
        return p

    def _expire(self, p: PendingTrigger) -> None:
        detail = f"no frame within timeout_ms={self._timeout_ms:g} of the trigger"
        self.resolve_missing(p, detail)

    async def frames(self) -> AsyncIterator[Frame]:
        """Resolved frames, in trigger order."""
        while True:
            yield await self._frames.get()

    def _hand_off(self, frame: Frame) -> None:
        try:
            self._frames.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning(
                "frame_dropped", camera=self._camera, part_id=frame.part_id, dropped=self.dropped
            )

    # -- any thread -----------------------------------------------------------
    def resolve(
        self,
        p: PendingTrigger,
        status: FrameStatus,
        pixels: Image = NO_PIXELS,
        pixel_format: str = "",
        detail: str = "",
        *,
        device_frame_id: int | None = None,
        device_timestamp_ns: int | None = None,
        chunks: Mapping[str, bool | int | float | str] | None = None,
    ) -> bool:
        """Attach the outcome to ``p``; False (and nothing changes) if it was already resolved."""
        frame = Frame(
            p.part_id,
            p.encoder_count,
            time.monotonic_ns(),
            pixels,
            pixel_format,
            status,
            detail,
            device_frame_id,
            device_timestamp_ns,
            dict(chunks or {}),
        )
        with self._lock:
            if p.frame is not None:
                return False
            p.frame = frame
            self._counts.by_status[status] += 1
            while self._pending and self._pending[0].frame is not None:
                ready = self._pending.popleft().frame
                assert ready is not None
                # scheduled under the lock so frames reach the queue in ledger order;
                # RuntimeError: the loop closed at shutdown and nobody is waiting
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._hand_off, ready)
        return True

    def resolve_missing(self, p: PendingTrigger, detail: str) -> bool:
        """Resolve ``p`` as MISSING with ``detail``, logging it; False if already resolved."""
        if not self.resolve(p, FrameStatus.MISSING, detail=detail):
            return False
        log.warning("frame_missing", camera=self._camera, part_id=p.part_id, detail=detail)
        return True

    def fail_all(self, detail: str) -> int:
        """Resolve every unresolved trigger as MISSING; returns how many there were."""
        with self._lock:
            todo = [p for p in self._pending if p.frame is None]
        return sum(self.resolve_missing(p, detail) for p in todo)

    def oldest_pending(self, arrived_ns: int, window_ns: int) -> PendingTrigger | None:
        """The oldest unresolved trigger a frame that arrived at ``arrived_ns`` may belong to.

        That is the oldest unresolved trigger if it was made no later than
        ``window_ns`` after the frame arrived (a hardware-triggered frame may
        reach the host slightly before the node announces its part); else None.
        """
        with self._lock:
            for p in self._pending:
                if p.frame is None:
                    return p if p.t_ns - window_ns <= arrived_ns else None
        return None

    def count_stale(self) -> None:
        """Count a frame that arrived for a trigger already resolved (it is discarded)."""
        with self._lock:
            self._counts.stale_frames += 1

    def count_unmatched(self) -> None:
        """Count a frame that arrived with no trigger waiting for it (it is discarded)."""
        with self._lock:
            self._counts.unmatched_frames += 1

    def stats(self, *, reconnects: int, connected: bool) -> CameraStats:
        """A snapshot of the counters, with the driver's connection state."""
        with self._lock:
            c = self._counts
            return CameraStats(
                triggers=c.triggers,
                complete=c.by_status[FrameStatus.COMPLETE],
                incomplete=c.by_status[FrameStatus.INCOMPLETE],
                missing=c.by_status[FrameStatus.MISSING],
                error=c.by_status[FrameStatus.ERROR],
                dropped=self.dropped,
                stale_frames=c.stale_frames,
                unmatched_frames=c.unmatched_frames,
                reconnects=reconnects,
                connected=connected,
            )
