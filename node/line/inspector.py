"""The inspector: frames in, findings out, on the single inference worker thread.

:class:`InspectionQueue` is the stage as the line sees it: frames wait in it and
go to the worker in batches of up to ``inspection.batch_size``; the progress
watchdog's ``inference`` stage is busy while any frame is waiting or running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.camera.base import Frame
from models.backend import Backend
from models.findings import Findings
from node.line.roi import crop_part
from node.service.watchdog import ProgressWatchdog


@dataclass(frozen=True, slots=True)
class Inspection:
    """The outcome for one frame: findings, or the reason there are none.

    ``image`` is what was inspected (the part's crop), or the whole frame when no
    part could be found in it; the audit trail keeps it.
    """

    part_id: int
    findings: Findings | None
    error: str = ""
    no_part: bool = False
    image: npt.NDArray[np.uint8] | None = None


class Inspector:
    """Crops each frame to the part and runs the backend on the batch.

    ``run`` is blocking; the node calls it on the inference worker thread. It
    never raises for one bad frame: that frame's ``Inspection`` carries the error.
    """

    def __init__(self, backend: Backend, roi_size_px: int, belt_threshold: int) -> None:
        self.backend = backend
        self.roi_size_px = roi_size_px
        self.belt_threshold = belt_threshold

    def run(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Inspect ``frames``; one ``Inspection`` per frame, in order."""
        out: dict[int, Inspection] = {}
        crops: list[npt.NDArray[np.uint8]] = []
        cropped_ids: list[int] = []
        for f in frames:
            pixels = f.pixels
            if pixels.dtype != np.uint8 or pixels.ndim != 2:
                out[f.part_id] = Inspection(
                    f.part_id, None, f"unsupported frame {pixels.dtype} {pixels.shape}"
                )
                continue
            try:
                crop, _ = crop_part(
                    pixels.astype(np.uint8, copy=False), self.roi_size_px, self.belt_threshold
                )
            except ValueError as exc:
                out[f.part_id] = Inspection(
                    f.part_id, None, str(exc), no_part=True, image=pixels.astype(np.uint8)
                )
                continue
            crops.append(crop)
            cropped_ids.append(f.part_id)
        if crops:
            try:
                results = self.backend.infer(crops)
            except Exception as exc:  # noqa: BLE001 - any backend failure is a fail-safe, never a crash
                for pid, crop in zip(cropped_ids, crops, strict=True):
                    out[pid] = Inspection(pid, None, f"{type(exc).__name__}: {exc}", image=crop)
            else:
                for pid, crop, findings in zip(cropped_ids, crops, results, strict=True):
                    out[pid] = Inspection(pid, findings, image=crop)
        return [out[f.part_id] for f in frames]


class InspectionQueue:
    """Frames waiting for the model, run in batches on the inference ``executor``.

    ``on_result`` gets each ``Inspection`` on the event loop, in frame order.
    """

    STAGE = "inference"
    """The watchdog stage that must see progress while frames are waiting."""

    def __init__(
        self,
        inspector: Inspector,
        executor: Executor,
        batch_size: int,
        watchdog: ProgressWatchdog,
        on_result: Callable[[Inspection], None],
    ) -> None:
        self._inspector = inspector
        self._executor = executor
        self._batch_size = batch_size
        self._watchdog = watchdog
        self._on_result = on_result
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._pending = 0

    def put(self, frame: Frame) -> None:
        """Queue one complete frame."""
        self._pending += 1
        self._watchdog.idle(self.STAGE, False)
        self._queue.put_nowait(frame)

    async def run(self) -> None:
        """Inspect what is queued, batch by batch, until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                results = await loop.run_in_executor(self._executor, self._inspector.run, batch)
            finally:
                self._pending -= len(batch)
                self._watchdog.idle(self.STAGE, self._pending == 0)
            self._watchdog.beat(self.STAGE)
            for ins in results:
                self._on_result(ins)
