"""Where a defect is and how big it is, measured on a mask over a part image.

One function set serves both sides of grounding: captions for training are
composed from the ground-truth mask with it, and the runtimes measure the
predicted anomaly map with it, so a sentence's facts and the structured facts
are measured the same way.

Conventions: images are ``(H, W)``; ``bbox_px`` is ``(x0, y0, x1, y1)`` with
exclusive upper bounds; ``centroid_px`` is ``(x, y)``. The part is the largest
blob of pixels brighter than ``part_threshold`` (the belt is dark).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.findings import Region, footprint

LOCATIONS: tuple[tuple[str, str, str], ...] = (
    ("upper left", "upper centre", "upper right"),
    ("centre left", "centre", "centre right"),
    ("lower left", "lower centre", "lower right"),
)
"""The 3 x 3 grid of places on the part, by row (upper to lower) then column."""

ALL_LOCATIONS: tuple[str, ...] = tuple(loc for row in LOCATIONS for loc in row)
"""Every location name, row by row."""

SizeClass = Literal["small", "medium", "large"]
SIZE_CLASSES: tuple[SizeClass, ...] = ("small", "medium", "large")
"""Size classes of a defect's length, smallest first."""

SMALL_BELOW_MM = 2.5
"""A defect shorter than this is ``small`` ..."""
LARGE_FROM_MM = 5.0
"""... one at least this long is ``large``; ``medium`` in between."""

DEFAULT_PART_THRESHOLD = 60
"""Gray level separating part from belt (the node's ``belt_threshold`` default)."""
NEAR_EDGE_MM = 2.0
"""A region within this distance of the part's boundary is "near the edge"."""
MERGE_MM = 3.0
"""Defect pieces closer than this (bounding box to bounding box) are one defect (ground truth;
a package calibrates its own value for the coarser predicted map)."""

BoolMask = npt.NDArray[np.bool_]
_EIGHT = np.ones((3, 3), dtype=bool)


def square(radius: int) -> BoolMask:
    """The ``(2 radius + 1)``-square structuring element: one dilation by it is ``radius``
    dilations by ``_EIGHT`` (and costs one pass)."""
    return np.ones((2 * radius + 1, 2 * radius + 1), dtype=bool)


def size_class(length_mm: float) -> SizeClass:
    """The size class of a defect ``length_mm`` long (millimetres)."""
    if length_mm < SMALL_BELOW_MM:
        return "small"
    return "large" if length_mm >= LARGE_FROM_MM else "medium"


