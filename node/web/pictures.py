"""A part's picture as the web view shows it: the image, the anomaly heat map, the regions.

Drawn in the web process from what the audit store kept (the inspected image, the
shrunk anomaly map and the regions in ``findings_json``), never by running the model
again. Regions the recipe rejected are outlined red, accepted (cosmetic) ones green,
numbered in the order the sentence names them.
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import colormaps
from PIL import Image, ImageDraw

from node.audit.heat import decode_heat
from node.audit.record import AuditRecord

_LUT = (colormaps["inferno"](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
_REJECT = (230, 40, 40)
_ACCEPT = (40, 190, 90)
_HEAT_ALPHA = 0.55


def region_boxes(findings: dict[str, Any]) -> list[tuple[tuple[int, int, int, int], bool]]:
    """``(bbox_px, rejects)`` for each region, in the order the findings list them."""
    regions = findings.get("regions") or []
    judged = findings.get("judged") or []
    out = []
    for i, region in enumerate(regions):
        box = region.get("bbox_px") if isinstance(region, dict) else None
        if not (isinstance(box, list) and len(box) == 4):
            continue
        decided = judged[i] if i < len(judged) and isinstance(judged[i], dict) else {}
        rejects = bool(decided.get("rejects", True))
        out.append(((int(box[0]), int(box[1]), int(box[2]), int(box[3])), rejects))
    return out


def draw_part(
    image: npt.NDArray[np.uint8],
    findings: dict[str, Any],
    *,
    heat: bool = True,
    scale: int = 2,
) -> bytes:
    """PNG of ``image`` (grey or RGB, as inspected) with the heat map (where kept) and the
    regions outlined, enlarged ``scale`` times (nearest neighbour, so pixels stay pixels)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    rgb = np.stack([a] * 3, axis=-1) if a.ndim == 2 else a[:, :, :3]
    rgb = rgb.astype(np.float32)
    h, w = rgb.shape[:2]
    kept = decode_heat(findings.get("heat")) if heat else None
    if kept is not None:
        m = Image.fromarray((np.clip(kept / 2.0, 0, 1) * 255).astype(np.uint8))
        big = np.asarray(m.resize((w, h), Image.Resampling.BILINEAR), dtype=np.uint8)
        tint = _LUT[big].astype(np.float32)
        # 1.0 (where regions start) is fully tinted; the faint rest barely
        alpha = np.clip(big.astype(np.float32) / 128.0, 0.0, 1.0)[..., None] * _HEAT_ALPHA
        rgb = rgb * (1.0 - alpha) + tint * alpha
    im = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    if scale > 1:
        im = im.resize((w * scale, h * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(im)
    for n, ((x0, y0, x1, y1), rejects) in enumerate(region_boxes(findings), start=1):
        line = _REJECT if rejects else _ACCEPT
        box = (x0 * scale - 2, y0 * scale - 2, x1 * scale + 1, y1 * scale + 1)
        draw.rectangle(box, outline=line, width=2)
        draw.text((box[0] + 3, max(0, box[1] - 12)), str(n), fill=line)
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)  # the web process's CPU over a few kB
    return buf.getvalue()


class Pictures:
    """Draws records' pictures from the store's image folder, keeping the latest few."""

    def __init__(self, image_dir: Path, *, keep: int = 256) -> None:
        self._dir = image_dir
        self._keep = keep
        self._cache: OrderedDict[tuple[str, bool, int], bytes] = OrderedDict()

    def picture(self, record: AuditRecord, *, heat: bool = True, scale: int = 1) -> bytes | None:
        """The PNG for ``record`` (``scale`` times the inspected size: 1 for cards, 2 for the
        part page), or None when its image is not (or no longer) kept.

        Raises ``OSError`` or ``ValueError`` when the file is there but unreadable.
        """
        key = (record.result_id, heat, scale)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        if record.image_path is None:
            return None
        path = self._dir / record.image_path
        if not path.is_file():
            return None
        with Image.open(path) as im:
            pixels = np.asarray(im)
        try:
            findings = json.loads(record.findings_json)
        except ValueError:
            findings = {}
        png = draw_part(
            pixels, findings if isinstance(findings, dict) else {}, heat=heat, scale=scale
        )
        self._cache[key] = png
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)
        return png
