"""The classical backend: golden-template comparison, as a ``models.backend.Backend``.

Runs on one CPU core in a few milliseconds per 224 x 224 image, needs no
accelerator and no training beyond teaching good parts, so it is the node's
default and its fallback when a deep model is unavailable.

Per image: prepare it like the template's training images (smooth, gain,
align, de-shade), take the signed deviation in spread units outside the
template's envelope, find regions by hysteresis at ``pixel_threshold`` (seeds)
and half of it (extent), drop regions below ``min_region_area_mm2``, measure
and name what remains. Coordinates in the returned ``Findings`` are those of
the input image (the alignment shift is added back).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy import ndimage

from models.backend import Image
from models.classical.align import F32, shift_image
from models.classical.classify import classify
from models.classical.regions import PartFrame, find_blobs
from models.classical.template import TemplateModel, check_images
from models.explain_text import NO_DEFECT_TYPE, render_explanation
from models.findings import Explanation, ExplanationFacts, Findings, Region
from models.outputs import check_findings

DEFAULT_PIXEL_THRESHOLD = 6.0
"""A deviation (spread units) good synthetic parts stay below with margin (max ~5.3)."""
DEFAULT_MIN_REGION_AREA_MM2 = 0.3
"""Smallest region reported by default (about 19 px at 0.125 mm/px)."""


class TemplateBackend:
    """Golden-template anomaly detector implementing the ``Backend`` protocol.

    ``mm_per_px`` is the scale of the images (mm per pixel), ``pixel_threshold``
    the deviation in spread units that seeds a region, ``min_region_area_mm2``
    the smallest region reported, ``near_edge_mm`` the distance to the part's
    boundary within which a region is "near the edge".

    ``anomaly_score`` is the maximum, inside the inspected part, of the
    deviation magnitude averaged over 3 x 3 pixels (one hot pixel cannot reach
    a reject score on its own); ``anomaly_map`` is that averaged map. A region's
    ``score`` is its peak unaveraged deviation. Raises ``ValueError`` for a
    non-positive scale or threshold or a negative minimum area.
    """

    def __init__(
        self,
        model: TemplateModel,
        mm_per_px: float,
        pixel_threshold: float = DEFAULT_PIXEL_THRESHOLD,
        min_region_area_mm2: float = DEFAULT_MIN_REGION_AREA_MM2,
        name: str = "classical",
        near_edge_mm: float = 2.0,
    ) -> None:
        if not mm_per_px > 0 or not pixel_threshold > 0:
            raise ValueError(
                f"mm_per_px and pixel_threshold must be > 0, got {mm_per_px}, {pixel_threshold}"
            )
        if not min_region_area_mm2 >= 0 or not near_edge_mm >= 0:
            raise ValueError("min_region_area_mm2 and near_edge_mm must be >= 0")
        self.name = name
        self.model = model
        self.mm_per_px = float(mm_per_px)
        self.pixel_threshold = float(pixel_threshold)
        self.min_region_area_mm2 = float(min_region_area_mm2)
        self.near_edge_mm = float(near_edge_mm)
        self._frame = PartFrame.of(model, self.mm_per_px)

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        """Inspect each image (uint8 ``(H, W)`` of the template's shape); one ``Findings`` each.

        Every image is checked before any is inspected: raises ``ValueError``
        naming the first image of the wrong dtype, dimensionality or shape, and
        ``models.outputs.ModelOutputError`` when a score or map is not finite (a
        template with NaN in it).
        """
        check_images(images, self.model.shape)
        return check_findings([self._inspect(img) for img in images], self.name)

    def _inspect(self, image: Image) -> Findings:
        model, frame = self.model, self._frame
        prepared, (dx, dy) = model.prepare(image)
        deviation = model.deviation(prepared)
        magnitude = np.abs(deviation)
        magnitude[~frame.inspect] = 0.0
        blobs = find_blobs(
            model,
            frame,
            prepared,
            deviation,
            magnitude,
            self.pixel_threshold,
            self.min_region_area_mm2,
            self.near_edge_mm,
        )
        averaged: F32 = ndimage.uniform_filter(magnitude, 3)
        score = float(averaged.max())
        # Back from the template's frame to the input image's.
        anomaly_map = shift_image(averaged, -dx, -dy) if (dx or dy) else averaged
        regions = tuple(_moved(b.region, dx, dy) for b in blobs)
        if blobs:
            defect_type, confidence = classify(blobs[0], self.mm_per_px)
            top = regions[0]
            facts = ExplanationFacts(
                defect_type, top.location, round(top.length_mm, 1), top.near_edge, len(regions)
            )
        else:
            defect_type, confidence = NO_DEFECT_TYPE, 0.0
            facts = ExplanationFacts(NO_DEFECT_TYPE, "", 0.0, False, 0)
        return Findings(
            anomaly_score=score,
            anomaly_map=np.ascontiguousarray(anomaly_map, dtype=np.float32),
            defect_type=defect_type,
            type_confidence=confidence,
            regions=regions,
            explanation=Explanation(render_explanation(facts), facts, "facts"),
            backend=self.name,
            part_bbox_px=_moved_box(frame.bbox_px, dx, dy),
        )


def _moved_box(box: tuple[int, int, int, int], dx: int, dy: int) -> tuple[int, int, int, int]:
    """``box`` moved by ``(dx, dy)`` pixels."""
    x0, y0, x1, y1 = box
    return (x0 + dx, y0 + dy, x1 + dx, y1 + dy)


def _moved(r: Region, dx: int, dy: int) -> Region:
    """``r`` with its pixel coordinates moved by ``(dx, dy)``."""
    if dx == 0 and dy == 0:
        return r
    x0, y0, x1, y1 = r.bbox_px
    cx, cy = r.centroid_px
    return replace(r, bbox_px=(x0 + dx, y0 + dy, x1 + dx, y1 + dy), centroid_px=(cx + dx, cy + dy))
