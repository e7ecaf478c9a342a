"""Plain functions behind ``lineside synth|train|eval|explain`` (the node's CLI wires them).

Each returns a JSON-ready result, logs with structlog and raises typed errors:
``FileNotFoundError``/``ValueError`` for bad data sets or images,
``models.package.PackageError`` for a bad package and another
``models.backend.BackendError`` for a runtime that cannot start (see
``models.runtime.open_runtime``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from models.data.holdout import DEFAULT_FRACTION, read_list, unseen
from models.data.mvtec import MvtecDataset, Sample, load_gray, read_mvtec
from models.data.synthset import write_synth
from models.explain_text import render_all
from models.findings import Findings
from models.package import load_package
from models.runtime import RuntimeName, open_runtime
from models.synth import FAMILY_NAMES
from models.train.build import train_package
from models.train.loop import TrainConfig


def synth(
    out: str | Path,
    seed: int,
    families: Sequence[str] = FAMILY_NAMES,
    n_train_good: int = 300,
    n_test_good: int = 100,
    n_test_per_kind: int = 100,
    part_size_mm: float = 24.0,
    mm_per_px: float = 0.125,
    size_px: int = 256,
) -> dict[str, dict[str, int]]:
    """Write a synthetic MVTec-layout data set (one category per family); the counts written."""
    return write_synth(
        out,
        seed,
        families,
        n_train_good=n_train_good,
        n_test_good=n_test_good,
        n_test_per_kind=n_test_per_kind,
        mm_per_px=mm_per_px,
        size_px=size_px,
        part_size_mm=part_size_mm,
    )


SHIPPED_PACKAGE = Path(__file__).resolve().parent / "demo"
"""The package shipped with lineside (trained on a synthetic family): ``lineside train``
starts from its weights unless told otherwise."""


def shipped_start(dataset: str | Path, category: str | None = None) -> Path | None:
    """The shipped package when it can start training on ``dataset``: it is there and
    its input size is the images' size; else ``None`` (train from scratch)."""
    if not (SHIPPED_PACKAGE / "manifest.json").is_file():
        return None
    samples = read_mvtec(dataset, category).samples
    if not samples:
        return None
    side = load_package(SHIPPED_PACKAGE).net.input_size_px
    return SHIPPED_PACKAGE if load_gray(samples[0].path).shape == (side, side) else None


