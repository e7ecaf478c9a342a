"""DRAEM-style synthetic anomalies: paste foreign appearance into a good image under a noise mask.

Good images alone then give pixel masks for free. A mask is a thresholded
smooth random field (a blob of random outline, 0.3 to ~6 % of the part),
kept inside the part; the pasted appearance is one of: a patch of another
image moved somewhere else, a smooth random texture at a random gray level,
or the image itself brightened or darkened. Only pixels that visibly change
(``MIN_CHANGE_GRAY``) are labelled anomalous.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import numpy.typing as npt
from scipy import ndimage

_S = TypeVar("_S", bound=np.generic)

MIN_CHANGE_GRAY = 10.0
"""A pasted pixel counts as anomalous when it changes by at least this many gray levels."""

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


def noise_blob(
    rng: np.random.Generator, shape: tuple[int, int], allowed: npt.NDArray[np.bool_]
) -> npt.NDArray[np.bool_]:
    """One connected blob of random outline inside ``allowed`` (may be empty if none fits)."""
    h, w = shape
    cells = int(rng.choice([4, 8, 16, 32]))
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    field = ndimage.zoom(coarse, (h / cells, w / cells), order=1)[:h, :w]
    frac = float(rng.uniform(0.003, 0.06))
    inside = field[allowed]
    if inside.size == 0:
        return np.zeros(shape, dtype=bool)
    cut = float(np.quantile(inside, 1.0 - frac))
    mask = (field >= cut) & allowed
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return np.asarray(mask, dtype=bool)


def paste_anomaly(
    rng: np.random.Generator,
    image: U8,
    part: npt.NDArray[np.bool_],
    donors: npt.NDArray[np.uint8],
) -> tuple[U8, npt.NDArray[np.bool_]]:
    """``image`` with one synthetic anomaly inside ``part``, and its mask.

    ``donors`` ``(K, H, W)`` are other images whose patches may be pasted.
    """
    allowed = ndimage.binary_erosion(part, iterations=4)
    blob = noise_blob(rng, image.shape, allowed)
    if not blob.any():
        return image, blob
    soft = ndimage.gaussian_filter(blob.astype(np.float32), float(rng.uniform(0.5, 1.5)))
    img = image.astype(np.float32)
    kind = int(rng.integers(3))
    if kind == 0 and len(donors):
        donor = donors[int(rng.integers(len(donors)))].astype(np.float32)
        dy, dx = (int(v) for v in rng.integers(-60, 61, size=2))
        source = np.roll(donor, (dy, dx), axis=(0, 1))
        if rng.random() < 0.5:
            source = np.rot90(source, int(rng.integers(1, 4)))
    elif kind == 1:
        level = float(rng.uniform(20.0, 240.0))
        grain = ndimage.gaussian_filter(rng.standard_normal(image.shape), rng.uniform(0.5, 3.0))
        source = (level + grain / max(float(grain.std()), 1e-6) * rng.uniform(2.0, 25.0)).astype(
            np.float32
        )
    else:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        source = img + sign * float(rng.uniform(20.0, 70.0))
    opacity = float(rng.uniform(0.5, 1.0))
    out = img + opacity * soft * (source - img)
    changed = np.abs(out - img) >= MIN_CHANGE_GRAY
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), blob & changed


def transplant(
    rng: np.random.Generator,
    image: U8,
    mask: npt.NDArray[np.bool_],
    target: U8,
    allowed: npt.NDArray[np.bool_],
    movable: bool,
) -> tuple[U8, npt.NDArray[np.bool_]]:
    """A labelled defect moved onto another (good) image of the same part, and its mask.

    The defect's pixels and a feathered rim of two pixels are blended into
    ``target``. A ``movable`` defect (one that does not belong to a place on the
    part, unlike a missing feature) is also mirrored or turned a quarter at
    random and moved to a random place where it stays inside ``allowed``; when no
    place fits in a few tries it stays where it was. Few labelled images of a
    type then show it on many backgrounds and at many places.
    """
    grown = ndimage.binary_dilation(mask, iterations=2)
    ys, xs = np.nonzero(grown)
    if ys.size == 0:
        return target, np.zeros_like(mask)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    patch = image[y0:y1, x0:x1].astype(np.float32)
    alpha = np.maximum(ndimage.gaussian_filter(grown.astype(np.float32), 1.0), mask)
    alpha = alpha[y0:y1, x0:x1]
    core = mask[y0:y1, x0:x1]
    h, w = image.shape
    ty, tx = y0, x0
    if movable:
        turn = int(rng.integers(8))
        patch, alpha, core = (orient(a, turn) for a in (patch, alpha, core))
        inside = ndimage.binary_erosion(allowed, iterations=2)
        ph, pw = core.shape
        for _ in range(8):
            cy, cx = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
            if inside[cy : cy + ph, cx : cx + pw][core].all():
                ty, tx = cy, cx
                break
        else:
            patch, alpha, core = (orient(a, -turn) for a in (patch, alpha, core))
    ph, pw = core.shape
    out = target.astype(np.float32)
    region = out[ty : ty + ph, tx : tx + pw]
    out[ty : ty + ph, tx : tx + pw] = region + alpha * (patch - region)
    placed = np.zeros_like(mask)
    placed[ty : ty + ph, tx : tx + pw] = core
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), placed


def orient(a: npt.NDArray[_S], turn: int) -> npt.NDArray[_S]:
    """One of the eight mirrorings and quarter turns of ``a``, ``turn`` in 0..7 (0: as it
    is; ``-turn`` undoes ``turn``)."""
    if turn >= 0:
        a = np.rot90(a, turn % 4)
        return np.ascontiguousarray(a[:, ::-1] if turn >= 4 else a)
    turn = -turn
    a = a[:, ::-1] if turn >= 4 else a
    return np.ascontiguousarray(np.rot90(a, -(turn % 4)))


def jitter(
    rng: np.random.Generator, image: U8, mask: npt.NDArray[np.bool_], shift_px: int
) -> tuple[U8, npt.NDArray[np.bool_]]:
    """Shift by up to ``shift_px`` pixels (the belt wraps around); vary gain and offset a little."""
    dy, dx = (int(v) for v in rng.integers(-shift_px, shift_px + 1, size=2))
    img = np.roll(image, (dy, dx), axis=(0, 1)).astype(np.float32)
    msk = np.roll(mask, (dy, dx), axis=(0, 1))
    img = img * float(rng.uniform(0.94, 1.06)) + float(rng.uniform(-6.0, 6.0))
    img += rng.standard_normal(img.shape).astype(np.float32) * float(rng.uniform(0.0, 1.5))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), msk
