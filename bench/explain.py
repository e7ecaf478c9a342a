"""Benchmark the explanations in the plant's words on the sim line's own parts.

Parts are drawn as the sim line draws them (``configs/sim.toml`` by default:
its family, part size and recipe; one defect a part, so each fact has one
truth), rendered on the belt, cut out as the node cuts them, judged by the
package on ONNX Runtime and by the recipe. Each
defect's truth (its kind and mask, known to the renderer) is placed with the
same zones and judged by the same rules, so every fact the sentence states is
checked against what is really on the part:

- ``fact_accuracy``: per fact over detected defective parts: ``type`` (the
  type named), ``zone`` (the zone named is one the true defect touches),
  ``size`` (the length stated within ±15 % or ±0.5 mm of the true length),
  and ``rule`` over every part (the rule cited is the one the recipe cites for
  the truth; "within limits" for a good part);
- ``hallucination_rate``: good parts whose sentence claims a defect, plus
  detected defective parts whose sentence names a wrong type or zone, over all
  parts; ``good_parts_claimed`` and ``wrong_type_or_zone`` apart;
- ``guard_fallback_rate``: the model's sentences the grounding guard replaced;
  ``recipe_sentence_fallbacks``: English sentences written in the model's frame
  that the recipe's claim check replaced (``recipe_sentence_mismatches`` by claim);
- ``explain_ms``: p50/p99 of the explanation (decoder and guard) plus the
  recipe's judgement and sentences, per anomalous part, one thread;
- ``identical_sentences``: the same part judged twice (and inspected twice)
  reads word for word the same (``mismatches`` 0);
- ``repeats``: ``--repeat-parts`` parts of the sim's random defects through
  the node's repeat watch (its recipe's window): false announcements; and, on
  another stretch of the line, a scratch repeated on parts 100 to 159: parts
  after its start until announced, after its end until cleared, against the
  window.

    .venv/bin/python bench/explain.py [--parts 600] [--repeat-parts 2000] [--seed 20261207]

Prints one JSON object (and ``--out FILE`` writes it). ``--seed`` must not be
a seed the package was trained on (the demo package: 20261118).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from rich.console import Console
from rich.progress import track

from models.data.geometry import PartGeometry, measure_regions
from models.findings import Explanation, ExplanationFacts, Findings
from models.runtime import open_runtime
from models.synth import PartSpec, render_part, render_scene
from node.config import DEFAULT_CONFIG, Config, SimRepeatSection, load_config
from node.line.judge import Judge
from node.line.repeat_notices import RepeatNotices
from node.line.roi import crop_part
from node.recipe.rules import WITHIN_LIMITS
from node.sim.line import part_spec_for
from node.sim.render import BELT_LEVEL

SIZE_REL, SIZE_ABS_MM = 0.15, 0.5
_ERR = Console(stderr=True)


def _pct(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p99": round(float(np.percentile(a, 99)), 3),
        "max": round(float(a.max()), 3),
    }


@dataclasses.dataclass
class Shot:
    """One part as the node sees it: the crop, and the truth's findings in crop pixels."""

    spec: PartSpec
    crop: np.ndarray[Any, Any]
    truth: Findings | None


