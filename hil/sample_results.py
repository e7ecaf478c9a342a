"""Part results the benches feed to the audit store and the north-bound publisher: judged
by a real ``Judge`` from findings shaped as a backend gives them, without a camera or a
model (a pass, or a 6 mm scratch at the upper left)."""

from __future__ import annotations

import time

import numpy as np

from models.explain_text import render_explanation
from models.findings import Explanation, ExplanationFacts, Findings, Region
from node.config import RecipeSection
from node.line.judge import Judge
from node.line.results import PartResult

RECIPE = RecipeSection()


def sample_findings(reject: bool) -> Findings:
    """Findings of a clean part, or of one 6 mm scratch (a reject under :data:`RECIPE`)."""
    facts = ExplanationFacts("scratch" if reject else "none", "upper left", 6.0, False, int(reject))
    regions = (
        (Region((10, 10, 40, 14), (25.0, 12.0), 120, 1.9, 6.0, 0.5, "upper left", False, -9, 12),)
        if reject
        else ()
    )
    return Findings(
        12.0 if reject else 1.0,
        np.zeros((8, 8), np.float32),
        facts.defect_type,
        0.9,
        regions,
        Explanation(render_explanation(facts), facts),
        backend="classical",
    )


def sample_result(part_id: int, findings: Findings, judge: Judge | None = None) -> PartResult:
    """``findings`` judged for ``part_id`` and published as the node publishes a part."""
    verdict = (judge or Judge(RECIPE)).judge(part_id, findings)
    return PartResult(
        part_id, part_id * 800, part_id * 800 + 300, part_id * 800 + 700, verdict,
        "rejected" if verdict.reject else "passed", 6.0, 90.0, False, time.monotonic_ns(),
    )  # fmt: skip
