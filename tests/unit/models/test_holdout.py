"""Honest numbers: training never reads its holdout, eval leaves out what a package saw."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models import cli
from models.data.holdout import hold_out, image_sha256, read_list, unseen
from models.data.mvtec import read_mvtec
from models.findings import UNKNOWN_TYPE
from models.package import ModelPackage, load_package
from models.train.build import train_package
from models.train.crossval import cross_validate, folds
from models.train.metrics import auroc, bootstrap_ci
from tests.unit.models.conftest import TINY_TRAIN


def _groups(samples: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        if s.split == "test":
            out[s.defect_type] = out.get(s.defect_type, 0) + 1
    return out


def test_the_holdout_is_stratified_seeded_and_never_a_whole_group(tiny_dataset: Path) -> None:
    """30% of each test group (at least one of two or more, never all), the same for the
    same seed, another for another seed; train/ images are never held out."""
    ds = read_mvtec(tiny_dataset)
    h = hold_out(ds, 0.3, seed=1)
    tests = _groups(ds.samples)
    held = _groups(h.held)
    assert held.keys() == tests.keys()
    for group, n in tests.items():
        assert 1 <= held[group] < n  # 3 good → 1, 2 of each type → 1
    assert all(s.split == "test" for s in h.held)
    assert len(h.kept.samples) + len(h.held) == len(ds.samples)
    assert {s.path for s in h.held}.isdisjoint({s.path for s in h.kept.samples})
    assert [s.path for s in hold_out(ds, 0.3, seed=1).held] == [s.path for s in h.held]
    others = {tuple(s.path for s in hold_out(ds, 0.3, seed=k).held) for k in range(2, 8)}
    assert len(others) > 1
    assert hold_out(ds, 0.0).held == ()
    with pytest.raises(ValueError, match="holdout fraction"):
        hold_out(ds, 0.95)


def test_a_listed_holdout_and_a_copied_image(tiny_dataset: Path, tmp_path: Path) -> None:
    """An explicit list holds out exactly its images; a byte-identical copy of a held-out
    image elsewhere in the folder is held out too; an unknown path is refused by name."""
    root = tmp_path / "cat"
    shutil.copytree(tiny_dataset, root)
    first = sorted((root / "test" / "good").glob("*.png"))[0]
    shutil.copy(first, root / "train" / "good" / "copy_of_test.png")
    listing = tmp_path / "holdout.txt"
    listing.write_text(f"# the plant's own choice\n{first.relative_to(root).as_posix()}\n")
    ds = read_mvtec(root)
    h = hold_out(ds, listed=read_list(listing))
    assert sorted(s.path.name for s in h.held) == sorted(["copy_of_test.png", first.name])
    with pytest.raises(ValueError, match=r"test/good/nope\.png"):
        hold_out(ds, listed=["test/good/nope.png"])


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every image file PIL decodes while the test runs."""
    seen: list[Path] = []
    real = Image.open

    def recording(fp: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(fp, str | Path):
            seen.append(Path(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", recording)
    return seen


def test_training_never_decodes_a_holdout_image(
    tiny_dataset: Path, tmp_path: Path, decoded: list[Path]
) -> None:
    """Every image PIL decodes while a package is trained, exported and calibrated is one
    the manifest lists as seen (or its mask); no holdout image the manifest records is
    decoded, nor its mask, and the two lists together are the whole folder."""
    pkg = train_package(tiny_dataset, tmp_path / "pkg", TINY_TRAIN).package
    record = pkg.manifest.data
    assert record is not None and record.holdout_fraction == pytest.approx(0.3)
    samples = read_mvtec(tiny_dataset).samples
    held = [s for s in samples if image_sha256(s.path) in set(record.holdout_sha256)]
    kinds = read_mvtec(tiny_dataset).defect_types
    assert len(held) == len(record.holdout_sha256) == 1 + len(kinds)  # 1 good, 1 per kind
    forbidden = {s.path for s in held} | {s.mask_path for s in held if s.mask_path}
    images = [p for p in decoded if "ground_truth" not in p.parts]
    assert images, "the recording saw no image at all"
    assert forbidden.isdisjoint(decoded)
    assert {image_sha256(p) for p in images} <= set(record.seen_sha256)
    every = {image_sha256(s.path) for s in samples}
    assert set(record.seen_sha256) | set(record.holdout_sha256) == every


def test_eval_on_the_training_folder_leaves_out_what_the_package_saw(
    tiny_package: ModelPackage, tiny_dataset: Path
) -> None:
    """On the folder it was trained from, eval scores only the holdout and lists every
    test image it left out, with 95% intervals around its figures."""
    out = cli.evaluate(tiny_package.root, tiny_dataset, progress=False)
    record = tiny_package.manifest.data
    assert record is not None
    ds = read_mvtec(tiny_dataset)
    tests = ds.select("test")
    seen = [s for s in tests if image_sha256(s.path) in set(record.seen_sha256)]
    assert out["excluded_trained_images"]["count"] == len(seen) > 0
    assert sorted(out["excluded_trained_images"]["images"]) == sorted(
        s.path.relative_to(ds.root).as_posix() for s in seen
    )
    assert out["test_images"] == len(tests) - len(seen) == len(record.holdout_sha256)
    assert out["metrics"]["test_images"] == out["test_images"]
    lo, hi = out["ci95"]["image_auroc"]
    assert 0.0 <= lo <= out["metrics"]["image_auroc"] <= hi <= 1.0


def test_eval_refuses_a_folder_of_trained_images_only(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """With the holdout removed from the folder, nothing honest is left: a clear error."""
    root = tmp_path / "cat"
    shutil.copytree(tiny_dataset, root)
    record = tiny_package.manifest.data
    assert record is not None
    for s in read_mvtec(root).select("test"):
        if image_sha256(s.path) in set(record.holdout_sha256):
            s.path.unlink()
    kept, excluded = unseen(read_mvtec(root), record.seen_sha256)
    assert kept.select("test") == [] and excluded
    with pytest.raises(ValueError, match="trained or validated on"):
        cli.evaluate(tiny_package.root, root, progress=False)


def test_bootstrap_intervals_cover_the_figure_and_shrink_with_more_data() -> None:
    """An accuracy of 0.8 on 20 items has a 95% interval of roughly ±0.18 around it; on 500
    items about ±0.035; an AUROC resampled per class keeps both classes."""
    for n, half_width in ((20, 0.18), (500, 0.035)):
        hits = np.arange(n) % 5 != 0  # 80% right

        def accuracy(i: np.ndarray[Any, Any], h: np.ndarray[Any, Any] = hits) -> float:
            return float(h[i].mean())

        lo, hi = bootstrap_ci(accuracy, [n]) or (0.0, 0.0)
        assert lo < 0.8 < hi
        assert (hi - lo) / 2 == pytest.approx(half_width, rel=0.35)
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 30), rng.normal(1.5, 1, 10)])
    labels = np.arange(40) >= 30
    ci = bootstrap_ci(lambda i: auroc(scores[i], labels[i]), [30, 10])
    assert ci is not None and ci[0] < auroc(scores, labels) < ci[1]
    assert bootstrap_ci(lambda i: 0.0, [1]) is None


def test_k_fold_scores_every_test_image_once_by_a_package_that_never_saw_it(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    """Two folds: each test image is in exactly one fold, that fold's package recorded it as
    held out (and never as seen), and the pooled figures count every test image once."""
    ds = read_mvtec(tiny_dataset)
    report = cross_validate(tiny_dataset, tmp_path / "cv", TINY_TRAIN, 2)
    dealt = report["held_out"]
    every = sorted(s.path.relative_to(ds.root).as_posix() for s in ds.select("test"))
    assert sorted(p for fold in dealt for p in fold) == every
    for i, fold in enumerate(dealt, start=1):
        record = load_package(tmp_path / "cv" / f"fold-{i}").manifest.data
        assert record is not None
        hashes = {image_sha256(ds.root / p) for p in fold}
        assert hashes == set(record.holdout_sha256)
        assert hashes.isdisjoint(record.seen_sha256)
    assert report["metrics"]["test_images"] == len(every)
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["folds"] == 2
    with pytest.raises(ValueError, match="every fold needs one of each"):
        folds(ds, 4)


def test_training_from_a_package_starts_from_its_weights(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """With ``init_from`` and no optimiser step, the new package's weights are the old
    package's (the same types, so every tensor fits), and the manifest names the package
    it started from; a fresh start differs."""
    import torch

    still = replace(TINY_TRAIN, steps=0)
    cfg = replace(still, init_from=str(tiny_package.root))
    tuned = train_package(tiny_dataset, tmp_path / "tuned", cfg).package
    fresh = train_package(tiny_dataset, tmp_path / "fresh", replace(still, seed=9)).package
    old = torch.load(tiny_package.weights_path, weights_only=True)
    new = torch.load(tuned.weights_path, weights_only=True)
    other = torch.load(fresh.weights_path, weights_only=True)
    assert new.keys() == old.keys()
    assert all(torch.equal(new[k], old[k]) for k in old)
    assert not all(torch.equal(other[k], old[k]) for k in old)
    assert tuned.manifest.training["from_package_sha256"] == tiny_package.sha256


def test_fine_tuning_onto_other_type_names_keeps_only_the_rows_of_names_both_know(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """A plant's data set names its types its own way: starting from a package whose
    'spot' the data set calls 'stain' (same count of types, same index), the type head,
    the decoder's type facts and its token rows keep the package's rows for the names
    both know and a fresh row for 'stain' (not the package's 'spot' that sat at that
    index)."""
    import torch

    data = tmp_path / "renamed"
    shutil.copytree(tiny_dataset, data)
    (data / "test" / "spot").rename(data / "test" / "stain")
    (data / "ground_truth" / "spot").rename(data / "ground_truth" / "stain")
    cfg = replace(TINY_TRAIN, steps=0, init_from=str(tiny_package.root))
    tuned = train_package(data, tmp_path / "tuned", cfg).package
    old_types, new_types = tiny_package.manifest.types, tuned.manifest.types
    assert new_types.index("stain") == old_types.index("spot")
    old = torch.load(tiny_package.weights_path, weights_only=True)
    new = torch.load(tuned.weights_path, weights_only=True)
    for key in ("type_head.2.weight", "type_head.2.bias", "decoder.fact_type.weight"):
        for name in ("crack", "scratch", UNKNOWN_TYPE):
            assert torch.equal(new[key][new_types.index(name)], old[key][old_types.index(name)])
        spot = old[key][old_types.index("spot")]
        assert not torch.equal(new[key][new_types.index("stain")], spot), key
    assert torch.equal(new["decoder.fact_type.weight"][-1], old["decoder.fact_type.weight"][-1])
    old_tokens, new_tokens = tiny_package.manifest.vocabulary, tuned.manifest.vocabulary
    assert new_tokens.index("stain") == old_tokens.index("spot")
    for key in ("decoder.embed.weight", "decoder.head.weight", "decoder.head.bias"):
        row = new[key][new_tokens.index("crack")]
        assert torch.equal(row, old[key][old_tokens.index("crack")])
        assert not torch.equal(
            new[key][new_tokens.index("stain")], old[key][old_tokens.index("spot")]
        )
    assert torch.equal(new["encoder.stem.0.weight"], old["encoder.stem.0.weight"])


def test_a_type_with_too_few_examples_is_not_guessed(tiny_dataset: Path, tmp_path: Path) -> None:
    """Two labelled images of each type: learned with min_type_examples=2; with 3 no type
    is learned, and the head only knows 'unknown anomaly' (an operator reads that, not a
    guess between types it saw twice)."""
    base = replace(TINY_TRAIN, holdout_fraction=0.0)
    two = train_package(tiny_dataset, tmp_path / "two", replace(base, min_type_examples=2))
    assert two.package.manifest.types == (*read_mvtec(tiny_dataset).defect_types, UNKNOWN_TYPE)
    three = train_package(tiny_dataset, tmp_path / "three", replace(base, min_type_examples=3))
    assert three.package.manifest.types == (UNKNOWN_TYPE,)


def test_good_images_alone_make_a_working_package(tiny_dataset: Path, tmp_path: Path) -> None:
    """With no labelled defect at all the package is trained on good images and synthetic
    anomalies, calibrated on synthetic ones, and then scores real defects it never saw."""
    root = tmp_path / "goods-only"
    shutil.copytree(tiny_dataset, root)
    for folder in (root / "test").iterdir():
        if folder.name != "good":
            shutil.rmtree(folder)
    shutil.rmtree(root / "ground_truth", ignore_errors=True)
    built = train_package(root, tmp_path / "pkg", TINY_TRAIN)  # holds out 1 of 3 goods
    assert built.package.manifest.types == (UNKNOWN_TYPE,)
    assert built.fit.metrics["val_image_auroc"] == built.fit.metrics["val_image_auroc"]  # not NaN
    out = cli.evaluate(built.package.root, tiny_dataset, progress=False)
    assert out["excluded_trained_images"]["count"] == 2  # the good test images it read
    assert 0.0 <= out["metrics"]["image_auroc"] <= 1.0
    assert out["metrics"]["unknown_type_rate"] == 1.0  # every defect: "unknown anomaly"
