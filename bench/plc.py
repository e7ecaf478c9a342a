"""PLC link benchmark: round trips per transport and reject timing error per reject mode.

Prints one JSON object::

    {"round_trips_ms": {"modbus": {"read": {p50,p99}, "write": ..., "fire": ...}, "opcua": ...},
     "reject_timing": {"modbus": {"node_timed": {"1000": {counts, ms, mm}, "3000": ...}, ...}}}

The emulator runs in its own process (``hil.plc_process``) as a PLC would. Timing
error is |struck part centre − reject station| over every reject, p50/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import structlog

from drivers.plc.base import RejectCommand
from hil.line import sim_config
from hil.plc_modbus import free_port
from hil.plc_process import EmulatorProcess
from hil.plc_rig import driver_for, run_plc_line
from node.config import DEFAULT_CONFIG, Config, load_config


async def round_trips(cfg: Config, transport: str, n: int) -> dict[str, Any]:
    """Read, write and pulse round trips against the emulator (belt parked)."""
    port = free_port()
    async with EmulatorProcess(cfg.model_dump(mode="python"), transport, port):  # type: ignore[arg-type]
        drv = driver_for(transport, "node_timed", port, cfg)  # type: ignore[arg-type]
        async with drv:
            for i in range(n):
                if transport == "modbus":
                    await drv.read_inputs()  # type: ignore[union-attr]
                else:
                    await drv.probe_read()  # type: ignore[union-attr]
                await drv.heartbeat(bool(i % 2))
                await asyncio.to_thread(drv.fire, RejectCommand(i, 0, "defect"))
        c = drv.counters
        return {
            k: {q: v for q, v in getattr(c, f"{k}_rtt").summary_ms().items() if q in ("p50", "p99")}
            for k in ("read", "write", "fire")
        }


async def main(parts: int, n: int, speeds: list[float]) -> dict[str, Any]:
    """Run everything; return the JSON-ready report."""
    state = Path(tempfile.mkdtemp(prefix="bench-plc-"))
    base = load_config(DEFAULT_CONFIG)
    cfg = sim_config(
        base,
        node={"state_dir": state},
        inspection={
            "classical": {**base.inspection.classical.model_dump(), "template": state / "t.npz"}
        },
    )
    out: dict[str, Any] = {"round_trips_ms": {}, "reject_timing": {}}
    for transport in ("modbus", "opcua"):
        out["round_trips_ms"][transport] = await round_trips(cfg, transport, n)
    for transport in ("modbus", "opcua"):
        for mode in ("node_timed", "plc_tracked"):
            for speed in speeds:
                run_cfg = sim_config(
                    cfg,
                    sim={
                        "speed_mm_s": speed,
                        "defect_rate": 0.3,
                        "seed": 2,
                        "placement_jitter_mm": 0.0,
                    },
                )
                report, _ = await run_plc_line(
                    run_cfg,
                    parts,
                    transport=transport,  # type: ignore[arg-type]
                    mode=mode,
                )  # type: ignore[arg-type]
                se = report["strike_error"]
                out["reject_timing"].setdefault(transport, {}).setdefault(mode, {})[
                    str(int(speed))
                ] = {
                    "rejects": se.get("n", 0),
                    "counts": se.get("abs_counts"),
                    "ms": se.get("abs_ms"),
                    "mm": se.get("abs_mm"),
                    "mean_signed_mm": se.get("mean_mm"),
                    "missed_rejects": report["missed_rejects"],
                    "parts": report["parts"],
                }
    return out


def _quiet(_: object, method: str, event: Any) -> Any:
    if method in ("debug", "info"):
        raise structlog.DropEvent
    return event


if __name__ == "__main__":
    structlog.configure(
        processors=[_quiet, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", type=int, default=150)
    ap.add_argument("--round-trips", type=int, default=300)
    ap.add_argument("--speeds", type=float, nargs="+", default=[1000.0, 3000.0])
    args = ap.parse_args()
    json.dump(asyncio.run(main(args.parts, args.round_trips, args.speeds)), sys.stdout, indent=1)
    print()
