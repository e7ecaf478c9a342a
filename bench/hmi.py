"""HMI server benchmarks: notification latency and events missed; or the line under a flood.

``python bench/hmi.py --flood 10 --seconds 20`` runs the node on the simulated
line twice, for the same parts: once with no HMI client, once with 10 anonymous
clients (a process of their own, at low priority: they stand for panel PCs
elsewhere) that subscribe at 10 ms and browse the whole address space without
pause. It prints one JSON object: each run's fail-safe rejects (by reason), part
latency p50/p99/max and scheduler lateness, the clients' counters (requests,
refused by the server's limits, reconnects), and ``extra_failsafes`` (the
target is 0) and the latency p99 difference.

Without ``--flood`` it prints one JSON object::

    {"parts_per_s": {"10": {"clients": {"1": {"latency_ms": {p50, p99, max},
                                             "events_missed": 0, "events": n}, "10": ...}},
                     "50": ...},
     "seconds": s, "device": "..."}

Latency runs from ``HmiServer.publish()`` to the ResultReadyEvent's arrival in
an asyncua client. The clients run in a process of their own (one event loop,
like a panel PC's), the server in this one; both clocks are the host's
``CLOCK_MONOTONIC``. Each client subscribes to the VisionSystem's
ResultReadyEvents at a 10 ms publishing interval.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from hil.line import default_template_path, run_line, sim_config
from hil.plc_modbus import free_port
from hil.score import machine
from node.config import DEFAULT_CONFIG, load_config
from node.hmi import HmiServer, HmiSettings
from node.line.results import percentiles
from node.service.logs import configure
from node.sim.hmi import MemoryResults, SimControl, flood_process, panel_process, sample_record
from node.state import VisionState

NODESET = Path(__file__).resolve().parents[1] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"


async def one_run(rate: int, n_clients: int, seconds: float) -> dict[str, Any]:
    """Publish at ``rate`` parts/s for ``seconds`` to ``n_clients`` subscribed clients."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = HmiSettings(
            endpoint="opc.tcp://127.0.0.1:0/lineside/",
            nodeset=NODESET,
            security_policies=[],
        )
        results = MemoryResults()
        async with HmiServer(
            settings, state_dir=Path(tmp), control=SimControl(), results=results, node_name="b"
        ) as hmi:
            hmi.set_state(VisionState.INITIALIZED)
            hmi.set_state(VisionState.READY)
            hmi.set_state(VisionState.CONTINUOUS)
            ctx = mp.get_context("spawn")
            here, there = ctx.Pipe()
            proc = ctx.Process(target=panel_process, args=(hmi.endpoint_url, n_clients, there))
            proc.start()
            loop = asyncio.get_running_loop()
            assert await loop.run_in_executor(None, here.recv) == "ready"
            sent: dict[str, int] = {}
            n = int(rate * seconds)
            t0 = loop.time()
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
                rec = sample_record(i, reject=i % 5 == 0)
                results.add(rec)
                sent[str(i)] = time.monotonic_ns()
                hmi.publish(rec, None, {"inspected": i + 1})
            await hmi.drain()
            behind_s = loop.time() - t0 - n / rate
            here.send("stop")
            arrivals: list[dict[str, int]] = await loop.run_in_executor(None, here.recv)
            proc.join(10)
    lat = [(t - sent[p]) / 1e6 for a in arrivals for p, t in a.items() if p in sent]
    return {
        "latency_ms": percentiles(lat),
        "events": n,
        "events_missed": n * n_clients - sum(len(a) for a in arrivals),
        "dropped_by_server": hmi.dropped,
        "server_behind_s": round(max(0.0, behind_s), 3),
    }


async def main(seconds: float, rates: list[int], clients: list[int]) -> dict[str, Any]:
    """Every combination of ``rates`` and ``clients``."""
    out: dict[str, Any] = {"seconds": seconds, "parts_per_s": {}}
    for rate in rates:
        per = out["parts_per_s"][str(rate)] = {"clients": {}}
        for k in clients:
            per["clients"][str(k)] = await one_run(rate, k, seconds)
    out["device"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus"
    return out


async def line_run(cfg: Any, parts: int, clients: int, client_nice: int) -> dict[str, Any]:
    """The sim line for ``parts`` parts, with ``clients`` flooding its HMI server."""
    proc = None
    if clients:
        ctx = mp.get_context("spawn")
        here, there = ctx.Pipe()
        url = cfg.hmi.endpoint.replace("0.0.0.0", "127.0.0.1")
        proc = ctx.Process(target=flood_process, args=(url, clients, there, client_nice))
        proc.start()
        assert here.recv() == "ready"
    try:
        report, node, _ = await run_line(cfg, parts)
    finally:
        counts: dict[str, int] = {}
        if proc is not None:
            here.send("stop")
            if here.poll(30):
                counts = here.recv()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return {
        "clients": clients,
        "parts": report["parts"],
        "failsafe_rejects": report["failsafe_rejects"],
        "failsafe_reasons": report["failsafe_reasons"],
        "latency_ms": report["latency_ms"],
        "scheduler_lateness_ms": report["scheduler_lateness_ms"],
        "hmi": node.status().get("hmi"),
        "client_counts": counts,
    }


async def flood(args: argparse.Namespace) -> dict[str, Any]:
    """Baseline and flooded runs of the sim line; see the module docstring."""
    base = load_config(args.config)
    belt = min(args.rate * base.line.part_pitch_mm, base.line.max_speed_mm_s)
    cfg = sim_config(base, sim={"speed_mm_s": belt, "seed": 7})
    template = default_template_path(cfg.node.state_dir, cfg)
    cfg = sim_config(
        cfg,
        inspection={"classical": {**cfg.inspection.classical.model_dump(), "template": template}},
        hmi={"enabled": True, "endpoint": f"opc.tcp://127.0.0.1:{free_port()}/lineside/"},
    )
    parts = max(1, int(args.seconds * belt / cfg.line.part_pitch_mm))
    quiet = await line_run(cfg, parts, 0, args.client_nice)
    busy = await line_run(cfg, parts, args.flood, args.client_nice)
    return {
        "bench": "hmi_flood",
        "seconds": args.seconds,
        "parts": parts,
        "belt_mm_s": belt,
        "backend": cfg.inspection.backend,
        "without_clients": quiet,
        "with_clients": busy,
        "extra_failsafes": busy["failsafe_rejects"] - quiet["failsafe_rejects"],
        "latency_p99_delta_ms": round(busy["latency_ms"]["p99"] - quiet["latency_ms"]["p99"], 2),
        "machine": machine(),
    }


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per combination / per run")
    ap.add_argument("--rates", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10])
    ap.add_argument("--flood", type=int, default=0, help="clients flooding the running node")
    ap.add_argument("--rate", type=float, default=20.0, help="--flood: parts per second")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="--flood: node config")
    ap.add_argument("--client-nice", type=int, default=10, help="--flood: clients' nice")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.ERROR)  # asyncua's per-session warnings
    if args.flood:
        configure(json=True, level="error", file=sys.stderr)
        out = asyncio.run(flood(args))
    else:
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        out = asyncio.run(main(args.seconds, args.rates, args.clients))
    json.dump(out, sys.stdout, indent=1)
    print()
