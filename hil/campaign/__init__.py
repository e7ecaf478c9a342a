"""The fault campaign: every fault a line will see, injected on the HIL rig, scored.

    python -m hil.campaign [--parts 1000] [--transport both|modbus|opcua|alternate]
                           [--only NAME,...] [--out state/campaign]

Each scenario runs the node on the simulated line behind the PLC emulator
(``hil.plc_rig``: Modbus or OPC UA, node-timed rejects), injects its fault
about a third of the way in, lifts it again where a real fault would clear
(and, like an operator, presses Reset once the fault has cleared), and lets
the line run clear. The simulated line is the ground truth (``hil.score``):
every part that physically passed the reject station is counted, struck or
not. A scenario passes when

- no defective part escaped because of the fault (``fault_escapes`` = 0:
  escapes other than the model's own misses, see ``hil.score``);
- no committed audit record was lost, and every part the node published but
  did not record is counted (``unrecorded_parts``);
- the node noticed: state Error or an unhealthy status, or fail-safe rejects
  with a reason that names the fault (``detect_ms``), unless the scenario
  expects no fault at all (the HMI flood: then 0 fail-safes is the promise).

Per scenario it prints a row and writes ``<name>-<transport>.json`` and a PNG
timeline (verdicts over time, node state, what the PLC and the HMI showed);
``campaign.json`` holds every row. Exit status: 0 when every scenario passed,
1 when any failed (the table says which and why), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from drivers.plc.settings import RejectMode
from drivers.sim.fakegv import FakeGvCamera
from hil import mounts
from hil.line import ensure_template, sim_config, until_line_clear
from hil.plc_modbus import free_port
from hil.plc_process import EmulatorProcess
from hil.plc_rig import PlcRig, plc_config, run_on_emulator
from hil.score import run_failure, score_records
from models.backend import Backend, Image
from models.findings import Findings
from node.audit.reader import AuditReader
from node.audit.record import AuditRecord
from node.audit.schema import DB_NAME
from node.config import Config, load_config
from node.sim.line import build_sim_line

log = structlog.get_logger("campaign")

Transport = Literal["modbus", "opcua"]
ROOT = Path(__file__).resolve().parents[2]
BASE_CONFIG = ROOT / "configs" / "sim.toml"
_STATUS_EVERY_S = 0.1
_PLC_EVERY_S = 0.25
_FAULT_S = 2.0
"""How long a transient fault lasts before it is lifted."""


# -- what a scenario sees while it runs ------------------------------------------


@dataclass
class Run:
    """One scenario run in progress: the rig, the run's marks and the injectors' flags."""

    scenario: Scenario
    parts: int
    rig: PlcRig | None = None
    marks: dict[str, int] = field(default_factory=dict)
    """``inject``/``lift``/``reset`` → monotonic ns."""
    model_fault: Literal["none", "stall", "nan"] = "none"
    camera: FakeGvCamera | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    plc_seen: list[dict[str, Any]] = field(default_factory=list)
    hmi_seen: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """What an injector measured (the HMI flood's client counts)."""

    def mark(self, name: str) -> None:
        self.marks.setdefault(name, time.monotonic_ns())

    async def after_parts(self, fraction: float) -> None:
        """Wait until ``fraction`` of the run's parts have a result."""
        assert self.rig is not None
        while len(self.rig.results) < fraction * self.parts:  # noqa: ASYNC110 - a rig polls
            await asyncio.sleep(0.02)

    async def reset_when_clear(self, timeout_s: float = 10.0) -> None:
        """Press Reset as an operator would: once no fault is active any more."""
        assert self.rig is not None
        node = self.rig.node
        deadline = time.monotonic() + timeout_s
        while node.operation.active_faults and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        if node.operation.state.value == "Error":
            self.mark("reset")
            await node.operation.reset()


@dataclass(frozen=True)
class Scenario:
    """A fault, how to inject it, and what the node must show for it."""

    name: str
    fault: str
    """What is done to the line, in one line."""
    inject: Callable[[Run], Awaitable[None]]
    expects: str = "fault"
    """``fault``: the node must notice (Error, unhealthy or fail-safe with ``reasons``);
    ``quiet``: nothing may change (0 fail-safes); ``refused``: the node must refuse to start."""
    reasons: tuple[str, ...] = ()
    """Fail-safe reasons that count as the node noticing the fault."""
    camera: Literal["sim", "aravis"] = "sim"
    lost_per_mille: int = 0
    line: dict[str, Any] = field(default_factory=dict)
    sim: dict[str, Any] = field(default_factory=dict)
    belt_mm_s: float | None = None
    model: bool = False
    """Wrap the model so ``Run.model_fault`` can stall it or make it answer NaN."""
    prepare: Callable[[Config, Path, contextlib.ExitStack], Config] | None = None
    """Change the config before the run (a tampered package, a read-only folder); what it
    sets up for the run (a mount) it leaves on the stack, closed after the run is scored."""
    refusal_key: str = ""
    """``refused``: the config key the node's one-line refusal must name."""
    node_process: bool = False
    """Run the node in a process of its own (``hil.node_process``) that the fault kills."""


# -- injectors -------------------------------------------------------------------------


async def _camera_restart(run: Run) -> None:
    await run.after_parts(0.3)
    assert run.camera is not None
    run.mark("inject")
    await asyncio.to_thread(run.camera.stop)
    await asyncio.sleep(_FAULT_S)
    await asyncio.to_thread(run.camera.start)
    run.mark("lift")
    await run.reset_when_clear(20.0)


async def _whole_run(run: Run) -> None:
    run.mark("inject")


async def _plc_link_loss(run: Run) -> None:
    await run.after_parts(0.3)
    assert run.rig is not None
    run.mark("inject")
    await run.rig.emulator.call("stop_server")
    await asyncio.sleep(_FAULT_S)
    await run.rig.emulator.call("start_server")
    run.mark("lift")
    await run.reset_when_clear(15.0)


def _model_fault(kind: Literal["stall", "nan"]) -> Callable[[Run], Awaitable[None]]:
    async def inject(run: Run) -> None:
        await run.after_parts(0.3)
        run.mark("inject")
        run.model_fault = kind
        await asyncio.sleep(_FAULT_S)
        run.model_fault = "none"
        run.mark("lift")
        await run.reset_when_clear()

    return inject


def _count_fault(kind: Literal["garbage", "word_swap"]) -> Callable[[Run], Awaitable[None]]:
    async def inject(run: Run) -> None:
        await run.after_parts(0.3)
        assert run.rig is not None
        run.mark("inject")
        await run.rig.emulator.call("count_fault", kind)
        await asyncio.sleep(_FAULT_S)
        await run.rig.emulator.call("count_fault", "none")
        run.mark("lift")
        await run.reset_when_clear()

    return inject


async def _overspeed(run: Run) -> None:
    """The belt runs at twice ``line.max_speed_mm_s`` for a while, then back."""
    await run.after_parts(0.3)
    assert run.rig is not None
    rig = run.rig
    normal = rig.cfg.sim.speed_mm_s
    fast = rig.cfg.line.max_speed_mm_s * 2
    t = time.monotonic_ns()
    run.mark("inject")
    rig.sim.world.set_speed(t, fast)
    await rig.emulator.call("set_speed", (t, fast))
    await asyncio.sleep(_FAULT_S)
    t = time.monotonic_ns()
    rig.sim.world.set_speed(t, normal)
    await rig.emulator.call("set_speed", (t, normal))
    run.mark("lift")
    await run.reset_when_clear()


class _FaultyModel:
    """The real model, stalled or answering NaN while the run says so (on its worker thread)."""

    def __init__(self, inner: Backend, run: Run) -> None:
        self._inner = inner
        self._run = run
        self.name = inner.name

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        while self._run.model_fault == "stall":
            time.sleep(0.01)
        found = self._inner.infer(images)
        if self._run.model_fault != "nan":
            return found
        return [
            dataclasses.replace(f, anomaly_score=math.nan, anomaly_map=f.anomaly_map * math.nan)
            for f in found
        ]


def _tampered_package(cfg: Config, work: Path, stack: contextlib.ExitStack) -> Config:
    """A copy of the configured package whose manifest thresholds were raised by hand
    (what turned every defect reject off on a line before packages were hashed)."""
    source = cfg.inspection.model.package
    copy = work / "tampered-package"
    shutil.copytree(source, copy)
    manifest = copy / "manifest.json"
    data = json.loads(manifest.read_text())
    data["thresholds"]["image_score"] = 1.0  # nothing would ever be rejected
    manifest.write_text(json.dumps(data, indent=2))
    model = cfg.inspection.model.model_dump() | {"package": copy}
    return sim_config(cfg, inspection={"model": model})


async def _hmi_flood(run: Run) -> None:
    """Ten OPC UA clients browse, read and subscribe from a process of their own until the
    run ends (20 s at most; a 100-part run ends about 4 s after the flood starts)."""
    await run.after_parts(0.2)
    assert run.rig is not None
    run.mark("inject")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil.hmi_flood",
        run.rig.cfg.hmi.endpoint,
        "--clients",
        "10",
        "--seconds",
        "20",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = b""
    try:
        line = await proc.stdout.readline()  # the flood's counts, printed as it ends
        run.mark("lift")
    except asyncio.CancelledError:  # the run ended first: stopped, the flood says what it did
        proc.terminate()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                line = await proc.stdout.readline()
        raise
    finally:
        _flood_counts(run, line)
        with contextlib.suppress(TimeoutError):  # its sessions close, or it is killed
            async with asyncio.timeout(5):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _flood_counts(run: Run, line: bytes) -> None:
    """The flood's own count of sessions, reads and errors, kept with the run."""
    with contextlib.suppress(ValueError):
        run.extra["flood"] = json.loads(line)


_AUDIT_DISK_BYTES = 16 * 2**20


def _audit_on_tmpfs(cfg: Config, work: Path, stack: contextlib.ExitStack) -> Config:
    """The audit store on a 16 MiB tmpfs of its own, a short queue before the line stops."""
    disk = stack.enter_context(mounts.tmpfs(work / "audit-disk", _AUDIT_DISK_BYTES))
    audit = cfg.audit.model_dump() | {"directory": disk, "queue_max": 40, "on_failure": "stop"}
    return sim_config(cfg, audit=audit)


async def _audit_disk_full(run: Run) -> None:
    """The audit disk fills up (another writer took the space) for 2 s, then is freed."""
    await run.after_parts(0.3)
    assert run.rig is not None
    disk = run.rig.cfg.audit_directory
    run.mark("inject")
    filler = await asyncio.to_thread(mounts.fill, disk, 0)
    await asyncio.sleep(_FAULT_S)
    await asyncio.to_thread(filler.unlink)
    run.mark("lift")
    await run.reset_when_clear(20.0)


def _audit_read_only(cfg: Config, work: Path, stack: contextlib.ExitStack) -> Config:
    """The audit folder on a read-only file system (a remount gone wrong)."""
    folder = stack.enter_context(mounts.read_only_folder(work / "audit-ro"))
    return sim_config(cfg, audit=cfg.audit.model_dump() | {"directory": folder})


async def _nothing(run: Run) -> None:
    return None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "camera_restart",
        "the GigE Vision camera process is killed for 2 s and started again",
        _camera_restart,
        reasons=("frame_missing", "camera_error", "frame_incomplete"),
        camera="aravis",
        sim={"speed_mm_s": 320.0},
    ),
    Scenario(
        "gvsp_loss",
        "the camera drops 5% of its GVSP packets for the whole run",
        _whole_run,
        reasons=("frame_incomplete", "frame_missing"),
        camera="aravis",
        lost_per_mille=50,
        sim={"speed_mm_s": 320.0},
    ),
    Scenario(
        "plc_link_loss",
        "the PLC's server goes away for 2 s and comes back",
        _plc_link_loss,
    ),
    Scenario(
        "model_stall",
        "the model stops answering for 2 s",
        _model_fault("stall"),
        reasons=("deadline_missed", "model_error"),
        model=True,
    ),
    Scenario(
        "model_nan",
        "the model answers NaN scores and maps for 2 s",
        _model_fault("nan"),
        reasons=("model_error",),
        model=True,
    ),
    Scenario(
        "encoder_overspeed",
        "the belt runs at twice line.max_speed_mm_s for 2 s",
        _overspeed,
        reasons=("tracking_lost",),
        line={"max_speed_mm_s": 400.0},
        sim={"speed_mm_s": 320.0},
    ),
    Scenario(
        "encoder_garbage",
        "the PLC serves random encoder counts for 2 s",
        _count_fault("garbage"),
        reasons=("tracking_lost",),
    ),
    Scenario(
        "encoder_word_swap",
        "the PLC serves the count with its two 16-bit words swapped for 2 s",
        _count_fault("word_swap"),
        reasons=("tracking_lost",),
    ),
    Scenario(
        "audit_disk_full",
        "the audit store's disk is full for 2 s (a 16 MiB tmpfs filled by another writer)",
        _audit_disk_full,
        reasons=("audit_unavailable",),
        prepare=_audit_on_tmpfs,
    ),
    Scenario(
        "audit_read_only",
        "the audit folder is on a read-only file system at start",
        _nothing,
        expects="refused",
        refusal_key="audit.directory",
        prepare=_audit_read_only,
    ),
    Scenario(
        "sigkill_restart",
        "the node process is killed (SIGKILL) and restarted 2 s later, as systemd would",
        _nothing,
        node_process=True,
    ),
    Scenario(
        "hmi_flood",
        "ten OPC UA clients browse, read and subscribe to the node's HMI server until the "
        "run ends (20 s at most)",
        _hmi_flood,
        expects="quiet",
    ),
    Scenario(
        "tampered_package",
        "the model package's manifest thresholds are edited by hand before start",
        _nothing,
        expects="refused",
        refusal_key="inspection.model.package",
        prepare=_tampered_package,
    ),
)
SCENARIO_NAMES = tuple(s.name for s in SCENARIOS)