def shoot(cfg: Config, spec: PartSpec, index: int) -> Shot | None:
    """Render ``spec`` on the belt (jittered like the sim line) and cut it out like the node."""
    cam = cfg.camera.sim
    mpp = cfg.inspection.mm_per_px
    rendered = render_part(spec, cam.mm_per_px)
    rng = np.random.default_rng([cfg.sim.seed, index, 3])
    jitter = cfg.sim.placement_jitter_mm / cam.mm_per_px
    centre = (
        cam.width_px / 2 + float(rng.uniform(-jitter, jitter)),
        cam.height_px / 2 + float(rng.uniform(-jitter, jitter)),
    )
    frame, mask = render_scene(rendered, (cam.height_px, cam.width_px), centre, BELT_LEVEL, index)
    size = cfg.inspection.roi_size_px
    try:
        crop, (x0, y0) = crop_part(
            frame, size, cfg.inspection.belt_threshold, part_size_px=rendered.image.shape[0]
        )
    except ValueError:
        return None
    truth = None
    if rendered.truth is not None:
        m = np.zeros((size, size), dtype=bool)
        fy0, fx0 = max(0, y0), max(0, x0)
        fy1, fx1 = min(frame.shape[0], y0 + size), min(frame.shape[1], x0 + size)
        m[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0] = mask[fy0:fy1, fx0:fx1]
        part = PartGeometry.of(crop, mpp, cfg.inspection.belt_threshold, edges=False)
        regions = measure_regions(m, None, part, mpp, merge_mm=1e6)[:1] if m.any() else []
        length = rendered.truth.length_mm
        facts = ExplanationFacts(spec.defect or "", "", length, False, len(regions))
        truth = Findings(
            2.0,
            np.zeros((1, 1), np.float32),
            spec.defect or "none",
            1.0,
            tuple(regions),
            Explanation("", facts),
            part_bbox_px=part.bbox_px,
        )
    return Shot(spec, crop, truth)


def fact_bench(cfg: Config, backend: Any, judge: Judge, parts: int) -> dict[str, Any]:
    """Facts, hallucinations, guard and timing over ``parts`` sim parts (half defective)."""
    sim = cfg.sim.model_copy(update={"defect_rate": 0.5, "multi_defect_rate": 0.0})
    cfg = cfg.model_copy(update={"sim": sim})
    pipe = backend.pipeline
    writer = judge.rules.writer
    counts = {"type": [0, 0], "zone": [0, 0], "size": [0, 0], "rule": [0, 0]}
    good = claimed = defective = detected = wrong = mismatched = 0
    explain_ms: list[float] = []
    for i in track(range(parts), description="facts", console=_ERR):
        shot = shoot(cfg, part_spec_for(cfg, i), i)
        if shot is None:
            continue
        (d,) = pipe.detect([shot.crop])
        t = time.perf_counter()
        (ex,) = pipe.explain([d])
        f = pipe.findings(d, ex, "onnxruntime")
        verdict = judge.judge(i, f)
        if d.anomalous:
            explain_ms.append((time.perf_counter() - t) * 1e3)
        again = judge.judge(i, pipe.findings(*pipe.detect([shot.crop]), ex, "onnxruntime"))
        assert verdict.recipe is not None and again.recipe is not None
        mismatched += verdict.recipe.sentences != again.recipe.sentences
        truth_rule = WITHIN_LIMITS
        if shot.truth is not None and shot.truth.regions:
            truth_verdict = judge.judge(i, shot.truth)
            truth_rule = truth_verdict.rule
        counts["rule"][0] += verdict.rule == truth_rule
        counts["rule"][1] += 1
        cited = verdict.recipe.decision.cited
        if shot.truth is None:
            good += 1
            claimed += cited is not None
            continue
        defective += 1
        if cited is None or not shot.truth.regions:
            continue
        detected += 1
        truth_place = judge.rules.zones.place(shot.truth.regions[0], shot.truth.part_bbox_px)
        named_zone = writer.zone_of(cited)
        true_len = shot.truth.explanation.facts.size_mm  # type: ignore[union-attr]
        ok_type = cited.defect_type == shot.spec.defect
        ok_zone = named_zone is None or named_zone in truth_place.zones
        err = abs(cited.placement.length_mm - true_len)
        ok_size = err <= max(SIZE_ABS_MM, SIZE_REL * true_len)
        for key, ok in (("type", ok_type), ("zone", ok_zone), ("size", ok_size)):
            counts[key][0] += ok
            counts[key][1] += 1
        wrong += not (ok_type and ok_zone)
    total = good + defective
    stats = pipe.guard.stats()
    return {
        "parts": total,
        "good_parts": good,
        "defective_parts": defective,
        "detected_defective": detected,
        "fact_accuracy": {k: round(ok / n, 4) if n else None for k, (ok, n) in counts.items()},
        "fact_counts": {k: {"right": ok, "of": n} for k, (ok, n) in counts.items()},
        "hallucination_rate": round((claimed + wrong) / total, 4) if total else None,
        "good_parts_claimed": claimed,
        "wrong_type_or_zone": wrong,
        "guard_fallback_rate": round(stats.fallback_rate, 4),
        "model_sentences_kept": stats.checked - stats.fallbacks,
        "recipe_sentence_fallbacks": writer.fallbacks,
        "recipe_sentence_mismatches": dict(writer.mismatches),
        "explain_ms": _pct(explain_ms) if explain_ms else None,
        "identical_sentences": {"checked": total, "mismatches": mismatched},
    }


