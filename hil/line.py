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
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from drivers.camera.base import Camera
from drivers.plc.base import RejectOutput
from drivers.sim.world import SimWorld
from hil.score import score
from models.backend import Backend
from node.app import Node
from node.config import Config, parse_config
from node.line.results import PartResult
from node.sim.line import SimLine, teach_images_from_sim
from node.wiring import Components, build_components

T = TypeVar("T")

_PARKED_NS = 3600 * 10**9
"""How far ahead a belt waiting for ``before_belt`` is started: it stands still until then."""

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
    """A result sink that keeps every result; it stops the run after ``expected`` results
    (None: never — the rig then stops when the line is clear)."""

    expected: int | None
    stop: asyncio.Event
    on_result: Callable[[PartResult], None] | None = None
    results: dict[int, PartResult] = field(default_factory=dict)

    def publish(self, result: PartResult) -> None:
        self.results[result.part_id] = result
        if self.on_result is not None:
            self.on_result(result)
        if self.expected is not None and len(self.results) >= self.expected:
            self.stop.set()


async def until_line_clear(world: SimWorld, cfg: Config, stop: asyncio.Event) -> None:
    """Set ``stop`` once every part the world will carry (``max_parts``) has passed the
    reject station — the physical end of a run, whatever the node saw of it."""
    beyond_mm = cfg.line.reject_position_mm + cfg.line.part_length_mm
    while not stop.is_set():
        await asyncio.sleep(0.05)
        limit = world.max_parts
        if limit is not None and world.started:
            clear = len(world.parts_beyond(beyond_mm, time.monotonic_ns())) >= limit
            if clear:
                stop.set()


async def run_line(
    cfg: Config,
    parts: int,
    *,
    timeout_s: float | None = None,
    backend_wrapper: Callable[[Backend], Backend] | None = None,
    reject_wrapper: Callable[[RejectOutput], RejectOutput] | None = None,
    camera_wrapper: Callable[[Camera], Camera] | None = None,
    on_result: Callable[[PartResult], None] | None = None,
    belt_mm_s: float | None = None,
    before_belt: Callable[[], Awaitable[None]] | None = None,
) -> tuple[dict[str, Any], Node, SimLine]:
    """Run the node on the sim line for ``parts`` parts and return the score.

    ``backend_wrapper``, ``reject_wrapper`` and ``camera_wrapper`` let a scenario inject
    faults (a slow or failing model, a slow reject output, a camera triggered only from
    the loop); ``belt_mm_s`` drives the simulated belt at that
    speed whatever ``[sim]`` says (a belt over ``line.max_speed_mm_s``, which no valid
    config describes). ``before_belt`` is awaited once the node is ready (its HMI server
    listening); the belt stands still until it returns, so what a rig attaches there
    (clients of the node) starts up before the first part, not during the run. Should it
    raise, the node is stopped before any part moved and its error is raised.
    """
    ensure_template(cfg)
    components, sim = build_components(cfg)
    assert sim is not None
    sim.world.max_parts = parts
    if belt_mm_s is not None:
        sim.world.speed_profile = [(0.0, belt_mm_s)]
    components = wrap_components(components, backend_wrapper, reject_wrapper, camera_wrapper)
    stop = asyncio.Event()
    collector = Collector(None, stop, on_result)
    node = Node(cfg, components, sinks=[collector])
    speed = belt_mm_s or cfg.sim.speed_mm_s
    travel_s = (parts + 2) * cfg.line.part_pitch_mm / speed + cfg.line.reject_position_mm / speed
    limit = timeout_s if timeout_s is not None else travel_s * 1.5 + 10
    loop = asyncio.get_running_loop()
    timers = [loop.call_later(limit, stop.set)]
    failed: list[Exception] = []

    async def start_belt() -> None:
        if before_belt is None:
            return
        await node.ready.wait()
        timers[0].cancel()  # the node started; the limit counts from the belt's start
        try:
            await before_belt()
        except Exception as exc:  # noqa: BLE001 - raised again once the node stopped
            failed.append(exc)
            stop.set()
            return
        sim.world.start(time.monotonic_ns())
        timers.append(loop.call_later(limit, stop.set))

    if before_belt is not None:
        sim.world.start(time.monotonic_ns() + _PARKED_NS)  # the encoder then leaves it parked
    try:
        async with asyncio.TaskGroup() as tg:
            clear = tg.create_task(until_line_clear(sim.world, cfg, stop), name="line-clear")
            belt = tg.create_task(start_belt(), name="start-belt")
            try:
                await node.run(stop)
            finally:
                clear.cancel()
                belt.cancel()
    finally:
        for timer in timers:
            timer.cancel()
    if failed:
        raise failed[0]
    report = score(
        sim,
        collector.results,
        cfg,
        end_t_ns=time.monotonic_ns(),
        parts_tracked=node.summary.parts_tracked,
    )
    report["parts_per_s"] = round(node.stats.parts_per_s(), 2)
    report["bad_encoder_samples"] = node.summary.bad_encoder_samples
    report["sentences_late"] = node.summary.sentences_late
    report["sentence_failures"] = node.summary.sentence_failures
    report["scheduler_lateness_ms"] = node.summary.scheduler_lateness_ms
    report["pulse_lateness_ms"] = node.summary.pulse_lateness_ms
    return report, node, sim


def wrap_components(
    components: Components,
    backend_wrapper: Callable[[Backend], Backend] | None = None,
    reject_wrapper: Callable[[RejectOutput], RejectOutput] | None = None,
    camera_wrapper: Callable[[Camera], Camera] | None = None,
) -> Components:
    """``components`` with the backend, reject output and/or camera wrapped (fault
    injection)."""
    if backend_wrapper is None and reject_wrapper is None and camera_wrapper is None:
        return components
    load, reject, camera = components.backend, components.reject, components.camera
    return dataclasses.replace(
        components,
        reject=_wrapped(reject, reject_wrapper) if reject_wrapper else reject,
        backend=(lambda: backend_wrapper(load())) if backend_wrapper else load,
        camera=_wrapped(camera, camera_wrapper) if camera_wrapper else camera,
    )


@contextlib.asynccontextmanager
async def _wrapped(
    resource: AbstractAsyncContextManager[T],
    wrapper: Callable[[T], T],
) -> AsyncIterator[T]:
    async with resource as opened:
        yield wrapper(opened)


def default_template_path(state_dir: Path, cfg: Config) -> Path:
    """Where a scenario keeps its template: one per family and ROI size."""
    return state_dir / f"template-{cfg.sim.family}-{cfg.inspection.roi_size_px}.npz"
