"""PLC link benchmark: round trips per transport, reject timing error per reject mode.

    python bench/plc.py [--parts 200] [--rate 20] [--out bench/out/plc.json]

Prints one JSON object::

    {"round_trips_ms": {"modbus": {"read": {p50, p99}, "write": ..., "fire": ...}, "opcua": ...},
     "reject_timing": {"modbus": {"node_timed": {"1000": {"counts": {p50, p99, max},
                                                         "ms": ..., "mm": ..., ...}}}}}

Round trips are measured with the belt parked: ``read`` one read of the inputs
(Modbus FC4 of the input block; OPC UA a Read of the counter), ``write`` one
heartbeat write, ``fire`` one node-timed pulse write on the pulse connection.

Reject timing runs the whole node (``hil.plc_rig.run_plc_line``) behind the
emulator in its own process, once per transport × reject mode × belt speed.
The part pitch grows with the speed so parts come at ``--rate`` per second
(the node inspects every part; 94 parts/s at 3 m/s with the 32 mm pitch of
``configs/sim-classical.toml`` would only measure an overloaded pipeline), and
the reject station moves down the belt so the camera-to-reject travel takes
at least ``--budget-ms`` (default 300 ms: the sim's 300 mm at 1 m/s; 900 mm at
3 m/s). The timing
error is |struck part centre − reject station| over every strike the node
commanded that hit a part, p50/p99/max; a reject that struck nothing or the
wrong part is counted in ``missed_rejects``/``wrong_part_hits`` instead, and
fail-safe verdicts and PLC fail-safe strikes are counted per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from drivers.plc.base import RejectCommand
from drivers.plc.errors import PlcDriverError
from drivers.plc.settings import RejectMode
from hil.line import CLASSICAL_CONFIG, sim_config
from hil.plc_modbus import free_port
from hil.plc_process import EmulatorProcess
from hil.plc_rig import driver_for, run_plc_line
from node.config import Config, load_config
from node.line.geometry import LineGeometry
from node.line.results import PartResult

Transport = Literal["modbus", "opcua"]
TRANSPORTS: tuple[Transport, ...] = ("modbus", "opcua")
MODES: tuple[RejectMode, ...] = ("node_timed", "plc_tracked")
Tick = Callable[[str, int | None], None]
"""Progress callback: (what is running, parts done or None)."""


async def round_trips(cfg: Config, transport: Transport, n: int, tick: Tick) -> dict[str, Any]:
    """Read, write and pulse round trips against the emulator (belt parked), in ms."""
    port = free_port()
    async with EmulatorProcess(cfg.model_dump(mode="python"), transport, port):
        drv = driver_for(transport, "node_timed", port, cfg)
        errors = {"read": 0, "write": 0, "fire": 0}

        async def attempt(kind: str, op: Awaitable[object]) -> None:
            # A timed-out or refused request has no round trip: count it, do not stop.
            try:
                await op
            except PlcDriverError:
                errors[kind] += 1

        async with drv:
            for i in range(n):
                await attempt("read", drv.probe_read())
                await attempt("write", drv.heartbeat(bool(i % 2)))
                cmd = RejectCommand(i, 0, "defect")
                await attempt("fire", asyncio.to_thread(drv.fire, cmd))
                tick(f"{transport} round trips", i + 1)
        c = drv.counters
        windows = {"read": c.read_rtt, "write": c.write_rtt, "fire": c.fire_rtt}
        out: dict[str, Any] = {"n": n}
        for name, window in windows.items():
            s = window.summary_ms()
            out[name] = {"p50": s["p50"], "p99": s["p99"], "errors": errors[name]}
        return out


def line_for_speed(cfg: Config, speed_mm_s: float, rate: float, budget_s: float) -> Config:
    """``cfg`` at ``speed_mm_s`` with the pitch that gives ``rate`` parts/s and a reject
    station at least ``budget_s`` of belt travel after the camera.

    The pitch never drops below the part length plus its own tolerance; the
    line's top speed gets 25 % headroom over the belt (a top speed equal to
    the belt speed would make sample timing jitter look like counter jumps).
    A faster belt moves the reject station further down, as a line builder
    would: the decision (trigger, inspection, result to the PLC) keeps the same
    time, so a run measures reject timing, not an inspection that cannot fit.
    """
    line = cfg.line
    pitch = max(speed_mm_s / rate, line.part_length_mm + 4.0)
    distance = max(line.reject_position_mm - line.camera_position_mm, speed_mm_s * budget_s)
    return sim_config(
        cfg,
        line={
            "part_pitch_mm": round(pitch, 3),
            "reject_position_mm": round(line.camera_position_mm + distance, 3),
            "max_speed_mm_s": max(line.max_speed_mm_s, 1.25 * speed_mm_s),
        },
        sim={"speed_mm_s": speed_mm_s, "defect_rate": 0.4, "seed": 2, "placement_jitter_mm": 0.0},
    )


def _window(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("p50", "p99", "max")}


async def timing_run(
    cfg: Config, parts: int, transport: Transport, mode: RejectMode, tick: Tick
) -> dict[str, Any]:
    """One node run behind the emulator; the timing error and everything that went wrong."""
    label = f"{transport} {mode} {cfg.sim.speed_mm_s / 1000:g} m/s"
    done = 0

    def on_result(_: PartResult) -> None:
        nonlocal done
        done += 1
        tick(label, done)

    tick(label, 0)
    t0 = time.monotonic()
    # Parts the node never saw never get a result: end the run when the belt has
    # carried every part past the reject station, plus time to start and drain.
    line = cfg.line
    travel_s = (parts * line.part_pitch_mm + line.reject_position_mm) / cfg.sim.speed_mm_s
    report, rig = await run_plc_line(
        cfg,
        parts,
        transport=transport,
        mode=mode,
        timeout_s=travel_s + 10.0,
        on_result=on_result,
    )
    wall = time.monotonic() - t0
    se = report["strike_error"]
    plc = report["plc"]
    prog = report["plc_program"]
    geometry = LineGeometry.from_config(cfg)
    run: dict[str, Any] = {
        "belt_mm_s": cfg.sim.speed_mm_s,
        "pitch_mm": cfg.line.part_pitch_mm,
        "camera_to_reject_mm": cfg.line.reject_position_mm - cfg.line.camera_position_mm,
        "parts_per_s": round(cfg.sim.speed_mm_s / cfg.line.part_pitch_mm, 2),
        "parts_on_belt": parts,
        "parts": report["parts"],
        "defective_parts": report["defective_parts"],
        "strikes_scored": se.get("n", 0),
        "counts": se.get("abs_counts"),
        "ms": se.get("abs_ms"),
        "mm": se.get("abs_mm"),
        "mean_signed_mm": se.get("mean_mm"),
        "missed_rejects": report["missed_rejects"],
        "wrong_part_hits": report["wrong_part_hits"],
        "escapes": report["escapes"],
        "failsafe_rejects": report["failsafe_rejects"],
        "failsafe_reasons": report["failsafe_reasons"],
        "plc_failsafe_strikes": prog.get("failsafe_strikes", 0),
        "plc_heartbeat_losses": prog.get("heartbeat_losses", 0),
        "budget_misses": report["budget_misses"],
        "reject_fire_failures": report["reject_fire_failures"],
        "bad_encoder_samples": report["bad_encoder_samples"],
        "link": {
            "losses": plc["losses"],
            "timeouts": plc["timeouts"],
            "edges_lost": plc["edges_lost"],
            "read_rtt_ms": _window(plc["read_rtt_ms"]),
            "write_rtt_ms": _window(plc["write_rtt_ms"]),
        },
        "latency_ms": report["latency_ms"],
        "wall_s": round(wall, 1),
    }
    if mode == "node_timed":
        run["fire_rtt_ms"] = _window(plc["fire_rtt_ms"])
        run["pulse_lateness_ms"] = report["pulse_lateness_ms"]
        run["fire_lead_ms"] = round(rig.driver.fire_lead_ns / 1e6, 3)
    else:
        run["late_results"] = prog.get("late_results", 0)
        run["handshake_ms"] = report.get("report_ms")
    run["counts_per_mm"] = cfg.line.counts_per_mm
    run["fire_point_counts"] = geometry.fire_offset_counts
    return run


def bench_config(state: Path) -> Config:
    """``configs/sim-classical.toml`` with its state (taught template) in ``state``."""
    base = load_config(CLASSICAL_CONFIG)
    return sim_config(
        base,
        node={"state_dir": state},
        inspection={
            "classical": {**base.inspection.classical.model_dump(), "template": state / "t.npz"}
        },
    )


async def run_bench(
    parts: int, n: int, speeds: list[float], rate: float, budget_s: float, tick: Tick
) -> dict[str, Any]:
    """Everything; returns the JSON-ready report."""
    t0 = time.monotonic()
    load0 = os.getloadavg()
    cfg = bench_config(Path(tempfile.mkdtemp(prefix="bench-plc-")))
    out: dict[str, Any] = {
        "bench": "plc",
        "machine": {"cpus": os.cpu_count(), "loadavg_at_start": [round(x, 2) for x in load0]},
        "parts_per_run": parts,
        "rate_parts_per_s": rate,
        "decision_budget_ms": round(budget_s * 1e3, 1),
        "round_trips_ms": {},
        "reject_timing": {},
    }
    for transport in TRANSPORTS:
        out["round_trips_ms"][transport] = await round_trips(cfg, transport, n, tick)
    for transport in TRANSPORTS:
        for mode in MODES:
            for speed in speeds:
                run = await timing_run(
                    line_for_speed(cfg, speed, rate, budget_s), parts, transport, mode, tick
                )
                out["reject_timing"].setdefault(transport, {}).setdefault(mode, {})[
                    str(int(speed))
                ] = run
    out["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out["wall_s"] = round(time.monotonic() - t0, 1)
    return out


def _quiet(_: object, method: str, event: Any) -> Any:
    if method in ("debug", "info"):
        raise structlog.DropEvent
    return event


def main() -> None:
    """Command line: run the bench, print the JSON, write it to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", type=int, default=200, help="parts per timing run")
    ap.add_argument("--round-trips", type=int, default=300)
    ap.add_argument("--speeds", type=float, nargs="+", default=[1000.0, 3000.0], help="mm/s")
    ap.add_argument("--rate", type=float, default=20.0, help="parts per second on the belt")
    ap.add_argument(
        "--budget-ms",
        type=float,
        default=300.0,
        help="least belt travel time from camera to reject station (the sim's 300 mm at 1 m/s)",
    )
    ap.add_argument("--out", type=Path, default=Path("bench/out/plc.json"))
    args = ap.parse_args()
    if args.parts < 1 or args.round_trips < 1 or args.rate <= 0 or args.budget_ms <= 0:
        ap.error("--parts and --round-trips must be >= 1, --rate and --budget-ms > 0")
    structlog.configure(
        processors=[_quiet, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    logging.basicConfig(level=logging.ERROR)  # asyncua's per-session notices
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("starting", total=None)

        def tick(what: str, done: int | None) -> None:
            total = args.round_trips if "round trips" in what else args.parts
            bar.update(task, description=what, completed=done or 0, total=total)

        report = asyncio.run(
            run_bench(
                args.parts, args.round_trips, args.speeds, args.rate, args.budget_ms / 1e3, tick
            )
        )
    text = json.dumps(report, indent=1)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