# -- one run -----------------------------------------------------------------------------


def plc_watch_s(cfg: Config, speed_mm_s: float) -> float:
    """The PLC's heartbeat timeout for this line: under half the travel from the sensor to
    the fire point at ``speed_mm_s``, so a part the node can no longer strike is still ahead
    of the actuator when the PLC stops trusting the node (docs/plc.md), and at most 1.5 s."""
    travel_mm = cfg.line.part_length_mm / 2 + cfg.line.reject_position_mm
    travel_mm -= cfg.line.actuator_lead_mm
    return min(1.5, round(0.45 * travel_mm / speed_mm_s, 3))


def scenario_config(
    base: Config,
    scenario: Scenario,
    work: Path,
    hmi_port: int,
    stack: contextlib.ExitStack,
) -> Config:
    """The base config made for one scenario run in ``work``."""
    sim = {"defect_rate": 0.2, "seed": 11, **scenario.sim}
    speed = float(sim.get("speed_mm_s", base.sim.speed_mm_s))
    hb_timeout_s = plc_watch_s(base, speed)
    sections: dict[str, dict[str, Any]] = {
        # the node toggles its heartbeat every watchdog_stall_s / 2: well inside the PLC's watch
        "node": {"state_dir": work, "watchdog_stall_s": round(hb_timeout_s * 0.8, 3)},
        "hmi": {"endpoint": f"opc.tcp://127.0.0.1:{hmi_port}/lineside/"},
        "line": dict(scenario.line),
        "sim": sim,
    }
    if scenario.camera == "aravis":
        sections["camera"] = {
            "driver": "aravis",
            "aravis": {
                "address": "127.0.0.1",
                "trigger": "software",
                "features": {"Width": 384, "Height": 320, "PixelFormat": "Mono8"},
            },
        }
    cfg = sim_config(base, **sections)
    if scenario.prepare is not None:
        cfg = scenario.prepare(cfg, work, stack)
    return cfg


