"""A part's picture for the web: the heat map where the model looked, regions outlined."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from node.audit.heat import encode_heat
from node.web.pictures import draw_part, region_boxes


def _rgb(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int32)


def test_heat_tints_where_the_map_is_hot_and_nowhere_else() -> None:
    """With a kept map hot in one square, those pixels change colour and a cold corner
    keeps the part's grey."""
    image = np.full((64, 64), 120, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[32:48, 32:48] = 2.0
    findings = {"heat": encode_heat(amap, 1.0)}
    px = _rgb(draw_part(image, findings, scale=1))
    assert px.shape == (64, 64, 3)
    assert np.abs(px[40, 40] - 120).max() > 40
    assert (px[5, 5] == 120).all()
    plain = _rgb(draw_part(image, findings, heat=False, scale=1))
    assert (plain == 120).all()


def test_regions_are_outlined_red_when_rejected_and_green_when_accepted() -> None:
    """Each region's box is drawn in the colour of the recipe's decision on it."""
    image = np.full((80, 80), 90, np.uint8)
    findings = {
        "regions": [{"bbox_px": [10, 10, 30, 30]}, {"bbox_px": [50, 50, 70, 70]}],
        "judged": [{"rejects": True}, {"rejects": False}],
    }
    assert region_boxes(findings) == [((10, 10, 30, 30), True), ((50, 50, 70, 70), False)]
    px = _rgb(draw_part(image, findings, heat=False, scale=2))
    red, green = px[20 * 2, 10 * 2 - 2], px[60 * 2, 50 * 2 - 2]  # on each box's left edge
    assert red[0] > 200 and red[1] < 80
    assert green[1] > 150 and green[0] < 80


def test_findings_of_a_fail_safe_or_old_record_draw_the_image_alone() -> None:
    """No regions and no kept map (a fail-safe, or a record from before maps were kept):
    the picture is the image, enlarged."""
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    px = _rgb(draw_part(image, json.loads('{"detail": "no frame"}'), scale=2))
    assert px.shape == (32, 32, 3)
    assert (px[::2, ::2, 0] == image).all()
