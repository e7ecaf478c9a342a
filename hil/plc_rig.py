"""The node on the simulated line behind a PLC emulator, over Modbus TCP or OPC UA.

``run_plc_line`` is ``hil.line.run_line`` with ``encoder.driver`` and
``reject.driver`` set to ``plc``: the node builds its PLC link from the config
exactly as ``lineside run`` does, and talks to a PLC emulator on loopback. The
emulator takes its counter from the same ``SimWorld`` the sim camera renders
from, so the rig can still score which part the actuator struck.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import structlog

from drivers.plc.link import PlcLink, open_link
from drivers.plc.settings import ModbusSettings, OpcUaSettings, RejectMode
from hil.line import Collector, ensure_template, sim_config, until_line_clear, wrap_components
from hil.plc_modbus import free_port
from hil.plc_process import EmulatorProcess
from hil.score import score
from models.backend import Backend
from node.app import Node
from node.config import Config
from node.line.results import PartResult, percentiles
from node.sim.line import SimLine, build_sim_line
from node.wiring import build_components

log = structlog.get_logger(__name__)

T = TypeVar("T")
Transport = Literal["modbus", "opcua"]
_BELT_START_NS = 200_000_000


@dataclass
class PlcRig:
    """Everything a scenario may poke at while the line runs."""

    cfg: Config
    sim: SimLine
    emulator: EmulatorProcess
    driver: PlcLink
    """The node's PLC link."""
    node: Node
    stop: asyncio.Event
    """Set it to end the run (the node drains and stops)."""
    results: dict[int, PartResult] = field(default_factory=dict)
    """part_id → the node's published result (filled as the run goes)."""


def plc_settings(
    transport: Transport, mode: RejectMode, port: int, **settings: Any
) -> ModbusSettings | OpcUaSettings:
    """Driver settings for the emulator on ``port``, in reject mode ``mode``."""
    if transport == "modbus":
        return ModbusSettings(port=port, reject_mode=mode, **settings)
    url = f"opc.tcp://127.0.0.1:{port}/lineside/plc"
    return OpcUaSettings(url=url, reject_mode=mode, **settings)


def driver_for(
    transport: Transport, mode: RejectMode, port: int, cfg: Config, **settings: Any
) -> PlcLink:
    """A PLC link to the emulator on ``port``, in reject mode ``mode``."""
    return open_link(
        plc_settings(transport, mode, port, **settings), encoder_bits=cfg.line.encoder_bits
    )


def plc_config(
    cfg: Config, transport: Transport, mode: RejectMode, port: int, **settings: Any
) -> Config:
    """``cfg`` with both PLC edges on the emulator at ``port``."""
    s = plc_settings(transport, mode, port, **settings)
    return sim_config(
        cfg,
        encoder={"driver": "plc"},
        reject={"driver": "plc"},
        plc={"driver": transport, transport: s.model_dump(mode="python")},
    )


async def run_plc_line(
    cfg: Config,
    parts: int,
    *,
    transport: Transport,
    mode: RejectMode,
    timeout_s: float | None = None,
    program_overrides: dict[str, Any] | None = None,
    driver_settings: dict[str, Any] | None = None,
    during: Callable[[PlcRig], Awaitable[None]] | None = None,
    on_result: Callable[[PartResult], None] | None = None,
    belt_mm_s: float | None = None,
) -> tuple[dict[str, Any], PlcRig]:
    """Run the node on the sim line behind a PLC emulator for ``parts`` parts; score it.

    The emulator runs in its own process (``hil.plc_process``) on a free port;
    the node's ``[plc]`` section is made for it (``plc_config``). ``during(rig)``
    runs beside the node once the belt moves (fault injection); ``on_result`` sees
    every part's result as it is published (progress). The report is
    ``hil.line.score``'s plus ``plc`` (link counters), ``plc_program`` (what
    the emulated PLC did) and ``strike_error`` (actuator error over every
    strike of a commanded part, in mm, counts and ms). ``belt_mm_s`` drives the belt at
    that speed whatever ``[sim]`` says (an overspeed scenario no valid config describes).
    """
    port = free_port()
    node_cfg = plc_config(cfg, transport, mode, port, **(driver_settings or {}))
    speed = belt_mm_s or cfg.sim.speed_mm_s
    travel_s = (parts + 2) * cfg.line.part_pitch_mm / speed + cfg.line.reject_position_mm / speed
    limit = timeout_s if timeout_s is not None else travel_s * 1.5 + 15
    report, rig = await run_on_emulator(
        node_cfg,
        parts,
        port=port,
        timeout_s=limit,
        program_overrides=program_overrides,
        during=during,
        on_result=on_result,
        belt_mm_s=belt_mm_s,
    )
    rig.cfg = cfg
    return report, rig


