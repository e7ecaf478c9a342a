"""The anomaly map kept with a record, small enough for the audit row.

A reviewer wants to see *where* the model looked, not only the outlined regions;
the map itself is 256² floats per part, too much for every row. A kept record
(one whose image is kept: rejects and sampled passes) carries the map shrunk to at
most :data:`HEAT_PX` on its long side by block means, in units of the backend's
region threshold (1.0: where regions start), quantised so that :data:`FULL_SCALE`
thresholds is 255, as a grey PNG in base64: about 1–3 kB in ``findings_json``.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

HEAT_PX = 64
"""Longest side of the kept map, in pixels."""
FULL_SCALE = 2.0
"""The map value, in region thresholds, stored as 255 (anything above is clipped)."""


def encode_heat(anomaly_map: npt.NDArray[np.floating[Any]], threshold: float) -> dict[str, Any]:
    """``anomaly_map`` (H, W) as ``{"png": base64 PNG, "full_scale": FULL_SCALE, "shape": [H, W]}``.

    ``threshold`` is the map value where the backend's regions start (1.0 for model
    packages, the recipe's ``pixel_threshold`` for the classical detector). Non-finite
    values count as 0. Raises ``ValueError`` for a map that is not 2-D or a threshold
    that is not positive.
    """
    a = np.asarray(anomaly_map, dtype=np.float32)
    if a.ndim != 2 or not a.size:
        raise ValueError(f"an anomaly map must be 2-D, not of shape {a.shape}")
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be positive, not {threshold}")
    h, w = a.shape
    step = max(1, math.ceil(max(h, w) / HEAT_PX))
    hh, ww = -(-h // step), -(-w // step)
    padded = np.zeros((hh * step, ww * step), dtype=np.float32)
    padded[:h, :w] = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    small = padded.reshape(hh, step, ww, step).mean(axis=(1, 3))
    q = np.clip(small / (threshold * FULL_SCALE), 0.0, 1.0) * 255.0
    buf = io.BytesIO()
    Image.fromarray(np.rint(q).astype(np.uint8)).save(buf, format="PNG", compress_level=6)
    return {
        "png": base64.b64encode(buf.getvalue()).decode("ascii"),
        "full_scale": FULL_SCALE,
        "shape": [h, w],
    }


def decode_heat(heat: Any) -> npt.NDArray[np.float32] | None:
    """The kept map in region thresholds (values 0..full_scale, at its stored size), or None
    when ``heat`` is not one :func:`encode_heat` made."""
    if not isinstance(heat, dict) or not isinstance(heat.get("png"), str):
        return None
    try:
        raw = base64.b64decode(heat["png"], validate=True)
        with Image.open(io.BytesIO(raw)) as im:
            q = np.asarray(im.convert("L"), dtype=np.float32)
        scale = float(heat.get("full_scale", FULL_SCALE))
    except (ValueError, OSError, TypeError):
        return None
    return q / 255.0 * scale
