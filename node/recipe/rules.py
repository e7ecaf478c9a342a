"""Rules decide: each finding judged by the recipe rules that cover it, the verdict cites one.

A finding is covered by every rule whose types include its type (the type
head's, shared by all regions of one image) and whose zone it touches. It
rejects the part when any covering rule says so (a reject rule it is not
within, or an accept rule whose cosmetic limit it exceeds); it is cosmetic when
rules cover it and none rejects. Findings no rule covers fall to the
catch-all, the model's score rule as it always was: a region of at least
``min_region_area_mm2``, an image score at or over ``reject_score``, or a type
in ``reject_types`` rejects. An image over ``reject_score`` with no region at
all is rejected by the catch-all too: an anomaly the map cannot place is not
accepted by a zone rule.

The verdict cites the rule that fired for its worst rejected finding (longest
first), or ``WITHIN_LIMITS``. With no rules configured the decision is exactly
the score rule's, now with a citation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from models.findings import Findings
from node.recipe.settings import ANY_ZONE, RuleSettings
from node.recipe.zones import Placement

WITHIN_LIMITS = "within limits"
"""What a passed part cites."""
SCORE_RULE = "model score"
"""The catch-all's name: the model's anomaly score against ``reject_score``."""
TYPE_RULE = "reject type"
"""The catch-all's name when the type is in ``reject_types``."""

Limit = Literal["length", "area", "count", "score", "type", ""]


@dataclass(frozen=True, slots=True)
class JudgedFinding:
    """One finding and what the recipe made of it.

    ``rule`` is the title of the rule that decided it (``SCORE_RULE`` or
    ``TYPE_RULE`` for the catch-all), ``rule_index`` its place in the recipe
    (``None``: the catch-all); ``rejects`` whether it rejects the part;
    ``cosmetic`` whether an accept rule let it pass; ``limit`` which limit it
    was judged against and ``limit_value`` that limit (mm, mm², count;
    ``None`` where none applies); ``count`` how many findings of the part the
    deciding rule covers.
    """

    placement: Placement
    defect_type: str
    rule: str
    rule_index: int | None
    rejects: bool
    cosmetic: bool
    limit: Limit
    limit_value: float | None
    count: int = 1


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """The recipe's decision on one part: ``reject``, the rule it cites, findings worst first."""

    reject: bool
    rule: str
    findings: tuple[JudgedFinding, ...]

    @property
    def cited(self) -> JudgedFinding | None:
        """The finding the cited rule fired on (the worst one); ``None`` for a clean part."""
        return self.findings[0] if self.findings else None


def _covers(rule: RuleSettings, defect_type: str, p: Placement) -> bool:
    if rule.types and defect_type not in rule.types:
        return False
    return rule.zone == ANY_ZONE or rule.zone in p.zones


def _against(rule: RuleSettings, p: Placement) -> tuple[bool, Limit, float | None]:
    """Whether ``p`` exceeds ``rule``'s size limits, and the limit it is judged on."""
    if rule.max_area_mm2 is not None and p.area_mm2 > rule.max_area_mm2:
        return True, "area", rule.max_area_mm2
    length = rule.length_limit_mm
    if p.length_mm > length:
        return True, "length", length
    if math.isfinite(length):
        return False, "length", length
    if rule.max_area_mm2 is not None:
        return False, "area", rule.max_area_mm2
    return False, "", None


def decide(
    findings: Findings,
    placements: Sequence[Placement],
    rules: Sequence[RuleSettings],
    *,
    reject_score: float,
    min_region_area_mm2: float,
    reject_types: Sequence[str],
) -> RuleDecision:
    """The recipe's decision on ``findings`` whose regions lie at ``placements`` (same order).

    The caller has already refused non-finite findings (a NaN never reaches here).
    """
    defect_type = findings.defect_type
    by_type = bool(reject_types) and defect_type in reject_types
    over_score = not (findings.anomaly_score < reject_score)
    covered: dict[int, list[int]] = {
        i: [k for k, r in enumerate(rules) if _covers(r, defect_type, p)]
        for i, p in enumerate(placements)
    }
    counts = [sum(1 for ks in covered.values() if k in ks) for k in range(len(rules))]
    judged: list[JudgedFinding] = []
    for i, p in enumerate(placements):
        ks = covered[i]
        if not ks:
            rejects = by_type or over_score or not (p.area_mm2 < min_region_area_mm2)
            judged.append(
                JudgedFinding(
                    p,
                    defect_type,
                    TYPE_RULE if by_type else SCORE_RULE,
                    None,
                    rejects,
                    False,
                    "type" if by_type else "score",
                    None,
                )
            )
            continue
        verdicts: list[JudgedFinding] = []
        for k in ks:
            rule = rules[k]
            over, limit, value = _against(rule, p)
            if not over and rule.max_count is not None and counts[k] > rule.max_count:
                over, limit, value = True, "count", float(rule.max_count)
            verdicts.append(
                JudgedFinding(
                    p,
                    defect_type,
                    rule.title,
                    k,
                    over,
                    rule.action == "accept",
                    limit,
                    value,
                    counts[k],
                )
            )
        rejecting = [v for v in verdicts if v.rejects]
        judged.append(rejecting[0] if rejecting else verdicts[0])
    if not placements and (by_type or over_score):
        # An anomaly with no region to place: only the catch-all can speak to it.
        return RuleDecision(True, TYPE_RULE if by_type else SCORE_RULE, ())
    judged.sort(key=lambda j: (not j.rejects, -j.placement.length_mm))
    reject = any(j.rejects for j in judged)
    return RuleDecision(reject, judged[0].rule if reject else WITHIN_LIMITS, tuple(judged))
