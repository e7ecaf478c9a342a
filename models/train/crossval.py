"""k-fold figures for a small data set: each test image scored by a package that never saw it.

A plant with 60 test images cannot spare 30 % of them for one holdout and still
learn its defect types. ``cross_validate`` deals the test images of each group
(good and every type, stratified, seeded) into ``k`` folds, trains one package
per fold on everything but that fold (the fold is its listed holdout:
``models.data.holdout``), scores the fold with it, and pools the k folds into
one set of figures with 95 % bootstrap intervals — every test image counted
once, by a model that never read it. The fold packages are for measurement;
the package to deploy is trained with ``lineside train`` as usual.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from models.data.mvtec import MvtecDataset, read_mvtec
from models.runtime import RuntimeName, open_runtime
from models.train.build import train_package
from models.train.evaluate import Outcomes, collect, summarise
from models.train.loop import TrainConfig
from models.train.metrics import auroc

log = structlog.get_logger(__name__)


def folds(dataset: MvtecDataset, k: int, seed: int = 0) -> list[list[str]]:
    """The test images (paths relative to the category) dealt into ``k`` folds: each
    group (good, each type) shuffled by ``seed`` and dealt in turn, so every fold has
    its share of each. Raises ``ValueError`` for k < 2 or more folds than good or
    defective test images."""
    tests = dataset.select("test")
    n_good = sum(s.is_good for s in tests)
    if k < 2:
        raise ValueError(f"--cv: needs at least 2 folds, got {k}")
    if k > min(n_good, len(tests) - n_good):
        raise ValueError(
            f"--cv {k}: {dataset.root} has {n_good} good and {len(tests) - n_good} defective "
            "test images; every fold needs one of each"
        )
    rng = np.random.default_rng([seed, 0xC5])
    out: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for group in ["good", *dataset.defect_types]:
        members = dataset.select("test", group)
        for i in rng.permutation(len(members)):
            out[turn % k].append(members[i].path.relative_to(dataset.root).as_posix())
            turn += 1
    return out


def cross_validate(
    dataset: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    k: int,
    *,
    category: str | None = None,
    runtime: RuntimeName = "onnxruntime",
    threads: int = 1,
) -> dict[str, Any]:
    """Train ``k`` fold packages under ``out_dir`` (``fold-1`` …), score each on its own
    fold, and write and return the pooled figures (``cv.json``): ``metrics``, ``ci95``,
    ``per_fold`` metrics and the images each fold held out."""
    ds = read_mvtec(dataset, category)
    dealt = folds(ds, k, cfg.seed)
    out = Path(out_dir)
    pooled = Outcomes()
    per_fold: list[dict[str, Any]] = []
    for i, held in enumerate(dealt, start=1):
        log.info("cv_fold_started", fold=i, folds=k, held_out=len(held))
        fold_cfg = replace(cfg, holdout_fraction=0.0)
        built = train_package(ds.root, out / f"fold-{i}", fold_cfg, None, held)
        names = set(held)
        fold_ds = MvtecDataset(
            ds.root,
            tuple(s for s in ds.samples if s.path.relative_to(ds.root).as_posix() in names),
        )
        backend = open_runtime(runtime, built.package.root, threads)
        got = collect(backend, fold_ds, progress=cfg.progress)
        per_fold.append(
            {
                "fold": i,
                "package": str(built.package.root),
                "images": len(held),
                "image_auroc": _safe_auroc(got),
                "type_accuracy": float(np.mean(got.type_hits)) if got.type_hits else None,
            }
        )
        pooled.merge(got)
    ev = summarise(pooled)
    report = {
        "folds": k,
        "metrics": ev.metrics,
        "ci95": {name: list(v) for name, v in ev.ci95.items()},
        "confusion": ev.confusion,
        "per_fold": per_fold,
        "held_out": dealt,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "cv.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def _safe_auroc(o: Outcomes) -> float | None:
    y = np.array(o.labels, dtype=bool)
    return auroc(o.scores, y) if 0 < y.sum() < y.size else None


__all__ = ["cross_validate", "folds"]
