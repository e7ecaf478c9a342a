"""A simulated triggered camera that renders the part under it at trigger time.

It behaves like a real GigE Vision driver where it matters to the node: one
acquisition thread, a bounded hand-off queue into the event loop with a drop
counter, acquisition latency, and injectable missing or incomplete frames.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType

import numpy as np
import numpy.typing as npt
import structlog

from drivers.camera.base import Frame, FrameStatus
from drivers.sim.world import SimWorld

log = structlog.get_logger(__name__)

Renderer = Callable[[object, float, float], npt.NDArray[np.uint8]]
"""``render(payload, centre_x_px, centre_y_px)`` → a full grayscale frame."""

BlankRenderer = Callable[[], npt.NDArray[np.uint8]]
"""Renders the empty belt (no part in view)."""


@dataclass(frozen=True, slots=True)
class SimCameraSettings:
    """Sensor geometry and fault injection for the simulated camera."""

    width_px: int
    height_px: int
    mm_per_px: float
    position_mm: float
    latency_s: float = 0.003
    drop_rate: float = 0.0
    incomplete_rate: float = 0.0
    queue_size: int = 16
    seed: int = 0


class SimCamera:
    """Renders the part nearest the camera when triggered.

    ``rendered`` maps each triggered ``part_id`` to the world part index that
    was in view (None when the belt was empty), for scoring against ground truth.
    """

    def __init__(
        self,
        world: SimWorld,
        settings: SimCameraSettings,
        render: Renderer,
        render_blank: BlankRenderer,
    ) -> None:
        self._world = world
        self._s = settings
        self._render = render
        self._blank = render_blank
        self._requests: queue.Queue[tuple[int, int, int] | None] = queue.Queue()
        self._frames: asyncio.Queue[Frame] = asyncio.Queue(maxsize=settings.queue_size)
        self._rng = random.Random(settings.seed)
        self._dropped = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.rendered: dict[int, int | None] = {}
        """part_id → the world index of the part in its frame (None: no part, or dropped);
        on an endless belt (no ``max_parts``) only the newest ``keep_parts`` entries."""
        self.offsets_mm: dict[int, float] = {}
        """part_id → how far the part's centre was past the camera's at exposure (mm;
        negative: before it), for parts photographed; as bounded as ``rendered``."""

    async def __aenter__(self) -> SimCamera:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._acquire, name="sim-camera", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._requests.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 2.0)

    @property
    def dropped(self) -> int:
        """Frames dropped because the hand-off queue was full."""
        return self._dropped

    async def trigger(self, part_id: int, encoder_count: int) -> None:
        """Expose now for ``part_id``; the frame arrives on ``frames()``."""
        self.trigger_now(part_id, encoder_count)

    def trigger_now(self, part_id: int, encoder_count: int) -> None:
        """``trigger`` from any thread (a queue put)."""
        self._requests.put((part_id, encoder_count, time.monotonic_ns()))

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames in trigger order."""
        while True:
            yield await self._frames.get()

    # -- acquisition thread ------------------------------------------------
    def _acquire(self) -> None:
        s = self._s
        fov_half_mm = s.width_px * s.mm_per_px / 2
        while (req := self._requests.get()) is not None:
            part_id, count, t_ns = req
            if self._rng.random() < s.drop_rate:
                self._seen(part_id, None)
                continue  # the node sees no frame and times the part out
            near = self._world.parts_near(s.position_mm, t_ns, fov_half_mm)
            if near:
                part = min(
                    near, key=lambda p: abs(self._world.part_position_mm(p, t_ns) - s.position_mm)
                )
                dx_mm = self._world.part_position_mm(part, t_ns) - s.position_mm
                self.offsets_mm[part_id] = dx_mm
                pixels = self._render(
                    part.payload, s.width_px / 2 + dx_mm / s.mm_per_px, s.height_px / 2
                )
                self._seen(part_id, part.index)
            else:
                pixels = self._blank()
                self._seen(part_id, None)
            status = FrameStatus.COMPLETE
            detail = ""
            if self._rng.random() < s.incomplete_rate:
                cut = self._rng.randrange(s.height_px // 4, s.height_px)
                pixels = pixels.copy()
                pixels[cut:] = 0
                status, detail = FrameStatus.INCOMPLETE, f"lost packets from row {cut}"
            wait = t_ns + int(s.latency_s * 1e9) - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
            frame = Frame(part_id, count, time.monotonic_ns(), pixels, "Mono8", status, detail)
            assert self._loop is not None
            try:
                self._loop.call_soon_threadsafe(self._hand_off, frame)
            except RuntimeError:  # loop closed during shutdown: nobody is waiting
                return

    def _seen(self, part_id: int, index: int | None) -> None:
        rendered = self.rendered
        rendered[part_id] = index
        keep = self._world.keep_parts
        if self._world.max_parts is None and len(rendered) >= 2 * keep:
            for old in list(itertools.islice(rendered, len(rendered) - keep)):
                del rendered[old]
                self.offsets_mm.pop(old, None)

    def _hand_off(self, frame: Frame) -> None:
        try:
            self._frames.put_nowait(frame)
        except asyncio.QueueFull:
            self._dropped += 1
            log.warning("frame_dropped", part_id=frame.part_id, dropped=self._dropped)
