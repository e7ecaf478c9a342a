"""Checks on what a model computed, before anything judges it.

A package whose normalization divides by almost nothing, weights that overflow
in float16 or a runtime that miscomputes give NaN or infinity instead of a
score. A NaN compares False with every threshold, so an unchecked NaN score
reads as "below the reject score" and passes the part. Every backend therefore
checks its numbers and raises ``ModelOutputError`` when they are not what its
contract says; the node turns that into the fail-safe ``model_error`` reject
of every part in the batch, and the judge checks the finished ``Findings``
once more (``findings_problem``) so a NaN can never compare into a pass.

The ranges are the package format's (``models.graphs``): the detect graph's
``score``, ``anomaly_map`` and ``type_probs`` are probabilities in 0..1,
``length_px`` is a length (>= 0), ``memory`` and the decoder's ``logits`` are
finite. A ``Findings``' score and map are in the backend's own unit, which is
never negative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import structlog

from models.backend import BackendError
from models.findings import Findings

log = structlog.get_logger(__name__)

PROBABILITY = (0.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
ANY_FINITE = (-math.inf, math.inf)

_SLACK = 1e-5
"""How far float rounding may carry a probability past 0 or 1 before it is refused."""


class ModelOutputError(BackendError):
    """A model computed values outside its contract (NaN, infinity, out of range).

    The message names every array and image that was wrong.
    """


def array_problem(name: str, values: npt.NDArray[np.floating], bounds: tuple[float, float]) -> str:
    """What is wrong with ``values`` for ``bounds`` (inclusive, ``_SLACK`` allowed at a
    finite bound), or ``""`` when nothing is."""
    a = np.asarray(values)
    finite = np.isfinite(a)
    bad = int(a.size - np.count_nonzero(finite))
    parts = []
    if bad:
        parts.append(f"{bad} of {a.size} values not finite")
    lo, hi = bounds
    ok = a[finite] if bad else a
    if ok.size and (math.isfinite(lo) or math.isfinite(hi)):
        low, high = float(ok.min()), float(ok.max())
        if low < lo - _SLACK or high > hi + _SLACK:
            parts.append(f"range {low:.6g}..{high:.6g} outside {lo:g}..{hi:g}")
    return f"{name}: {', '.join(parts)}" if parts else ""


def check_arrays(
    arrays: Mapping[str, tuple[npt.NDArray[np.floating], tuple[float, float]]], what: str
) -> None:
    """Raise ``ModelOutputError`` naming each of ``arrays`` (``name: (values, bounds)``) whose
    values are not finite or fall outside their bounds; ``what`` says whose they are."""
    problems = [p for name, (a, b) in arrays.items() if (p := array_problem(name, a, b))]
    if problems:
        message = f"{what}: " + "; ".join(problems)
        log.error("model_output_refused", what=what, problems=problems)
        raise ModelOutputError(message)


def findings_problem(findings: Findings) -> str:
    """What makes ``findings`` unfit to judge (a non-finite or negative score, a map or a
    region with values that are not finite), or ``""`` when nothing does."""
    score = findings.anomaly_score
    if not isinstance(score, int | float) or not math.isfinite(score) or score < 0:
        return f"anomaly_score {score!r} is not a finite value >= 0"
    problem = array_problem("anomaly_map", findings.anomaly_map, NON_NEGATIVE)
    if problem:
        return problem
    if not math.isfinite(findings.type_confidence):
        return f"type_confidence {findings.type_confidence!r} is not finite"
    for i, r in enumerate(findings.regions):
        numbers = (r.area_mm2, r.length_mm, r.width_mm, r.score, r.contrast)
        if not all(math.isfinite(v) for v in numbers):
            return f"region {i}: a measure is not finite ({r.area_mm2!r} mm², score {r.score!r})"
    return ""


def check_findings(findings: list[Findings], backend: str) -> list[Findings]:
    """``findings`` unchanged; raises ``ModelOutputError`` when any is unfit to judge."""
    problems = [f"image {i}: {p}" for i, f in enumerate(findings) if (p := findings_problem(f))]
    if problems:
        log.error("model_output_refused", what=backend, problems=problems)
        raise ModelOutputError(f"{backend}: " + "; ".join(problems))
    return findings
