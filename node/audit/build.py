"""Building an audit record from a published part result.

Everything is rendered to text and numbers here (explanations in every
language, findings and thresholds as JSON), so a record needs nothing from
the model or the node to be read later.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from models.explain_text import LANGUAGES, render_all
from node.audit.heat import encode_heat
from node.audit.record import AuditRecord
from node.line.judge import failsafe_texts
from node.line.results import PartResult

_RECORDED_FIELDS: dict[type, tuple[str, ...]] = {}
"""Per dataclass type, the fields a record keeps (those in its repr)."""


def _recorded_fields(cls: type) -> tuple[str, ...]:
    names = _RECORDED_FIELDS.get(cls)
    if names is None:
        # Fields kept out of repr (a region's pixel mask) are bulk, not record.
        names = tuple(f.name for f in dataclasses.fields(cls) if f.repr)
        _RECORDED_FIELDS[cls] = names
    return names


def _jsonable(obj: object) -> Any:
    """``obj`` as plain JSON values: numpy scalars unwrapped, NaN/inf as null, tuples as lists."""
    kind = type(obj)
    if kind is str or kind is int or kind is bool or obj is None:
        return obj
    if kind is float:
        return obj if math.isfinite(obj) else None  # type: ignore[arg-type]
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, enum.Enum):
        return _jsonable(obj.value)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str | int | bool):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {name: _jsonable(getattr(obj, name)) for name in _recorded_fields(kind)}
    return str(obj)


def _dumps(obj: object) -> str:
    return json.dumps(_jsonable(obj), ensure_ascii=False, sort_keys=True, allow_nan=False)


def record_from_result(
    result: PartResult,
    *,
    run_id: str,
    model_name: str,
    model_version: str,
    model_sha256: str,
    thresholds: Mapping[str, object],
    actuator_confirmed: bool | None = None,
    heat_threshold: float | None = None,
) -> AuditRecord:
    """The audit record of one published part result.

    ``result_id`` is ``<run_id>-<part_id>``; ``wall_time_ns`` is the UTC time
    of ``result.t_ns`` (a monotonic time) converted with the clocks' current
    offset. Explanations in every language are rendered from the findings'
    facts; a fail-safe verdict has no findings: its reason is said in every language
    (the verdict's text stands for every language when a backend gave no facts).
    ``findings_json`` holds the regions with their facts and, under ``judged``,
    each finding placed on the part (zones, millimetres) with the rule that
    decided it, and under ``repeats`` the repeating defects raised or cleared
    with this part; ``thresholds`` (the recipe in force) is stored as JSON. When the
    recipe speaks the plant's words its sentences are the explanations.
    """
    v = result.verdict
    f = v.findings
    wall_ns = time.time_ns() - (time.monotonic_ns() - result.t_ns)
    facts = None if f is None else f.explanation.facts
    explanations: dict[str, str]
    if not v.fail_safe and v.recipe is not None and v.recipe.sentences:
        explanations = {str(k): s for k, s in v.recipe.sentences.items()}
    elif v.fail_safe:
        explanations = {str(k): s for k, s in failsafe_texts(v.reason, v.detail).items()}
    elif f is None or (facts is None and f.regions):
        explanations = {lang: v.explanation for lang in LANGUAGES}
    else:
        explanations = {str(k): v for k, v in render_all(facts).items()}
    if v.fail_safe:
        source = "fail_safe"
    elif f is None:
        source = "verdict"
    elif v.recipe is not None and v.recipe.sentences:
        source = "recipe"  # the model's own sentence stays in findings_json's model_text
    else:
        source = f.explanation.source
    findings: dict[str, object] = {"detail": v.detail}
    if f is not None:
        findings |= {
            "backend": f.backend,
            "anomaly_score": f.anomaly_score,
            "defect_type": f.defect_type,
            "type_confidence": f.type_confidence,
            "regions": f.regions,
            "facts": facts,
            "model_text": f.explanation.model_text,
            "mismatches": f.explanation.mismatches,
        }
        if heat_threshold is not None and f.anomaly_map.ndim == 2 and f.anomaly_map.size:
            findings["heat"] = encode_heat(f.anomaly_map, heat_threshold)
    if v.recipe is not None:
        findings["judged"] = v.recipe.decision.findings
    if result.repeats:
        findings["repeats"] = result.repeats
    found = facts is not None and facts.region_count > 0
    return AuditRecord(
        result_id=f"{run_id}-{result.part_id}",
        run_id=run_id,
        part_id=result.part_id,
        origin_count=result.origin_count,
        trigger_count=result.trigger_count,
        fire_count=result.fire_count,
        wall_time_ns=wall_ns,
        verdict="reject" if v.reject else "pass",
        reason=v.reason.value,
        fail_safe=v.fail_safe,
        defect_type=v.defect_type,
        score=v.score,
        explanation=v.explanation,
        explanation_source=source,
        explanations=explanations,
        location=(facts.location or None) if facts is not None and found else None,
        size_mm=facts.size_mm if facts is not None and found else None,
        findings_json=_dumps(findings),
        action=result.action,
        actuator_confirmed=actuator_confirmed,
        latency_ms=result.latency_ms,
        budget_ms=result.budget_ms,
        budget_miss=result.budget_miss,
        model_name=model_name,
        model_version=model_version,
        model_sha256=model_sha256,
        thresholds_json=_dumps(thresholds),
        rule=v.rule,
    )
