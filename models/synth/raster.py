"""Anti-aliased rasterisation of the few shapes the synthetic parts are drawn from.

Every function works in pixel coordinates of an ``(S, S)`` canvas whose pixel
``(row i, column j)`` has its centre at ``x = j``, ``y = i``. Shapes are given
in millimetres by the callers and converted with :func:`mm_to_px`. Coverages
are float32 in ``[0, 1]`` and are computed only inside a small window around the
shape, so drawing a feature costs time proportional to its size, not the image.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatImage = npt.NDArray[np.float32]
BoolImage = npt.NDArray[np.bool_]


def f32(values: npt.ArrayLike) -> FloatImage:
    """``values`` as a float32 array (no copy when it already is one)."""
    return np.asarray(values, dtype=np.float32)


def mm_to_px(value_mm: float, mm_per_px: float) -> float:
    """Convert a position in mm (0 = left/top edge of the canvas) to a pixel coordinate."""
    return value_mm / mm_per_px - 0.5


@dataclass(frozen=True, slots=True)
class Window:
    """A clipped rectangular window of the canvas with its pixel-centre coordinates.

    ``xs`` has shape ``(1, w)`` and ``ys`` shape ``(h, 1)`` so they broadcast.
    """

    rows: slice
    cols: slice
    xs: FloatImage
    ys: FloatImage

    @property
    def empty(self) -> bool:
        """True when the window lies entirely outside the canvas."""
        return self.xs.size == 0 or self.ys.size == 0


def window(size_px: int, x0: float, y0: float, x1: float, y1: float, pad: float = 2.0) -> Window:
    """The canvas window covering ``[x0, x1] x [y0, y1]`` (pixels) plus ``pad`` pixels."""
    c0 = max(0, int(np.floor(min(x0, x1) - pad)))
    c1 = min(size_px, int(np.ceil(max(x0, x1) + pad)) + 1)
    r0 = max(0, int(np.floor(min(y0, y1) - pad)))
    r1 = min(size_px, int(np.ceil(max(y0, y1) + pad)) + 1)
    c1, r1 = max(c0, c1), max(r0, r1)
    xs = np.arange(c0, c1, dtype=np.float32)[None, :]
    ys = np.arange(r0, r1, dtype=np.float32)[:, None]
    return Window(slice(r0, r1), slice(c0, c1), xs, ys)


def disk(size_px: int, cx: float, cy: float, r: float) -> tuple[Window, FloatImage]:
    """Coverage of a disk of radius ``r`` pixels centred at ``(cx, cy)``."""
    win = window(size_px, cx - r, cy - r, cx + r, cy + r)
    d = np.sqrt((win.xs - cx) ** 2 + (win.ys - cy) ** 2)
    return win, np.clip(r - d + 0.5, 0.0, 1.0).astype(np.float32)


def rect(size_px: int, x0: float, y0: float, x1: float, y1: float) -> tuple[Window, FloatImage]:
    """Coverage of the axis-aligned rectangle with pixel edges ``x0..x1``, ``y0..y1``."""
    win = window(size_px, x0, y0, x1, y1)
    cx = np.clip(np.minimum(win.xs - x0, x1 - win.xs) + 0.5, 0.0, 1.0)
    cy = np.clip(np.minimum(win.ys - y0, y1 - win.ys) + 0.5, 0.0, 1.0)
    return win, (cx * cy).astype(np.float32)


def polyline_distance(win: Window, points: npt.NDArray[np.float64]) -> FloatImage:
    """Distance (pixels) from every window pixel centre to the polyline ``points`` ``(n, 2)``."""
    best = np.full((win.ys.shape[0], win.xs.shape[1]), np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        dx, dy = bx - ax, by - ay
        seg2 = dx * dx + dy * dy
        # Project each pixel onto the segment, clamp to its ends, measure the rest.
        t = ((win.xs - ax) * dx + (win.ys - ay) * dy) / seg2 if seg2 > 0 else 0.0 * win.xs
        t = np.clip(t, 0.0, 1.0)
        d2 = (win.xs - (ax + t * dx)) ** 2 + (win.ys - (ay + t * dy)) ** 2
        np.minimum(best, d2, out=best)
    return np.sqrt(best)


def stroke(
    size_px: int, points: npt.NDArray[np.float64], half_width: float
) -> tuple[Window, FloatImage]:
    """Coverage of a polyline stroked with ``half_width`` pixels (thin lines stay faint).

    A line thinner than a pixel cannot cover a whole pixel, so its peak coverage
    is its width: this keeps sub-pixel scratches honest at coarse resolutions.
    """
    xs, ys = points[:, 0], points[:, 1]
    win = window(size_px, xs.min(), ys.min(), xs.max(), ys.max(), pad=half_width + 2.0)
    if win.empty:
        return win, np.zeros((0, 0), dtype=np.float32)
    d = polyline_distance(win, points)
    peak = min(1.0, 2.0 * half_width)
    return win, np.clip(half_width + 0.5 - d, 0.0, peak).astype(np.float32)


def rounded_square_sdf(size_px: int, mm_per_px: float, radius_mm: float) -> FloatImage:
    """Signed distance (mm, negative inside) to a rounded square filling the canvas."""
    half = size_px * mm_per_px / 2.0
    c = (np.arange(size_px, dtype=np.float32) + 0.5) * mm_per_px - half
    inner = half - radius_mm
    qx = np.abs(c)[None, :] - inner
    qy = np.abs(c)[:, None] - inner
    outside = np.sqrt(np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2)
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return f32(outside + inside - radius_mm)
