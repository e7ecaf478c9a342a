"""Pipeline bench: run the node headless on the simulated line, print one JSON object.

    python bench/pipeline.py --parts 2000 --rate 20
    python bench/pipeline.py --parts 1500 --curve 20,50,100,150 --plot curve.png

``--curve`` runs one line per rate and reports each as a point (``points``),
the way the node degrades as the rate rises; ``--plot`` draws the curve
(verdict latency, fail-safe share and budget use against the rate) as a PNG.
A curve point whose belt would exceed ``line.max_speed_mm_s`` runs a line
whose maximum is raised to that belt (``max_speed_mm_s`` in the point says so):
the curve measures the node, not the config's rated belt.

``--rate`` is parts per second: the belt runs at ``rate × part_pitch_mm``; a
rate whose belt would run faster than the config's ``line.max_speed_mm_s`` is
refused unless ``--allow-overspeed`` asks for it on purpose. The keys are
defined in ``hil.score.score``: every part the belt carried past the reject
station is counted, tracked or not. The run is real time, so 2000 parts at
20 parts/s take about two minutes. The JSON also names the machine and the
hashes of the effective config and of the model (package manifest or
template). Exit status 1, with a one-line reason on stderr, when any part
passed unjudged or none was decided (the JSON still prints).

``--web N`` runs ``lineside web`` beside the node with N headless Chromium
pages on ``/live`` (see ``bench/webload.py``): they are attached while the
belt stands still, so their start-up is not in the run, and the JSON gets a
``web`` object (cards each page received, the web feed's figures, CPU
seconds of the web process and of the browsers during the run).
``--compare-web N`` runs the same line without and with them, ``--rounds``
times each in alternating order (without, with, with, without, ...), and
summarises what the web cost the node:

    python bench/pipeline.py --rate 50 --parts 2000 --compare-web 2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from webload import WebLoad, WebLoadError

from hil.line import default_template_path, run_line, sim_config
from hil.plc_modbus import free_port
from hil.procstat import machine_busy_s
from hil.score import config_sha256, machine, model_sha256, run_failure
from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import ConfigError
from node.line.results import PartResult
from node.service.logs import configure
from node.service.priority import set_nice


def run_rate(
    base: Config,
    rate: float,
    parts: int,
    *,
    no_hmi: bool,
    sim: dict[str, Any],
    web: int = 0,
    browsers_nice: int = 0,
) -> dict[str, Any]:
    """One line at ``rate`` parts/s for ``parts`` parts (a belt of ``rate × part_pitch_mm``,
    driven directly); the scored report with the run's identity. ``web``: that many
    browsers on ``lineside web`` beside it (0: no web view), ``browsers_nice`` below normal
    CPU priority. Raises ``WebLoadError``."""
    belt = rate * base.line.part_pitch_mm
    # an overspeed belt is driven directly: no valid config describes one
    cfg = sim_config(base, sim={**sim, "speed_mm_s": min(belt, base.line.max_speed_mm_s)})
    template = default_template_path(cfg.node.state_dir, cfg)
    # the HMI server (when the config has it) listens on a free port, no client connected
    hmi: dict[str, Any] = {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}/"}
    if no_hmi:
        hmi = {"enabled": False}
    elif web:
        hmi["enabled"] = True  # the web view follows the node through it
    cfg = sim_config(
        cfg,
        inspection={"classical": {**cfg.inspection.classical.model_dump(), "template": template}},
        hmi=hmi,
    )
    t0 = time.monotonic()
    cpu0, busy0 = _process_cpu_s(), machine_busy_s()
    load = WebLoad(cfg, web, browsers_nice) if web else None
    with (
        contextlib.ExitStack() as stack,
        Progress(
            TextColumn(f"{rate:g} parts/s"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=True,
            disable=not sys.stderr.isatty(),
        ) as bar,
    ):
        task = bar.add_task("parts", total=parts)

        def tick(_: PartResult) -> None:
            bar.advance(task)

        attach = None
        if load is not None:
            stack.enter_context(load)  # stops the web and the browsers, also on error

            async def attach() -> None:  # off the node's loop: it serves the web meanwhile
                await asyncio.to_thread(load.attach)

        report, _, _ = asyncio.run(
            run_line(cfg, parts, on_result=tick, belt_mm_s=belt, before_belt=attach)
        )
        web_s = 0.0
        if load is not None:
            report["web"] = load.figures()
            web_s = report["web"]["cpu_s"]["web_total"] + report["web"]["cpu_s"]["browsers_total"]
        node_s, busy_s = _process_cpu_s() - cpu0, machine_busy_s() - busy0
    return {
        "bench": "pipeline",
        "rate": rate,
        "belt_mm_s": belt,
        "max_speed_mm_s": cfg.line.max_speed_mm_s,
        "wall_s": round(time.monotonic() - t0, 1),
        "backend": cfg.inspection.backend,
        "hmi": cfg.hmi.enabled,
        "machine": machine(),
        "config_sha256": config_sha256(cfg),
        "model_sha256": model_sha256(cfg),
        # the node (this process) and everything else on the machine, over the whole run
        "cpu_s": {
            "node": round(node_s, 1),
            "web_and_browsers": round(web_s, 1),
            "others": round(max(0.0, busy_s - node_s - web_s), 1),
            "machine_busy": round(busy_s, 1),
        },
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        **report,
    }


def _process_cpu_s() -> float:
    """CPU seconds of this process (the node, with the bench's own small share)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compare_web(
    base: Config,
    rate: float,
    parts: int,
    browsers: int,
    rounds: int,
    sim: dict[str, Any],
    browsers_nice: int = 0,
) -> dict[str, Any]:
    """The same line without and with ``browsers`` on the web view, ``rounds`` times each,
    in alternating order (A B B A ...) so a drift of the machine's load does not land on
    one side; the runs and a summary of what the web cost."""
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    order: list[str] = []
    for r in range(rounds):
        pair = (0, browsers) if r % 2 == 0 else (browsers, 0)
        for n in pair:
            side = "with" if n else "without"
            one = run_rate(
                base, rate, parts, no_hmi=False, sim=sim, web=n, browsers_nice=browsers_nice
            )
            runs[side].append(one)
            order.append(side)
    p99 = {k: [one["latency_ms"]["p99"] for one in v] for k, v in runs.items()}
    failsafe = {k: [one["failsafe_rejects"] for one in v] for k, v in runs.items()}
    median_p99 = {k: statistics.median(v) for k, v in p99.items()}
    median_fs = {k: statistics.median(v) for k, v in failsafe.items()}
    summary = {
        "rate": rate,
        "parts": parts,
        "browsers": browsers,
        "browsers_nice": browsers_nice,
        "rounds": rounds,
        "order": order,
        "p99_ms": p99,
        "median_p99_ms": median_p99,
        "p99_ratio": (
            round(median_p99["with"] / median_p99["without"], 3) if median_p99["without"] else None
        ),
        "failsafe_rejects": failsafe,
        "extra_failsafes": median_fs["with"] - median_fs["without"],
        "budget_misses": {k: [one["budget_misses"] for one in v] for k, v in runs.items()},
        "node_cpu_s": {k: [one["cpu_s"]["node"] for one in v] for k, v in runs.items()},
        "others_cpu_s": {k: [one["cpu_s"]["others"] for one in v] for k, v in runs.items()},
        "web_cpu_s": [one["web"]["cpu_s"]["web"] for one in runs["with"]],
        "browsers_cpu_s": [one["web"]["cpu_s"]["browsers"] for one in runs["with"]],
        "cards": [[c["results"] for c in one["web"]["cards"]] for one in runs["with"]],
        "loadavg": {k: [one["loadavg"] for one in v] for k, v in runs.items()},
    }
    return {"bench": "pipeline-compare-web", **runs, "summary": summary}


