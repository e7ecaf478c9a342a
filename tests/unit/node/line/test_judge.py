"""The judge: recipe thresholds decide; fail-safe verdicts always reject with a reason."""

from __future__ import annotations

import numpy as np

from models.explain_text import LANGUAGES
from models.findings import Explanation, Findings, Region
from node.config import RecipeSection
from node.line.judge import Judge, Reason, failsafe_text


def findings(score: float, area_mm2: float | None, dtype: str = "scratch") -> Findings:
    regions = ()
    if area_mm2 is not None:
        regions = (
            Region((0, 0, 4, 4), (2.0, 2.0), 16, area_mm2, 4.0, 1.0, "centre", False, -8.0, score),
        )
    return Findings(
        score,
        np.zeros((4, 4), np.float32),
        dtype,
        0.9,
        regions,
        Explanation(f"{dtype}, 4 mm, centre", None),
    )


def test_clean_part_passes() -> None:
    """No region and a low score pass with reason ok."""
    v = Judge(RecipeSection()).judge(1, findings(1.0, None, "none"))
    assert not v.reject and v.reason is Reason.OK and not v.fail_safe


def test_region_above_min_area_rejects_with_its_explanation() -> None:
    """A region at least min_region_area_mm2 rejects, carrying type and explanation."""
    v = Judge(RecipeSection(min_region_area_mm2=0.5, reject_score=100)).judge(2, findings(3, 0.6))
    assert v.reject and v.reason is Reason.DEFECT
    assert v.defect_type == "scratch" and "scratch" in v.explanation


def test_small_region_below_score_passes() -> None:
    """A region smaller than the recipe's minimum with a low score passes."""
    v = Judge(RecipeSection(min_region_area_mm2=1.0, reject_score=100)).judge(3, findings(3, 0.2))
    assert not v.reject


def test_score_alone_rejects() -> None:
    """An image score at the recipe's reject_score rejects even without regions."""
    v = Judge(RecipeSection(reject_score=6.0)).judge(4, findings(6.0, None))
    assert v.reject


def test_listed_type_rejects() -> None:
    """A defect type in reject_types rejects regardless of size and score."""
    recipe = RecipeSection(min_region_area_mm2=10, reject_score=100, reject_types=("crack",))
    assert Judge(recipe).judge(5, findings(1.0, 0.1, "crack")).reject


def test_fail_safe_rejects_with_reason() -> None:
    """A fail-safe verdict is a reject that names why the part could not be judged."""
    v = Judge.fail_safe(6, Reason.FAILSAFE_FRAME_INCOMPLETE, "lost packets")
    assert v.reject and v.fail_safe and v.reason is Reason.FAILSAFE_FRAME_INCOMPLETE
    assert "frame incomplete" in v.explanation and "lost packets" in v.explanation


def test_a_nan_score_is_a_fail_safe_model_error_never_a_pass() -> None:
    """A NaN image score (which compares False with every threshold) is rejected fail-safe as
    a model error naming the score, with or without regions."""
    for area in (None, 0.01):
        v = Judge(RecipeSection(reject_score=1.0)).judge(7, findings(float("nan"), area))
        assert v.reject and v.fail_safe and v.reason is Reason.FAILSAFE_MODEL
        assert "anomaly_score nan" in v.detail


def test_an_infinite_or_negative_score_is_a_model_error() -> None:
    """An infinite or negative score is outside every backend's unit: fail-safe model error."""
    for score in (float("inf"), float("-inf"), -0.5):
        v = Judge(RecipeSection()).judge(8, findings(score, None))
        assert v.reject and v.reason is Reason.FAILSAFE_MODEL


def test_a_map_with_nan_is_a_model_error_even_with_a_clean_score() -> None:
    """One NaN pixel in the anomaly map makes the findings unfit to judge: fail-safe reject."""
    f = findings(0.2, None)
    f.anomaly_map[1, 2] = np.nan
    v = Judge(RecipeSection()).judge(9, f)
    assert v.reject and v.reason is Reason.FAILSAFE_MODEL
    assert "anomaly_map: 1 of 16 values not finite" in v.detail


def test_a_region_with_a_nan_area_is_a_model_error() -> None:
    """A region whose area is NaN (never >= the minimum) cannot pass the part unnoticed."""
    v = Judge(RecipeSection(reject_score=100)).judge(10, findings(0.5, float("nan")))
    assert v.reject and v.reason is Reason.FAILSAFE_MODEL and "region 0" in v.detail


def test_every_fail_safe_reason_has_its_own_words_in_every_language() -> None:
    """No fail-safe reason falls back to its English name in German or Japanese, and no two
    reasons read alike in one language."""
    reasons = [r for r in Reason if r.name.startswith("FAILSAFE_")]
    for lang in LANGUAGES:
        texts = [failsafe_text(r, lang) for r in reasons]
        assert len(set(texts)) == len(reasons), lang
        if lang != "en":
            named = [r.value.replace("_", " ") in t for r, t in zip(reasons, texts, strict=True)]
            assert not any(named), lang
