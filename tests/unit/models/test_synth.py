"""Synthetic parts: deterministic, defects with exact masks and truthful ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from models.synth import (
    DEFECT_KINDS,
    FAMILY_NAMES,
    PartSpec,
    part_origin,
    render_part,
    render_scene,
    sample_part_spec,
)
from models.synth import parts as parts_module

MPP = 0.125  # 28 mm parts render at 224 px


def test_render_part_is_deterministic() -> None:
    """The same spec and scale give identical pixels, even after the cache is dropped."""
    spec = PartSpec("moulded_plastic", 1234, "crack")
    first = render_part(spec, MPP)
    parts_module._render.cache_clear()
    second = render_part(spec, MPP)
    assert first is not second
    assert np.array_equal(first.image, second.image)
    assert np.array_equal(first.mask, second.mask)
    assert first.truth == second.truth


def test_seeds_give_different_instances_of_one_family() -> None:
    """Two seeds of a family differ in texture but agree closely on average (same family)."""
    a = render_part(PartSpec("brushed_metal", 1), MPP)
    b = render_part(PartSpec("brushed_metal", 2), MPP)
    inside = a.part_mask
    assert not np.array_equal(a.image, b.image)
    diff = a.image[inside].astype(float).mean() - b.image[inside].astype(float).mean()
    assert abs(diff) < 10.0


def test_defect_is_painted_on_the_good_part_of_the_same_seed() -> None:
    """A defective part equals its good twin everywhere except at (and just around) the defect."""
    good = render_part(PartSpec("printed_board", 77), MPP)
    bad = render_part(PartSpec("printed_board", 77, "spot"), MPP)
    changed = good.image != bad.image
    near_defect = ndimage.binary_dilation(bad.mask, iterations=4)
    assert changed.any()
    assert not (changed & ~near_defect).any()


@pytest.mark.parametrize("family", FAMILY_NAMES)
@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_every_kind_has_a_mask_inside_the_part_and_matching_truth(family: str, kind: str) -> None:
    """Every family x kind yields a non-empty mask on the part and truth measured from it."""
    part = render_part(PartSpec(family, 2024, kind), MPP)  # type: ignore[arg-type]
    size = round(28.0 / MPP)
    assert part.image.shape == part.mask.shape == part.part_mask.shape == (size, size)
    assert part.image.dtype == np.uint8
    assert part.mask.any()
    assert not (part.mask & ~part.part_mask).any()
    truth = part.truth
    assert truth is not None and truth.kind == kind
    ys, xs = np.nonzero(part.mask)
    assert truth.area_px == xs.size
    assert truth.area_mm2 == pytest.approx(xs.size * MPP**2)
    assert truth.bbox_px == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert truth.centroid_px == pytest.approx((xs.mean(), ys.mean()))
    assert truth.visible, f"{family}/{kind} at default settings should be visible: {truth}"


def test_defects_are_visible_against_the_surface() -> None:
    """At default settings the mean change over a defect's mask is well above the texture noise."""
    rng = np.random.default_rng(5)
    for family in FAMILY_NAMES:
        good = render_part(PartSpec(family, 5), MPP)
        noise = float(np.std(good.image[ndimage.binary_erosion(good.part_mask, iterations=20)]))
        for kind in DEFECT_KINDS:
            if kind == "missing_feature":
                continue  # its contrast is the feature's, compared below by `visible`
            truth = render_part(sample_part_spec(rng, family, 1.0, [kind]), MPP).truth
            assert truth is not None
            assert truth.abs_contrast_gray > 1.5 * noise, (family, kind, truth, noise)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    family=st.sampled_from(FAMILY_NAMES),
    kind=st.sampled_from(DEFECT_KINDS),
    mm_per_px=st.sampled_from([0.1, 0.2, 0.25]),
)
def test_any_spec_renders_a_defect_on_the_part(
    seed: int, family: str, kind: str, mm_per_px: float
) -> None:
    """For any seed and scale, the defect mask is non-empty, on the part, and its truth agrees."""
    part = render_part(PartSpec(family, seed, kind), mm_per_px)  # type: ignore[arg-type]
    assert part.mask.any() and not (part.mask & ~part.part_mask).any()
    assert part.truth is not None and part.truth.area_px == int(part.mask.sum())
    assert part.truth.length_mm >= part.truth.width_mm > 0


