"""HMI server benchmark: result → client notification latency, and events missed.

Prints one JSON object::

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

from node.hmi import HmiServer, HmiSettings
from node.line.results import percentiles
from node.sim.hmi import MemoryResults, SimControl, panel_process, sample_record
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


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="per combination")
    ap.add_argument("--rates", type=int, nargs="+", default=[10, 50])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 10])
    args = ap.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    import logging

    logging.basicConfig(level=logging.ERROR)  # asyncua's per-session warnings
    json.dump(asyncio.run(main(args.seconds, args.rates, args.clients)), sys.stdout, indent=1)
    print()