def repeat_bench(
    cfg: Config, backend: Any, judge: Judge, parts: int, inject: tuple[int, int]
) -> dict[str, Any]:
    """The node's repeat watch over ``parts`` random sim parts, then with a repeat injected
    on parts ``inject[0]`` to ``inject[0] + inject[1] - 1``."""
    pipe = backend.pipeline
    settings = cfg.inspection.recipe.repeats

    def run(c: Config, n: int, label: str) -> list[tuple[int, str]]:
        notices = RepeatNotices(settings, judge.rules)
        out: list[tuple[int, str]] = []
        for i in track(range(n), description=label, console=_ERR):
            shot = shoot(c, part_spec_for(c, i), i)
            if shot is None:
                continue
            (d,) = pipe.detect([shot.crop])
            (ex,) = pipe.explain([d])
            verdict = judge.judge(i, pipe.findings(d, ex, "onnxruntime"))
            out += [(i, n.kind) for n in notices.observe(verdict)]
        return out

    noise = run(cfg, parts, "repeats (random)")
    start, count = inject
    n = start + count + 3 * settings.window_parts
    repeat = SimRepeatSection(defect="scratch", from_part=start, parts=count, seed=5)
    sim = cfg.sim.model_copy(update={"seed": cfg.sim.seed + 1, "repeat": repeat})
    injected_cfg = cfg.model_copy(update={"sim": sim})
    injected = run(injected_cfg, n, "repeats (injected)")
    raised = [i for i, k in injected if k == "raised"]
    cleared = [i for i, k in injected if k == "cleared"]
    inside = [i for i in raised if start <= i < start + count + settings.window_parts]
    return {
        "window_parts": settings.window_parts,
        "min_parts": settings.min_parts,
        "distance_mm": settings.distance_mm,
        "random_parts": parts,
        "false_announcements": sum(1 for _, k in noise if k == "raised"),
        "injected": {"from_part": start, "parts": count, "defect": "scratch"},
        "announced_after_parts": inside[0] - start if inside else None,
        "cleared_after_end_parts": (
            min(i for i in cleared if i >= start + count) - (start + count) + 1
            if any(i >= start + count for i in cleared)
            else None
        ),
        "other_announcements": len(raised) - (1 if inside else 0),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--parts", type=int, default=600)
    ap.add_argument("--repeat-parts", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261207)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    cfg = load_config(args.config)
    cfg = cfg.model_copy(update={"sim": cfg.sim.model_copy(update={"seed": args.seed})})
    backend = open_runtime("onnxruntime", cfg.inspection.model.package, 1)
    judge = Judge(cfg.inspection.recipe, cfg.inspection.mm_per_px)
    started = time.perf_counter()
    out: dict[str, Any] = {
        "config": str(args.config),
        "package": str(cfg.inspection.model.package),
        "seed": args.seed,
        "facts": fact_bench(cfg, backend, judge, args.parts),
        "repeats": repeat_bench(cfg, backend, judge, args.repeat_parts, (100, 60)),
    }
    out["wall_s"] = round(time.perf_counter() - started, 1)
    text = json.dumps(out, indent=2, ensure_ascii=False)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
