"""Real part results and audit records for the audit tests (and the crash test's child)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import numpy.typing as npt

from models.explain_text import NO_DEFECT_TYPE, render_explanation
from models.findings import Explanation, ExplanationFacts, Findings, Region
from node.audit.record import AuditRecord
from node.audit.store import record_from_result
from node.config import RecipeSection
from node.line.judge import Judge, Reason
from node.line.results import PartResult

RECIPE = RecipeSection(min_region_area_mm2=0.5, reject_score=6.0)
THRESHOLDS = RECIPE.model_dump()
MODEL = {"model_name": "classical", "model_version": "1.2.0", "model_sha256": "ab" * 32}


def findings(
    defect_type: str | None, location: str = "upper left", size_mm: float = 12.0
) -> Findings:
    """Findings of one region of ``defect_type`` (None: a clean part), as a backend reports them."""
    if defect_type is None:
        facts = ExplanationFacts(NO_DEFECT_TYPE, "", 0.0, False, 0)
        return Findings(
            1.0,
            np.zeros((8, 8), np.float32),
            NO_DEFECT_TYPE,
            0.95,
            (),
            Explanation(render_explanation(facts), facts, "facts"),
            backend="classical",
        )
    facts = ExplanationFacts(defect_type, location, size_mm, True, 1)
    region = Region(
        (1, 1, 5, 5),
        (3.0, 3.0),
        16,
        3.2,
        size_mm,
        1.0,
        location,
        True,
        -7.5,
        np.float32(9.0),  # type: ignore[arg-type]
    )
    return Findings(
        9.0,
        np.zeros((8, 8), np.float32),
        defect_type,
        0.8,
        (region,),
        Explanation(render_explanation(facts), facts, "facts"),
        backend="classical",
    )


def part_result(
    part_id: int, defect_type: str | None = "scratch", *, fail_safe: Reason | None = None
) -> PartResult:
    """A published result: judged from findings, or a fail-safe reject for ``fail_safe``."""
    if fail_safe is not None:
        verdict = Judge.fail_safe(part_id, fail_safe, "no frame within 40 ms")
    else:
        verdict = Judge(RECIPE).judge(part_id, findings(defect_type))
    return PartResult(
        part_id=part_id,
        origin_count=1000 * part_id,
        trigger_count=1000 * part_id + 400,
        fire_count=1000 * part_id + 900,
        verdict=verdict,
        action="rejected" if verdict.reject else "passed",
        latency_ms=None if fail_safe else 7.5,
        budget_ms=80.0,
        budget_miss=fail_safe is Reason.FAILSAFE_DEADLINE,
        t_ns=time.monotonic_ns(),
    )


def record(
    part_id: int,
    defect_type: str | None = "scratch",
    *,
    run_id: str = "run1",
    wall_time_ns: int | None = None,
    fail_safe: Reason | None = None,
) -> AuditRecord:
    """The audit record of :func:`part_result`, optionally at a given UTC time."""
    rec = record_from_result(
        part_result(part_id, defect_type, fail_safe=fail_safe),
        run_id=run_id,
        thresholds=THRESHOLDS,
        actuator_confirmed=True,
        **MODEL,
    )
    if wall_time_ns is not None:
        rec = dataclasses.replace(rec, wall_time_ns=wall_time_ns)
    return rec


def image(seed: int, size_px: int = 64) -> npt.NDArray[np.uint8]:
    """A random grayscale uint8 image (distinct per seed)."""
    return np.random.default_rng(seed).integers(0, 256, (size_px, size_px), dtype=np.uint8)
