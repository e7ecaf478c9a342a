"""Small PNG thumbnails of part images for ``LastResult.Thumbnail``."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def thumbnail_png(pixels: np.ndarray, max_px: int = 96) -> bytes:
    """``pixels`` (H×W mono or H×W×3 RGB, uint8 or uint16) as a PNG whose longest side
    is at most ``max_px`` pixels (a few kB; about 1 ms for a 1 MP frame).

    Raises:
        ValueError: not a 2-D or H×W×3 image.
    """
    a = np.asarray(pixels)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected H×W or H×W×3 pixels, got shape {a.shape}")
    step = max(1, int(np.ceil(max(a.shape[:2]) / (4 * max_px))))
    a = a[::step, ::step]  # cheap decimation first, then a proper resample
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(a))
    img.thumbnail((max_px, max_px), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
