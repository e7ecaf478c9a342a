"""One recipe, ready to judge: zones placed, rules applied, the sentence written.

``Recipe.apply`` is what the judge calls for every part with finite findings:
it places each region on the part (``node.recipe.zones``; the main region's
length is the backend's calibrated one, the size its facts state), lets the rules
decide (``node.recipe.rules``) and, when the recipe speaks the plant's words
(it has zones, rules or causes), renders the canonical sentence in every
language (``node.recipe.sentence``). Without them the decision is the model's
score rule and the backend's own explanation stands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from models.explain_text import Language
from models.findings import Findings
from models.guard import is_slotted
from node.recipe.rules import RuleDecision, decide
from node.recipe.sentence import SentenceWriter
from node.recipe.settings import CauseSettings, RuleSettings, ZoneSettings
from node.recipe.zones import Placement, ZoneMap


@dataclass(frozen=True, slots=True)
class RecipeOutcome:
    """What the recipe made of one part: the decision, where each region lies (same order
    as ``Findings.regions``) and the sentence per language (empty when the recipe has no
    words of its own)."""

    decision: RuleDecision
    placements: tuple[Placement, ...]
    sentences: Mapping[Language, str] = field(default_factory=dict)


class Recipe:
    """Zones, rules and causes of one recipe at one image scale (``mm_per_px``)."""

    def __init__(
        self,
        *,
        zones: tuple[ZoneSettings, ...] = (),
        rules: tuple[RuleSettings, ...] = (),
        causes: tuple[CauseSettings, ...] = (),
        zone_image: Path | None = None,
        reject_score: float,
        min_region_area_mm2: float,
        reject_types: tuple[str, ...] = (),
        mm_per_px: float,
    ) -> None:
        self.zones = ZoneMap(zones, mm_per_px, zone_image)
        self.rules = rules
        self.reject_score = reject_score
        self.min_region_area_mm2 = min_region_area_mm2
        self.reject_types = reject_types
        self.speaks = bool(zones or rules or causes)
        self.writer = SentenceWriter(zones, rules, causes)

    def apply(self, findings: Findings) -> RecipeOutcome:
        """Place, decide and (when the recipe speaks) write, for finite ``findings``."""
        placements = tuple(self.zones.place(r, findings.part_bbox_px) for r in findings.regions)
        facts = findings.explanation.facts
        if placements and facts is not None and facts.region_count > 0 and facts.size_mm > 0:
            # The main (largest) region's length is the backend's calibrated one, the size
            # its sentence states; the others keep the map's measurement.
            main = max(range(len(placements)), key=lambda i: findings.regions[i].area_px)
            fixed = dataclasses.replace(placements[main], length_mm=facts.size_mm)
            placements = (*placements[:main], fixed, *placements[main + 1 :])
        decision = decide(
            findings,
            placements,
            self.rules,
            reject_score=self.reject_score,
            min_region_area_mm2=self.min_region_area_mm2,
            reject_types=self.reject_types,
        )
        return RecipeOutcome(decision, placements, self._sentences(decision, findings))

    def rephrase(self, outcome: RecipeOutcome, findings: Findings) -> RecipeOutcome:
        """``outcome`` with its sentences written again in the frame of ``findings``' model
        sentence (the same detection, its sentence written after the verdict); the
        decision and the placements stay as they are."""
        return dataclasses.replace(outcome, sentences=self._sentences(outcome.decision, findings))

    def _sentences(self, decision: RuleDecision, findings: Findings) -> dict[Language, str]:
        if not self.speaks:
            return {}
        ex = findings.explanation
        frame = ex.model_text if ex.source == "model" and is_slotted(ex.model_text) else ""
        return self.writer.sentences(decision, frame)
