"""Random fields the part surfaces are textured with.

Fields are float32, zero mean and unit standard deviation unless said
otherwise, so the family renderers scale them to gray levels explicitly.
Long correlation lengths are drawn on a coarse grid and interpolated, and
blurred with three box-filter passes (close to a Gaussian, but O(1) per
pixel), so a whole part renders in a few milliseconds.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from models.synth.raster import FloatImage, f32


def _blur_axis(a: FloatImage, sigma_px: float, axis: int) -> FloatImage:
    if sigma_px <= 0.3:
        return a
    if sigma_px <= 3.0:
        out: FloatImage = ndimage.gaussian_filter1d(a, sigma_px, axis=axis, mode="wrap")
        return out
    # Three box passes of width w have variance 3 (w^2 - 1) / 12 = sigma^2.
    w = max(3, round(np.sqrt(4.0 * sigma_px**2 + 1.0)))
    for _ in range(3):
        a = ndimage.uniform_filter1d(a, w, axis=axis, mode="wrap")
    return a


def _upsample(a: FloatImage, size_px: int, factor: int, axis: int) -> FloatImage:
    """Linear interpolation of ``a`` (sampled every ``factor`` px along ``axis``) to ``size_px``."""
    t = (np.arange(size_px, dtype=np.float32) + 0.5) / factor
    i = np.minimum(t.astype(np.intp), a.shape[axis] - 2)
    f = (t - i).astype(np.float32)
    lo, hi = np.take(a, i, axis=axis), np.take(a, i + 1, axis=axis)
    f = f[:, None] if axis == 0 else f[None, :]
    out: FloatImage = lo + (hi - lo) * f
    return out


def smooth_field(
    rng: np.random.Generator, size_px: int, sigma_y_px: float, sigma_x_px: float
) -> FloatImage:
    """White noise blurred with (sigma_y, sigma_x) pixels, renormalised to unit std."""
    # Along an axis with a long correlation, draw and blur coarsely, then interpolate:
    # the field has no detail there to lose, and it costs a fraction of the time.
    fy = max(1, int(sigma_y_px / 3.0))
    fx = max(1, int(sigma_x_px / 3.0))
    shape = (size_px // fy + 2, size_px // fx + 2)
    a = rng.standard_normal(shape, dtype=np.float32)
    a = _blur_axis(_blur_axis(a, sigma_y_px / fy, 0), sigma_x_px / fx, 1)
    if fy > 1:
        a = _upsample(a, size_px, fy, 0)
    if fx > 1:
        a = _upsample(a, size_px, fx, 1)
    a = a[:size_px, :size_px]
    std = float(a.std())
    return (a / std if std > 0 else a).astype(np.float32)


def low_frequency(rng: np.random.Generator, size_px: int, cells: int = 4) -> FloatImage:
    """A smooth unit-std field with about ``cells`` undulations across the canvas."""
    grid = rng.standard_normal((cells + 1, cells + 1))
    # Bilinear upsampling of a coarse grid is far cheaper than blurring white noise.
    t = np.linspace(0.0, cells, size_px)
    i = np.minimum(t.astype(int), cells - 1)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    out = rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]
    std = float(out.std())
    return f32(out / std if std > 0 else out)
