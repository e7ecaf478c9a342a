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


@dataclass(frozen=True, slots=True)
class Region:
    """One connected anomalous region, measured on the inspected image.

    ``bbox_px`` is ``(x0, y0, x1, y1)`` with exclusive upper bounds;
    ``location`` is a coarse place on the part ("upper left", "centre", ...).
    ``contrast`` is the mean signed deviation from the learned good appearance in
    units of its spread (positive: brighter than good, negative: darker).
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
    "location", "size").
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
    ``regions`` is sorted by descending score.
    """

    anomaly_score: float
    anomaly_map: npt.NDArray[np.float32]
    defect_type: str
    type_confidence: float
    regions: tuple[Region, ...]
    explanation: Explanation
    backend: str = field(default="")

    @property
    def is_anomalous(self) -> bool:
        """True when the backend reported at least one region."""
        return bool(self.regions)