async def _observe(run: Run, t0: int) -> None:
    """Sample the node's status (10/s), the PLC's view (4/s) and the HMI's (2/s)."""
    assert run.rig is not None
    rig = run.rig
    next_plc = 0.0
    while True:
        now = time.monotonic_ns()
        snap = rig.node.status()
        run.timeline.append(
            {
                "t_s": (now - t0) / 1e9,
                "state": snap["state"],
                "healthy": bool(snap["healthy"]),
                "faults": dict(snap.get("faults", {})),
                "fail_safe": snap.get("fail_safe", 0),
            }
        )
        if time.monotonic() >= next_plc:
            next_plc = time.monotonic() + _PLC_EVERY_S
            await _sample_plc(run, rig.emulator, t0)
        await asyncio.sleep(_STATUS_EVERY_S)


async def _watch_hmi(run: Run, endpoint: str, t0: int) -> None:
    """Read what an HMI panel would show (``Lineside.Health.*``) twice a second."""
    from asyncua import Client

    try:
        async with Client(endpoint, timeout=4) as client:
            idx = await client.get_namespace_index("urn:lineside:hmi")
            nodes = {
                k: client.get_node(f"ns={idx};s=Lineside.Health.{k}")
                for k in ("State", "StateDetail", "Camera", "Plc", "Model", "Audit")
            }
            while True:
                values = await client.read_values(list(nodes.values()))
                run.hmi_seen.append(
                    {"t_s": (time.monotonic_ns() - t0) / 1e9}
                    | {k: str(v) for k, v in zip(nodes, values, strict=True)}
                )
                await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # noqa: BLE001 - the watcher reports, it must not end the run
        run.hmi_seen.append({"t_s": (time.monotonic_ns() - t0) / 1e9, "error": str(exc)})


