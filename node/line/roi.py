"""Find the part in a camera frame and cut out a fixed-size window around it.

The part is brighter than the belt: pixels above ``belt_threshold`` are part,
the largest connected blob of them is *the* part (dust and glints make only
small blobs), and the window is centred on the blob's bounding box (a dark
defect cannot pull a box centre the way it pulls a centroid).

A part that touches the frame edge may be cut off. Parts are square, so the
extent along the axis that is not cut tells the part's size (``part_size_px``
says it outright for other shapes); if more than ``max_cut_fraction`` of that
size is missing the frame is refused. The default, 1 % (2 px of a 200 px
part), is what the golden template tolerates: it leaves a rim of
``shift_px + 1`` (3) px at the part's boundary uninspected, so a strip cut off
within that rim is not seen, while a wider one would be reported as a long
defect on a good part. Refusing instead turns that false reject into a
fail-safe reject with the true reason. A part cut by no more than the limit
is centred by its uncut edge and the window is padded with the belt's level.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

DEFAULT_MAX_CUT_FRACTION = 0.01
"""The largest fraction of the part's size that may lie outside the frame."""


def crop_part(
    frame: npt.NDArray[np.uint8],
    out_size: int,
    belt_threshold: int,
    *,
    part_size_px: int | None = None,
    max_cut_fraction: float = DEFAULT_MAX_CUT_FRACTION,
    min_area_px: int | None = None,
) -> tuple[npt.NDArray[np.uint8], tuple[int, int]]:
    """Crop an ``out_size`` square centred on the part in ``frame`` (uint8 ``(H, W)``).

    Returns the crop and ``origin_xy``: the frame pixel ``(x, y)`` of the crop's
    top-left pixel (negative where the crop was padded past the frame).
    ``min_area_px`` (default: a quarter of the part's expected area, the
    expected side being ``part_size_px`` or else ``out_size``) is the smallest
    blob taken for a part.

    Raises ``ValueError("no part in frame ...")`` when no blob is part-sized,
    ``ValueError("part cut off ...")`` when more than ``max_cut_fraction`` of it
    is outside the frame (or it touches edges along both axes without
    ``part_size_px``, or both ends along one axis), and ``ValueError`` for a
    frame that is not uint8 ``(H, W)`` or for bad arguments.
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 2:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
        raise ValueError(f"expected a grayscale uint8 (H, W) frame, got {got}")
    if out_size < 1 or not 0 <= belt_threshold <= 254 or not 0.0 <= max_cut_fraction < 1.0:
        raise ValueError(
            f"bad arguments: out_size={out_size} (>= 1), belt_threshold={belt_threshold} "
            f"(0..254), max_cut_fraction={max_cut_fraction} (0..1)"
        )
    height, width = frame.shape
    expected = part_size_px if part_size_px is not None else out_size
    min_area = min_area_px if min_area_px is not None else max(1, expected * expected // 4)

    bright = frame > belt_threshold
    labels, n = ndimage.label(bright)
    if n <= 1:  # the common case: skip the per-label bookkeeping
        blob, area = bright, int(np.count_nonzero(bright))
    else:
        sizes = np.bincount(labels.ravel(), minlength=n + 1)
        sizes[0] = 0
        best = int(np.argmax(sizes))
        blob, area = labels == best, int(sizes[best])
    if area < min_area:
        raise ValueError(
            f"no part in frame: the largest blob brighter than {belt_threshold} is "
            f"{area} px, a part needs at least {min_area} px"
        )
    ys = np.flatnonzero(blob.any(axis=1))
    xs = np.flatnonzero(blob.any(axis=0))
    rows, cols = slice(int(ys[0]), int(ys[-1]) + 1), slice(int(xs[0]), int(xs[-1]) + 1)
    cut_x = cols.start == 0 or cols.stop == width
    cut_y = rows.start == 0 or rows.stop == height
    if part_size_px is None and cut_x and cut_y:
        raise ValueError("part cut off by the frame along x and y: its size cannot be told")
    # A square part's uncut extent is its size along the cut axis too.
    size_x = part_size_px if part_size_px is not None else rows.stop - rows.start
    size_y = part_size_px if part_size_px is not None else cols.stop - cols.start
    cx = _centre(cols.start, cols.stop, width, size_x, max_cut_fraction, "x")
    cy = _centre(rows.start, rows.stop, height, size_y, max_cut_fraction, "y")

    x0 = int(np.rint(cx - (out_size - 1) / 2.0))
    y0 = int(np.rint(cy - (out_size - 1) / 2.0))
    crop = np.full((out_size, out_size), _belt_level(frame, bright, belt_threshold), np.uint8)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + out_size), min(height, y0 + out_size)
    if fx0 < fx1 and fy0 < fy1:
        crop[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = frame[fy0:fy1, fx0:fx1]
    return crop, (x0, y0)


def _centre(start: int, stop: int, limit: int, size: int, max_cut: float, axis: str) -> float:
    """Centre (pixel coordinate) along one axis of a part of ``size`` seen over ``start:stop``."""
    at_low, at_high = start == 0, stop == limit
    if not (at_low or at_high):
        return (start + stop - 1) / 2.0
    if at_low and at_high:
        raise ValueError(f"part cut off by the frame at both ends along {axis}")
    missing = 1.0 - (stop - start) / max(size, 1)
    if missing > max_cut:
        raise ValueError(
            f"part cut off by the frame along {axis}: about {100 * missing:.0f}% of it is "
            f"outside, more than {100 * max_cut:.0f}%"
        )
    # Measure from the edge that is in view; the other one lies somewhere past the frame.
    return (2 * stop - size - 1) / 2.0 if at_low else (2 * start + size - 1) / 2.0


def _belt_level(frame: npt.NDArray[np.uint8], bright: npt.NDArray[np.bool_], threshold: int) -> int:
    """Median of a sparse sample of belt pixels (pads the crop where it leaves the frame)."""
    sample = frame[::4, ::4][~bright[::4, ::4]]
    return int(np.median(sample)) if sample.size else threshold // 2