@dataclass(frozen=True, slots=True)
class PartGeometry:
    """The part in an image: its mask, its bounding box and each pixel's distance to its edge.

    ``edge_distance_mm`` is 0 off the part; ``None`` when not computed (then
    ``near_edge`` measures locally around the pixels asked about). An image
    with no part yields the whole image as the part (so locations still read
    sensibly).
    """

    mask: BoolMask
    bbox_px: tuple[int, int, int, int]
    edge_distance_mm: npt.NDArray[np.float32] | None

    @classmethod
    def of(
        cls,
        image: npt.NDArray[np.uint8],
        mm_per_px: float,
        part_threshold: int,
        edges: bool = True,
    ) -> PartGeometry:
        """Find the part in ``image`` (uint8 ``(H, W)``) at ``mm_per_px`` millimetres per pixel.

        ``edges=False`` skips the whole-image distance transform (``near_edge``
        then measures locally, which is cheaper for a few small regions).
        """
        bright = image > part_threshold
        # Rows and columns crossing the part have many bright pixels; a glint on the
        # belt has few. Cheaper than labelling blobs, and the part is one convex blob.
        need = max(1, min(image.shape) // 16)
        counts = bright.view(np.uint8)
        ys = np.flatnonzero(counts.sum(axis=1, dtype=np.uint32) >= need)
        xs = np.flatnonzero(counts.sum(axis=0, dtype=np.uint32) >= need)
        if ys.size == 0 or xs.size == 0:
            mask = np.ones(image.shape, dtype=bool)
            ys, xs = np.arange(image.shape[0]), np.arange(image.shape[1])
        else:
            mask = np.zeros(image.shape, dtype=bool)
            box = (slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1))
            mask[box] = bright[box]
        # Dark designed features (a cored hole) stay holes in the mask: a defect
        # beside one is "near the edge" of it, which is what an operator sees.
        bbox = (int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1)
        if not edges:
            return cls(mask, bbox, None)
        dist = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1] * mm_per_px
        return cls(mask, bbox, dist.astype(np.float32))

    def near_edge(
        self,
        xs: npt.NDArray[np.intp],
        ys: npt.NDArray[np.intp],
        mm_per_px: float,
        limit_mm: float = NEAR_EDGE_MM,
    ) -> bool:
        """True when any of the pixels ``(xs, ys)`` lies within ``limit_mm`` of the part's edge."""
        if self.edge_distance_mm is not None:
            return bool(self.edge_distance_mm[ys, xs].min() <= limit_mm)
        r = int(np.ceil(limit_mm / mm_per_px)) + 2
        x0, y0 = int(xs.min()) - r, int(ys.min()) - r
        x1, y1 = int(xs.max()) + r + 1, int(ys.max()) + r + 1
        h, w = self.mask.shape
        win = np.zeros((y1 - y0, x1 - x0), dtype=bool)  # outside the image is off the part
        sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(h, y1), min(w, x1)
        win[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = self.mask[sy0:sy1, sx0:sx1]
        if win.all():  # all on the part: the edge is at least r pixels from every pixel asked
            return False
        dist = ndimage.distance_transform_edt(win)
        return bool(dist[ys - y0, xs - x0].min() * mm_per_px <= limit_mm)

    def location(self, cx: float, cy: float) -> str:
        """The grid place (``LOCATIONS``) of the point ``(cx, cy)`` (pixels) on the part."""
        return LOCATIONS[self.cell(cx, cy)[0]][self.cell(cx, cy)[1]]

    def cell(self, cx: float, cy: float) -> tuple[int, int]:
        """The ``(row, column)`` grid cell of ``(cx, cy)``, each 0..2."""
        x0, y0, x1, y1 = self.bbox_px
        col = min(2, max(0, int(3.0 * (cx - x0) / max(1, x1 - x0))))
        row = min(2, max(0, int(3.0 * (cy - y0) / max(1, y1 - y0))))
        return row, col

    def cell_margin(self, cx: float, cy: float) -> float:
        """Distance of ``(cx, cy)`` to the nearest inner grid line, as a fraction of the part."""
        x0, y0, x1, y1 = self.bbox_px
        u = (cx - x0) / max(1, x1 - x0) * 3.0
        v = (cy - y0) / max(1, y1 - y0) * 3.0
        du = min(abs(u - 1.0), abs(u - 2.0))
        dv = min(abs(v - 1.0), abs(v - 2.0))
        return float(min(du, dv) / 3.0)


def hysteresis(prob: npt.NDArray[np.floating], high: float, low: float) -> BoolMask:
    """Pixels at or above ``low`` connected (8-neighbourhood) to a pixel at or above ``high``."""
    grown = prob >= low
    rows = np.flatnonzero(grown.any(axis=1))
    out = np.zeros(prob.shape, dtype=bool)
    if rows.size == 0:
        return out
    cols = np.flatnonzero(grown.any(axis=0))
    sl = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    labels, n = ndimage.label(grown[sl], _EIGHT)
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[labels[prob[sl] >= high]] = True
    seeded[0] = False
    out[sl] = seeded[labels]
    return out


def principal_length_px(xs: npt.NDArray[np.floating], ys: npt.NDArray[np.floating]) -> float:
    """Extent of the points along their principal axis, end pixels included (pixels)."""
    if xs.size < 2:
        return 1.0
    dx, dy = xs - xs.mean(), ys - ys.mean()
    sxx, syy, sxy = float((dx * dx).mean()), float((dy * dy).mean()), float((dx * dy).mean())
    theta = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)
    along = dx * np.cos(theta) + dy * np.sin(theta)
    return float(np.ptp(along)) + 1.0