async def run_scenario(
    scenario: Scenario,
    transport: Transport,
    base: Config,
    parts: int,
    work: Path,
    mode: RejectMode = "plc_tracked",
) -> dict[str, Any]:
    """Run one scenario over ``parts`` parts; return its row (the JSON written for it)."""
    with contextlib.ExitStack() as stack:
        return await _run_scenario(scenario, transport, base, parts, work, mode, stack)


async def _run_scenario(
    scenario: Scenario,
    transport: Transport,
    base: Config,
    parts: int,
    work: Path,
    mode: RejectMode,
    stack: contextlib.ExitStack,
) -> dict[str, Any]:
    hmi_port = free_port()
    run = Run(scenario, parts)
    row: dict[str, Any] = {
        "scenario": scenario.name,
        "transport": transport,
        "mode": mode,
        "fault": scenario.fault,
    }
    try:
        cfg = scenario_config(base, scenario, work, hmi_port, stack)
        node_cfg = plc_config(cfg, transport, mode, free_port())
    except Exception as exc:  # noqa: BLE001 - a refusal is the scenario's result
        return row | _refused(scenario, exc)
    ensure_template(node_cfg)
    if scenario.node_process:
        return row | await _killed_and_restarted(node_cfg, parts, work, run)
    t0 = time.monotonic_ns()

    async def during(rig: PlcRig) -> None:
        run.rig = rig
        tasks = [
            asyncio.create_task(_observe(run, t0)),
            asyncio.create_task(_watch_hmi(run, node_cfg.hmi.endpoint, t0)),
        ]
        try:
            await scenario.inject(run)
            await asyncio.Event().wait()
        finally:
            for task in tasks:
                task.cancel()

    camera = FakeGvCamera("127.0.0.1", lost_per_mille=scenario.lost_per_mille)
    wrapper = (lambda inner: _FaultyModel(inner, run)) if scenario.model else None
    speed = scenario.belt_mm_s or node_cfg.sim.speed_mm_s
    travel_s = (parts + 2) * node_cfg.line.part_pitch_mm / speed
    limit = travel_s * 1.5 + node_cfg.line.reject_position_mm / speed + 30
    try:
        if scenario.camera == "aravis":
            run.camera = camera
            await asyncio.to_thread(camera.start)
        report, rig = await run_on_emulator(
            node_cfg,
            parts,
            port=_port_of(node_cfg),
            program_overrides={"heartbeat_timeout_s": plc_watch_s(node_cfg, speed)},
            timeout_s=limit,
            during=during,
            belt_mm_s=scenario.belt_mm_s,
            backend_wrapper=wrapper,
        )
    except Exception as exc:  # noqa: BLE001 - a refusal at start is the scenario's result
        return row | _refused(scenario, exc)
    finally:
        await asyncio.to_thread(camera.stop)
    row |= _assess(scenario, run, report, rig, node_cfg, t0)
    return row


_RESTART_S = 2.0
"""systemd/lineside.service: RestartSec."""


