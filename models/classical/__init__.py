"""The golden-template anomaly detector: the CPU backend that needs only good parts.

- ``TemplateModel.fit(images, shift_px=2) -> TemplateModel``; ``model.save(path)``;
  ``TemplateModel.load(path)`` (``.npz``, never pickles).
- ``TemplateBackend(model, mm_per_px, pixel_threshold, min_region_area_mm2,
  name="classical")``: a ``models.backend.Backend``.
"""

from models.classical.backend import (
    DEFAULT_MIN_REGION_AREA_MM2,
    DEFAULT_PIXEL_THRESHOLD,
    TemplateBackend,
)
from models.classical.regions import LOCATIONS
from models.classical.template import TemplateModel

__all__ = [
    "DEFAULT_MIN_REGION_AREA_MM2",
    "DEFAULT_PIXEL_THRESHOLD",
    "LOCATIONS",
    "TemplateBackend",
    "TemplateModel",
]