def train(
    dataset: str | Path,
    out: str | Path,
    *,
    category: str | None = None,
    seed: int = 0,
    steps: int = 3000,
    time_limit_min: float | None = None,
    threads: int = 1,
    mm_per_px: float = 0.125,
    holdout_fraction: float = DEFAULT_FRACTION,
    holdout_list: str | Path | None = None,
    cv: int | None = None,
    init_from: str | Path | None = None,
    max_false_alarm: float = 0.01,
    part_threshold: int = 60,
    surface: bool = False,
    in_place: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a package from ``dataset`` into ``out`` (progress bar, validation, early stopping).

    ``holdout_fraction`` of the test images (of each type and of the good ones), or
    the images listed in the file ``holdout_list``, are set aside untouched for
    ``evaluate``. Returns the package path, validation metrics, steps, minutes and
    the holdout's size. With ``cv`` = k, trains k fold packages under ``out`` instead
    and returns their pooled k-fold figures (``models.train.crossval``). With
    ``init_from``, training starts from that package's weights (fine-tuning).
    The image threshold calls at most ``max_false_alarm`` of the held-out good
    (validation) images defective. ``part_threshold`` is the gray level above which a
    pixel belongs to the part (0: the part fills the frame, as a surface does); a
    ``surface`` has no up or down, so its good images are also trained mirrored and turned.
    ``in_place`` names the defect types that belong to a place on the part (a missing
    screw): training moves other labelled defects onto other good images at random
    places, these only at their own place (default: ``missing_feature``).
    Raises ``ValueError`` for a share outside 0..0.5, a gray level outside 0..254 or an
    ``in_place`` name that is not one of the data set's defect types.
    """
    if not 0 <= part_threshold <= 254:
        raise ValueError(f"--part-threshold must be a gray level 0..254, got {part_threshold}")
    if not 0.0 < max_false_alarm < 0.5:
        raise ValueError(f"--max-false-alarm must be between 0 and 0.5, got {max_false_alarm}")
    listed = read_list(Path(holdout_list)) if holdout_list is not None else None
    cfg = replace(
        TrainConfig(),
        holdout_fraction=0.0 if listed is not None else holdout_fraction,
        init_from=None if init_from is None else str(init_from),
        max_false_alarm=max_false_alarm,
        part_threshold=part_threshold,
        surface=surface,
        seed=seed,
        steps=steps,
        time_limit_s=None if time_limit_min is None else 60.0 * time_limit_min,
        threads=threads,
        mm_per_px=mm_per_px,
        progress=progress,
    )
    if in_place is not None:
        known = read_mvtec(dataset, category).defect_types
        strangers = [t for t in in_place if t not in known]
        if strangers:
            raise ValueError(
                f"--in-place: no defect type {', '.join(map(repr, strangers))} in {dataset} "
                f"(its types: {', '.join(known) or 'none'})"
            )
        cfg = replace(cfg, fixed_place_types=tuple(in_place))
    if cv is not None:
        from models.train.crossval import cross_validate

        return cross_validate(dataset, out, cfg, cv, category=category, threads=threads)
    built = train_package(dataset, out, cfg, category, listed)
    record = built.package.manifest.data
    return {
        "package": str(built.package.root),
        "holdout_images": len(record.holdout_sha256) if record is not None else 0,
        "steps": built.fit.steps,
        "minutes": round(built.fit.minutes, 2),
        "metrics": built.fit.metrics,
        "thresholds": {
            "image_score": built.fit.thresholds.image_score,
            "pixel": built.fit.thresholds.pixel,
            "region": built.fit.thresholds.region,
            "merge_mm": built.fit.thresholds.merge_mm,
        },
    }


def evaluate(
    package: str | Path,
    dataset: str | Path,
    out_json: str | Path | None = None,
    out_png: str | Path | None = None,
    *,
    category: str | None = None,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``package`` on ``dataset``'s test images that it never saw; write the JSON
    and PNG report if asked.

    Every test image whose sha256 the package's manifest lists as seen (trained,
    validated or calibrated on) is left out and listed under ``excluded_trained_images``.
    Returns ``metrics``, their 95% bootstrap intervals ``ci95``, the exclusions and the
    type confusion. Raises ``ValueError`` when what is left lacks good or defective images.
    """
    from models.train.evaluate import evaluate as run_eval

    pkg = load_package(package)
    full = read_mvtec(dataset, category)
    record = pkg.manifest.data
    test, excluded = unseen(full, record.seen_sha256 if record is not None else ())
    left = test.select("test")
    n_test = len(full.select("test"))
    if excluded and (all(s.is_good for s in left) or not any(s.is_good for s in left)):
        raise ValueError(
            f"{full.root}: {len(excluded)} of its {n_test} test images were trained or "
            f"validated on by {pkg.root}; the {len(left)} left lack good or defective images "
            "(evaluate on the package's holdout or on new images)"
        )
    backend = open_runtime(runtime, pkg.root, threads)
    ev = run_eval(backend, test, progress=progress)
    payload: dict[str, Any] = {
        "metrics": ev.metrics,
        "ci95": {k: list(v) for k, v in ev.ci95.items()},
        "test_images": len(left),
        "excluded_trained_images": _excluded(full, excluded),
        "confusion": ev.confusion,
    }
    if record is None:
        payload["warning"] = (
            "the package records no training images (written before holdouts were "
            "recorded): none could be excluded, the figures may include trained images"
        )
    if out_json is not None:
        _write_json(payload, Path(out_json))
    if out_png is not None:
        from models.train.report import write_report

        write_report(ev, out_png, title=f"{Path(package).name} on {Path(dataset).name}")
    return payload


def compare(
    old: str | Path,
    new: str | Path,
    dataset: str | Path,
    out_json: str | Path | None = None,
    out_png: str | Path | None = None,
    *,
    category: str | None = None,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``old`` and ``new`` on the test images of ``dataset`` that neither saw and say
    whether ``new`` is better (``models.train.compare``); write the JSON and PNG if asked.

    Raises ``ValueError`` when no good or no defective image is left.
    """
    from models.train.compare import paired_differences, verdict
    from models.train.evaluate import collect

    pkgs = {"old": load_package(old), "new": load_package(new)}
    full = read_mvtec(dataset, category)
    seen = [h for p in pkgs.values() if p.manifest.data for h in p.manifest.data.seen_sha256]
    test, excluded = unseen(full, seen)
    left = test.select("test")
    if all(s.is_good for s in left) or not any(s.is_good for s in left):
        raise ValueError(
            f"{full.root}: {len(excluded)} of its {len(full.select('test'))} test images were "
            "trained or validated on by one of the packages; the rest lack good or defective "
            "images (compare on images neither saw)"
        )
    runs = {
        name: collect(open_runtime(runtime, p.root, threads), test, progress=progress)
        for name, p in pkgs.items()
    }
    diffs = paired_differences(runs["old"], runs["new"])
    payload: dict[str, Any] = {
        "old": {"package": str(pkgs["old"].root), "sha256": pkgs["old"].sha256},
        "new": {"package": str(pkgs["new"].root), "sha256": pkgs["new"].sha256},
        "verdict": verdict(diffs),
        "test_images": len(left),
        "excluded_trained_images": _excluded(full, excluded),
        "metrics": {name: d.as_dict() for name, d in diffs.items()},
    }
    unrecorded = [name for name, p in pkgs.items() if p.manifest.data is None]
    if unrecorded:
        payload["warning"] = (
            f"{' and '.join(unrecorded)} records no training images: "
            "images it trained on could not be excluded"
        )
    if out_json is not None:
        _write_json(payload, Path(out_json))
    if out_png is not None:
        from models.train.report import write_compare_report

        write_compare_report(payload, out_png)
    return payload


def _excluded(full: MvtecDataset, excluded: list[Sample]) -> dict[str, Any]:
    """How many and which test images were left out as seen by a package."""
    return {
        "count": len(excluded),
        "images": [s.path.relative_to(full.root).as_posix() for s in excluded],
    }


def _write_json(payload: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


def explain(
    package: str | Path,
    image: str | Path,
    *,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
) -> dict[str, Any]:
    """Inspect one image (a crop of the package's input size) and explain it.

    Returns the score (1.0 = threshold), type, regions, the published
    explanation with its source, the model's own sentence and the facts in
    every language.
    """
    return describe(inspect_image(package, image, runtime=runtime, threads=threads), image)


def inspect_image(
    package: str | Path,
    image: str | Path,
    *,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
) -> Findings:
    """The findings of one image (a crop of the package's input size)."""
    pkg = load_package(package)
    backend = open_runtime(runtime, pkg.root, threads)
    (f,) = backend.infer([load_gray(Path(image))])
    return f


def describe(f: Findings, image: str | Path) -> dict[str, Any]:
    """``explain``'s report of findings ``f`` on ``image``."""
    return {
        "image": str(image),
        "anomaly_score": round(f.anomaly_score, 4),
        "anomalous": f.anomaly_score >= 1.0,
        "defect_type": f.defect_type,
        "type_confidence": round(f.type_confidence, 4),
        "regions": [
            {
                "bbox_px": r.bbox_px,
                "length_mm": round(r.length_mm, 2),
                "area_mm2": round(r.area_mm2, 2),
                "location": r.location,
                "near_edge": r.near_edge,
            }
            for r in f.regions
        ],
        "explanation": f.explanation.text,
        "source": f.explanation.source,
        "model_text": f.explanation.model_text,
        "mismatches": list(f.explanation.mismatches),
        "facts_text": render_all(f.explanation.facts),
    }
