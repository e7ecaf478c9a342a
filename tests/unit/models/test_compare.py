"""``eval --compare``: two packages on the same unseen images, a paired verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models import cli
from models.package import ModelPackage
from models.train.compare import paired_differences, verdict
from models.train.evaluate import Outcomes


def _run(scores: np.ndarray, labels: np.ndarray, types_right: np.ndarray) -> Outcomes:
    o = Outcomes()
    o.scores = [float(x) for x in scores]
    o.labels = [bool(x) for x in labels]
    bads = np.flatnonzero(labels)
    o.detected = [bool(scores[i] >= 1.0) for i in bads]
    o.type_items = [int(i) for i in bads]
    o.type_hits = [bool(types_right[i]) for i in bads]
    return o


def test_a_clearly_better_package_is_called_better_and_the_reverse_worse() -> None:
    """New scores that separate good from defective where the old ones barely did, and name
    the type more often: better on AUROC and type accuracy beyond their intervals."""
    rng = np.random.default_rng(3)
    labels = np.arange(120) >= 80
    old = _run(rng.normal(0.8, 0.3, 120) + 0.15 * labels, labels, rng.random(120) < 0.5)
    new = _run(rng.normal(0.7, 0.1, 120) + 0.8 * labels, labels, rng.random(120) < 0.95)
    diffs = paired_differences(old, new)
    assert diffs["image_auroc"].significant == "better"
    assert diffs["image_auroc"].ci95[0] > 0 and diffs["image_auroc"].p_new_better > 0.99
    assert diffs["type_accuracy"].significant == "better"
    assert verdict(diffs) == "better"
    assert verdict(paired_differences(new, old)) == "worse"


def test_a_package_against_itself_shows_no_difference(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """The same package twice: every difference 0 with a zero-width interval, the verdict
    'no clear difference', trained images excluded and a PNG written."""
    out = cli.compare(
        tiny_package.root,
        tiny_package.root,
        tiny_dataset,
        out_png=tmp_path / "c.png",
        progress=False,
    )
    assert out["verdict"] == "no clear difference"
    for row in out["metrics"].values():
        assert row["new_minus_old"] == 0 and row["ci95"] == [0, 0]
    assert out["excluded_trained_images"]["count"] > 0
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
