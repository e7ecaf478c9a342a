"""From a deviation map to measured anomalous regions.

Pixels whose deviation reaches the threshold seed a region; the region grows
over connected pixels above half the threshold (hysteresis, so a scratch whose
contrast fades is measured to its ends), with one-pixel gaps bridged. Each
region is then measured in millimetres and placed on the part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.classical.align import F32, Bool
from models.classical.template import TemplateModel
from models.findings import Region, footprint

LOCATIONS = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)
"""The 3 x 3 grid of places on the part, by row (upper to lower) then column."""

_EIGHT = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True, slots=True, eq=False)
class PartFrame:
    """The part's geometry in a template: bounding box, distance to its edge, inspected area.

    ``bbox_px`` is ``(x0, y0, x1, y1)`` of the part mask (exclusive upper bounds);
    ``edge_distance_mm`` the distance of each part pixel to the part's boundary;
    ``inspect`` the part mask less a ``shift_px + 1`` rim, where the boundary
    itself moves with misregistration and cannot be judged.
    """

    bbox_px: tuple[int, int, int, int]
    edge_distance_mm: F32
    inspect: Bool
    mm_per_px: float

    @classmethod
    def of(cls, model: TemplateModel, mm_per_px: float) -> PartFrame:
        """Derive the frame from a template's part mask at ``mm_per_px``."""
        mask = model.part_mask
        ys, xs = np.nonzero(mask)
        bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        padded = np.pad(mask, 1)  # the image border is a part boundary too
        dist = ndimage.distance_transform_edt(padded)[1:-1, 1:-1] * mm_per_px
        inspect = ndimage.binary_erosion(mask, iterations=model.shift_px + 1)
        return cls(bbox, dist.astype(np.float32), inspect, mm_per_px)

    def location(self, cx: float, cy: float) -> str:
        """The grid place (``LOCATIONS``) of the point ``(cx, cy)`` pixels on the part."""
        x0, y0, x1, y1 = self.bbox_px
        col = min(2, max(0, int(3.0 * (cx - x0) / max(1, x1 - x0))))
        row = min(2, max(0, int(3.0 * (cy - y0) / max(1, y1 - y0))))
        return LOCATIONS[row][col]


@dataclass(frozen=True, slots=True)
class Blob:
    """One region plus the shape and appearance cues the type heuristics read.

    ``minor_mm`` is the extent across the principal axis; ``fill`` the area over
    the ellipse spanned by the two extents (1 for an ellipse, low for a
    branching or ragged shape); ``feature_overlap`` the fraction of the region on
    designed features; ``feature_presence`` how much of the features' contrast
    against the bare surface the image still shows there (1 present, 0 gone);
    ``wander_mm`` the RMS distance of the region's pixels from the best parabola
    along its principal axis (a scratch follows one; a crack zigzags and branches).
    """

    region: Region
    minor_mm: float
    fill: float
    feature_overlap: float
    feature_presence: float
    wander_mm: float


def find_blobs(
    model: TemplateModel,
    frame: PartFrame,
    prepared: F32,
    deviation: F32,
    absdev: F32,
    pixel_threshold: float,
    min_area_mm2: float,
    near_edge_mm: float,
) -> list[Blob]:
    """Measured regions of ``deviation`` (signed, spread units) at ``pixel_threshold``.

    ``absdev`` is ``|deviation|`` with everything outside ``frame.inspect`` zeroed.
    Regions smaller than ``min_area_mm2`` are dropped; the rest are returned by
    descending score.
    """
    seeds = absdev >= pixel_threshold
    if not seeds.any():
        return []
    grown = absdev >= 0.5 * pixel_threshold
    labels, _ = ndimage.label(ndimage.binary_dilation(grown, _EIGHT), _EIGHT)
    seeded = np.unique(labels[seeds])
    mpp2 = frame.mm_per_px**2
    blobs = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or k not in seeded:
            continue
        pix = (labels[sl] == k) & grown[sl]
        if pix.sum() * mpp2 < min_area_mm2:
            continue
        blobs.append(_measure(model, frame, prepared, deviation, absdev, sl, pix, near_edge_mm))
    blobs.sort(key=lambda b: b.region.score, reverse=True)
    return blobs


def _measure(
    model: TemplateModel,
    frame: PartFrame,
    prepared: F32,
    deviation: F32,
    absdev: F32,
    sl: tuple[slice, slice],
    pix: Bool,
    near_edge_mm: float,
) -> Blob:
    mpp = frame.mm_per_px
    ly, lx = np.nonzero(pix)
    ys, xs = ly + sl[0].start, lx + sl[1].start
    area = int(xs.size)
    cx, cy = float(xs.mean()), float(ys.mean())
    major_px, minor_px, wander_px = _shape(xs - cx, ys - cy)
    length_mm = major_px * mpp
    area_mm2 = area * mpp * mpp
    dev = deviation[ys, xs]
    ad = absdev[ys, xs]
    region = Region(
        bbox_px=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        centroid_px=(cx, cy),
        area_px=area,
        area_mm2=area_mm2,
        length_mm=length_mm,
        width_mm=area_mm2 / length_mm,
        location=frame.location(cx, cy),
        near_edge=bool(frame.edge_distance_mm[ys, xs].min() <= near_edge_mm),
        contrast=float(dev.mean()),
        score=float(ad.max()),
        mask_px=footprint(xs, ys),
    )
    on_feature = model.feature_mask[ys, xs]
    presence = 1.0
    if on_feature.any():
        fy, fx = ys[on_feature], xs[on_feature]
        expected = np.abs(model.mean[fy, fx] - model.background[fy, fx]).mean()
        seen = np.abs(prepared[fy, fx] - model.background[fy, fx]).mean()
        presence = float(seen / max(expected, 1e-3))
    return Blob(
        region=region,
        minor_mm=minor_px * mpp,
        fill=float(area / (np.pi / 4.0 * major_px * minor_px)),
        feature_overlap=float(on_feature.mean()),
        feature_presence=presence,
        wander_mm=wander_px * mpp,
    )


def _shape(
    dx: npt.NDArray[np.floating], dy: npt.NDArray[np.floating]
) -> tuple[float, float, float]:
    """Extent along the principal axis, extent across it (pixels, end pixels included),
    and the RMS distance across from the least-squares parabola along it (pixels)."""
    if dx.size < 4:
        return 1.0, 1.0, 0.0
    sxx, syy, sxy = float((dx * dx).mean()), float((dy * dy).mean()), float((dx * dy).mean())
    theta = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)
    c, s = np.cos(theta), np.sin(theta)
    along = dx * c + dy * s
    across = -dx * s + dy * c
    design = np.stack([np.ones_like(along), along, along * along], axis=1)
    coef, *_ = np.linalg.lstsq(design, across, rcond=None)
    wander = float(np.sqrt(np.mean((across - design @ coef) ** 2)))
    return float(np.ptp(along)) + 1.0, float(np.ptp(across)) + 1.0, wander
