"""What the audit store keeps of a recipe's decision: the rule, the sentences, the placements."""

from __future__ import annotations

import json
import time

from node.audit.build import record_from_result
from node.config import RecipeSection
from node.line.judge import Judge
from node.line.results import PartResult
from node.recipe.settings import RuleSettings, ZoneSettings
from tests.unit.node.recipe.factories import MM_PER_PX, findings, region

RECIPE = RecipeSection(
    reject_score=1.0,
    zones=(ZoneSettings(name="rim", names={"de": "Rand"}, rect_mm=(0, 0, 24, 3)),),
    rules=(RuleSettings(name="no rim cracks", zone="rim", types=("crack",), action="reject"),),
)


def test_the_record_cites_the_rule_and_keeps_the_recipe_sentence_and_placements() -> None:
    """A rim crack's record has its rule, the recipe's sentence in en/de/ja, and in
    findings_json each finding with its zones and millimetres (not the pixel mask)."""
    verdict = Judge(RECIPE, MM_PER_PX).judge(5, findings("crack", region(10, 1, 13, 1.5)))
    result = PartResult(
        part_id=5,
        origin_count=5000,
        trigger_count=5400,
        fire_count=5900,
        verdict=verdict,
        action="rejected",
        latency_ms=7.5,
        budget_ms=80.0,
        budget_miss=False,
        t_ns=time.monotonic_ns(),
    )
    rec = record_from_result(
        result,
        run_id="r",
        model_name="demo",
        model_version="1",
        model_sha256="ab" * 32,
        thresholds=RECIPE.model_dump(),
    )
    assert rec.rule == "no rim cracks"
    assert rec.explanation == rec.explanations["en"] and rec.explanation_source == "recipe"
    assert rec.explanations["en"].startswith("Crack, 3.0 mm, on the rim, 12 mm from its left end")
    assert rec.explanations["de"].startswith("Riss, 3,0 mm, im Bereich Rand")
    assert rec.explanations["ja"].startswith("割れ、3.0 mm、rim")
    stored = json.loads(rec.findings_json)
    (judged,) = stored["judged"]
    assert judged["rule"] == "no rim cracks" and judged["rejects"] is True
    assert judged["placement"]["zones"] == ["rim"]
    assert abs(judged["placement"]["length_mm"] - 3.0) < 1e-9
    assert "mask_px" not in json.dumps(stored)
