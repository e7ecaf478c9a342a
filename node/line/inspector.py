"""The inspector: frames in, findings out, on the single inference worker thread."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.camera.base import Frame
from models.backend import Backend
from models.findings import Findings
from node.line.roi import crop_part


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
