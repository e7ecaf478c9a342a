"""Zones: a finding is placed on the part in millimetres and in the zones its own pixels touch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.findings import footprint
from node.errors import ConfigError
from node.recipe.settings import ZoneSettings
from node.recipe.zones import ZoneMap
from tests.unit.node.recipe.factories import MM_PER_PX, PART_BBOX, region

RIM = ZoneSettings(name="rim", rects_mm=((0, 0, 24, 3), (0, 21, 24, 24)))
FACE = ZoneSettings(name="face", rect_mm=(0, 3, 24, 21))
BOSS = ZoneSettings(name="boss", polygon_mm=((12, 8), (16, 12), (12, 16), (8, 12)))


def test_a_region_is_placed_in_part_millimetres_from_the_part_corner() -> None:
    """The centre and size are millimetres from the part's upper-left corner, not image pixels."""
    zm = ZoneMap((RIM, FACE), MM_PER_PX)
    p = zm.place(region(4, 10, 8, 11), PART_BBOX)
    assert p.x_mm == pytest.approx(6.0, abs=0.07)
    assert p.y_mm == pytest.approx(10.5, abs=0.07)
    assert p.length_mm == pytest.approx(4.0)
    assert p.area_mm2 == pytest.approx(4.0)
    assert p.zones == ("face",)


def test_a_region_across_two_zones_touches_both_main_zone_first() -> None:
    """A region mostly on the face but reaching into the rim touches both, the face first."""
    p = ZoneMap((RIM, FACE), MM_PER_PX).place(region(5, 2, 7, 9), PART_BBOX)
    assert p.zones == ("face", "rim")
    assert p.zone == "face"


def test_a_polygon_zone_holds_only_what_lies_inside_it() -> None:
    """The diamond-shaped boss holds a spot at its centre, not one in its bounding box's corner."""
    zm = ZoneMap((BOSS, FACE), MM_PER_PX)
    assert zm.place(region(11.5, 11.5, 12.5, 12.5), PART_BBOX).zones[0] == "boss"
    corner = zm.place(region(8.2, 8.2, 9.0, 9.0), PART_BBOX)
    assert "boss" not in corner.zones
    assert corner.zones == ("face",)


def test_the_regions_own_pixels_decide_not_its_box() -> None:
    """A diagonal scratch whose box overlaps the boss but whose pixels pass beside it does not
    touch it; a backend that gives only the box is judged by the box."""
    t = np.arange(0, int(14 / MM_PER_PX))
    xs = t + PART_BBOX[0]  # the line x + y = 14 mm, from (0, 14) to (14, 0)
    ys = (int(14 / MM_PER_PX) - 1 - t) + PART_BBOX[1]
    base = region(0, 0, 14, 14)
    diag = replace(
        base,
        bbox_px=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        centroid_px=(float(xs.mean()), float(ys.mean())),
        mask_px=footprint(xs, ys),
    )
    zm = ZoneMap((BOSS,), MM_PER_PX)
    assert zm.place(diag, PART_BBOX).zones == ()
    assert zm.place(replace(diag, mask_px=None), PART_BBOX).zones == ("boss",)


def test_outside_every_zone_a_finding_has_no_zone() -> None:
    """A zone map that does not cover the place leaves the finding without a zone."""
    p = ZoneMap((BOSS,), MM_PER_PX).place(region(1, 1, 2, 2), PART_BBOX)
    assert p.zones == () and p.zone is None and p.along_from == ""


def test_position_along_a_zone_is_measured_from_its_left_end() -> None:
    """A spot 12 mm along the 24 mm wide top rim is 12 mm from its left end."""
    p = ZoneMap((RIM,), MM_PER_PX).place(region(11.5, 1, 12.5, 2), PART_BBOX)
    assert p.along_from == "left end"
    assert p.along_mm == pytest.approx(12.0, abs=0.1)


def test_a_painted_zone_image_is_stretched_over_the_part(tmp_path: Path) -> None:
    """Each colour of a painted label image is a zone, the image spanning the part's box."""
    img = np.zeros((48, 48, 3), np.uint8)
    img[:, :24] = (255, 0, 0)  # left half red
    img[:, 24:] = (0, 0, 255)  # right half blue
    path = tmp_path / "zones.png"
    Image.fromarray(img).save(path)
    zones = (
        ZoneSettings(name="left", colour="#FF0000"),
        ZoneSettings(name="right", colour="#0000ff"),
    )
    zm = ZoneMap(zones, MM_PER_PX, path)
    assert zm.place(region(2, 10, 4, 12), PART_BBOX).zones == ("left",)
    assert zm.place(region(20, 10, 22, 12), PART_BBOX).zones == ("right",)
    assert zm.place(region(11, 10, 13, 12), PART_BBOX).zones == ("left", "right")


def test_a_zone_colour_missing_from_the_image_is_a_config_error(tmp_path: Path) -> None:
    """A zone whose colour is nowhere in the painted image is refused, naming the key."""
    path = tmp_path / "zones.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    with pytest.raises(ConfigError, match=r"inspection.recipe.zone_image: no pixel of #00ff00"):
        ZoneMap((ZoneSettings(name="g", colour="#00ff00"),), MM_PER_PX, path)
