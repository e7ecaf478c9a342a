"""A rendered part placed on the conveyor belt, as the simulated camera sees it.

This runs at the instant a simulated camera is triggered, so it does no
random-field synthesis: the belt's texture and the sensor noise come from
banks generated once per frame size and level, read at a random offset per
frame. A 320 x 320 frame costs well under a millisecond.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt

from models.synth.parts import RenderedPart
from models.synth.raster import BoolImage
from models.synth.textures import low_frequency, smooth_field

_BANK_PAD = 32  # frames are read from the banks at a random offset in [0, 2 * pad)
_BELT_TEXTURE_GRAY = 2.5
_SENSOR_NOISE_GRAY = 1.5


@lru_cache(maxsize=8)
def _banks(
    height: int, width: int, belt_level: int
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """Belt texture and sensor noise banks, ``2 * pad`` larger than the frame, read-only."""
    side = max(height, width) + 2 * _BANK_PAD
    # A fixed seed: the belt is the same belt in every frame, only seen at another place.
    rng = np.random.default_rng([0xBE17, height, width, belt_level])
    belt = belt_level + _BELT_TEXTURE_GRAY * smooth_field(rng, side, 1.5, 1.5)
    belt += 1.5 * low_frequency(rng, side, 6)
    noise = rng.normal(0.0, _SENSOR_NOISE_GRAY, size=(side, side))
    texture = np.rint(belt).astype(np.int16)
    sensor = np.rint(noise).astype(np.int16)
    texture.setflags(write=False)
    sensor.setflags(write=False)
    return texture, sensor


def part_origin(part_size_px: int, center_px: tuple[float, float]) -> tuple[int, int]:
    """Frame pixel ``(x, y)`` where the part image's top-left pixel lands for ``center_px``."""
    # The part's centre is at (size - 1) / 2 in its own pixel coordinates.
    half = (part_size_px - 1) / 2.0
    return int(np.rint(center_px[0] - half)), int(np.rint(center_px[1] - half))


def render_scene(
    part: RenderedPart,
    frame_hw: tuple[int, int],
    center_px: tuple[float, float],
    belt_level: int = 30,
    noise_seed: int | None = None,
) -> tuple[npt.NDArray[np.uint8], BoolImage]:
    """Place ``part`` on the belt with its centre at ``center_px`` ``(x, y)`` in the frame.

    Returns the uint8 frame ``(H, W)`` and the defect mask in frame coordinates.
    The centre is rounded to whole pixels; a part partly (or wholly) outside the
    frame is clipped. ``noise_seed`` fixes the belt offset and the sensor noise
    (``None``: fresh each call). Raises ``ValueError`` for a frame smaller than
    1 x 1 or a ``belt_level`` outside 0..255.
    """
    height, width = int(frame_hw[0]), int(frame_hw[1])
    if height < 1 or width < 1:
        raise ValueError(f"frame_hw must be positive, got {frame_hw}")
    if not 0 <= belt_level <= 255:
        raise ValueError(f"belt_level must be in 0..255, got {belt_level}")
    texture, sensor = _banks(height, width, int(belt_level))
    rng = np.random.default_rng(noise_seed)
    ty, tx, ny, nx = (int(v) for v in rng.integers(0, 2 * _BANK_PAD, size=4))
    frame16 = texture[ty : ty + height, tx : tx + width].copy()
    mask = np.zeros((height, width), dtype=bool)

    size = part.image.shape[0]
    x0, y0 = part_origin(size, center_px)
    fx0, fy0 = max(0, x0), max(0, y0)
    fx1, fy1 = min(width, x0 + size), min(height, y0 + size)
    if fx0 < fx1 and fy0 < fy1:
        src = (slice(fy0 - y0, fy1 - y0), slice(fx0 - x0, fx1 - x0))
        dst = (slice(fy0, fy1), slice(fx0, fx1))
        np.copyto(frame16[dst], part.image[src], where=part.part_mask[src])
        mask[dst] = part.mask[src]

    frame16 += sensor[ny : ny + height, nx : nx + width]
    np.clip(frame16, 0, 255, out=frame16)
    return frame16.astype(np.uint8), mask
