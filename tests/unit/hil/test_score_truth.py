"""The rig's truth follows the recipe: a cosmetic defect the recipe accepts is no escape."""

from __future__ import annotations

import pytest

from hil.score import truth_findings
from models.synth import PartSpec, render_part
from node.config import RecipeSection
from node.line.judge import Judge
from node.recipe.settings import RuleSettings, ZoneSettings

MPP = 0.125
FACE = ZoneSettings(name="face", rect_mm=(0, 0, 24, 24))


def test_a_true_spot_is_judged_by_the_recipe_like_a_finding() -> None:
    """A rendered spot becomes one finding of its true type and length on the part; an accept
    rule over spots passes it (cosmetic), one with a smaller limit and a recipe without rules
    reject it."""
    part = render_part(PartSpec("moulded_plastic", 11, "spot", 24.0), MPP)
    assert part.truth is not None
    f = truth_findings(part, 1.0)
    assert f is not None and f.defect_type == "spot" and len(f.regions) == 1
    assert f.explanation.facts is not None
    assert f.explanation.facts.size_mm == part.truth.length_mm
    length = part.truth.length_mm

    def judge(*rules: RuleSettings) -> bool:
        recipe = RecipeSection(reject_score=1.0, zones=(FACE,), rules=rules)
        return Judge(recipe, MPP).judge(0, f).reject

    cosmetic = RuleSettings(zone="face", types=("spot",), action="accept", max_length_mm=5.0)
    strict = RuleSettings(zone="face", types=("spot",), action="accept", max_length_mm=length - 0.3)
    assert judge(cosmetic) is False
    assert judge(strict) is True
    assert judge() is True  # no rule covers it: the score rule rejects it
    good = render_part(PartSpec("moulded_plastic", 11, None, 24.0), MPP)
    assert truth_findings(good, 1.0) is None


def test_a_part_with_two_defects_has_each_as_its_own_region() -> None:
    """Two spots far apart are two true regions, the larger one's length the stated size;
    a PartSpec may carry at most three defects, and never two missing features."""
    part = render_part(PartSpec("moulded_plastic", 10, "spot", 24.0, count=2), MPP)
    f = truth_findings(part, 1.0)
    assert f is not None and len(f.regions) == 2
    assert f.explanation.facts is not None
    largest = max(f.regions, key=lambda r: r.area_px)
    assert f.explanation.facts.size_mm == largest.length_mm
    for bad in (
        PartSpec("moulded_plastic", 1, "spot", 24.0, count=4),
        PartSpec("moulded_plastic", 1, "missing_feature", 24.0, count=2),
    ):
        with pytest.raises(ValueError, match=r"count must be 1\.\.3"):
            render_part(bad, MPP)
