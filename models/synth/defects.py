"""Defects painted onto a good surface, each with the exact pixels it changed.

Geometry is drawn in millimetres from the defect's own random stream, so a
spec gives the same defect (position, size, orientation) at any resolution.
Default sizes and contrasts (gray levels on a 0..255 surface):

=====================  ================================================  =====================
kind                   shape                                             appearance
=====================  ================================================  =====================
``scratch``            slightly curved line, 3-15 mm long, 0.15-0.3 mm   +-40..75, bright more
                       wide                                              often on metal/board
``crack``              jagged dark line 3-8 mm with 1-3 branches,        40-65 % darker
                       0.12-0.22 mm wide
``spot``               soft ellipse (dent, pit, burn), 1-3 mm            +-30..60
``contamination``      irregular blob 3-6 mm of foreign grainy           +-35..70 and its own
                       material (oil, dust, glue)                        grain texture
``missing_feature``    one removable feature group of the family        the bare surface
                       (hole, boss, rib, pad, stitches) is absent
=====================  ================================================  =====================

A defect's mask is where its coverage reaches half its peak, so even a line
thinner than a pixel at a coarse resolution has a non-empty mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.synth import raster
from models.synth.families import layout_for
from models.synth.layout import Layout
from models.synth.raster import BoolImage, FloatImage

DefectKind = Literal["scratch", "crack", "spot", "contamination", "missing_feature"]
DEFECT_KINDS: tuple[DefectKind, ...] = get_args(DefectKind)
"""Every defect kind, in a fixed order."""

_MARGIN_MM = 1.5  # keep defects clear of the rounded corners and the bevelled edge


@dataclass(frozen=True, slots=True, eq=False)
class Surface:
    """The good part a defect is painted on: ``image = texture * layout.gain + layout.offset``.

    ``scale`` is the part's size over the 28 mm reference layout.
    """

    family: str
    texture: FloatImage
    layout: Layout
    scale: float
    scratch_bright_p: float


def _centre(rng: np.random.Generator, radius_mm: float, part_mm: float) -> tuple[float, float]:
    lo = _MARGIN_MM + radius_mm
    hi = max(lo, part_mm - _MARGIN_MM - radius_mm)
    return float(rng.uniform(lo, hi)), float(rng.uniform(lo, hi))


def _to_px(points_mm: npt.NDArray[np.float64], mm_per_px: float) -> npt.NDArray[np.float64]:
    return points_mm / mm_per_px - 0.5


def _strokes(
    size_px: int, lines: list[npt.NDArray[np.float64]], half_widths: list[float]
) -> tuple[raster.Window, FloatImage]:
    """Coverage of several stroked polylines (pixels) in one shared window."""
    allpts = np.concatenate(lines)
    pad = max(half_widths) + 2.0
    win = raster.window(
        size_px, allpts[:, 0].min(), allpts[:, 1].min(), allpts[:, 0].max(), allpts[:, 1].max(), pad
    )
    cov = np.zeros((win.ys.shape[0], win.xs.shape[1]), dtype=np.float32)
    for pts, hw in zip(lines, half_widths, strict=True):
        d = raster.polyline_distance(win, pts)
        np.maximum(cov, np.clip(hw + 0.5 - d, 0.0, min(1.0, 2.0 * hw)), out=cov)
    return win, cov


def _commit(mask: BoolImage, win: raster.Window, cov: FloatImage) -> None:
    peak = float(cov.max()) if cov.size else 0.0
    if peak > 0:
        mask[win.rows, win.cols] |= cov >= 0.5 * peak


def scratch(
    rng: np.random.Generator,
    img: FloatImage,
    s: Surface,
    mm_per_px: float,
    part_mm: float,
    mask: BoolImage,
) -> None:
    """A slightly curved line scraped into the surface, brighter or darker than it."""
    length = float(rng.uniform(3.0, min(15.0, part_mm - 2 * _MARGIN_MM - 1.0)))
    theta = rng.uniform(0.0, np.pi)
    sagitta = rng.uniform(-0.04, 0.04) * length
    half_w = rng.uniform(0.075, 0.15)
    sign = 1.0 if rng.random() < s.scratch_bright_p else -1.0
    amount = sign * rng.uniform(40.0, 75.0)
    cx, cy = _centre(rng, length / 2 + abs(sagitta) + half_w, part_mm)
    t = np.linspace(-0.5, 0.5, 13)
    along, across = t * length, sagitta * (1.0 - 4.0 * t**2)
    c, sn = np.cos(theta), np.sin(theta)
    pts = np.stack([cx + along * c - across * sn, cy + along * sn + across * c], axis=1)
    win, cov = _strokes(img.shape[0], [_to_px(pts, mm_per_px)], [half_w / mm_per_px])
    img[win.rows, win.cols] += cov * amount
    _commit(mask, win, cov)


def _walk(
    rng: np.random.Generator, start: npt.NDArray[np.float64], heading: float, length: float
) -> npt.NDArray[np.float64]:
    """A jagged path: each 0.25 mm step turns randomly but is pulled back to ``heading``."""
    n = max(3, int(length / 0.25))
    angles = np.empty(n)
    a = heading
    for k in range(n):
        a += rng.normal(0.0, 0.45) - 0.3 * (a - heading)
        angles[k] = a
    steps = 0.25 * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def crack(
    rng: np.random.Generator,
    img: FloatImage,
    s: Surface,
    mm_per_px: float,
    part_mm: float,
    mask: BoolImage,
) -> None:
    """A dark, thin, jagged fracture line with one to three side branches."""
    length = float(rng.uniform(3.0, 8.0))
    heading = rng.uniform(0.0, 2 * np.pi)
    main = _walk(rng, np.zeros(2), heading, length)
    lines = [main]
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(len(main) // 4, max(len(main) // 4 + 1, 3 * len(main) // 4)))
        turn = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2)
        lines.append(_walk(rng, main[k], heading + turn, length * rng.uniform(0.25, 0.5)))
    allpts = np.concatenate(lines)
    mid = (allpts.min(axis=0) + allpts.max(axis=0)) / 2
    radius = float(np.max(np.abs(allpts - mid))) * np.sqrt(2.0)
    cx, cy = _centre(rng, radius, part_mm)
    half_w = rng.uniform(0.06, 0.11)
    widths = [half_w / mm_per_px] + [0.75 * half_w / mm_per_px] * (len(lines) - 1)
    px = [_to_px(line - mid + (cx, cy), mm_per_px) for line in lines]
    win, cov = _strokes(img.shape[0], px, widths)
    keep = rng.uniform(0.35, 0.6)
    img[win.rows, win.cols] *= 1.0 - cov * (1.0 - keep)
    _commit(mask, win, cov)


def spot(
    rng: np.random.Generator,
    img: FloatImage,
    s: Surface,
    mm_per_px: float,
    part_mm: float,
    mask: BoolImage,
) -> None:
    """A soft elliptical dent, pit or burn mark, darker (more often) or brighter."""
    diameter = float(rng.uniform(1.0, 2.2))
    aspect = rng.uniform(1.0, 1.3)
    theta = rng.uniform(0.0, np.pi)
    amount = (-1.0 if rng.random() < 0.6 else 1.0) * rng.uniform(30.0, 60.0)
    cx, cy = _centre(rng, diameter * aspect / 2, part_mm)
    ra, rb = diameter * aspect / 2 / mm_per_px, diameter / 2 / mm_per_px
    pcx, pcy = cx / mm_per_px - 0.5, cy / mm_per_px - 0.5
    win = raster.window(img.shape[0], pcx - ra, pcy - ra, pcx + ra, pcy + ra, pad=0.2 * ra + 2)
    dx, dy = win.xs - pcx, win.ys - pcy
    c, sn = np.cos(theta), np.sin(theta)
    r = np.sqrt(((dx * c + dy * sn) / ra) ** 2 + ((-dx * sn + dy * c) / rb) ** 2)
    cov = np.clip((1.15 - r) / 0.3, 0.0, 1.0).astype(np.float32)
    # The centre of a dent or pit is deeper than its rim.
    img[win.rows, win.cols] += cov * amount * (1.0 + 0.3 * np.clip(1.0 - r, 0.0, 1.0))
    _commit(mask, win, cov)


def contamination(
    rng: np.random.Generator,
    img: FloatImage,
    s: Surface,
    mm_per_px: float,
    part_mm: float,
    mask: BoolImage,
) -> None:
    """An irregular blob of foreign material with its own level and grain."""
    extent = float(rng.uniform(3.0, 6.0))
    cx, cy = _centre(rng, extent / 2 * 1.2, part_mm)
    rad = extent / 2 / mm_per_px
    pcx, pcy = cx / mm_per_px - 0.5, cy / mm_per_px - 0.5
    win = raster.window(img.shape[0], pcx - rad, pcy - rad, pcx + rad, pcy + rad, pad=0.3 * rad + 2)
    h, w = win.ys.shape[0], win.xs.shape[1]
    lumps = ndimage.gaussian_filter(rng.standard_normal((h, w)), 0.35 / mm_per_px)
    lumps /= max(float(lumps.std()), 1e-6)
    r = np.sqrt((win.xs - pcx) ** 2 + (win.ys - pcy) ** 2) / rad
    shape = 1.0 - r + 0.3 * lumps
    cov = np.clip(shape / 0.15 + 0.5, 0.0, 1.0).astype(np.float32)
    # Keep one blob: isolated specks far from the centre would not be one defect.
    labels, _ = ndimage.label(cov >= 0.5)
    centre_label = labels[round(pcy) - win.rows.start, round(pcx) - win.cols.start]
    if centre_label > 0:
        cov = np.where(ndimage.binary_dilation(labels == centre_label, iterations=2), cov, 0.0)
    region = img[win.rows, win.cols]
    level = float(region.mean()) + (1.0 if rng.random() < 0.5 else -1.0) * rng.uniform(35.0, 70.0)
    grain = ndimage.gaussian_filter(rng.standard_normal((h, w)), 0.6) * 12.0
    fill = (level + grain).astype(np.float32)
    img[win.rows, win.cols] = region + cov * (fill - region)
    _commit(mask, win, cov.astype(np.float32))


def missing_feature(
    rng: np.random.Generator,
    img: FloatImage,
    s: Surface,
    mm_per_px: float,
    part_mm: float,
    mask: BoolImage,
) -> None:
    """One removable feature group of the family (hole, boss, rib, pad, stitches) is absent."""
    groups = s.layout.removable[int(rng.integers(len(s.layout.removable)))]
    size_px = img.shape[0]
    bare = layout_for(s.family, size_px, mm_per_px, s.scale, frozenset(groups))
    img[:] = s.texture * bare.gain + bare.offset
    mask |= s.layout.group_mask(groups)


Painter = Callable[[np.random.Generator, FloatImage, Surface, float, float, BoolImage], None]
"""Paints one defect: ``(rng, img, surface, mm_per_px, part_mm, mask)``; edits img and mask."""

PAINTERS: dict[DefectKind, Painter] = {
    "scratch": scratch,
    "crack": crack,
    "spot": spot,
    "contamination": contamination,
    "missing_feature": missing_feature,
}
"""The painter for each defect kind."""
