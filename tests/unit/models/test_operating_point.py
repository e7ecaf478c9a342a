"""The operating point: the image threshold bounds the false alarms on held-out good images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models.train.build import train_package
from models.train.metrics import best_threshold, false_alarm_threshold
from tests.unit.models.conftest import TINY_TRAIN


@pytest.mark.parametrize("share", [0.01, 0.05, 0.2])
def test_the_threshold_lets_through_exactly_the_allowed_share_of_good_scores(share: float) -> None:
    """With 300 good scores overlapping the defects, the threshold calls floor(share * 300)
    goods defective: no more (the bound), and no fewer (it is the lowest such cut)."""
    rng = np.random.default_rng(4)
    goods = rng.normal(0.3, 0.1, 300)
    defects = rng.normal(0.6, 0.15, 100)
    scores = np.concatenate([goods, defects])
    labels = np.concatenate([np.zeros(300, bool), np.ones(100, bool)])
    thr = false_alarm_threshold(scores, labels, share)
    assert int((goods >= thr).sum()) == int(np.floor(share * 300))
    assert best_threshold(scores, labels) < false_alarm_threshold(scores, labels, 0.01)


def test_with_no_false_alarm_allowed_it_cuts_above_the_highest_good_score() -> None:
    """Three goods and a share that allows none: midway between the highest good and the
    next score up; with no score above, just above the highest good."""
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.25])
    labels = np.array([False, False, False, True, True])
    assert false_alarm_threshold(scores, labels, 0.01) == pytest.approx(0.4)
    assert 0.3 < false_alarm_threshold(scores[:3], labels[:3], 0.01) < 0.302
    with pytest.raises(ValueError, match="no good scores"):
        false_alarm_threshold(scores[3:], labels[3:], 0.01)


def test_training_records_its_operating_point(tiny_dataset: Path, tmp_path: Path) -> None:
    """A package records the share it was asked for and the share of its held-out good
    images its threshold calls defective, which is within the share; a tighter share
    never gives a lower threshold."""
    base = replace(TINY_TRAIN, holdout_fraction=0.0)
    strict = train_package(tiny_dataset, tmp_path / "strict", base).package
    loose = train_package(tiny_dataset, tmp_path / "loose", replace(base, max_false_alarm=0.45))
    m = strict.manifest.metrics
    assert m["max_false_alarm"] == 0.01
    assert m["val_good_images"] >= 2
    assert m["val_false_alarm_rate"] <= 0.01
    assert loose.package.manifest.metrics["val_false_alarm_rate"] <= 0.45
    assert strict.manifest.thresholds.image_score >= loose.package.manifest.thresholds.image_score
