"""Findings with regions drawn where a test wants them, on a 24 mm part at 0.125 mm/px."""

from __future__ import annotations

import numpy as np

from models.findings import Explanation, Findings, Region, footprint

MM_PER_PX = 0.125
PART_BBOX = (32, 32, 224, 224)
"""A 24 x 24 mm part whose upper-left corner is at image pixel (32, 32)."""


def region(x0_mm: float, y0_mm: float, x1_mm: float, y1_mm: float, score: float = 2.0) -> Region:
    """A filled rectangle from (x0, y0) to (x1, y1) part millimetres, measured like a backend."""
    px = [round(v / MM_PER_PX) for v in (x0_mm, y0_mm, x1_mm, y1_mm)]
    xs, ys = np.meshgrid(np.arange(px[0], px[2]), np.arange(px[1], px[3]))
    xs, ys = xs.ravel() + PART_BBOX[0], ys.ravel() + PART_BBOX[1]
    area = xs.size * MM_PER_PX**2
    length = max(x1_mm - x0_mm, y1_mm - y0_mm)
    return Region(
        bbox_px=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        centroid_px=(float(xs.mean()), float(ys.mean())),
        area_px=int(xs.size),
        area_mm2=area,
        length_mm=length,
        width_mm=area / length,
        location="centre",
        near_edge=False,
        contrast=-3.0,
        score=score,
        mask_px=footprint(xs, ys),
    )


def findings(defect_type: str, *regions: Region, score: float = 2.0) -> Findings:
    """Findings of ``defect_type`` with ``regions`` (score over the sim recipe's 1.0)."""
    return Findings(
        score,
        np.zeros((256, 256), np.float32),
        defect_type if regions else "none",
        0.9,
        tuple(regions),
        Explanation("model words", None),
        part_bbox_px=PART_BBOX,
    )
