"""Rules decide per zone, type, size and count; the verdict cites the rule that fired."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.findings import Explanation, Findings
from node.config import RecipeSection
from node.line.judge import Judge, Reason
from node.recipe.rules import SCORE_RULE, TYPE_RULE, WITHIN_LIMITS
from node.recipe.settings import RuleSettings, ZoneSettings
from tests.unit.node.recipe.factories import MM_PER_PX, findings, region

ZONES = (
    ZoneSettings(name="sealing rim", rects_mm=((0, 0, 24, 3), (0, 21, 24, 24))),
    ZoneSettings(name="back face", rect_mm=(0, 3, 24, 21)),
)
RULES = (
    RuleSettings(zone="sealing rim", types=("crack",), action="reject", name="no rim cracks"),
    RuleSettings(zone="back face", types=("scratch",), action="accept", max_length_mm=2.0),
    RuleSettings(zone="back face", types=("spot",), action="reject", max_count=2),
)


def judge(**kw: object) -> Judge:
    recipe = RecipeSection(reject_score=1.0, zones=ZONES, rules=RULES, **kw)  # type: ignore[arg-type]
    return Judge(recipe, MM_PER_PX)


def test_any_crack_on_the_rim_rejects_citing_the_rule() -> None:
    """A 0.5 mm crack on the sealing rim rejects: the rule allows none, and is cited by name."""
    v = judge().judge(1, findings("crack", region(10, 1, 10.5, 1.5)))
    assert v.reject and v.reason is Reason.DEFECT
    assert v.rule == "no rim cracks"
    assert v.recipe is not None
    j = v.recipe.decision.findings[0]
    assert (j.limit, j.limit_value, j.cosmetic) == ("length", 0.0, False)


def test_a_short_scratch_on_the_back_face_is_cosmetic_and_passes() -> None:
    """A 1.5 mm scratch on the back face is within its 2 mm cosmetic limit: the part passes
    although the model's score is over reject_score."""
    v = judge().judge(2, findings("scratch", region(6, 10, 7.5, 10.25), score=3.0))
    assert not v.reject and v.reason is Reason.OK
    assert v.rule == WITHIN_LIMITS
    assert v.recipe is not None and v.recipe.decision.findings[0].cosmetic


def test_a_long_scratch_on_the_back_face_exceeds_the_cosmetic_limit() -> None:
    """A 3 mm scratch on the back face is over the 2 mm cosmetic limit and rejects."""
    v = judge().judge(3, findings("scratch", region(6, 10, 9, 10.25)))
    assert v.reject
    assert v.rule == "scratch on back face: accept"


def test_a_scratch_reaching_the_rim_is_judged_by_every_rule_that_covers_it() -> None:
    """A short scratch that touches the rim too is not covered by the rim's crack rule, so
    the face's cosmetic rule passes it; a crack in the same place is rejected by the rim rule."""
    place = region(6, 2.5, 7.5, 3.5)
    assert not judge().judge(4, findings("scratch", place)).reject
    v = judge().judge(5, findings("crack", place))
    assert v.reject and v.rule == "no rim cracks"


def test_more_spots_than_the_count_limit_reject() -> None:
    """Two spots on the back face are allowed, a third rejects, citing the count rule."""
    spots = [region(4 + 5 * k, 10, 4.5 + 5 * k, 10.5) for k in range(3)]
    assert not judge().judge(6, findings("spot", *spots[:2])).reject
    v = judge().judge(7, findings("spot", *spots))
    assert v.reject and v.rule == "spot on back face: reject"
    assert v.recipe is not None
    j = v.recipe.decision.findings[0]
    assert (j.limit, j.limit_value, j.count) == ("count", 2.0, 3)


