"""The node on the simulated line behind a PLC emulator, over Modbus TCP or OPC UA.

``run_plc_line`` is ``hil.line.run_line`` with the sim encoder and sim reject
output replaced by a real PLC driver talking to a PLC emulator on loopback;
the emulator takes its counter from the same ``SimWorld`` the sim camera
renders from, so the rig can still score which part the actuator struck.

Until the node has a PLC-tracked mode of its own, :class:`PlcTrackedNode`
shows the change it needs: report each reject verdict to the PLC as soon as it
is known (instead of arming a pulse) and publish it when the PLC acknowledged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal

import numpy as np
import structlog

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcDriverError
from drivers.plc.modbus import ModbusPlc
from drivers.plc.opcua import OpcUaPlc
from drivers.plc.settings import ModbusSettings, OpcUaSettings, RejectMode
from drivers.plc.tracked import PlcResult, defect_code, reason_code
from hil.line import Collector, ensure_template, score
from hil.plc_logic import PlcProgram, PlcProgramConfig
from hil.plc_modbus import free_port
from hil.plc_process import EmulatorProcess
from node.app import Components, Node, _Part
from node.config import Config, LineGeometry
from node.errors import PlcError
from node.judge import Verdict
from node.results import ResultSink, percentiles
from node.simline import SimLine, build_sim_line
from node.wiring import load_backend

log = structlog.get_logger(__name__)

Transport = Literal["modbus", "opcua"]
_BELT_START_NS = 200_000_000
PlcDriver = ModbusPlc | OpcUaPlc


class NodePlc:
    """The driver as the node sees it: driver errors become ``node.errors.PlcError``."""

    def __init__(self, driver: PlcDriver) -> None:
        self.driver = driver

    async def __aenter__(self) -> NodePlc:
        try:
            await self.driver.__aenter__()
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.driver.__aexit__(et, e, tb)

    def samples(self) -> AsyncIterator[EncoderSample]:
        """The driver's samples."""
        return self.driver.samples()

    @property
    def fire_lead_ns(self) -> int:
        """The driver's measured transport delay."""
        return self.driver.fire_lead_ns

    def fire(self, command: RejectCommand) -> None:
        """The driver's pulse (raises driver errors; the pulse timer reports any)."""
        self.driver.fire(command)

    async def heartbeat(self, alive: bool) -> None:
        """The driver's heartbeat. Raises ``PlcError``."""
        try:
            await self.driver.heartbeat(alive)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def report(self, result: PlcResult) -> None:
        """The driver's result handshake (driver errors pass through)."""
        await self.driver.report(result)


class PlcNode(Node):
    """The node with the PLC link's state in its status (``status()["plc"]``)."""

    def __init__(
        self, cfg: Config, components: Components, plc: NodePlc, sinks: Sequence[ResultSink] = ()
    ) -> None:
        super().__init__(cfg, components, sinks=sinks)
        self.plc = plc

    def status(self) -> dict[str, Any]:
        """The node's status plus ``plc``: link state and counters."""
        snap = super().status()
        snap["plc"] = self.plc.driver.counters.snapshot()
        return snap


class PlcTrackedNode(PlcNode):
    """PLC-tracked rejects: a reject verdict goes to the PLC at once; no pulse is armed.

    A reject is published as ``rejected`` when the PLC acknowledged it and as
    ``not_fired`` when the handshake failed (counted in
    ``summary.reject_fire_failures``). Passes are published at the decision
    point as before; a part with no verdict by then is a fail-safe reject,
    reported late (the PLC fires it at once and counts it late).
    """

    def __init__(
        self, cfg: Config, components: Components, plc: NodePlc, sinks: Sequence[ResultSink] = ()
    ) -> None:
        super().__init__(cfg, components, plc, sinks)
        self._reports: asyncio.Queue[_Part] = asyncio.Queue()
        self._modulus = 1 << cfg.line.encoder_bits
        self.report_ms: list[float] = []

    async def run(self, stop: asyncio.Event) -> Any:
        """Run the node with a report worker beside it."""
        async with asyncio.TaskGroup() as tg:
            worker = tg.create_task(self._report_worker(), name="plc-reports")
            try:
                return await super().run(stop)
            finally:
                worker.cancel()

    def _set_verdict(self, st: _Part, verdict: Verdict) -> None:
        # Node._set_verdict without arming a pulse: the PLC's shift register fires.
        if st.verdict is not None:
            return
        st.verdict = verdict
        st.verdict_t_ns = time.monotonic_ns()
        if verdict.fail_safe:
            log.warning(
                "part_fail_safe",
                part_id=verdict.part_id,
                reason=verdict.reason.value,
                detail=verdict.detail,
            )
        if verdict.reject:
            self._reports.put_nowait(st)

    async def _report_worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            st = await self._reports.get()
            verdict = st.verdict
            assert verdict is not None
            result = PlcResult(
                part_id=st.part.part_id,
                reject=True,
                origin_raw_count=st.part.origin_count % self._modulus,
                reason_code=reason_code(verdict.reason.value),
                defect_code=defect_code(verdict.defect_type),
            )
            t0 = loop.time()
            try:
                await self.plc.report(result)
            except PlcDriverError as exc:
                self.summary.reject_fire_failures += 1
                log.error("plc_report_failed", part_id=result.part_id, error=str(exc))
                self._publish(st, verdict, "not_fired")
                continue
            self.report_ms.append((loop.time() - t0) * 1000)
            self._publish(st, verdict, "rejected")