async def _killed_and_restarted(
    node_cfg: Config, parts: int, work: Path, run: Run
) -> dict[str, Any]:
    """The node in its own process behind the emulator; SIGKILL a third of the way in,
    a new process after ``_RESTART_S``; scored from the audit store it left behind."""
    sim = build_sim_line(node_cfg)
    sim.world.max_parts = parts
    sim.world.start(time.monotonic_ns() + 3600 * 10**9)
    config_file = work / "node.json"
    config_file.write_text(json.dumps(node_cfg.model_dump(mode="json")))
    speed = node_cfg.sim.speed_mm_s
    overrides = {"heartbeat_timeout_s": plc_watch_s(node_cfg, speed)}
    emulator = EmulatorProcess(
        node_cfg.model_dump(mode="python"),
        node_cfg.plc.driver if node_cfg.plc else "modbus",
        _port_of(node_cfg),
        overrides,
        max_parts=parts,
    )
    t0 = time.monotonic_ns()
    committed_before: set[str] = set()
    async with emulator:
        first = await _start_node(config_file, parts, work / "node-1.log")
        belt_t0 = time.monotonic_ns() + 300_000_000
        await emulator.call("start_belt", belt_t0)
        sim.world.start(belt_t0)
        await _tell(first, f"start {belt_t0}")
        watch = asyncio.create_task(_watch_plc(run, emulator, t0))
        hmi = asyncio.create_task(_watch_hmi(run, node_cfg.hmi.endpoint, t0))
        camera_mm = node_cfg.line.camera_position_mm
        while len(sim.world.parts_beyond(camera_mm, time.monotonic_ns())) < parts * 0.3:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        committed_before = await asyncio.to_thread(_result_ids, node_cfg)
        run.mark("inject")
        os.killpg(first.pid, signal.SIGKILL)  # the whole unit, as systemd's KillMode kills it
        await first.wait()
        hmi.cancel()
        await asyncio.sleep(_RESTART_S)
        second = await _start_node(config_file, parts, work / "node-2.log")
        await _tell(second, f"start {belt_t0}")
        run.mark("restarted")
        hmi = asyncio.create_task(_watch_hmi(run, node_cfg.hmi.endpoint, t0))
        stop = asyncio.Event()
        await asyncio.wait_for(until_line_clear(sim.world, node_cfg, stop), 600)
        second.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(second.wait(), 60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(second.pid, signal.SIGKILL)
        watch.cancel()
        hmi.cancel()
    emulator.merge_hits(sim.world)
    records = await asyncio.to_thread(_records, node_cfg)
    wall_offset = time.time_ns() - time.monotonic_ns()
    report = score_records(sim, records, node_cfg, end_t_ns=time.monotonic_ns())
    kept = {r.result_id for r in records}
    lost = len(committed_before - kept)
    plc_lost = next(
        (
            p["t_s"]
            for p in run.plc_seen
            if p["t_s"] >= (run.marks["inject"] - t0) / 1e9 and not p["heartbeat_ok"]
        ),
        None,
    )
    detect_ms = (
        round((plc_lost - (run.marks["inject"] - t0) / 1e9) * 1000, 1)
        if plc_lost is not None
        else None
    )
    failures = []
    if report["fault_escapes"]:
        failures.append(f"{report['fault_escapes']} defective parts escaped because of the fault")
    if lost:
        failures.append(f"{lost} committed audit records lost")
    # Good parts judged in the instant before the kill whose records had not been committed
    # pass unstruck and unrecorded: counted and shown (unrecorded_parts), not a silent pass.
    if not records:
        failures.append("the node decided no part at all")
    if detect_ms is None:
        failures.append("the PLC never saw the node gone")
    return {
        "parts_passed": report["parts_passed"],
        "parts": report["parts"],
        "defective": report["defective_parts"],
        "escapes": report["escapes"],
        "fault_escapes": report["fault_escapes"],
        "model_misses": report["model_misses"],
        "missed_rejects": report["missed_rejects"],
        "untracked_parts": report["untracked_parts"],
        "unjudged_unstruck": report["unjudged_unstruck"],
        "escaped": report["escaped"],
        "failsafe_rejects": report["failsafe_rejects"],
        "failsafe_reasons": report["failsafe_reasons"],
        "plc_failsafe_strikes": emulator.stats.get("failsafe_strikes", 0),
        "plc_strikes": emulator.stats.get("strikes", 0),
        "audit_committed_before_kill": len(committed_before),
        "audit_rows": len(records),
        "committed_records_lost": lost,
        "unrecorded_parts": report["unjudged_parts"],
        "detect_ms": detect_ms,
        "detected_by": "the PLC's heartbeat watch",
        "marks_s": {k: round((v - t0) / 1e9, 3) for k, v in run.marks.items()},
        "plc_saw": _changes(run.plc_seen, ("node_ready", "node_error", "heartbeat_ok")),
        "hmi_saw": _changes(run.hmi_seen, ("State", "Camera", "Plc", "Model", "Audit", "error")),
        "passed": not failures,
        "why_failed": "; ".join(failures) or None,
        "_timeline": [],
        "_plc": run.plc_seen,
        "_results": [
            {
                "t_s": round((r.wall_time_ns - wall_offset - t0) / 1e9, 3),
                "reject": r.verdict == "reject",
                "fail_safe": r.fail_safe,
                "reason": r.reason,
            }
            for r in records
        ],
    }


async def _start_node(config_file: Path, parts: int, log_file: Path) -> asyncio.subprocess.Process:
    """Start ``hil.node_process`` in a session of its own (its log to ``log_file``) and wait
    for its ``ready``."""
    with log_file.open("ab") as log_out:
        return await _spawn_node(config_file, parts, log_out)


async def _spawn_node(config_file: Path, parts: int, log_out: Any) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hil.node_process",
        str(config_file),
        str(parts),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log_out,
        start_new_session=True,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
    except TimeoutError:
        line = b""
    if line.strip() != b"ready":
        os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise RuntimeError(f"the node process did not start ({line!r})")
    return proc


async def _tell(proc: asyncio.subprocess.Process, line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(f"{line}\n".encode())
    await proc.stdin.drain()


async def _watch_plc(run: Run, emulator: EmulatorProcess, t0: int) -> None:
    while True:
        await _sample_plc(run, emulator, t0)
        await asyncio.sleep(_PLC_EVERY_S)


async def _sample_plc(run: Run, emulator: EmulatorProcess, t0: int) -> None:
    """What the PLC sees of the node now: Ready, Error, its code, heartbeat trust."""
    stats = await emulator.call("stats")
    out = stats.get("outputs", {})
    run.plc_seen.append(
        {
            "t_s": (time.monotonic_ns() - t0) / 1e9,
            "node_ready": int(out.get("node_ready", 0)),
            "node_error": int(out.get("node_error", 0)),
            "error_code": int(out.get("error_code", 0)),
            "heartbeat_ok": bool(stats.get("heartbeat_ok")),
            "failsafe_strikes": int(stats.get("failsafe_strikes", 0)),
        }
    )


def _result_ids(cfg: Config) -> set[str]:
    """The result ids committed to the run's audit store now."""
    return {r.result_id for r in _records(cfg)}


def _records(cfg: Config) -> list[AuditRecord]:
    directory = cfg.audit_directory
    if not (directory / DB_NAME).exists():
        return []
    with AuditReader(directory) as reader:
        return list(reader.iter_records())


def _port_of(cfg: Config) -> int:
    assert cfg.plc is not None
    if cfg.plc.modbus is not None:
        return cfg.plc.modbus.port
    assert cfg.plc.opcua is not None
    from urllib.parse import urlsplit

    return urlsplit(cfg.plc.opcua.url).port or 4840


def _refused(scenario: Scenario, exc: Exception) -> dict[str, Any]:
    """The row of a run the node refused to start."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        first = exc.exceptions[0]
        if not isinstance(first, Exception):
            break
        exc = first
    line = str(exc).strip().splitlines()
    why = " ".join(s.strip() for s in line)[:300]
    ok = scenario.expects == "refused" and scenario.refusal_key in why
    row: dict[str, Any] = {
        "refused_at_start": why,
        "error": type(exc).__name__,
        "parts_passed": 0,
        "passed": ok,
        "why_failed": None if ok else f"the run raised (at start or later): {why}",
    }
    if not ok:
        log.error("scenario_run_raised", scenario=scenario.name, exc_info=exc)
        # kept in the scenario's JSON: the test that runs the campaign keeps no stderr
        row["traceback"] = traceback.format_exception(exc)[-12:]
    return row


def _audit_rows(cfg: Config) -> int | None:
    """Records in the run's audit store, read back from disk after the run."""
    if not cfg.audit.enabled:
        return None
    directory = cfg.audit_directory
    try:
        with AuditReader(directory) as reader:
            return reader.count()
    except Exception as exc:  # noqa: BLE001 - an unreadable store is reported, not raised
        log.warning("audit_unreadable", directory=str(directory), error=str(exc))
        return None


def _assess(
    scenario: Scenario,
    run: Run,
    report: dict[str, Any],
    rig: PlcRig,
    cfg: Config,
    t0: int,
) -> dict[str, Any]:
    """Score one finished run against the scenario's promise."""
    results = list(rig.results.values())
    inject_ns = run.marks.get("inject")
    audit = rig.node.status().get("audit") or {}
    rows = _audit_rows(cfg)
    committed = int(audit.get("committed", 0))
    lost = max(0, committed - rows) if rows is not None else None
    unrecorded = len(results) - rows if rows is not None else None
    detect_ms = (
        _detect_ms(scenario, run, results, inject_ns, t0) if scenario.expects == "fault" else None
    )
    failures = []
    if report["fault_escapes"]:
        failures.append(f"{report['fault_escapes']} defective parts escaped because of the fault")
    if lost:
        failures.append(f"{lost} committed audit records lost")
    why = run_failure(report, struck_ok=True)
    if why is not None:
        failures.append(why)
    if scenario.expects == "fault" and detect_ms is None:
        failures.append("the node never showed the fault")
    plc_failsafe = report["plc_program"].get("failsafe_strikes", 0)
    if scenario.expects == "quiet" and (report["failsafe_rejects"] or plc_failsafe):
        failures.append(
            f"{report['failsafe_rejects']} fail-safe rejects and {plc_failsafe} PLC fail-safe "
            "strikes where nothing should have changed"
        )
    if scenario.expects == "refused":
        failures.append("the node started although it must refuse")
    states = Counter(s["state"] for s in run.timeline)
    return {
        "parts_passed": report["parts_passed"],
        "parts": report["parts"],
        "defective": report["defective_parts"],
        "escapes": report["escapes"],
        "fault_escapes": report["fault_escapes"],
        "model_misses": report["model_misses"],
        "missed_rejects": report["missed_rejects"],
        "untracked_parts": report["untracked_parts"],
        "unjudged_unstruck": report["unjudged_unstruck"],
        "unjudged_unstruck_parts": [_rel_t(e, t0) for e in report["unjudged_unstruck_parts"]],
        "escaped": [_rel_t(e, t0) for e in report["escaped"]],
        "failsafe_rejects": report["failsafe_rejects"],
        "failsafe_reasons": report["failsafe_reasons"],
        "plc_failsafe_strikes": report["plc_program"].get("failsafe_strikes", 0),
        "plc_strikes": report["plc_program"].get("strikes", 0),
        "audit_committed": committed,
        "audit_rows": rows,
        "committed_records_lost": lost,
        "unrecorded_parts": unrecorded,
        "detect_ms": detect_ms,
        "marks_s": {k: round((v - t0) / 1e9, 3) for k, v in run.marks.items()},
        "node_states": dict(states),
        "node_saw": _changes(run.timeline, ("state", "healthy", "faults")),
        "plc_saw": _changes(run.plc_seen, ("node_ready", "node_error", "heartbeat_ok")),
        "hmi_saw": _changes(run.hmi_seen, ("State", "Camera", "Plc", "Model", "Audit", "error")),
        "latency_ms": report["latency_ms"],
        **run.extra,
        "passed": not failures,
        "why_failed": "; ".join(failures) or None,
        "_timeline": run.timeline,
        "_plc": run.plc_seen,
        "_results": [
            {
                "t_s": round((r.t_ns - t0) / 1e9, 3),
                "reject": r.verdict.reject,
                "fail_safe": r.verdict.fail_safe,
                "reason": r.verdict.reason.value,
            }
            for r in results
        ],
    }


def _detect_ms(
    scenario: Scenario,
    run: Run,
    results: Sequence[Any],
    inject_ns: int | None,
    t0: int,
) -> float | None:
    """From injection to the first sign of it: Error/unhealthy status or a fail-safe reject
    naming the fault (whichever came first); None when the node never showed it."""
    if inject_ns is None:
        return None
    inject_s = (inject_ns - t0) / 1e9
    # before the node first looked healthy it was starting up, not showing the fault
    healthy_at = next((s["t_s"] for s in run.timeline if s["healthy"]), math.inf)
    seen = [
        s["t_s"]
        for s in run.timeline
        if s["t_s"] >= max(inject_s, healthy_at)
        and (s["state"] == "Error" or not s["healthy"] or s["faults"])
    ]
    seen += [
        (r.t_ns - t0) / 1e9
        for r in results
        if r.t_ns >= inject_ns
        and r.verdict.fail_safe
        and r.verdict.reason.value in scenario.reasons
    ]
    if not seen:
        return None
    return round((min(seen) - inject_s) * 1000, 1)


def _rel_t(entry: dict[str, Any], t0: int) -> dict[str, Any]:
    """``entry`` with its ``t_ns`` (if any) as ``t_s`` since the run's start."""
    out = {k: v for k, v in entry.items() if k != "t_ns"}
    if "t_ns" in entry:
        out["t_s"] = round((entry["t_ns"] - t0) / 1e9, 3)
    return out


def _changes(samples: Sequence[dict[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The samples where any of ``keys`` changed: what an observer saw, compressed."""
    out: list[dict[str, Any]] = []
    last: tuple[Any, ...] | None = None
    for s in samples:
        now = tuple(json.dumps(s.get(k), sort_keys=True) for k in keys)
        if now != last:
            out.append({"t_s": round(s["t_s"], 2)} | {k: s.get(k) for k in keys if k in s})
            last = now
    return out


# -- the timeline plot ----------------------------------------------------------------


def plot_timeline(row: dict[str, Any], path: Path) -> None:
    """Verdicts over time, the node's state, what the PLC saw; injection and lift marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 4.5), sharex=True, height_ratios=(3, 1))
    kinds = {
        "pass": ("tab:green", lambda r: not r["reject"]),
        "defect reject": ("tab:red", lambda r: r["reject"] and not r["fail_safe"]),
        "fail-safe reject": ("tab:orange", lambda r: r["fail_safe"]),
    }
    for y, (label, (colour, pick)) in enumerate(kinds.items()):
        ts = [r["t_s"] for r in row.get("_results", []) if pick(r)]
        ax.scatter(ts, [y] * len(ts), s=6, color=colour, label=f"{label} ({len(ts)})")
    ax.set_yticks(range(len(kinds)), list(kinds))
    ax.set_ylim(-0.7, len(kinds) - 0.3)
    for s in row.get("_timeline", []):
        if s["state"] == "Error" or not s["healthy"]:
            ax.axvspan(s["t_s"], s["t_s"] + _STATUS_EVERY_S, color="tab:red", alpha=0.08, lw=0)
    for i, (name, t) in enumerate(row.get("marks_s", {}).items()):
        for a in (ax, ax2):
            a.axvline(t, color="black", ls="--", lw=0.8)
        ax.text(t, len(kinds) - 0.4 - 0.25 * i, f" {name}", fontsize=8, va="top")
    plc = row.get("_plc", [])
    ax2.step([p["t_s"] for p in plc], [p["node_ready"] for p in plc], where="post", label="Ready")
    ax2.step(
        [p["t_s"] for p in plc],
        [0.5 * p["heartbeat_ok"] for p in plc],
        where="post",
        label="heartbeat ok",
    )
    ax2.set_yticks([0, 0.5, 1], ["off", "hb", "ready"])
    ax2.set_xlabel("s since start")
    ax2.set_title("what the PLC saw", fontsize=9, loc="left")
    ax.legend(loc="lower right", fontsize=8)
    verdict = "passed" if row.get("passed") else f"FAILED: {row.get('why_failed')}"
    ax.set_title(f"{row['scenario']} over {row['transport']}: {verdict}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the command --------------------------------------------------------------------------


def _table(rows: Sequence[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fault campaign")
    for col in (
        "scenario",
        "plc",
        "parts",
        "defective",
        "fault esc.",
        "missed rej.",
        "fail-safe by reason",
        "records lost",
        "unrecorded",
        "detect ms",
        "result",
    ):
        table.add_column(col)
    for r in rows:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r.get("failsafe_reasons", {}).items()))
        if r.get("refused_at_start"):
            reasons = f"refused at start: {r['refused_at_start'][:60]}"
        table.add_row(
            r["scenario"],
            r["transport"],
            str(r.get("parts_passed", 0)),
            str(r.get("defective", "-")),
            str(r.get("fault_escapes", "-")),
            str(r.get("missed_rejects", "-")),
            reasons or "-",
            str(r.get("committed_records_lost", "-")),
            str(r.get("unrecorded_parts", "-")),
            str(r.get("detect_ms", "-")),
            "ok" if r["passed"] else f"FAILED: {r['why_failed']}",
        )
    Console(file=sys.stdout, width=200).print(table)


def plan(names: Sequence[str], transport: str) -> list[tuple[Scenario, Transport]]:
    """(scenario, transport) pairs; ``alternate`` gives each scenario one transport in turn."""
    chosen = [s for s in SCENARIOS if s.name in names]
    pairs: list[tuple[Scenario, Transport]] = []
    for i, s in enumerate(chosen):
        if transport == "both":
            pairs += [(s, "modbus"), (s, "opcua")]
        elif transport == "alternate":
            pairs.append((s, "modbus" if i % 2 == 0 else "opcua"))
        else:
            pairs.append((s, "modbus" if transport == "modbus" else "opcua"))
    return pairs


async def campaign(
    pairs: Sequence[tuple[Scenario, Transport]],
    base: Config,
    parts: int,
    out: Path,
    mode: RejectMode = "plc_tracked",
) -> list[dict[str, Any]]:
    """Run every pair in turn, each in a fresh state directory; write JSON and PNGs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    rows = []
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True
    ) as progress:
        task = progress.add_task("campaign", total=len(pairs))
        for scenario, transport in pairs:
            progress.update(task, description=f"{scenario.name} / {transport}")
            with tempfile.TemporaryDirectory(prefix=f"campaign-{scenario.name}-") as tmp:
                row = await run_scenario(scenario, transport, base, parts, Path(tmp), mode)
            stem = f"{scenario.name}-{transport}"
            (out / f"{stem}.json").write_text(json.dumps(row, indent=1, default=str))
            if not row.get("refused_at_start"):
                plot_timeline(row, out / f"{stem}.png")
            rows.append({k: v for k, v in row.items() if not k.startswith("_")})
            progress.advance(task)
    (out / "campaign.json").write_text(json.dumps(rows, indent=1, default=str))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hil.campaign", description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=1000, help="parts per scenario (default 1000)")
    p.add_argument(
        "--transport",
        choices=("both", "modbus", "opcua", "alternate"),
        default="both",
        help="the PLC emulator(s) each scenario runs behind (alternate: one each, in turn)",
    )
    p.add_argument(
        "--mode",
        choices=("plc_tracked", "node_timed"),
        default="plc_tracked",
        help="who times the reject (default plc_tracked: see README, the fault campaign)",
    )
    p.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    p.add_argument("--config", type=Path, default=BASE_CONFIG, help="the base config")
    p.add_argument("--out", type=Path, default=ROOT / "state" / "campaign")
    args = p.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SCENARIO_NAMES)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        print(
            f"--only: unknown scenario {', '.join(unknown)} (known: {', '.join(SCENARIO_NAMES)})",
            file=sys.stderr,
        )
        return 2
    if args.parts < 10:
        print("--parts: at least 10 parts a scenario", file=sys.stderr)
        return 2
    from node.errors import ConfigError
    from node.service.logs import configure

    configure(file=sys.stderr, level="warning")
    try:
        base = load_config(args.config)
    except ConfigError as exc:
        print(f"--config: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = asyncio.run(campaign(plan(names, args.transport), base, args.parts, args.out, args.mode))
    _table(rows)
    print(f"JSON and timelines in {args.out}")
    return 0 if all(r["passed"] for r in rows) else 1
