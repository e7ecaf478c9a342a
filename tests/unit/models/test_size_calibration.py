"""The size fact's length: the size head and the main region combined per type, fitted on
validation data, recorded in the package and applied by every runtime's pipeline."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from models.data.geometry import SIZE_CLASSES, size_class
from models.data.mvtec import load_gray, read_mvtec
from models.package import ModelPackage, load_package, write_manifest
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.sizing import ALL_TYPES, SizeCalibration, SizeSample, fit_size_calibration
from models.train.samples import split_dataset
from models.train.size_fit import calibrate_sizes


def _samples(
    rng: np.random.Generator, n: int, defect_type: str, c: tuple[float, ...]
) -> list[SizeSample]:
    out = []
    for _ in range(n):
        h, g, a = np.exp(rng.uniform(0.0, 2.5, 3))
        true = math.exp(c[0] + c[1] * math.log(h) + c[2] * math.log(g) + c[3] * math.log(a))
        out.append(SizeSample(defect_type, float(h), float(g), float(a), true))
    return out


def test_fit_recovers_each_types_relation_and_falls_back_for_rare_types() -> None:
    """Per-type coefficients reproduce the lengths they were fitted on; a type with too few
    samples, and one never seen, get the all-types coefficients."""
    rng = np.random.default_rng(0)
    samples = _samples(rng, 60, "scratch", (0.3, 0.2, 0.9, -0.1))
    samples += _samples(rng, 60, "spot", (-0.2, 0.8, 0.0, 0.1))
    samples += _samples(rng, 3, "crack", (0.0, 1.0, 0.0, 0.0))
    cal = fit_size_calibration(samples)
    assert cal.fitted_on == 123
    assert set(cal.with_region) == {ALL_TYPES, "scratch", "spot"}
    for s in samples[:120]:
        got = cal.length_mm(s.predicted_type, s.head_mm, s.region_length_mm, s.region_area_mm2)
        assert got == pytest.approx(s.true_mm, rel=0.02)
    assert cal.length_mm("crack", 4.0, 3.0, 5.0) == cal.length_mm("dent", 4.0, 3.0, 5.0)


def test_without_a_region_the_head_alone_is_calibrated() -> None:
    """An image without a measured region uses the head-only coefficients of its type."""
    cal = SizeCalibration(
        with_region={ALL_TYPES: (0.0, 0.0, 1.0, 0.0)},
        head_only={ALL_TYPES: (0.0, 1.0), "spot": (math.log(0.5), 1.0)},
        fitted_on=0,
    )
    assert cal.length_mm("scratch", 4.0) == pytest.approx(4.0)
    assert cal.length_mm("spot", 4.0) == pytest.approx(2.0)
    assert cal.length_mm("spot", 4.0, 6.0, 3.0) == pytest.approx(6.0)


def test_calibration_needs_the_all_types_key_and_enough_samples() -> None:
    """Coefficients without ``"*"`` are refused; fitting on a handful of defects is refused."""
    with pytest.raises(ValidationError, match="needs the"):
        SizeCalibration(with_region={}, head_only={ALL_TYPES: (0.0, 1.0)}, fitted_on=0)
    with pytest.raises(ValueError, match="at least"):
        fit_size_calibration([SizeSample("spot", 1.0, None, None, 1.0)] * 3)


def _with_calibration(pkg: ModelPackage, root: Path, cal: SizeCalibration) -> ModelPackage:
    shutil.copytree(pkg.root, root)
    fields = pkg.manifest.model_dump(mode="json", exclude={"format", "format_version", "files"})
    fields["size_calibration"] = cal.model_dump(mode="json")
    write_manifest(root, fields)
    return load_package(root)


def test_the_pipeline_publishes_the_calibrated_length(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """With a calibration in the package, the facts' size, the decoder's size id and the
    guard's length are the calibrated length; the head's own length is kept beside it."""
    cal = SizeCalibration(
        with_region={ALL_TYPES: (math.log(7.0), 0.0, 0.0, 0.0)},
        head_only={ALL_TYPES: (math.log(3.0), 0.0)},
        fitted_on=0,
    )
    pkg = _with_calibration(tiny_package, tmp_path / "cal", cal)
    pipe = OnnxRuntimeBackend(pkg.root).pipeline
    plain = OnnxRuntimeBackend(tiny_package.root).pipeline
    samples = read_mvtec(tiny_dataset).select("test")
    images = [load_gray(s.path) for s in samples]
    for d, p in zip(pipe.detect(images), plain.detect(images), strict=True):
        want = 7.0 if d.main is not None else 3.0
        assert d.length_mm == pytest.approx(want)
        assert d.fact_ids[2] == SIZE_CLASSES.index(size_class(want))
        assert d.head_length_mm == pytest.approx(p.length_mm)
        if d.anomalous and d.main is not None:
            assert d.facts.size_mm == pytest.approx(7.0)


def test_calibrating_a_package_with_too_few_validation_defects_leaves_it_unchanged(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """``calibrate_sizes`` refuses to fit on a handful of defects and does not touch the
    manifest; the split it measures is the one training held out."""
    root = tmp_path / "pkg"
    shutil.copytree(tiny_package.root, root)
    before = (root / "manifest.json").read_bytes()
    ds = read_mvtec(tiny_dataset)
    with pytest.raises(ValueError, match="at least"):
        calibrate_sizes(root, ds, 0.5, 0)
    assert (root / "manifest.json").read_bytes() == before
    a, b = split_dataset(ds, 0.5, 0), split_dataset(ds, 0.5, 0)
    assert a == b and set(a.val_defects).isdisjoint(a.train_defects)


def test_the_region_length_is_kept_where_it_is_within_tolerance_more_often() -> None:
    """Validation scratches whose region length is exact but for a few far-off ones: the
    least-squares fit bends towards the outliers, the region alone is right on 30 of 40, so
    the region alone is chosen; a region that is consistently twice too long is fitted."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(40):
        t = float(rng.uniform(3, 15))
        region, head = (t, t * float(rng.uniform(0.3, 3))) if i < 30 else (3 * t, t)
        samples.append(SizeSample("scratch", head, region, 0.3 * region, t))
    assert fit_size_calibration(samples).with_region["scratch"] == (0.0, 0.0, 1.0, 0.0)
    biased = [
        SizeSample("scratch", float(rng.uniform(1, 20)), 2 * t, 0.6 * t, t)
        for t in rng.uniform(3, 15, 40)
    ]
    cal = fit_size_calibration(biased)
    assert cal.with_region["scratch"] != (0.0, 0.0, 1.0, 0.0)
    s = biased[0]
    got = cal.length_mm("scratch", s.head_mm, s.region_length_mm, s.region_area_mm2)
    assert abs(got - s.true_mm) <= 0.15 * s.true_mm
