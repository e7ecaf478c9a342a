"""The synthetic data set writer: the MVTec AD layout, masks and truth that match the images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.data.synthset import write_synth
from models.synth import DEFECT_KINDS, PartSpec, render_part, render_scene


def test_write_synth_produces_the_mvtec_layout(tmp_path: Path) -> None:
    """Folders, names and masks follow MVTec AD, and each mask matches its re-rendered image."""
    families = ["moulded_plastic", "brushed_metal"]
    counts = write_synth(
        tmp_path,
        7,
        families,
        n_train_good=2,
        n_test_good=1,
        n_test_per_kind=1,
        mm_per_px=0.25,
        size_px=128,
        part_size_mm=28.0,
        progress=False,
    )
    for family in families:
        assert len(list((tmp_path / family / "train" / "good").glob("*.png"))) == 2
        assert len(list((tmp_path / family / "test" / "good").glob("*.png"))) == 1
        for kind in DEFECT_KINDS:
            image = tmp_path / family / "test" / kind / "000.png"
            mask_png = tmp_path / family / "ground_truth" / kind / "000_mask.png"
            assert image.is_file() and mask_png.is_file()
            m = np.asarray(Image.open(mask_png))
            assert m.shape == (128, 128) and set(np.unique(m)) == {0, 255}
        assert not (tmp_path / family / "ground_truth" / "good").exists()
    assert counts["brushed_metal"]["test/crack"] == 1

    records = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(records) == 2 * (2 + 1 + len(DEFECT_KINDS))
    for rec in (r for r in records if "mask" in r):
        spec = PartSpec(**rec["spec"])
        assert spec.part_size_mm == 28.0
        frame, mask = render_scene(
            render_part(spec, 0.25), (128, 128), (63.5, 63.5), noise_seed=spec.seed
        )
        assert np.array_equal(np.asarray(Image.open(tmp_path / rec["image"])), frame)
        assert np.array_equal(np.asarray(Image.open(tmp_path / rec["mask"])) == 255, mask)
        ys, xs = np.nonzero(mask)
        assert rec["truth"]["bbox_px"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_write_synth_is_reproducible(tmp_path: Path) -> None:
    """The same arguments write byte-identical images."""
    for name in ("a", "b"):
        write_synth(
            tmp_path / name,
            3,
            ["textile"],
            n_train_good=1,
            n_test_good=0,
            n_test_per_kind=1,
            mm_per_px=0.25,
            size_px=120,
            part_size_mm=28.0,
            progress=False,
        )
    for rel in ["textile/train/good/000.png", "textile/test/scratch/000.png"]:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_write_synth_refuses_a_part_larger_than_the_crop(tmp_path: Path) -> None:
    """A part that does not fit the crop is refused before anything is written, naming the sizes."""
    want = r"a 24\.0 mm part at 0\.25 mm/px does not fit a 64 px crop"
    with pytest.raises(ValueError, match=want):
        write_synth(tmp_path / "x", 1, ["textile"], mm_per_px=0.25, size_px=64, progress=False)
    assert not (tmp_path / "x").exists()
