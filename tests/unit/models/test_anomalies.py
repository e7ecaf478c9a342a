"""``models.data.anomalies.transplant``: a labelled defect moved onto another good image."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.data.anomalies import transplant

SIDE = 96


def _part() -> npt.NDArray[np.bool_]:
    allowed = np.zeros((SIDE, SIDE), dtype=bool)
    allowed[8:88, 8:88] = True
    return allowed


def _defect() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """A dark L-shaped mark on a mid-gray part: not symmetric, so a turn or mirror shows."""
    image = np.full((SIDE, SIDE), 120, dtype=np.uint8)
    mask = np.zeros((SIDE, SIDE), dtype=bool)
    mask[20:40, 20:23] = True
    mask[37:40, 20:32] = True
    image[mask] = 30
    return image, mask


def test_a_fixed_place_defect_keeps_its_place_and_its_pixels() -> None:
    """A defect that is not movable lands where it was, every masked pixel carries the
    defect's gray, and the target is untouched more than the feathered rim away."""
    image, mask = _defect()
    target = np.full((SIDE, SIDE), 200, dtype=np.uint8)
    out, placed = transplant(np.random.default_rng(0), image, mask, target, _part(), False)
    assert np.array_equal(placed, mask)
    assert np.all(out[placed] == 30)
    far = ~ndimage.binary_dilation(mask, iterations=5)
    assert np.array_equal(out[far], target[far])


def test_a_movable_defect_is_moved_turned_and_kept_inside_the_part() -> None:
    """Over many draws a movable defect lands at many places and in several of the eight
    orientations, always whole (same pixel count), inside the part, with its own gray."""
    image, mask = _defect()
    target = np.full((SIDE, SIDE), 200, dtype=np.uint8)
    allowed = _part()
    rng = np.random.default_rng(1)
    places, shapes = set(), set()
    for _ in range(40):
        out, placed = transplant(rng, image, mask, target, allowed, True)
        assert placed.sum() == mask.sum()
        assert not np.any(placed & ~allowed)
        assert np.all(out[placed] == 30)
        ys, xs = np.nonzero(placed)
        places.add((int(ys.min()), int(xs.min())))
        shapes.add(placed[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].tobytes())
    assert len(places) >= 20
    assert len(shapes) >= 4


def test_a_defect_with_no_room_elsewhere_stays_where_it_was() -> None:
    """When the part leaves no other place for the defect, it stays in place."""
    image, mask = _defect()
    allowed = ndimage.binary_dilation(mask, iterations=2)
    target = np.full((SIDE, SIDE), 200, dtype=np.uint8)
    out, placed = transplant(np.random.default_rng(2), image, mask, target, allowed, True)
    assert np.array_equal(placed, mask)
    assert np.all(out[mask] == 30)