def test_sample_part_spec_honours_rate_and_kinds() -> None:
    """defect_rate 0 gives good parts, 1 gives only the listed kinds; bad inputs are refused."""
    rng = np.random.default_rng(0)
    assert all(sample_part_spec(rng, "textile", 0.0).defect is None for _ in range(20))
    kinds = {sample_part_spec(rng, "textile", 1.0, ["crack", "spot"]).defect for _ in range(40)}
    assert kinds == {"crack", "spot"}
    with pytest.raises(ValueError, match="unknown part family"):
        sample_part_spec(rng, "wood", 0.5)
    with pytest.raises(ValueError, match="defect_rate"):
        sample_part_spec(rng, "textile", 1.5)
    with pytest.raises(ValueError, match="kinds"):
        sample_part_spec(rng, "textile", 0.5, [])


def test_render_part_refuses_bad_specs() -> None:
    """Unknown families, unknown kinds and impossible scales raise ValueError."""
    with pytest.raises(ValueError, match="unknown part family"):
        render_part(PartSpec("wood", 1), MPP)
    with pytest.raises(ValueError, match="unknown defect kind"):
        render_part(PartSpec("textile", 1, "dent"), MPP)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mm_per_px"):
        render_part(PartSpec("textile", 1), 0.0)
    with pytest.raises(ValueError, match="px"):
        render_part(PartSpec("textile", 1), 5.0)


def test_render_scene_places_the_part_and_its_mask() -> None:
    """The part lands at center_px on a darker belt, and the mask lands with it."""
    part = render_part(PartSpec("moulded_plastic", 9, "scratch"), MPP)
    frame, mask = render_scene(part, (320, 300), (140.0, 170.0), noise_seed=3)
    assert frame.shape == mask.shape == (320, 300) and frame.dtype == np.uint8
    x0, y0 = part_origin(part.image.shape[0], (140.0, 170.0))
    s = part.image.shape[0]
    window = (slice(y0, y0 + s), slice(x0, x0 + s))
    assert np.array_equal(mask[window], part.mask) and mask.sum() == part.mask.sum()
    diff = frame[window].astype(int) - part.image.astype(int)
    assert np.abs(diff[part.part_mask]).max() <= 10  # only fresh sensor noise on the part
    belt = np.ones(frame.shape, bool)
    belt[window] = ~part.part_mask
    assert abs(float(frame[belt].mean()) - 30.0) < 3.0
    assert frame[window][part.part_mask].mean() > 100


def test_render_scene_clips_a_part_leaving_the_frame() -> None:
    """A part partly outside the frame is clipped, its mask too; one far away leaves only belt."""
    part = render_part(PartSpec("textile", 4, "contamination"), MPP)
    frame, _ = render_scene(part, (200, 200), (10.0, 190.0), noise_seed=1)
    assert frame.shape == (200, 200) and (frame > 80).sum() > 1000
    empty, no_mask = render_scene(part, (200, 200), (-5000.0, 100.0), noise_seed=1)
    assert empty.max() < 60 and not no_mask.any()


def test_render_scene_noise_seed_is_deterministic() -> None:
    """The same noise_seed gives the same frame; another seed gives other sensor noise."""
    part = render_part(PartSpec("printed_board", 8), MPP)
    a, _ = render_scene(part, (256, 256), (128.0, 128.0), noise_seed=42)
    b, _ = render_scene(part, (256, 256), (128.0, 128.0), noise_seed=42)
    c, _ = render_scene(part, (256, 256), (128.0, 128.0), noise_seed=43)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
