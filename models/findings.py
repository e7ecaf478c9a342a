"""Typed results that cross the Backend boundary.

Every backend (classical template detector, ONNX Runtime, TensorRT, torch)
returns these frozen dataclasses; nothing downstream sees raw tensors or dicts.
Units are in the field names: ``_px`` image pixels, ``_mm`` millimetres,
``_mm2`` square millimetres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

UNKNOWN_TYPE = "unknown anomaly"
"""Defect type reported when the backend sees an anomaly it cannot classify."""

ExplanationSource = Literal["model", "facts"]
BoolMask = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Region:
    """One connected anomalous region, measured on the inspected image.

    ``bbox_px`` is ``(x0, y0, x1, y1)`` with exclusive upper bounds;
    ``location`` is a coarse place on the part ("upper left", "centre", ...).
    ``contrast`` is the mean signed deviation from the learned good appearance in
    units of its spread (positive: brighter than good, negative: darker).
    ``mask_px`` is the region's own pixels inside ``bbox_px`` (``(y1 - y0, x1 - x0)``
    booleans; ``None`` where a backend does not give them): what a recipe zone
    test needs, since a bounding box of a diagonal scratch covers places it never touches.
    """

    bbox_px: tuple[int, int, int, int]
    centroid_px: tuple[float, float]
    area_px: int
    area_mm2: float
    length_mm: float
    width_mm: float
    location: str
    near_edge: bool
    contrast: float
    score: float
    mask_px: BoolMask | None = field(default=None, compare=False, repr=False)


def footprint(xs: npt.NDArray[np.intp], ys: npt.NDArray[np.intp]) -> BoolMask:
    """The pixels ``(xs, ys)`` as a mask over their own bounding box (``Region.mask_px``)."""
    x0, y0 = int(xs.min()), int(ys.min())
    out = np.zeros((int(ys.max()) - y0 + 1, int(xs.max()) - x0 + 1), dtype=bool)
    out[ys - y0, xs - x0] = True
    return out


@dataclass(frozen=True, slots=True)
class ExplanationFacts:
    """The structured facts an explanation sentence is grounded in."""

    defect_type: str
    location: str
    size_mm: float
    near_edge: bool
    region_count: int


@dataclass(frozen=True, slots=True)
class Explanation:
    """A short plain-language explanation and the facts it was rendered from.

    ``source`` says whether ``text`` is the model's own sentence or was
    rendered from ``facts``. ``model_text`` is the sentence the model wrote
    (kept when the grounding guard replaced it, empty when no model ran);
    ``mismatches`` names the facts the guard found contradicted ("type",
    "location", "size"; "form" for a slotted sentence that is not its type's
    canonical caption).
    """

    text: str
    facts: ExplanationFacts | None
    source: ExplanationSource = "facts"
    model_text: str = ""
    mismatches: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Findings:
    """Everything a backend found on one image.

    ``anomaly_score`` is the image-level score (higher is more anomalous, the
    unit is backend-specific and compared against recipe thresholds);
    ``anomaly_map`` is a float32 ``(H, W)`` map in the same unit;
    ``regions`` is sorted by descending score; ``part_bbox_px`` is the part's
    ``(x0, y0, x1, y1)`` in the image (exclusive upper bounds), the origin of part
    coordinates (``None``: not measured, the image's own corner stands in).
    """

    anomaly_score: float
    anomaly_map: npt.NDArray[np.float32]
    defect_type: str
    type_confidence: float
    regions: tuple[Region, ...]
    explanation: Explanation
    backend: str = field(default="")
    part_bbox_px: tuple[int, int, int, int] | None = None

    @property
    def is_anomalous(self) -> bool:
        """True when the backend reported at least one region."""
        return bool(self.regions)
