"""The acquisition-thread lifecycle shared by the GenICam drivers (Aravis, harvesters).

Each driver makes every vendor call on one thread of its own.
:class:`AcquisitionThread` owns that thread together with the
:class:`~drivers.camera.ledger.TriggerLedger` and the queue of software-trigger
requests: ``open`` starts the thread, which opens the camera and reports back,
and gives up after ``open_timeout_s``; ``close`` stops the thread, joins it off
the event loop and fails every trigger still pending. The driver supplies what
happens on the thread (connect, serve, close); this module only runs it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable

import structlog

from drivers.camera.base import Frame
from drivers.camera.ledger import CameraStats, PendingTrigger, TriggerLedger
from drivers.errors import CameraDriverError

log = structlog.get_logger(__name__)


class AcquisitionThread:
    """A driver's acquisition thread, its trigger ledger and its request queue.

    ``camera`` names the camera in errors and logs; ``thread_name`` names the
    thread. ``timeout_ms`` and ``queue_size`` configure the ledger;
    ``max_trigger_delay_ms`` bounds how late ``next_request`` still hands out a
    request. ``requests`` carries software-trigger requests to the thread
    (``None`` only wakes it); ``stop`` is set when the camera closes.
    """

    def __init__(
        self,
        camera: str,
        thread_name: str,
        *,
        timeout_ms: float,
        queue_size: int,
        open_timeout_s: float,
        max_trigger_delay_ms: float,
    ) -> None:
        self.camera = camera
        self.requests: queue.Queue[PendingTrigger | None] = queue.Queue()
        self.stop = threading.Event()
        self._thread_name = thread_name
        self._timeout_ms = timeout_ms
        self._queue_size = queue_size
        self._open_timeout_s = open_timeout_s
        self._max_trigger_delay_ms = max_trigger_delay_ms
        self._ledger: TriggerLedger | None = None
        self._thread: threading.Thread | None = None

    @property
    def ledger(self) -> TriggerLedger:
        """The ledger of the open camera. Raises ``CameraDriverError`` before ``open``."""
        if self._ledger is None:
            raise CameraDriverError(f"{self.camera}: camera is not open")
        return self._ledger

    # -- loop side ------------------------------------------------------------------
    async def open(
        self,
        connect: Callable[[], None],
        serve: Callable[[], None],
        close: Callable[[], None],
    ) -> None:
        """Start the thread: it runs ``connect``, then ``serve`` once the open is reported.

        ``serve`` runs until ``stop`` is set and closes the camera itself;
        ``close`` runs on the thread when ``connect`` fails or the open came too
        late. Raises ``CameraDriverError`` when not open within ``open_timeout_s``
        (the thread then closes the camera if it opens later) and re-raises what
        ``connect`` raised.
        """
        self._ledger = TriggerLedger(
            asyncio.get_running_loop(),
            camera=self.camera,
            timeout_ms=self._timeout_ms,
            queue_size=self._queue_size,
        )
        opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run,
            args=(opened, connect, serve, close),
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()
        try:
            await asyncio.wait_for(asyncio.wrap_future(opened), self._open_timeout_s)
        except TimeoutError as exc:
            self.stop.set()
            raise CameraDriverError(
                f"{self.camera}: not open after open_timeout_s={self._open_timeout_s:g}"
            ) from exc
        except BaseException:
            self.stop.set()
            await asyncio.to_thread(self._thread.join, 5.0)
            raise

    async def close(self) -> None:
        """Stop and join the thread (up to 10 s, off the loop); fail the pending triggers."""
        self.stop.set()
        self.requests.put(None)
        if self._thread is not None:
            # closing a camera that vanished waits out the vendor's own command timeouts
            await asyncio.to_thread(self._thread.join, 10.0)
            if self._thread.is_alive():
                log.warning("camera_thread_still_running", camera=self.camera)
        if self._ledger is not None:
            self._ledger.fail_all("camera closed")

    def add(self, part_id: int, encoder_count: int) -> PendingTrigger:
        """Record a trigger for ``part_id``. Raises ``CameraDriverError`` if not open."""
        if self._ledger is None or self.stop.is_set():
            raise CameraDriverError(f"{self.camera}: camera is not open")
        return self._ledger.add(part_id, encoder_count)

    def frames(self) -> AsyncIterator[Frame]:
        """Frames in trigger order. Raises ``CameraDriverError`` if not open."""
        return self.ledger.frames()

    @property
    def dropped(self) -> int:
        """Frames dropped because the hand-off queue was full; 0 before ``open``."""
        return 0 if self._ledger is None else self._ledger.dropped

    def stats(self, *, reconnects: int, connected: bool) -> CameraStats:
        """The ledger's counters with the driver's connection state; zeros before ``open``."""
        if self._ledger is None:
            return CameraStats()
        return self._ledger.stats(reconnects=reconnects, connected=connected)

    # -- acquisition thread ---------------------------------------------------------
    def _run(
        self,
        opened: concurrent.futures.Future[None],
        connect: Callable[[], None],
        serve: Callable[[], None],
        close: Callable[[], None],
    ) -> None:
        try:
            connect()
        except Exception as exc:  # noqa: BLE001 - handed to open(), which raises it
            close()
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                opened.set_exception(exc)
            return
        try:
            opened.set_result(None)
        except concurrent.futures.InvalidStateError:  # open() gave up (open_timeout_s)
            close()
            return
        serve()

    def next_request(self, timeout_s: float) -> PendingTrigger | None:
        """The next software-trigger request still worth sending; None after ``timeout_s``.

        Runs on the thread. A request that waited longer than
        ``max_trigger_delay_ms`` is not handed out: it gets its MISSING frame here.
        """
        try:
            p = self.requests.get(timeout=timeout_s)
        except queue.Empty:
            return None
        if p is None or p.done:
            return None
        late_ms = (time.monotonic_ns() - p.t_ns) / 1e6
        if late_ms > self._max_trigger_delay_ms:
            self.ledger.resolve_missing(
                p,
                f"trigger not sent: camera busy for {late_ms:.0f} ms "
                f"(max_trigger_delay_ms={self._max_trigger_delay_ms:g})",
            )
            return None
        return p