def curve_point(report: dict[str, Any]) -> dict[str, Any]:
    """What the curve keeps of one rate's report."""
    parts = max(1, report["parts"])
    failsafe = report["failsafe_rejects"]
    return {
        "rate": report["rate"],
        "parts_per_s": report["parts_per_s"],
        "max_speed_mm_s": report["max_speed_mm_s"],
        **({"web": report["web"]} if "web" in report else {}),
        "latency_ms": report["latency_ms"],
        "sentence_ms": report["sentence_ms"],
        "budget_used": report["budget_used"],
        "failsafe_share": round(failsafe / parts, 4),
        "failsafe_reasons": report["failsafe_reasons"],
        "budget_misses": report["budget_misses"],
        "missed_rejects": report["missed_rejects"],
        "escapes": report["escapes"],
        "false_rejects": report["false_rejects"],
        "scheduler_lateness_ms": report["scheduler_lateness_ms"],
    }


def plot_curve(points: list[dict[str, Any]], path: Path, title: str) -> None:
    """Verdict latency (p50, p99, max), the fail-safe share and budget use p99 by rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        ax1.plot(rates, [p["latency_ms"][key] for p in points], style, label=f"verdict {key}")
    sentence = [p["sentence_ms"]["p99"] if p["sentence_ms"]["parts"] else math.nan for p in points]
    ax1.plot(rates, sentence, "d--", label="sentence p99 (in time)")
    ax1.axhline(20.0, color="grey", lw=0.8, ls="--", label="20 ms target (p99)")
    for p in points:  # the latencies are those of the verdicts in time: say what is not
        if p["failsafe_share"] > 0:
            ax1.annotate(
                f"{100 * p['failsafe_share']:.0f} % fail-safe",
                (p["rate"], p["latency_ms"]["p99"]),
                textcoords="offset points",
                xytext=(-95, -28),
                fontsize=8,
                color="firebrick",
            )
    ax1.set_xlabel("parts per second")
    ax1.set_ylabel("trigger → verdict (ms, verdicts in time)")
    ax1.legend(fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.plot(rates, [100 * p["failsafe_share"] for p in points], "o-", label="fail-safe rejects %")
    ax2.plot(
        rates, [100 * p["budget_used"]["p99"] for p in points], "s-", label="budget used p99 %"
    )
    ax2.axhline(15.0, color="grey", lw=0.8, ls="--", label="15 % budget target")
    ax2.set_xlabel("parts per second")
    ax2.set_ylabel("%")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=2000)
    p.add_argument("--rate", type=float, default=20.0, help="parts per second")
    p.add_argument(
        "--curve", help="comma-separated rates (parts/s): one line each, reported as a curve"
    )
    p.add_argument("--plot", type=Path, help="with --curve: draw it to this PNG")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument("--defect-rate", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--no-hmi", action="store_true", help="run without the HMI OPC UA server")
    p.add_argument(
        "--allow-overspeed",
        action="store_true",
        help="run a belt faster than line.max_speed_mm_s (a fault scenario, on purpose)",
    )
    p.add_argument(
        "--web",
        type=int,
        default=0,
        metavar="N",
        help="run lineside web beside the node with N headless browsers on /live",
    )
    p.add_argument(
        "--compare-web",
        type=int,
        metavar="N",
        help="run the line without and with --web N, --rounds times each, and compare",
    )
    p.add_argument("--rounds", type=int, default=2, help="with --compare-web (default 2)")
    p.add_argument(
        "--browsers-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the --web browsers N below normal CPU priority (0-19, default 0)",
    )
    p.add_argument(
        "--node-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the node at this nice, as a unit's Nice= would (systemd/lineside.service "
        "has -5); under `setsid` its whole session gets it too (autogroup)",
    )
    args = p.parse_args()
    if not -20 <= args.node_nice <= 19:
        p.error(f"--node-nice {args.node_nice}: expected -20 to 19")
    rates = [args.rate]
    if args.curve is not None:
        try:
            rates = [float(r) for r in args.curve.split(",")]
        except ValueError:
            p.error(f"--curve {args.curve!r}: expected comma-separated numbers, e.g. 20,50,100")
    if args.plot is not None and args.curve is None:
        p.error("--plot draws a curve: give --curve too")
    if args.parts < 1 or min(rates) <= 0:
        p.error("--parts must be ≥ 1 and every rate > 0")
    browsers = args.web if args.compare_web is None else args.compare_web
    if not 0 <= args.browsers_nice <= 19:
        p.error(f"--browsers-nice {args.browsers_nice}: expected 0 to 19")
    if browsers < 0 or args.rounds < 1:
        p.error("--web and --compare-web take a number of browsers ≥ 0; --rounds ≥ 1")
    if args.compare_web is not None and (args.curve is not None or args.web):
        p.error("--compare-web runs its own pair of lines: give neither --curve nor --web")
    if (browsers or args.compare_web is not None) and args.no_hmi:
        p.error("--web follows the node through its HMI server: drop --no-hmi")
    configure(json=True, level="error", file=sys.stderr)
    try:
        base = load_config(args.config)
    except ConfigError as exc:
        p.error(f"{args.config}: {'; '.join(exc.problems)}")
    if browsers and not base.audit.enabled:
        p.error(f"--web reads the audit store: audit.enabled is false in {args.config}")
    sim: dict[str, Any] = {}
    if args.defect_rate is not None:
        sim["defect_rate"] = args.defect_rate
    if args.seed is not None:
        sim["seed"] = args.seed
    if args.curve is None:
        belt = args.rate * base.line.part_pitch_mm
        if belt > base.line.max_speed_mm_s and not args.allow_overspeed:
            p.error(
                f"--rate {args.rate:g}: the belt would run at {belt:g} mm/s, over "
                f"line.max_speed_mm_s = {base.line.max_speed_mm_s:g} in {args.config} "
                "(--allow-overspeed runs it on purpose)"
            )
    priority = node_priority(args.node_nice) if args.node_nice else None
    try:
        report, failure = _run(args, base, rates, browsers, sim)
    except WebLoadError as exc:
        print(f"pipeline bench: --web: {exc}", file=sys.stderr)
        sys.exit(1)
    report["node_priority"] = priority
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if failure is not None:
        print(f"pipeline bench: {failure}", file=sys.stderr)
        sys.exit(1)


def node_priority(nice: int) -> dict[str, Any]:
    """Run this process (the node) at ``nice`` and, leading its own session (``setsid``),
    the session too (``node.service.priority``): the browsers and the web view lead
    sessions of their own. What was done, for the report. Raises ``OSError`` when a
    negative nice is not allowed."""
    return {"nice": nice, "session_nice": set_nice(nice)}


def _run(
    args: argparse.Namespace,
    base: Config,
    rates: list[float],
    browsers: int,
    sim: dict[str, Any],
) -> tuple[dict[str, Any], str | None]:
    """The runs the command line asks for: the report and why it failed (None: it did not)."""
    if args.compare_web is not None:
        report = compare_web(
            base, args.rate, args.parts, browsers, args.rounds, sim, args.browsers_nice
        )
        failure = None
        for one in report["without"] + report["with"]:
            failure = failure or run_failure(one)
        return report, failure
    if args.curve is None:
        report = run_rate(
            base,
            args.rate,
            args.parts,
            no_hmi=args.no_hmi,
            sim=sim,
            web=browsers,
            browsers_nice=args.browsers_nice,
        )
        return report, run_failure(report)
    points, failure = [], None
    for rate in rates:
        belt = rate * base.line.part_pitch_mm
        line = base
        if belt > base.line.max_speed_mm_s:  # the curve measures the node, not the rating
            line = sim_config(base, line={"max_speed_mm_s": belt})
        one = run_rate(
            line,
            rate,
            args.parts,
            no_hmi=args.no_hmi,
            sim=sim,
            web=browsers,
            browsers_nice=args.browsers_nice,
        )
        points.append(curve_point(one))
        failure = failure or run_failure(one)
    report = {
        "bench": "pipeline-curve",
        "parts_per_rate": args.parts,
        "backend": base.inspection.backend,
        "hmi": not args.no_hmi and base.hmi.enabled,
        "machine": machine(),
        "model_sha256": model_sha256(base),
        "points": points,
    }
    if args.plot is not None:
        plot_curve(
            points,
            args.plot,
            f"bench/pipeline.py --curve, {args.parts} parts a rate, "
            f"{report['backend']}, {report['machine']['cores']} cores",
        )
    return report, failure


if __name__ == "__main__":
    main()