async def run_on_emulator(
    node_cfg: Config,
    parts: int | None,
    *,
    port: int,
    timeout_s: float | None = None,
    program_overrides: dict[str, Any] | None = None,
    during: Callable[[PlcRig], Awaitable[None]] | None = None,
    on_result: Callable[[PartResult], None] | None = None,
    on_status: Callable[[dict[str, Any]], None] | None = None,
    stop: asyncio.Event | None = None,
    belt_mm_s: float | None = None,
    backend_wrapper: Callable[[Backend], Backend] | None = None,
) -> tuple[dict[str, Any], PlcRig]:
    """Run the node on ``node_cfg`` (its ``[plc]`` link as it stands) against an emulator
    started for it on ``port``; score the run.

    ``parts``: the belt carries that many parts and the run ends when each has a
    result (None: endless, until ``stop`` is set or ``timeout_s`` passes).
    ``on_status`` gets the node's live status every ``node.status_interval_s``;
    ``belt_mm_s`` overrides the belt speed in the node's sim and the emulator's;
    ``backend_wrapper`` wraps the model (fault injection: a stalled or broken model).
    """
    if node_cfg.plc is None:
        raise ValueError("plc: the node config has no [plc] section")
    transport: Transport = node_cfg.plc.driver
    ensure_template(node_cfg)
    sim = build_sim_line(node_cfg)
    sim.world.max_parts = parts
    cfg_data = node_cfg.model_dump(mode="python")
    if belt_mm_s is not None:
        sim.world.speed_profile = [(0.0, belt_mm_s)]
        cfg_data["sim"] = {**cfg_data["sim"], "speed_mm_s": belt_mm_s, "speed_profile": []}
    # The belt stands still (its clock starts in an hour) until the node is ready.
    sim.world.start(time.monotonic_ns() + 3600 * 10**9)
    emulator = EmulatorProcess(cfg_data, transport, port, program_overrides, max_parts=parts)
    stop = stop or asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        # The emulator starts while the node does (model, audit store, HMI server): as on
        # a line, whose PLC is up long before its node, the node's PLC link is opened
        # once the emulator serves.
        emulator.launch()
        stack.push_async_exit(emulator)
        components, _ = build_components(node_cfg, sim)
        components = wrap_components(components, backend_wrapper)
        assert components.plc is not None
        components = dataclasses.replace(
            components,
            encoder=_once_serving(emulator, components.encoder),
            reject=_once_serving(emulator, components.reject),
        )
        link = components.plc.link
        collector = Collector(None, stop, on_result)
        node = Node(node_cfg, components, sinks=[collector], on_status=on_status)
        rig = PlcRig(node_cfg, sim, emulator, link, node, stop, collector.results)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout_s, stop.set) if timeout_s is not None else None

        async def scenario() -> None:
            await node.ready.wait()
            t0 = time.monotonic_ns() + _BELT_START_NS
            await emulator.call("start_belt", t0)
            sim.world.start(t0)
            if during is not None:
                await during(rig)

        recancelled = [0]
        try:
            async with asyncio.TaskGroup() as tg:
                side = tg.create_task(scenario(), name="scenario")
                clear = tg.create_task(until_line_clear(sim.world, node_cfg, stop), name="clear")
                rescue = tg.create_task(
                    _recancel_stuck(stop, node_cfg.node.drain_grace_s + 5.0, recancelled),
                    name="recancel",
                )
                try:
                    await node.run(stop)
                finally:
                    side.cancel()
                    clear.cancel()
                    rescue.cancel()
        finally:
            if timer is not None:
                timer.cancel()
    emulator.merge_hits(sim.world)
    report = score(
        sim,
        collector.results,
        node_cfg,
        end_t_ns=time.monotonic_ns(),
        parts_tracked=node.summary.parts_tracked,
    )
    report["plc"] = link.counters.snapshot()
    report["plc_program"] = {
        k: v for k, v in emulator.stats.items() if k not in ("fire_t_ns", "result_origins")
    }
    report["strike_error"] = strike_error(sim, node_cfg)
    report["reject_fire_failures"] = node.summary.reject_fire_failures
    report["bad_encoder_samples"] = node.summary.bad_encoder_samples
    report["pulse_lateness_ms"] = node.summary.pulse_lateness_ms
    report["tasks_recancelled"] = recancelled[0]
    if node_cfg.plc.reject_mode == "plc_tracked":
        report["report_ms"] = node.summary.plc_report_ms
    return report, rig


@contextlib.asynccontextmanager
async def _once_serving(
    emulator: EmulatorProcess, edge: AbstractAsyncContextManager[T]
) -> AsyncIterator[T]:
    """``edge`` opened once ``emulator`` serves."""
    await emulator.ready()
    async with edge as opened:
        yield opened


async def _recancel_stuck(stop: asyncio.Event, after_s: float, count: list[int]) -> None:
    """Work around a node task that ignores its cancellation at stop.

    The Modbus driver's poll loop can lose a cancellation (pymodbus awaits the
    response with ``asyncio.wait_for``, which on Python 3.11 may swallow a
    cancel that races with the response) and then polls on forever, so
    ``Node.run`` never returns. ``after_s`` after ``stop``, every task still
    "cancelling" is cancelled again, once a second; ``count[0]`` counts it.
    """
    await stop.wait()
    await asyncio.sleep(after_s)
    me = asyncio.current_task()
    while True:
        for task in asyncio.all_tasks():
            if task is not me and task.cancelling() and not task.done():
                count[0] += 1
                log.warning("node_task_recancelled", task=task.get_name())
                task.cancel()
        await asyncio.sleep(1.0)


def strike_error(sim: SimLine, cfg: Config) -> dict[str, Any]:
    """Signed actuator error of every strike on a commanded part: mm, counts and ms."""
    errs = [
        h.error_mm for h in sim.world.hits if h.part_index is not None and h.commanded_part_id >= 0
    ]
    if not errs:
        return {"n": 0}
    arr = np.asarray(errs)
    speed = cfg.sim.speed_mm_s
    cpm = cfg.line.counts_per_mm
    absv = np.abs(arr)
    return {
        "n": len(errs),
        "mean_mm": round(float(arr.mean()), 3),
        "abs_mm": percentiles(absv.tolist()),
        "abs_counts": percentiles((absv * cpm).tolist()),
        "abs_ms": percentiles((absv / speed * 1000).tolist()),
        "max_abs_mm": round(float(absv.max()), 3),
    }