def test_what_no_rule_covers_falls_to_the_model_score_rule() -> None:
    """A contamination (no rule names it) over reject_score rejects by the catch-all; under it
    and below the minimum region area it passes."""
    dirt = region(10, 10, 10.5, 10.5)
    v = judge().judge(8, findings("contamination", dirt, score=1.5))
    assert v.reject and v.rule == SCORE_RULE
    small = judge(min_region_area_mm2=1.0).judge(9, findings("contamination", dirt, score=0.5))
    assert not small.reject and small.rule == WITHIN_LIMITS


def test_an_anomaly_with_no_region_is_rejected_by_the_score_rule() -> None:
    """An image over reject_score with no region to place cannot be accepted by a zone rule."""
    f = Findings(2.0, np.zeros((8, 8), np.float32), "scratch", 0.9, (), Explanation("", None))
    v = judge().judge(10, f)
    assert v.reject and v.rule == SCORE_RULE
    assert v.explanation == "Over the model's anomaly limit."


def test_a_listed_type_rejects_by_the_type_rule() -> None:
    """A type in reject_types that no zone rule covers is rejected citing the type rule."""
    v = judge(reject_types=("contamination",)).judge(
        11, findings("contamination", region(10, 10, 10.2, 10.2), score=0.1)
    )
    assert v.reject and v.rule == TYPE_RULE


def test_the_worst_finding_is_cited_first() -> None:
    """A cosmetic scratch and a rejected rim crack: the crack comes first and is cited."""
    f = findings("crack", region(6, 10, 7, 10.2), region(10, 1, 12, 1.5))
    v = judge().judge(12, f)
    assert v.recipe is not None
    first = v.recipe.decision.findings[0]
    assert first.rejects and first.placement.zone == "sealing rim"
    assert v.rule == "no rim cracks"


def test_without_rules_the_verdicts_are_the_score_rules_as_before() -> None:
    """With no zones or rules, reject and pass are exactly the old score rule's (now cited)."""
    plain = Judge(RecipeSection(reject_score=1.0, min_region_area_mm2=0.3), MM_PER_PX)
    cases = [
        (findings("scratch", region(10, 10, 12, 10.5), score=2.0), True),
        (findings("scratch", region(10, 10, 10.25, 10.25), score=0.5), False),
        (findings("scratch", region(10, 10, 12, 11), score=0.5), True),  # 2 mm² >= 0.3
        (findings("none", score=0.5), False),
    ]
    for f, reject in cases:
        v = plain.judge(13, f)
        assert v.reject is reject
        assert v.rule == (SCORE_RULE if reject else WITHIN_LIMITS)
        assert v.explanation == "model words"  # the backend's sentence stands


def test_non_finite_findings_stay_a_fail_safe_reject() -> None:
    """A NaN score is a model error whatever rule would cover the region."""
    f = findings("scratch", region(6, 10, 7, 10.2), score=math.nan)
    v = judge().judge(14, f)
    assert v.fail_safe and v.reason is Reason.FAILSAFE_MODEL and v.rule == ""


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        ({"zone": "gate", "action": "reject"}, r"recipe.rules.0.zone: no zone named 'gate'"),
        ({"action": "maybe"}, r"action"),
        ({"action": "reject", "max_length_mm": -1}, r"max_length_mm"),
    ],
)
def test_bad_rules_are_refused_naming_the_key(rule: dict[str, object], problem: str) -> None:
    """A rule naming an unknown zone, an unknown action or a negative limit is refused."""
    from node.config import parse_config
    from node.errors import ConfigError

    data = {
        "line": {
            "counts_per_mm": 4.0,
            "part_pitch_mm": 32.0,
            "part_length_mm": 24.0,
            "camera_position_mm": 100.0,
            "reject_position_mm": 400.0,
        },
        "inspection": {
            "recipe": {"zones": [{"name": "rim", "rect_mm": [0, 0, 24, 3]}], "rules": [rule]}
        },
    }
    with pytest.raises(ConfigError, match=problem) as err:
        parse_config(data)
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith("<config>: inspection.recipe.rules.0.")
