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

from models.data.mvtec import load_gray, read_mvtec
from models.data.synthset import write_synth
from models.explain_text import render_all
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
    progress: bool = True,
) -> dict[str, Any]:
    """Train a package from ``dataset`` into ``out`` (progress bar, validation, early stopping).

    Returns the package path, validation metrics, steps and minutes.
    """
    cfg = replace(
        TrainConfig(),
        seed=seed,
        steps=steps,
        time_limit_s=None if time_limit_min is None else 60.0 * time_limit_min,
        threads=threads,
        mm_per_px=mm_per_px,
        progress=progress,
    )
    built = train_package(dataset, out, cfg, category)
    return {
        "package": str(built.package.root),
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
) -> dict[str, float]:
    """Evaluate ``package`` on ``dataset``'s test split; write the JSON and PNG report if asked."""
    from models.train.evaluate import evaluate as run_eval

    backend = open_runtime(runtime, package, threads)
    ev = run_eval(backend, read_mvtec(dataset, category), progress=progress)
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        payload = {"metrics": ev.metrics, "confusion": ev.confusion}
        Path(out_json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    if out_png is not None:
        from models.train.report import write_report

        write_report(ev, out_png, title=f"{Path(package).name} on {Path(dataset).name}")
    return ev.metrics


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
    pkg = load_package(package)
    backend = open_runtime(runtime, pkg.root, threads)
    (f,) = backend.infer([load_gray(Path(image))])
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
