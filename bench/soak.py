"""Soak bench: the node on the simulated line for N minutes; memory, file descriptors, budget.

    python bench/soak.py --minutes 60 [--rate 20] [--out state/soak]

The node runs as in production (sim drivers, the model, the audit store and the
HMI server on a free port) at ``--rate`` parts per second. Every 10 s the
process's resident memory (RSS, with the processes it started: the HMI server,
the sim camera's renderer) and open file descriptors are sampled. Growth is
measured from the end of the first tenth of the run (imports, caches and the
model's arenas have settled by then) to the end. Prints one JSON object and writes
it with an RSS/fd plot (``soak.json``, ``soak.png``) to ``--out``.

Exit status 1 with a one-line reason on stderr when RSS grew by more than
``--max-rss-growth`` (default 5%), file descriptors grew, or any part missed its
budget; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from hil.line import ensure_template, sim_config
from hil.plc_modbus import free_port
from hil.score import config_sha256, machine, model_sha256
from node.app import Node
from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import ConfigError
from node.line.results import PartResult, percentiles
from node.service.logs import configure
from node.wiring import build_components

_SAMPLE_S = 10.0


def rss_mb() -> float:
    """This process's resident set size in MiB (``/proc/self/status`` VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def children_rss_mb(pid: int | None = None) -> float:
    """Resident memory of every process this one started (the HMI server, the sim
    camera's renderer), summed in MiB: a leak there counts as the node's."""
    pid = os.getpid() if pid is None else pid
    total = 0.0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            continue
        for kid in kids:
            try:
                with open(f"/proc/{kid}/status", encoding="ascii") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) / 1024
            except OSError:
                continue
            total += children_rss_mb(kid)
    return total


_LATENCY_SLOTS = 500_000
"""Latencies kept for the percentiles: 7 hours at 20 parts/s."""


class _Counts:
    """A result sink that keeps counts only (a soak must not grow by its own bookkeeping:
    the latencies go into an array written in full before the run starts)."""

    def __init__(self) -> None:
        self.parts = 0
        self.budget_misses = 0
        self.fail_safe: Counter[str] = Counter()
        self._latencies = np.full(_LATENCY_SLOTS, np.nan)
        self._n = 0

    def publish(self, result: PartResult) -> None:
        self.parts += 1
        self.budget_misses += result.budget_miss
        if result.verdict.fail_safe:
            self.fail_safe[result.verdict.reason.value] += 1
        if result.latency_ms is not None and self._n < _LATENCY_SLOTS:
            self._latencies[self._n] = result.latency_ms
            self._n += 1

    @property
    def latencies(self) -> list[float]:
        return [float(x) for x in self._latencies[: self._n]]


async def soak(cfg: Config, minutes: float, progress: Progress) -> dict[str, Any]:
    """Run the node for ``minutes``; sample RSS and fds; return the report."""
    ensure_template(cfg)
    components, _ = build_components(cfg)
    counts = _Counts()
    node = Node(cfg, components, sinks=[counts])
    stop = asyncio.Event()
    samples: list[dict[str, float]] = []
    task = progress.add_task("soak", total=minutes * 60)

    async def sampler() -> None:
        await node.ready.wait()
        t0 = time.monotonic()
        end = t0 + minutes * 60
        while True:
            now = time.monotonic()
            own, kids = rss_mb(), children_rss_mb()
            samples.append(
                {
                    "t_s": round(now - t0, 1),
                    "rss_mb": round(own + kids, 2),
                    "node_rss_mb": round(own, 2),
                    "children_rss_mb": round(kids, 2),
                    "fds": open_fds(),
                }
            )
            progress.update(task, completed=now - t0)
            if now >= end:
                stop.set()
                return
            await asyncio.sleep(min(_SAMPLE_S, end - now))

    async with asyncio.TaskGroup() as tg:
        side = tg.create_task(sampler())
        try:
            await node.run(stop)
        finally:
            side.cancel()
    settle = next((s for s in samples if s["t_s"] >= minutes * 6), samples[0])
    last = samples[-1]
    growth = (last["rss_mb"] - settle["rss_mb"]) / settle["rss_mb"] if settle["rss_mb"] else 0.0
    return {
        "bench": "soak",
        "minutes": minutes,
        "parts": counts.parts,
        "parts_per_s": round(counts.parts / (minutes * 60), 2),
        "budget_misses": counts.budget_misses,
        "failsafe_reasons": dict(counts.fail_safe),
        "latency_ms": percentiles(counts.latencies),
        "rss_mb": {
            "settled": settle["rss_mb"],
            "end": last["rss_mb"],
            "max": max(s["rss_mb"] for s in samples),
        },
        "rss_growth": round(growth, 4),
        "node_rss_mb": {"settled": settle["node_rss_mb"], "end": last["node_rss_mb"]},
        "children_rss_mb": {"settled": settle["children_rss_mb"], "end": last["children_rss_mb"]},
        "fds": {"settled": settle["fds"], "end": last["fds"]},
        "samples": samples,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["samples"]
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([x["t_s"] / 60 for x in s], [x["rss_mb"] for x in s], label="RSS (MiB)")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax2 = ax.twinx()
    ax2.plot([x["t_s"] / 60 for x in s], [x["fds"] for x in s], color="tab:orange", label="fds")
    ax2.set_ylabel("open fds")
    ax.set_title(
        f"soak: {report['parts']} parts, RSS growth {report['rss_growth']:.1%}, "
        f"{report['budget_misses']} budget misses",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def failure(report: dict[str, Any], max_growth: float) -> str | None:
    """Why the soak failed, in one line, or None."""
    if report["rss_growth"] > max_growth:
        return f"RSS grew {report['rss_growth']:.1%} (limit {max_growth:.0%})"
    if report["fds"]["end"] > report["fds"]["settled"]:
        return f"open fds grew from {report['fds']['settled']} to {report['fds']['end']}"
    if report["budget_misses"]:
        return f"{report['budget_misses']} parts missed their budget"
    if not report["parts"]:
        return "the node decided no part at all"
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=20.0, help="parts per second (default 20)")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--out", type=Path, default=Path("state") / "soak")
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    args = p.parse_args()
    if args.minutes <= 0 or args.rate <= 0:
        print("--minutes and --rate must be positive", file=sys.stderr)
        sys.exit(2)
    configure(json=True, level="error", file=sys.stderr)
    try:
        base = load_config(args.config)
        speed = args.rate * base.line.part_pitch_mm
        if speed > base.line.max_speed_mm_s:
            print(
                f"--rate: {args.rate} parts/s is a {speed:g} mm/s belt, over "
                f"line.max_speed_mm_s = {base.line.max_speed_mm_s:g}",
                file=sys.stderr,
            )
            sys.exit(2)
        work = Path(tempfile.mkdtemp(prefix="soak-"))
        cfg = sim_config(
            base,
            node={"state_dir": work},
            sim={"speed_mm_s": speed, "speed_profile": []},
            hmi={"endpoint": f"opc.tcp://127.0.0.1:{free_port()}/lineside/"},
        )
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        sys.exit(2)
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TimeRemainingColumn(), console=console
    ) as progress:
        report = asyncio.run(soak(cfg, args.minutes, progress))
    report |= {
        "machine": machine(),
        "config_sha256": config_sha256(cfg),
        "model_sha256": model_sha256(cfg),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    plot(report, args.out / "soak.png")
    shown = {k: v for k, v in report.items() if k != "samples"}
    print(json.dumps(shown, indent=2))
    why = failure(report, args.max_rss_growth)
    if why is not None:
        print(f"soak failed: {why}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