@dataclass
class PlcRig:
    """Everything a scenario may poke at while the line runs."""

    cfg: Config
    sim: SimLine
    emulator: EmulatorProcess
    driver: PlcDriver
    node: PlcNode


def program_for(cfg: Config, world: Any, **overrides: Any) -> PlcProgram:
    """The emulated PLC configured for ``cfg``'s line geometry."""
    g = LineGeometry.from_config(cfg.line)
    pc = PlcProgramConfig(
        fire_offset_counts=g.reject_counts - g.lead_counts,
        part_length_counts=g.part_length_counts,
        **overrides,
    )
    return PlcProgram(world, pc, cfg.line.encoder_bits)


def driver_for(
    transport: Transport, mode: RejectMode, port: int, cfg: Config, **settings: Any
) -> PlcDriver:
    """A driver for the emulator on ``port``, in reject mode ``mode``."""
    if transport == "modbus":
        return ModbusPlc(
            ModbusSettings(port=port, reject_mode=mode, **settings),
            encoder_bits=cfg.line.encoder_bits,
        )
    url = f"opc.tcp://127.0.0.1:{port}/lineside/plc"
    return OpcUaPlc(
        OpcUaSettings(url=url, reject_mode=mode, **settings), encoder_bits=cfg.line.encoder_bits
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
) -> tuple[dict[str, Any], PlcRig]:
    """Run the node on the sim line behind a PLC emulator for ``parts`` parts; score it.

    The emulator runs in its own process (``hil.plc_process``). ``during(rig)``
    runs beside the node once the belt moves (fault injection). The report is
    ``hil.line.score``'s plus ``plc`` (driver counters), ``plc_program`` (what
    the emulated PLC did) and ``strike_error`` (actuator error over every
    strike of a commanded part, in mm, counts and ms).
    """
    ensure_template(cfg)
    sim = build_sim_line(cfg)
    sim.world.max_parts = parts
    # The belt stands still (its clock starts in an hour) until the node is ready.
    sim.world.start(time.monotonic_ns() + 3600 * 10**9)
    port = free_port()
    cfg_data = cfg.model_dump(mode="python")
    emulator = EmulatorProcess(cfg_data, transport, port, program_overrides, max_parts=parts)
    async with emulator:
        driver = driver_for(transport, mode, port, cfg, **(driver_settings or {}))
        plc = NodePlc(driver)
        components = Components(
            encoder=plc,
            camera=sim.camera_resource(),
            reject=plc,
            backend=lambda: load_backend(cfg),
        )
        stop = asyncio.Event()
        collector = Collector(parts, stop)
        node_cls = PlcTrackedNode if mode == "plc_tracked" else PlcNode
        node = node_cls(cfg, components, plc, sinks=[collector])
        rig = PlcRig(cfg, sim, emulator, driver, node)
        speed = cfg.sim.speed_mm_s
        travel_s = (
            parts + 2
        ) * cfg.line.part_pitch_mm / speed + cfg.line.reject_position_mm / speed
        limit = timeout_s if timeout_s is not None else travel_s * 1.5 + 15
        timer = asyncio.get_running_loop().call_later(limit, stop.set)

        async def scenario() -> None:
            await node.ready.wait()
            t0 = time.monotonic_ns() + _BELT_START_NS
            await emulator.call("start_belt", t0)
            sim.world.start(t0)
            if during is not None:
                await during(rig)

        try:
            async with asyncio.TaskGroup() as tg:
                side = tg.create_task(scenario(), name="scenario")
                try:
                    await node.run(stop)
                finally:
                    side.cancel()
        finally:
            timer.cancel()
    emulator.merge_hits(sim.world)
    report = score(sim, collector.results, cfg.camera.sim.mm_per_px)
    report["plc"] = driver.counters.snapshot()
    report["plc_program"] = {
        k: v for k, v in emulator.stats.items() if k not in ("fire_t_ns", "result_origins")
    }
    report["strike_error"] = strike_error(sim, cfg)
    report["reject_fire_failures"] = node.summary.reject_fire_failures
    report["bad_encoder_samples"] = node.summary.bad_encoder_samples
    report["pulse_lateness_ms"] = node.summary.pulse_lateness_ms
    if isinstance(node, PlcTrackedNode):
        report["report_ms"] = percentiles(node.report_ms)
    return report, rig


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
