"""The surfaces bench: training, validation and test crops come from parts of the
photograph that share no pixel, and the validation crops reach training as its
``validation/good`` images."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import surfaces  # noqa: E402  (a script folder, not a package)

from models.data.mvtec import load_gray, read_mvtec  # noqa: E402
from models.train.samples import split_dataset  # noqa: E402


def test_no_photograph_pixel_is_in_two_regions() -> None:
    """Each pixel of the 512 x 512 photograph belongs to exactly one region."""
    owners = np.zeros((512, 512), dtype=int)
    for rows, cols in surfaces.REGIONS.values():
        owners[rows, cols] += 1
    assert (owners == 1).all()


def test_a_training_folder_validates_on_its_own_region(tmp_path: Path) -> None:
    """The training folder's validation/good crops are what training validates on; they
    are 256 px like every other crop, and none equals a training crop."""
    cat = tmp_path / "gravel"
    surfaces.write_surface(cat, "gravel", 1, "train", 6, 1, n_val_good=4)
    ds = read_mvtec(cat)
    split = split_dataset(ds, 0.2, 0)
    assert len(split.val_good) == 4 and len(split.train_good) == 6
    assert {s.path.parent.parent.name for s in split.val_good} == {"validation"}
    trained = [load_gray(s.path) for s in split.train_good]
    for s in split.val_good:
        img = load_gray(s.path)
        assert img.shape == (256, 256)
        assert not any(np.array_equal(img, t) for t in trained)
