"""ROI: the part is found on the belt and cropped around it, or the frame is refused."""

from __future__ import annotations

import numpy as np
import pytest

from models.synth import PartSpec, RenderedPart, part_origin, render_part, render_scene
from node.line.roi import crop_part

MPP = 0.125  # 28 mm parts are 224 px
FRAME = (320, 320)
THRESHOLD = 60


@pytest.fixture(scope="module")
def part() -> RenderedPart:
    """A defective moulded part (the dark crack must not upset the crop)."""
    return render_part(PartSpec("moulded_plastic", 17, "crack"), MPP)


def test_finds_an_off_centre_part(part: RenderedPart) -> None:
    """A part placed off-centre is cropped with the part in the middle of the crop."""
    centre = (140.0, 175.0)
    frame, _ = render_scene(part, FRAME, centre, noise_seed=1)
    crop, (x0, y0) = crop_part(frame, 256, THRESHOLD)
    px0, py0 = part_origin(224, centre)
    assert crop.shape == (256, 256) and crop.dtype == np.uint8
    assert (px0 - x0, py0 - y0) == (16, 16)  # the 224 px part sits centred in the 256 px crop
    assert np.array_equal(crop, frame[y0 : y0 + 256, x0 : x0 + 256])  # wholly inside the frame


@pytest.mark.parametrize("centre", [(160.0, 160.0), (121.0, 200.3), (199.6, 118.0)])
def test_crop_position_follows_the_part(part: RenderedPart, centre: tuple[float, float]) -> None:
    """Wherever the part lies (whole) in the frame, the crop origin tracks it exactly."""
    frame, _ = render_scene(part, FRAME, centre, noise_seed=2)
    _, origin = crop_part(frame, 240, THRESHOLD)
    px0, py0 = part_origin(224, centre)
    assert origin == (px0 - 8, py0 - 8)


def test_empty_belt_is_refused(part: RenderedPart) -> None:
    """A frame of bare belt raises 'no part in frame'."""
    frame, _ = render_scene(part, FRAME, (-5000.0, 160.0), noise_seed=3)
    with pytest.raises(ValueError, match="no part in frame"):
        crop_part(frame, 256, THRESHOLD)


def test_dust_is_not_a_part(part: RenderedPart) -> None:
    """A small bright speck is ignored next to a part and refused on its own."""
    frame, _ = render_scene(part, FRAME, (200.0, 160.0), noise_seed=4)
    frame[10:16, 10:16] = 250
    _, origin = crop_part(frame, 256, THRESHOLD)
    assert origin == (
        part_origin(224, (200.0, 160.0))[0] - 16,
        part_origin(224, (200.0, 160.0))[1] - 16,
    )
    belt, _ = render_scene(part, FRAME, (-5000.0, 160.0), noise_seed=4)
    belt[100:130, 100:130] = 250
    with pytest.raises(ValueError, match="no part in frame"):
        crop_part(belt, 256, THRESHOLD)


def test_slightly_cut_part_is_centred_by_its_visible_edge(part: RenderedPart) -> None:
    """A part less than 1 % outside the frame is accepted and padded with the belt level."""
    centre = (110.0, 160.0)  # 2 px of 224 (0.9 %) past the left edge
    frame, _ = render_scene(part, FRAME, centre, noise_seed=5)
    crop, (x0, _) = crop_part(frame, 256, THRESHOLD)
    assert x0 == part_origin(224, centre)[0] - 16
    padded = crop[:, :-x0]
    assert abs(float(padded.mean()) - 30.0) < 5.0


def test_badly_cut_part_is_refused(part: RenderedPart) -> None:
    """Cuts of 3 %, a third, or at a corner of unknown size raise 'part cut off'."""
    frame, _ = render_scene(part, FRAME, (40.0, 160.0), noise_seed=6)
    with pytest.raises(ValueError, match="part cut off"):
        crop_part(frame, 256, THRESHOLD)
    frame, _ = render_scene(part, FRAME, (105.0, 160.0), noise_seed=6)  # 3 % cut
    with pytest.raises(ValueError, match="part cut off"):
        crop_part(frame, 256, THRESHOLD)
    _, origin = crop_part(frame, 256, THRESHOLD, max_cut_fraction=0.05)
    assert origin == (part_origin(224, (105.0, 160.0))[0] - 16, 160 - 128)
    corner, _ = render_scene(part, FRAME, (110.0, 110.0), noise_seed=6)  # 2 px past two edges
    with pytest.raises(ValueError, match="part cut off"):
        crop_part(corner, 256, THRESHOLD)
    _, origin = crop_part(corner, 256, THRESHOLD, part_size_px=224)
    expected = part_origin(224, (110.0, 110.0))
    assert origin == (expected[0] - 16, expected[1] - 16)


def test_bad_frames_are_refused() -> None:
    """Frames that are not grayscale uint8 raise ValueError."""
    with pytest.raises(ValueError, match="uint8"):
        crop_part(np.zeros((64, 64), np.uint16), 32, THRESHOLD)  # a wrong dtype on purpose
    with pytest.raises(ValueError, match="uint8"):
        crop_part(np.zeros((64, 64, 3), np.uint8), 32, THRESHOLD)