def measure_regions(
    mask: BoolMask,
    score_map: npt.NDArray[np.floating] | None,
    part: PartGeometry,
    mm_per_px: float,
    min_area_mm2: float = 0.0,
    bridge_px: int = 2,
    merge_mm: float = MERGE_MM,
) -> list[Region]:
    """Connected regions of ``mask`` measured in millimetres, by descending score.

    Pixels closer than ``bridge_px`` are connected; then pieces whose bounding
    boxes come within ``merge_mm`` of each other are one region (a scratch the
    map sees in fragments, a run of missing stitches). ``score_map`` gives each
    region's score (its peak) and contrast (its mean); ``None`` scores every
    region by its area. Regions under ``min_area_mm2`` are dropped.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return []
    cols = np.flatnonzero(mask.any(axis=0))
    # Work inside the mask's bounding box (plus the bridge): anomalies are small.
    pad = bridge_px + 1
    oy, ox = max(0, int(rows[0]) - pad), max(0, int(cols[0]) - pad)
    sub = mask[oy : int(rows[-1]) + pad + 1, ox : int(cols[-1]) + pad + 1]
    joined = ndimage.binary_dilation(sub, square(bridge_px)) if bridge_px else sub
    labels, _ = ndimage.label(joined, _EIGHT)
    labels = np.where(sub, labels, 0)
    groups = _merge_close(ndimage.find_objects(labels), merge_mm / mm_per_px)
    mpp2 = mm_per_px * mm_per_px
    out: list[Region] = []
    for members in groups:
        lys, lxs = [], []
        for k, sl in members:
            ly, lx = np.nonzero(labels[sl] == k)
            lys.append(ly + sl[0].start)
            lxs.append(lx + sl[1].start)
        ys, xs = np.concatenate(lys) + oy, np.concatenate(lxs) + ox
        area = int(xs.size)
        if area == 0 or area * mpp2 < min_area_mm2:
            continue
        cx, cy = float(xs.mean()), float(ys.mean())
        length_mm = principal_length_px(xs.astype(np.float64), ys.astype(np.float64)) * mm_per_px
        area_mm2 = area * mpp2
        values = score_map[ys, xs] if score_map is not None else None
        out.append(
            Region(
                bbox_px=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                centroid_px=(cx, cy),
                area_px=area,
                area_mm2=area_mm2,
                length_mm=length_mm,
                width_mm=area_mm2 / length_mm,
                location=part.location(cx, cy),
                near_edge=part.near_edge(xs, ys, mm_per_px),
                contrast=float(values.mean()) if values is not None else 0.0,
                score=float(values.max()) if values is not None else float(area),
                mask_px=footprint(xs, ys),
            )
        )
    out.sort(key=lambda r: r.score, reverse=True)
    return out


def _merge_close(
    slices: list[tuple[slice, slice] | None], gap_px: float
) -> list[list[tuple[int, tuple[slice, slice]]]]:
    """Group labels (1-based, by their bounding slices) whose boxes come within ``gap_px``."""
    items = [(k, sl) for k, sl in enumerate(slices, start=1) if sl is not None]
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (_, a) in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j][1]
            if (
                a[0].start - gap_px < b[0].stop
                and b[0].start - gap_px < a[0].stop
                and a[1].start - gap_px < b[1].stop
                and b[1].start - gap_px < a[1].stop
            ):
                parent[root(j)] = root(i)
    groups: dict[int, list[tuple[int, tuple[slice, slice]]]] = {}
    for i, item in enumerate(items):
        groups.setdefault(root(i), []).append(item)
    return list(groups.values())
