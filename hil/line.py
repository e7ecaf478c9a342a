"""The simulated line as a test rig: run the node on it and score it against ground truth.

The node is run exactly as in production (``node.app.Node`` with the sim
drivers from ``node.wiring``); this module only adds what a rig knows and a
node must not: which parts were really defective, and which part the
actuator really struck.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drivers.plc.base import RejectOutput
from models.backend import Backend
from models.synth import render_part
from node.app import Node
from node.config import Config, parse_config
from node.line.results import PartResult, percentiles
from node.sim.line import SimLine, teach_images_from_sim
from node.wiring import build_components

CLASSICAL_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "sim-classical.toml"
"""The simulated line on the classical template detector (the default config uses the model)."""


def sim_config(base: Config, **sections: dict[str, Any]) -> Config:
    """``base`` with some keys replaced, validated again: ``sim_config(cfg, sim={...})``."""
    data = base.model_dump(mode="python")
    for name, values in sections.items():
        data[name] = {**(data.get(name) or {}), **values}
    return parse_config(data, "<scenario>")


def ensure_template(cfg: Config) -> None:
    """Teach the configured template from the sim if the classical detector judges and
    the template does not exist yet."""
    from node.cli.teach import teach_template

    if cfg.inspection.backend != "classical":
        return
    path = cfg.inspection.classical.template
    if not path.is_file():
        teach_template(cfg, teach_images_from_sim(cfg, cfg.inspection.classical.teach_parts), path)


@dataclass
class Collector:
    """A result sink that keeps every result and stops the run after ``expected`` parts."""

    expected: int
    stop: asyncio.Event
    on_result: Callable[[PartResult], None] | None = None
    results: dict[int, PartResult] = field(default_factory=dict)

    def publish(self, result: PartResult) -> None:
        self.results[result.part_id] = result
        if self.on_result is not None:
            self.on_result(result)
        if len(self.results) >= self.expected:
            self.stop.set()


@dataclass(frozen=True)
class Score:
    """Ground-truth scoring of one run (see ``score`` for definitions)."""

    report: dict[str, Any]


def score(sim: SimLine, results: dict[int, PartResult], mm_per_px: float) -> dict[str, Any]:
    """Score a run.

    - ``escapes``: defective parts (visible by the synth's criterion) the actuator never struck;
    - ``missed_rejects``: parts judged reject whose own physical part was not struck
      (a fail-safe reject of an empty pitch slot has no part to miss);
    - ``false_rejects``: good parts judged reject by the model (fail-safe excluded);
    - ``failsafe_rejects``: fail-safe verdicts;
    - ``wrong_part_hits``: strikes that landed on a part other than the one commanded;
    - ``reject_position_error_mm``: |struck part centre − reject station| when struck.
    """
    seen = dict(sim.camera.rendered)
    hits_by_cmd = {h.commanded_part_id: h for h in sim.world.hits}
    struck = {h.part_index for h in sim.world.hits if h.part_index is not None}
    defective: dict[int, bool] = {}
    for part_id in results:
        index = seen.get(part_id)
        if index is None or index in defective:
            continue
        spec = sim.specs[index]
        if spec.defect is None:
            defective[index] = False
        else:
            truth = render_part(spec, mm_per_px).truth
            defective[index] = truth is not None and truth.visible
    n_def = sum(defective.values())
    n_good = len(defective) - n_def
    missed = false_rej = wrong = 0
    errors: list[float] = []
    signed: list[float] = []
    for part_id, r in results.items():
        index = seen.get(part_id)
        if r.action == "rejected" and index is not None:  # an empty pitch slot has no part
            hit = hits_by_cmd.get(part_id)
            if hit is None or hit.part_index is None or hit.part_index != index:
                missed += 1
            if hit is not None and hit.part_index is not None:
                errors.append(abs(hit.error_mm))
                signed.append(hit.error_mm)
                wrong += hit.part_index != index
            if not r.verdict.fail_safe and index is not None and defective.get(index) is False:
                false_rej += 1
    escapes = sum(1 for i, d in defective.items() if d and i not in struck)
    latencies = [r.latency_ms for r in results.values() if r.latency_ms is not None]
    budget = [r.budget_used for r in results.values() if r.budget_used is not None]
    err = percentiles(errors)
    return {
        "parts": len(results),
        "defective_parts": n_def,
        "good_parts": n_good,
        "escapes": escapes,
        "escape_rate": round(escapes / n_def, 4) if n_def else 0.0,
        "missed_rejects": missed,
        "false_rejects": false_rej,
        "false_reject_rate": round(false_rej / n_good, 4) if n_good else 0.0,
        "failsafe_rejects": sum(r.verdict.fail_safe for r in results.values()),
        "failsafe_reasons": _count(
            r.verdict.reason.value for r in results.values() if r.verdict.fail_safe
        ),
        "budget_misses": sum(r.budget_miss for r in results.values()),
        "wrong_part_hits": wrong,
        "latency_ms": percentiles(latencies),
        "budget_used": percentiles(budget),
        "reject_position_error_mm": {
            "p50": err["p50"],
            "max": err["max"],
            "mean_signed": round(float(np.mean(signed)), 3) if signed else 0.0,
        },
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


async def run_line(
    cfg: Config,
    parts: int,
    *,
    timeout_s: float | None = None,
    backend_wrapper: Callable[[Backend], Backend] | None = None,
    reject_wrapper: Callable[[RejectOutput], RejectOutput] | None = None,
    on_result: Callable[[PartResult], None] | None = None,
) -> tuple[dict[str, Any], Node, SimLine]:
    """Run the node on the sim line for ``parts`` parts and return the score.

    ``backend_wrapper`` and ``reject_wrapper`` let a scenario inject faults (a slow or
    failing model, a slow reject output).
    """
    ensure_template(cfg)
    components, sim = build_components(cfg)
    assert sim is not None
    sim.world.max_parts = parts
    if backend_wrapper is not None or reject_wrapper is not None:
        load, reject = components.backend, components.reject
        components = dataclasses.replace(
            components,
            reject=_wrapped_reject(reject, reject_wrapper) if reject_wrapper else reject,
            backend=(lambda: backend_wrapper(load())) if backend_wrapper else load,
        )
    stop = asyncio.Event()
    collector = Collector(parts, stop, on_result)
    node = Node(cfg, components, sinks=[collector])
    speed = cfg.sim.speed_mm_s
    travel_s = (parts + 2) * cfg.line.part_pitch_mm / speed + cfg.line.reject_position_mm / speed
    limit = timeout_s if timeout_s is not None else travel_s * 1.5 + 10
    timer = asyncio.get_running_loop().call_later(limit, stop.set)
    try:
        await node.run(stop)
    finally:
        timer.cancel()
    report = score(sim, collector.results, cfg.camera.sim.mm_per_px)
    report["parts_per_s"] = round(node.stats.parts_per_s(), 2)
    report["bad_encoder_samples"] = node.summary.bad_encoder_samples
    report["scheduler_lateness_ms"] = node.summary.scheduler_lateness_ms
    report["pulse_lateness_ms"] = node.summary.pulse_lateness_ms
    return report, node, sim


@contextlib.asynccontextmanager
async def _wrapped_reject(
    reject: AbstractAsyncContextManager[RejectOutput],
    wrapper: Callable[[RejectOutput], RejectOutput],
) -> AsyncIterator[RejectOutput]:
    async with reject as output:
        yield wrapper(output)


def default_template_path(state_dir: Path, cfg: Config) -> Path:
    """Where a scenario keeps its template: one per family and ROI size."""
    return state_dir / f"template-{cfg.sim.family}-{cfg.inspection.roi_size_px}.npz"
