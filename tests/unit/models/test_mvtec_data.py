"""MVTec AD layout reading: types from folders, masks where present, captions, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.data.mvtec import load_mask, read_mvtec, resolve_category


def _png(path: Path, value: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((32, 32), value, dtype=np.uint8)).save(path)


@pytest.fixture
def category(tmp_path: Path) -> Path:
    """A hand-made category: two types with masks, one ('smudge') without any."""
    cat = tmp_path / "widget"
    for i in range(3):
        _png(cat / "train" / "good" / f"{i:03d}.png", 100)
    _png(cat / "test" / "good" / "000.png", 100)
    for t in ("scratch", "dent"):
        _png(cat / "test" / t / "000.png", 120)
        _png(cat / "ground_truth" / t / "000_mask.png", 255)
    _png(cat / "test" / "smudge" / "000.png", 90)
    lines = [{"image": "test/dent/000.png", "text": "small dent in the centre"}]
    (cat / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return cat


def test_reads_types_masks_and_a_type_without_masks(category: Path) -> None:
    """Types come from test folders; a type without ground truth is read with no mask."""
    ds = read_mvtec(category)
    assert ds.defect_types == ("dent", "scratch", "smudge")
    by_type = {s.defect_type: s for s in ds.select("test")}
    assert by_type["scratch"].mask_path is not None
    assert by_type["smudge"].mask_path is None
    assert len(ds.select("train")) == 3
    assert not load_mask(by_type["smudge"].mask_path, (32, 32)).any()


def test_captions_file_attaches_user_captions(category: Path) -> None:
    """A caption in captions.jsonl is attached to its image and to no other."""
    ds = read_mvtec(category)
    captions = {s.path.name + s.defect_type: s.caption for s in ds.samples}
    assert captions["000.pngdent"] == "small dent in the centre"
    assert captions["000.pngscratch"] is None


def test_a_folder_of_categories_resolves_to_its_only_one(category: Path) -> None:
    """A root holding one category resolves to it; naming a missing one is a clear error."""
    assert resolve_category(category.parent) == category
    with pytest.raises(FileNotFoundError, match="no train/"):
        resolve_category(category.parent, "nothing")


def test_missing_mask_and_bad_captions_are_named(category: Path) -> None:
    """A mask folder lacking an image's mask and a malformed captions line raise naming the file."""
    (category / "captions.jsonl").write_text('{"image": "x.png"}\n')
    with pytest.raises(ValueError, match=r"captions.jsonl:1"):
        read_mvtec(category)
    (category / "captions.jsonl").unlink()
    shutil.copy(category / "test" / "dent" / "000.png", category / "test" / "dent" / "001.png")
    with pytest.raises(FileNotFoundError, match="001_mask"):
        read_mvtec(category)


def test_content_hash_changes_with_any_file(category: Path) -> None:
    """The data set hash is stable and changes when one image changes."""
    before = read_mvtec(category).content_hash()
    assert read_mvtec(category).content_hash() == before
    _png(category / "train" / "good" / "001.png", 101)
    assert read_mvtec(category).content_hash() != before


def test_validation_goods_are_read_apart_and_are_all_that_training_validates_on(
    category: Path,
) -> None:
    """Images in validation/good are read with split "validation"; the training split then
    validates on exactly them and trains on every other good image (none of them goes
    to validation by chance)."""
    from models.train.samples import split_dataset

    for i in range(2):
        _png(category / "validation" / "good" / f"v{i}.png", 110)
    ds = read_mvtec(category)
    val = ds.select("validation")
    assert sorted(s.path.name for s in val) == ["v0.png", "v1.png"]
    assert all(s.is_good for s in val)
    for seed in range(5):
        split = split_dataset(ds, 0.5, seed)
        assert {s.path for s in split.val_good} == {s.path for s in val}
        assert len(split.train_good) == 4  # train/good (3) and test/good (1)
    shutil.rmtree(category / "validation")
    plain = split_dataset(read_mvtec(category), 0.5, 0)
    assert len(plain.val_good) == 2 and len(plain.train_good) == 2
