"""The judge: findings and the recipe in, a pass/reject verdict out.

Fail-safe verdicts (no frame, bad frame, camera or model error, deadline
missed) are made here too so every reject carries a recorded reason. A part is
never passed without findings that say it is good: findings whose score or map
is not finite (``models.outputs.findings_problem``) are a model error, and a
pass needs every test to say "below" (a NaN compares False both ways, so it
can only ever fall on the reject side).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

import structlog

from models.explain_text import LANGUAGES, Language
from models.findings import Findings
from models.outputs import findings_problem
from node.config import RecipeSection
from node.recipe.recipe import Recipe, RecipeOutcome

log = structlog.get_logger(__name__)


class Reason(enum.StrEnum):
    """Why a verdict is what it is; the ``FAILSAFE_*`` ones are fail-safe rejects."""

    OK = "ok"
    DEFECT = "defect"
    FAILSAFE_DEADLINE = "deadline_missed"
    FAILSAFE_TRIGGER_LATE = "trigger_late"
    FAILSAFE_FRAME_MISSING = "frame_missing"
    FAILSAFE_FRAME_INCOMPLETE = "frame_incomplete"
    FAILSAFE_NO_PART = "no_part_in_frame"
    FAILSAFE_CAMERA = "camera_error"
    FAILSAFE_MODEL = "model_error"
    FAILSAFE_SHUTDOWN = "node_stopping"
    FAILSAFE_NOT_INSPECTING = "not_inspecting"
    FAILSAFE_TRACKING = "tracking_lost"
    FAILSAFE_AUDIT = "audit_unavailable"


_FAILSAFE_LEAD: dict[Language, str] = {
    "en": "rejected for safety: {why}",
    "de": "aus Sicherheitsgründen ausgeschleust: {why}",
    "ja": "安全のため排出: {why}",
}
_FAILSAFE_WHY: dict[Reason, dict[Language, str]] = {
    Reason.FAILSAFE_DEADLINE: {"de": "Zeitbudget überschritten", "ja": "処理期限超過"},
    Reason.FAILSAFE_TRIGGER_LATE: {"de": "Trigger zu spät", "ja": "トリガ遅延"},
    Reason.FAILSAFE_FRAME_MISSING: {"de": "Bild fehlt", "ja": "画像なし"},
    Reason.FAILSAFE_FRAME_INCOMPLETE: {"de": "Bild unvollständig", "ja": "画像不完全"},
    Reason.FAILSAFE_NO_PART: {"de": "kein Teil im Bild", "ja": "画像内に部品なし"},
    Reason.FAILSAFE_CAMERA: {"de": "Kamerafehler", "ja": "カメラ異常"},
    Reason.FAILSAFE_MODEL: {"de": "Modellfehler", "ja": "モデル異常"},
    Reason.FAILSAFE_SHUTDOWN: {"de": "Knoten hält an", "ja": "ノード停止中"},
    Reason.FAILSAFE_NOT_INSPECTING: {"de": "Prüfung nicht aktiv", "ja": "検査停止中"},
    Reason.FAILSAFE_TRACKING: {"de": "Teileverfolgung verloren", "ja": "部品追跡喪失"},
    Reason.FAILSAFE_AUDIT: {"de": "Prüfprotokoll nicht verfügbar", "ja": "監査記録不可"},
}


def failsafe_text(reason: Reason, language: Language = "en", detail: str = "") -> str:
    """The fail-safe reject's sentence in ``language``; ``detail`` (technical, as logged)
    follows in brackets. English names the reason as its value reads."""
    why = _FAILSAFE_WHY.get(reason, {}).get(language) or reason.value.replace("_", " ")
    return _FAILSAFE_LEAD[language].format(why=why) + (f" ({detail})" if detail else "")


def failsafe_texts(reason: Reason, detail: str = "") -> dict[Language, str]:
    """``failsafe_text`` in every language."""
    return {lang: failsafe_text(reason, lang, detail) for lang in LANGUAGES}


@dataclass(frozen=True, slots=True)
class Verdict:
    """The decision for one part.

    ``reject`` is what the actuator must do; ``fail_safe`` marks a reject that
    was taken because the node could not judge the part (``detail`` says why).
    ``rule`` is the recipe rule the verdict cites ("within limits" for a pass,
    empty for a fail-safe); ``recipe`` what the recipe made of the findings
    (placements, the decision, its sentences); ``explanation`` the published
    English sentence.
    """

    part_id: int
    reject: bool
    reason: Reason
    fail_safe: bool
    explanation: str
    defect_type: str | None = None
    score: float | None = None
    findings: Findings | None = None
    detail: str = ""
    rule: str = ""
    recipe: RecipeOutcome | None = None


class Judge:
    """Applies one recipe to findings; ``mm_per_px`` is the inspected image's scale.

    Raises ``ConfigError`` when the recipe's painted zone image cannot be used.
    """

    def __init__(self, recipe: RecipeSection, mm_per_px: float = 0.125) -> None:
        self.recipe = recipe
        self.rules = Recipe(
            zones=recipe.zones,
            rules=recipe.rules,
            causes=recipe.causes,
            zone_image=recipe.zone_image,
            reject_score=recipe.reject_score,
            min_region_area_mm2=recipe.min_region_area_mm2,
            reject_types=recipe.reject_types,
            mm_per_px=mm_per_px,
        )

    def judge(self, part_id: int, findings: Findings) -> Verdict:
        """The recipe's verdict, citing its rule (see ``node.recipe.rules``); a fail-safe
        ``model_error`` reject when the findings hold values that are not finite
        (whatever the backend let through)."""
        problem = findings_problem(findings)
        if problem:
            log.error("model_output_refused", part_id=part_id, problem=problem)
            return self.fail_safe(part_id, Reason.FAILSAFE_MODEL, problem)
        outcome = self.rules.apply(findings)
        defect = outcome.decision.reject
        return Verdict(
            part_id=part_id,
            reject=defect,
            reason=Reason.DEFECT if defect else Reason.OK,
            fail_safe=False,
            explanation=outcome.sentences.get("en", findings.explanation.text),
            defect_type=findings.defect_type if defect else None,
            score=findings.anomaly_score,
            findings=findings,
            rule=outcome.decision.rule,
            recipe=outcome,
        )

    def rephrase(self, verdict: Verdict, findings: Findings) -> Verdict:
        """``verdict`` with the sentence of ``findings`` (the same detection it was decided
        on, the model's sentence written afterwards): the decision, the rule and the
        placements stay; the explanation and the recipe's sentences follow the new one."""
        if verdict.fail_safe or verdict.recipe is None:
            return verdict
        outcome = self.rules.rephrase(verdict.recipe, findings)
        return dataclasses.replace(
            verdict,
            explanation=outcome.sentences.get("en", findings.explanation.text),
            findings=findings,
            recipe=outcome,
        )

    @staticmethod
    def fail_safe(part_id: int, reason: Reason, detail: str = "") -> Verdict:
        """A fail-safe reject for a part the node could not judge."""
        return Verdict(
            part_id=part_id,
            reject=True,
            reason=reason,
            fail_safe=True,
            explanation=failsafe_text(reason, "en", detail),
            detail=detail,
        )
