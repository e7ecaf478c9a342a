"""Scoring a run against the simulated line's ground truth: every physical part counts.

The simulated world knows every part the belt carried past the reject station,
whether it was really defective and whether the actuator struck it. With a
recipe of zones and rules, "defective" is what the recipe rejects when judged
on the true defect (its true type, mask and length): a cosmetic defect the
recipe accepts is neither an escape when passed nor wanted struck. A node only
knows the parts it tracked, so a part it never saw is invisible to its own
counters; here it is counted (``untracked_parts``), and an unstruck defective
one is an escape whether the node saw it or not.

A node result is matched to its physical part by what the rig saw: the part the
camera rendered for it, else the part its strike hit, else the part whose centre
was nearest its origin count (within half a pitch).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import platform
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from drivers.sim.world import ActuatorHit
from models.data.geometry import PartGeometry, measure_regions
from models.findings import Explanation, ExplanationFacts, Findings
from models.synth import RenderedPart, render_part
from node.audit.record import AuditRecord
from node.config import Config
from node.line.judge import Judge
from node.line.results import PartResult, percentiles
from node.sim.line import SimLine


def truth_findings(part: RenderedPart, reject_score: float) -> Findings | None:
    """The findings a perfect backend would report for a rendered part: its true defect as one
    region measured on the true mask, over ``reject_score``, of its true type and length, in
    the part's own image (whose box is the part's); ``None`` for a good part."""
    truth = part.truth
    if truth is None or part.spec.defect is None:
        return None
    size = part.image.shape[0]
    box = (0, 0, size, size)
    geometry = PartGeometry(part.part_mask, box, None)
    if part.spec.count == 1:  # one defect, however many pieces: its measured length
        regions = measure_regions(part.mask, None, geometry, part.mm_per_px, merge_mm=1e6)[:1]
        length = truth.length_mm
    else:  # several: each its own region, the largest stating the length
        regions = measure_regions(part.mask, None, geometry, part.mm_per_px)
        length = max(regions, key=lambda r: r.area_px).length_mm if regions else 0.0
    facts = ExplanationFacts(part.spec.defect, "", length, False, len(regions))
    return Findings(
        reject_score + 1.0,
        np.zeros((1, 1), np.float32),
        part.spec.defect,
        1.0,
        tuple(regions),
        Explanation("", facts),
        part_bbox_px=box,
    )


def _defective(sim: SimLine, index: int, mm_per_px: float, judge: Judge | None = None) -> bool:
    """Whether the part ``index`` must be rejected: a visible defect, and, when the recipe
    has zones and rules (``judge``), one the recipe rejects (a cosmetic one it accepts
    is not a defect to strike)."""
    spec = sim.spec(index)
    if spec is None or spec.defect is None:
        return False
    part = render_part(spec, mm_per_px)
    truth = part.truth
    if truth is None or not truth.visible:
        return False
    if judge is None or not judge.rules.speaks:
        return True
    findings = truth_findings(part, judge.recipe.reject_score)
    return findings is not None and judge.judge(index, findings).reject


def physical_index(
    sim: SimLine, cfg: Config, result: PartResult, hits_by_cmd: dict[int, int]
) -> int | None:
    """The world index of the part ``result`` is about, or None (an empty pitch slot)."""
    index = sim.camera.rendered.get(result.part_id)
    if index is not None:
        return index
    struck = hits_by_cmd.get(result.part_id)
    if struck is not None:
        return struck
    # The world's counter reads displacement × counts/mm + count_offset, wrapped.
    raw = result.origin_raw_count
    if raw is None:
        return None
    modulus = 1 << cfg.line.encoder_bits
    cross_mm = ((raw - cfg.encoder.sim.count_offset) % modulus) / cfg.line.counts_per_mm
    best = min(sim.world.parts, key=lambda p: abs(p.cross_mm - cross_mm), default=None)
    if best is None or abs(best.cross_mm - cross_mm) > cfg.line.part_pitch_mm / 2:
        return None
    return best.index


def score(
    sim: SimLine, results: dict[int, PartResult], cfg: Config, *, end_t_ns: int, parts_tracked: int
) -> dict[str, Any]:
    """Score a run that ended at ``end_t_ns``.

    Physical parts are those whose centre had passed the reject station by then:

    - ``parts_passed``: how many; ``defective_parts``/``good_parts``: of those;
    - ``untracked_parts``: passed parts no node result is about (``good``, ``defective``);
    - ``unjudged_parts``: their total — a run with any is a failed run;
      ``unjudged_unstruck``: those the actuator did not strike either (a PLC's own
      fail-safe strikes the parts it knows the node cannot answer for), each listed in
      ``unjudged_unstruck_parts`` with the results placed on its two neighbours;
    - ``escapes``: defective passed parts the actuator never struck, tracked or not;
      ``model_misses``: those the model itself judged good (an ``ok`` verdict with a finite
      score — the model's own error rate); ``fault_escapes``: the rest, escapes no correct
      model verdict explains (untracked, unjudged, a reject not struck, a non-finite pass);
    - ``parts``: node results; ``parts_tracked``: parts the node's tracker created;
    - ``missed_rejects``: results published ``rejected`` whose own part was not struck;
    - ``false_rejects``: good parts judged reject by the model (fail-safe excluded);
    - ``failsafe_rejects``/``failsafe_reasons``: fail-safe verdicts;
    - ``wrong_part_hits``: strikes that landed on a part other than the one commanded;
    - ``reject_position_error_mm``: |struck part centre − reject station| when struck.
    """
    mm_per_px = cfg.camera.sim.mm_per_px
    world = sim.world
    hits_by_cmd = {h.commanded_part_id: h for h in world.hits}
    hit_index = {c: h.part_index for c, h in hits_by_cmd.items() if h.part_index is not None}
    struck = {h.part_index for h in world.hits if h.part_index is not None}
    reject_mm = cfg.line.reject_position_mm + cfg.line.part_length_mm / 2
    passed = [p.index for p in world.parts_beyond(reject_mm, end_t_ns)] if world.started else []
    truth: dict[int, bool] = {}

    judge = Judge(cfg.inspection.recipe, mm_per_px)

    def is_defective(index: int) -> bool:
        if index not in truth:
            truth[index] = _defective(sim, index, mm_per_px, judge)
        return truth[index]

    defective = {i: is_defective(i) for i in passed}
    judged: dict[int, int] = {}  # world index -> part_id
    judged_all: dict[int, list[int]] = {}  # world index -> every part_id placed on it
    for part_id, r in results.items():
        index = physical_index(sim, cfg, r, hit_index)
        if index is not None:
            judged.setdefault(index, part_id)
            judged_all.setdefault(index, []).append(part_id)
    untracked = [i for i in passed if i not in judged]
    missed = false_rej = wrong = 0
    missed_parts: list[dict[str, Any]] = []
    errors: list[float] = []
    signed: list[float] = []
    for part_id, r in results.items():
        index = sim.camera.rendered.get(part_id)
        if r.action == "rejected" and index is not None:  # an empty pitch slot has no part
            hit = hits_by_cmd.get(part_id)
            if hit is None or hit.part_index is None or hit.part_index != index:
                missed += 1
                missed_parts.append(_missed(sim, part_id, index, hit, r))
            if hit is not None and hit.part_index is not None:
                errors.append(abs(hit.error_mm))
                signed.append(hit.error_mm)
                wrong += hit.part_index != index
            if not r.verdict.fail_safe and not is_defective(index):
                false_rej += 1
    n_def = sum(defective.values())
    escaped = [i for i in passed if defective[i] and i not in struck]
    misses = sum(1 for i in escaped if i in judged and _model_pass(results[judged[i]]))
    unstruck = [i for i in untracked if i not in struck]
    latencies = [r.latency_ms for r in results.values() if r.latency_ms is not None]
    sentences = [r.sentence_ms for r in results.values() if r.sentence_ms is not None]
    budget = [r.budget_used for r in results.values() if r.budget_used is not None]
    err = percentiles(errors)
    n_good = len(passed) - n_def
    return {
        "parts": len(results),
        "parts_passed": len(passed),
        "parts_tracked": parts_tracked,
        "untracked_parts": {
            "good": sum(1 for i in untracked if not defective[i]),
            "defective": sum(1 for i in untracked if defective[i]),
        },
        "unjudged_parts": len(untracked),
        "unjudged_unstruck": {
            "good": sum(1 for i in unstruck if not defective[i]),
            "defective": sum(1 for i in unstruck if defective[i]),
        },
        # where to look when one happens: the results placed on its neighbours (two on
        # one neighbour: a frame showed the wrong part)
        "unjudged_unstruck_parts": [
            {
                "index": i,
                "defective": defective[i],
                "neighbours": {str(j): judged_all.get(j, []) for j in (i - 1, i + 1)},
                **_at_sensor(sim, i),
            }
            for i in unstruck
        ][:20],
        "escaped": [
            _escape(sim, i, judged, results)
            for i in escaped
            if not (i in judged and _model_pass(results[judged[i]]))
        ][:20],
        "defective_parts": n_def,
        "good_parts": n_good,
        "escapes": len(escaped),
        "escape_rate": round(len(escaped) / n_def, 4) if n_def else 0.0,
        "model_misses": misses,
        "fault_escapes": len(escaped) - misses,
        "missed_rejects": missed,
        # where to look when one happens: when the strike went out and what was under it
        "missed_reject_parts": missed_parts[:20],
        "false_rejects": false_rej,
        "false_reject_rate": round(false_rej / n_good, 4) if n_good else 0.0,
        "failsafe_rejects": sum(r.verdict.fail_safe for r in results.values()),
        "failsafe_reasons": dict(
            Counter(r.verdict.reason.value for r in results.values() if r.verdict.fail_safe)
        ),
        "budget_misses": sum(r.budget_miss for r in results.values()),
        "wrong_part_hits": wrong,
        "latency_ms": percentiles(latencies),
        "sentence_ms": {"parts": len(sentences), **percentiles(sentences)},
        "budget_used": percentiles(budget),
        "reject_position_error_mm": {
            "p50": err["p50"],
            "max": err["max"],
            "mean_signed": round(float(np.mean(signed)), 3) if signed else 0.0,
        },
    }


def _escape(
    sim: SimLine, index: int, judged: dict[int, int], results: dict[int, PartResult]
) -> dict[str, Any]:
    """What the node said about one escaped part (for finding why it escaped); an untracked
    one with the time its leading edge reached the sensor."""
    part_id = judged.get(index)
    if part_id is None:
        return {"index": index, "tracked": False, **_at_sensor(sim, index)}
    r = results[part_id]
    return {
        "index": index,
        "part_id": part_id,
        "reason": r.verdict.reason.value,
        "action": r.action,
        "t_ns": r.t_ns,
    }


def _missed(
    sim: SimLine, part_id: int, index: int, hit: ActuatorHit | None, r: PartResult
) -> dict[str, Any]:
    """One result published ``rejected`` whose part was not struck: the strike's instant,
    the belt's speed then, and where the commanded part's centre was (mm past the reject
    station when the actuator acted; the struck part, if any)."""
    out: dict[str, Any] = {"part_id": part_id, "index": index, "reason": r.verdict.reason.value}
    if hit is None:
        return out | {"struck": False}
    world = sim.world
    part = world.part(index)
    at: float | None = None
    if part is not None:
        acts_d = world.displacement_mm(hit.t_ns) + world.actuator_lead_mm
        at = round(acts_d - part.cross_mm - world.reject_position_mm, 2)
    return out | {
        "struck": True,
        "t_ns": hit.t_ns,
        "speed_mm_s": world.speed_mm_s(hit.t_ns),
        "part_past_station_mm": at,
        "struck_index": hit.part_index,
    }


def _at_sensor(sim: SimLine, index: int) -> dict[str, int]:
    """``{"t_ns": when part index's leading edge reached the sensor}``, or {} if unknown."""
    part = sim.world.part(index)
    t = None if part is None else sim.world.time_at(part.cross_mm - part.length_mm / 2)
    return {} if t is None else {"t_ns": t}


def _model_pass(result: PartResult) -> bool:
    """True when the part passed on an ordinary model verdict: ``ok`` with a finite score."""
    v = result.verdict
    return (
        not v.reject and v.reason.value == "ok" and v.score is not None and math.isfinite(v.score)
    )


def run_failure(report: dict[str, Any], *, struck_ok: bool = False) -> str | None:
    """Why a scored run failed, in one line, or None when every part was judged.

    ``struck_ok``: an unjudged part the actuator struck anyway (a PLC's fail-safe) is
    not a failure — the fault campaign's rule; a bench wants every part judged.
    """
    if struck_ok:
        u = report["unjudged_unstruck"]
        if u["good"] or u["defective"]:
            return (
                f"{u['good'] + u['defective']} of {report['parts_passed']} parts passed the "
                f"reject station unjudged and unstruck ({u['defective']} defective, "
                f"{u['good']} good)"
            )
    elif report["unjudged_parts"]:
        u = report["untracked_parts"]
        return (
            f"{report['unjudged_parts']} of {report['parts_passed']} parts passed the reject "
            f"station unjudged ({u['defective']} defective, {u['good']} good)"
        )
    if not report["parts"]:
        return "the node decided no part at all"
    return None


def machine() -> dict[str, Any]:
    """What the run ran on, so runs can be compared: cores, CPU model, Python."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version()}


def config_sha256(cfg: Config) -> str:
    """sha256 of the effective config (canonical JSON), so two runs' configs compare."""
    text = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def model_sha256(cfg: Config) -> str | None:
    """sha256 of what judges: the model package's manifest (which hashes every file in
    it) or the classical template file; None when it is missing."""
    insp = cfg.inspection
    if insp.backend == "classical":
        path = insp.classical.template
    else:
        path = insp.model.package / "manifest.json"
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def score_records(
    sim: SimLine, records: Sequence[AuditRecord], cfg: Config, *, end_t_ns: int
) -> dict[str, Any]:
    """Score a run from what the audit store kept (a node that was killed and restarted
    publishes to no rig; its records are what it left behind).

    Each record is placed on the belt by its origin count (in the counter's own terms,
    so records of several node processes place alike); the keys are ``score``'s where
    they apply: ``parts_passed``, ``defective_parts``, ``escapes``, ``model_misses``,
    ``fault_escapes``, ``unjudged_parts``, ``unjudged_unstruck``, ``failsafe_reasons``.
    """
    world = sim.world
    mm_per_px = cfg.camera.sim.mm_per_px
    struck = {h.part_index for h in world.hits if h.part_index is not None}
    reject_mm = cfg.line.reject_position_mm + cfg.line.part_length_mm / 2
    passed = [p.index for p in world.parts_beyond(reject_mm, end_t_ns)] if world.started else []
    modulus = 1 << cfg.line.encoder_bits
    by_cross = sorted((p.cross_mm, p.index) for p in world.parts)
    placed: dict[int, AuditRecord] = {}
    for rec in records:
        cross = (
            (rec.origin_count - cfg.encoder.sim.count_offset) % modulus
        ) / cfg.line.counts_per_mm
        i = bisect.bisect_left(by_cross, (cross, -1))
        near = [by_cross[j] for j in (i - 1, i) if 0 <= j < len(by_cross)]
        if near:
            c, index = min(near, key=lambda ci: abs(ci[0] - cross))
            if abs(c - cross) <= cfg.line.part_pitch_mm / 2:
                placed.setdefault(index, rec)
    judge = Judge(cfg.inspection.recipe, mm_per_px)
    defective = {i: _defective(sim, i, mm_per_px, judge) for i in passed}
    escaped = [i for i in passed if defective[i] and i not in struck]

    def model_pass(rec: AuditRecord) -> bool:
        return (
            rec.verdict == "pass"
            and rec.reason == "ok"
            and rec.score is not None
            and math.isfinite(rec.score)
        )

    misses = sum(1 for i in escaped if i in placed and model_pass(placed[i]))
    untracked = [i for i in passed if i not in placed]
    unstruck = [i for i in untracked if i not in struck]
    judged = [placed[i] for i in passed if i in placed]
    return {
        "parts": len(records),
        "parts_passed": len(passed),
        "defective_parts": sum(defective.values()),
        "escapes": len(escaped),
        "model_misses": misses,
        "fault_escapes": len(escaped) - misses,
        "unjudged_parts": len(untracked),
        "unjudged_unstruck": {
            "good": sum(1 for i in unstruck if not defective[i]),
            "defective": sum(1 for i in unstruck if defective[i]),
        },
        "untracked_parts": {
            "good": sum(1 for i in untracked if not defective[i]),
            "defective": sum(1 for i in untracked if defective[i]),
        },
        "missed_rejects": sum(
            1 for i in passed if i in placed and placed[i].action == "rejected" and i not in struck
        ),
        "failsafe_rejects": sum(r.fail_safe for r in judged),
        "failsafe_reasons": dict(Counter(r.reason for r in judged if r.fail_safe)),
        "escaped": [
            {"index": i, "tracked": i in placed}
            | ({"reason": placed[i].reason, "action": placed[i].action} if i in placed else {})
            for i in escaped
            if not (i in placed and model_pass(placed[i]))
        ][:20],
    }
