"""Fit a package's size calibration on its validation defects, through the deployed runtime.

After training and export, the package runs on ONNX Runtime over the
validation defects of its training data set (the same split ``fit`` held out:
same ``val_fraction`` and ``seed``), exactly as the node would: the type head's
choice, the size head's length and the main region the pipeline measures.
``models.sizing.fit_size_calibration`` fits the per-type combination against
each mask's true length, and the manifest is rewritten with it (the graphs and
weights are unchanged). The size-class accuracy on the validation defects
before and after is recorded in the metrics. The test split of a benchmark is
never seen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from models.data.geometry import size_class
from models.data.mvtec import MvtecDataset, load_gray, load_mask
from models.package import MANIFEST_FILE, ModelPackage, load_package, write_manifest
from models.sizing import SizeCalibration, SizeSample, fit_size_calibration
from models.train.samples import facts_of_mask, split_dataset

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SizeFit:
    """The calibration written and the validation size-class accuracy before and after it."""

    calibration: SizeCalibration
    accuracy_before: float
    accuracy_after: float
    samples: int


def size_samples(
    package: ModelPackage, dataset: MvtecDataset, val_fraction: float, seed: int
) -> list[SizeSample]:
    """Run ``package`` (ONNX Runtime, no decoder) over the validation defects with masks."""
    from models.runtime.onnxruntime import OnnxRuntimeBackend

    pipe = OnnxRuntimeBackend(package.root, 1, explain=False).pipeline
    # Measure the head's own length: the calibration being fitted must not feed on itself.
    pipe.size_calibration = None
    threshold = package.manifest.input.part_threshold
    defects = [s for s in split_dataset(dataset, val_fraction, seed).val_defects if s.mask_path]
    out: list[SizeSample] = []
    for i in range(0, len(defects), 8):
        chunk = defects[i : i + 8]
        images = [load_gray(s.path) for s in chunk]
        for s, img, d in zip(chunk, images, pipe.detect(images), strict=True):
            truth = facts_of_mask(
                img, load_mask(s.mask_path, img.shape), s.defect_type, pipe.mm_per_px, threshold
            )
            if truth is None:
                continue
            main = d.main
            out.append(
                SizeSample(
                    d.head_type,
                    d.head_length_mm,
                    main.length_mm if main else None,
                    main.area_mm2 if main else None,
                    truth.length_mm,
                )
            )
    return out


def _accuracy(samples: list[SizeSample], cal: SizeCalibration | None) -> float:
    hits = 0
    for s in samples:
        length = s.head_mm
        if cal is not None:
            length = cal.length_mm(
                s.predicted_type, s.head_mm, s.region_length_mm, s.region_area_mm2
            )
        hits += int(size_class(length) == size_class(s.true_mm))
    return hits / len(samples) if samples else float("nan")


def calibrate_sizes(
    package_dir: str | Path, dataset: MvtecDataset, val_fraction: float, seed: int
) -> SizeFit:
    """Fit the size calibration of the package in ``package_dir`` and rewrite its manifest.

    Raises ``PackageError`` for a bad package and ``ValueError`` when the
    validation split has too few defects with masks to fit.
    """
    pkg = load_package(package_dir)
    samples = size_samples(pkg, dataset, val_fraction, seed)
    cal = fit_size_calibration(samples)
    result = SizeFit(cal, _accuracy(samples, None), _accuracy(samples, cal), len(samples))
    fields: dict[str, Any] = pkg.manifest.model_dump(
        mode="json", exclude={"format", "format_version", "files"}
    )
    fields["size_calibration"] = cal.model_dump(mode="json")
    fields["metrics"] = {
        **fields["metrics"],
        "val_size_accuracy_head": result.accuracy_before,
        "val_size_accuracy": result.accuracy_after,
    }
    write_manifest(pkg.root, fields)
    load_package(pkg.root)  # verify what was written
    log.info(
        "size_calibrated",
        package=str(pkg.root / MANIFEST_FILE),
        samples=result.samples,
        accuracy_before=round(result.accuracy_before, 4),
        accuracy_after=round(result.accuracy_after, 4),
    )
    return result
