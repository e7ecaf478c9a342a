"""The inspector: frames in, findings out, on the single inference worker thread.

:class:`InspectionQueue` is the stage as the line sees it: frames wait in it and
go to the worker in batches of up to ``inspection.batch_size``; the progress
watchdog's ``inference`` stage is busy while any frame is waiting or running.

The verdict does not wait for prose (the design's rule 3): with a backend that
stages its work (``models.backend.StagedBackend``) a batch's findings go to the
judge as soon as the detect graph has run, their facts rendered plainly, and
the model's sentences are written afterwards on a worker of their own (run at a
lower OS priority than the line's threads, ``node.service.priority``), one
part at a time, each handed on as a second ``Inspection`` (``sentence=True``).
A part whose result is already published when its turn comes is skipped: its
sentence would be read by nobody, and a slow decoder cannot build a backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import structlog

from drivers.camera.base import Frame
from models.backend import Backend, Staged, StagedBackend
from models.findings import Findings
from node.line.roi import crop_part
from node.service.watchdog import ProgressWatchdog

log = structlog.get_logger(__name__)


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
    sentence: bool = False
    """The model's sentence for a part already judged: ``findings`` are the same detection
    with the sentence, or None with ``error`` when the decoder failed."""


@dataclass(frozen=True, slots=True)
class Later:
    """Sentences still to write for a batch: the backend's staged batch, its part ids."""

    staged: Staged
    part_ids: tuple[int, ...]


class Inspector:
    """Crops each frame to the part and runs the backend on the batch.

    ``run`` is blocking; the node calls it on the inference worker thread. It
    never raises for one bad frame: that frame's ``Inspection`` carries the error.
    """

    def __init__(self, backend: Backend, roi_size_px: int, belt_threshold: int) -> None:
        self.backend = backend
        self.roi_size_px = roi_size_px
        self.belt_threshold = belt_threshold

    def _crop(
        self, frames: Sequence[Frame]
    ) -> tuple[dict[int, Inspection], list[npt.NDArray[np.uint8]], list[int]]:
        """Each frame cut to its part: the frames that failed (as inspections), the crops
        and their part ids."""
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
        return out, crops, cropped_ids

    def run(self, frames: Sequence[Frame]) -> list[Inspection]:
        """Inspect ``frames`` (findings with the model's sentences); one ``Inspection`` per
        frame, in order."""
        inspections, later = self._inspect(frames, staged=False)
        assert later is None
        return inspections

    def first(self, frames: Sequence[Frame]) -> tuple[list[Inspection], Later | None]:
        """Inspect ``frames`` for their verdicts: with a staged backend the findings carry
        the plain facts and the sentences still to write are returned (``explain``)."""
        return self._inspect(frames, staged=isinstance(self.backend, StagedBackend))

    def _inspect(
        self, frames: Sequence[Frame], *, staged: bool
    ) -> tuple[list[Inspection], Later | None]:
        out, crops, cropped_ids = self._crop(frames)
        later = None
        if crops:
            try:
                if staged:
                    backend = cast(StagedBackend, self.backend)
                    batch = backend.detect_first(crops)
                    results = batch.findings
                    if batch.pending:
                        ids = tuple(cropped_ids[i] for i in batch.pending)
                        later = Later(batch, ids)
                else:
                    results = self.backend.infer(crops)
            except Exception as exc:  # noqa: BLE001 - any backend failure is a fail-safe, never a crash
                for pid, crop in zip(cropped_ids, crops, strict=True):
                    out[pid] = Inspection(pid, None, f"{type(exc).__name__}: {exc}", image=crop)
            else:
                for pid, crop, findings in zip(cropped_ids, crops, results, strict=True):
                    out[pid] = Inspection(pid, findings, image=crop)
        return [out[f.part_id] for f in frames], later

    def explain(self, later: Later) -> list[Inspection]:
        """The model's sentences of ``later`` (one ``Inspection`` per part, ``sentence``
        set); a decoder failure is each part's ``error``, never raised."""
        backend = cast(StagedBackend, self.backend)
        try:
            found = backend.explain_later(later.staged)
        except Exception as exc:  # noqa: BLE001 - a failed sentence leaves the verdict as it is
            why = f"{type(exc).__name__}: {exc}"
            return [Inspection(pid, None, why, sentence=True) for pid in later.part_ids]
        return [
            Inspection(pid, f, sentence=True) for pid, f in zip(later.part_ids, found, strict=True)
        ]


class InspectionQueue:
    """Frames waiting for the model, run in batches on the inference ``executor``.

    ``on_result`` gets each ``Inspection`` on the event loop, in frame order; the
    sentences written later on ``sentence_executor`` come to it too
    (``Inspection.sentence``), one part at a time, for the parts ``wanted`` still
    says yes to (the others are counted in ``sentences_skipped``).
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
        *,
        sentence_executor: Executor | None = None,
        wanted: Callable[[int], bool] = lambda part_id: True,
    ) -> None:
        self._inspector = inspector
        self._executor = executor
        self._sentence_executor = sentence_executor or executor
        self._batch_size = batch_size
        self._watchdog = watchdog
        self._on_result = on_result
        self._wanted = wanted
        self._queue: asyncio.Queue[Frame] = asyncio.Queue()
        self._pending = 0
        self._later: asyncio.Queue[Later] = asyncio.Queue()
        self.sentences_skipped = 0
        """Sentences not written because their part's result was already published."""

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
                results, later = await loop.run_in_executor(
                    self._executor, self._inspector.first, batch
                )
            finally:
                self._pending -= len(batch)
                self._watchdog.idle(self.STAGE, self._pending == 0)
            self._watchdog.beat(self.STAGE)
            if later is not None:
                self._later.put_nowait(later)
            for ins in results:
                self._on_result(ins)

    async def sentences(self) -> None:
        """Write the sentences of judged parts, oldest first, one part at a time, until
        cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            later = await self._later.get()
            staged = later.staged
            for k, pid in zip(staged.pending, later.part_ids, strict=True):
                if not self._wanted(pid):
                    self.sentences_skipped += 1
                    log.info("sentence_skipped", part_id=pid)
                    continue
                one = Later(Staged(staged.findings, (k,), staged.detections), (pid,))
                written = await loop.run_in_executor(
                    self._sentence_executor, self._inspector.explain, one
                )
                for ins in written:
                    self._on_result(ins)
