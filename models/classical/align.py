"""Bring an image into the template's frame: brightness, position, slow shading.

Three corrections, each for a nuisance a good part must not be flagged for:

- *gain*: the part's median level is scaled to the template's (lamp ageing,
  exposure drift);
- *position*: the integer shift within +-k pixels that best matches the
  template's strongest edges is taken out (the ROI crop is only accurate to a
  pixel or two);
- *slow shading*: the difference to the template, averaged over 1 mm blocks,
  median-filtered over 5 x 5 blocks and interpolated back, is subtracted. This
  removes illumination gradients and material mottling that vary from part to
  part, so the template's spread can be small; the median keeps a defect up to
  about half that window (~2.5 mm radius) from being taken for shading.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

F32 = npt.NDArray[np.float32]
Bool = npt.NDArray[np.bool_]
Index = npt.NDArray[np.intp]

ALIGN_POINTS = 1500
"""How many template pixels (those with the strongest edges) alignment compares."""

SHADING_BLOCKS = 5
"""Width, in blocks, of the median that separates slow shading from defects."""


def level_sample(mask: Bool) -> Bool:
    """Every other pixel of every other row of ``mask``: a fast, unbiased level sample."""
    sub = np.zeros_like(mask)
    sub[::2, ::2] = mask[::2, ::2]
    return sub


def shift_image(image: F32, dx: int, dy: int) -> F32:
    """``out[y, x] = image[y + dy, x + dx]``, replicating the border where that falls outside."""
    if dx == 0 and dy == 0:
        return image
    k = max(abs(dx), abs(dy))
    padded = np.pad(image, k, mode="edge")
    h, w = image.shape
    out: F32 = padded[k + dy : k + dy + h, k + dx : k + dx + w]
    return out


def align_points(reference: F32, shift_px: int) -> tuple[Index, Index]:
    """``(ys, xs)`` of the strongest-gradient reference pixels, ``shift_px`` from the border."""
    grad = np.hypot(ndimage.sobel(reference, 0), ndimage.sobel(reference, 1))
    m = shift_px
    if m > 0:
        grad[:m], grad[-m:], grad[:, :m], grad[:, -m:] = 0, 0, 0, 0
    flat = grad.ravel()
    n = min(ALIGN_POINTS, flat.size)
    idx = np.argpartition(flat, flat.size - n)[flat.size - n :]
    ys, xs = np.unravel_index(idx, reference.shape)
    return ys.astype(np.intp), xs.astype(np.intp)


def best_shift(image: F32, reference: F32, points: tuple[Index, Index], k: int) -> tuple[int, int]:
    """The integer ``(dx, dy)`` within +-k that minimises the L1 difference at ``points``."""
    if k == 0:
        return 0, 0
    ys, xs = points
    target = reference[ys, xs]
    best, best_cost = (0, 0), np.inf
    # L1, not L2: a defect under a few of the points must not drag the alignment.
    for dy in range(-k, k + 1):
        for dx in range(-k, k + 1):
            cost = float(np.abs(image[ys + dy, xs + dx] - target).sum())
            if cost < best_cost:
                best, best_cost = (dx, dy), cost
    return best


def _upsample_axis(a: F32, size: int, block: int, axis: int) -> F32:
    """Linear interpolation between block centres along ``axis`` to ``size`` pixels."""
    n = a.shape[axis]
    t = np.clip((np.arange(size, dtype=np.float32) + 0.5) / block - 0.5, 0.0, n - 1.0)
    i = np.minimum(t.astype(np.intp), max(n - 2, 0))
    f = (t - i).astype(np.float32)
    lo = np.take(a, i, axis=axis)
    hi = np.take(a, np.minimum(i + 1, n - 1), axis=axis)
    f = f[:, None] if axis == 0 else f[None, :]
    out: F32 = lo + (hi - lo) * f
    return out


def shading(residual: F32, part: F32, block_px: int) -> F32:
    """The slowly varying part of ``residual`` (image minus template) over the part.

    ``part`` is the part mask as 0/1 floats; blocks less than a quarter on the
    part count as no shading.
    """
    h, w = residual.shape
    hb, wb = h // block_px, w // block_px
    if hb < 2 or wb < 2:
        return np.zeros_like(residual)
    cut = (slice(0, hb * block_px), slice(0, wb * block_px))
    sums = (residual[cut] * part[cut]).reshape(hb, block_px, wb, block_px).sum(axis=(1, 3))
    counts = part[cut].reshape(hb, block_px, wb, block_px).sum(axis=(1, 3))
    means = np.where(counts > block_px * block_px / 4, sums / np.maximum(counts, 1.0), 0.0)
    coarse = ndimage.median_filter(means.astype(np.float32), SHADING_BLOCKS, mode="nearest")
    return _upsample_axis(_upsample_axis(coarse, h, block_px, 0), w, block_px, 1)
