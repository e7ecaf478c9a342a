"""Thumbnails for LastResult.Thumbnail."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from node.hmi.thumbnail import thumbnail_png


@pytest.mark.parametrize("shape", [(1024, 1280), (480, 640, 3)])
def test_thumbnail_is_a_small_png_within_max_px(shape: tuple[int, ...]) -> None:
    """Mono and RGB frames become PNGs whose longest side is at most max_px, aspect kept."""
    png = thumbnail_png(np.full(shape, 128, dtype=np.uint8), 96)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and max(img.size) == 96 and len(png) < 20_000
    assert abs(img.size[0] / img.size[1] - shape[1] / shape[0]) < 0.05


def test_thumbnail_refuses_other_shapes() -> None:
    """A 4-channel or 1-D array is a clear error."""
    with pytest.raises(ValueError, match="H×W"):
        thumbnail_png(np.zeros((10, 10, 4), dtype=np.uint8))
