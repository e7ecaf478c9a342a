"""Pipeline bench: run the node headless on the simulated line, print one JSON object.

    python bench/pipeline.py --parts 2000 --rate 20

``--rate`` is parts per second: the belt runs at ``rate × part_pitch_mm``; a
rate whose belt would run faster than the config's ``line.max_speed_mm_s`` is
refused unless ``--allow-overspeed`` asks for it on purpose. The keys are
defined in ``hil.score.score``: every part the belt carried past the reject
station is counted, tracked or not. The run is real time, so 2000 parts at
20 parts/s take about two minutes. The JSON also names the machine and the
hashes of the effective config and of the model (package manifest or
template). Exit status 1, with a one-line reason on stderr, when any part
passed unjudged or none was decided (the JSON still prints).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hil.line import default_template_path, run_line, sim_config
from hil.plc_modbus import free_port
from hil.score import config_sha256, machine, model_sha256, run_failure
from node.config import DEFAULT_CONFIG, load_config
from node.errors import ConfigError
from node.line.results import PartResult
from node.service.logs import configure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", type=int, default=2000)
    p.add_argument("--rate", type=float, default=20.0, help="parts per second")
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
    args = p.parse_args()
    if args.parts < 1 or args.rate <= 0:
        p.error("--parts must be ≥ 1 and --rate > 0")
    configure(json=True, level="error", file=sys.stderr)
    try:
        base = load_config(args.config)
    except ConfigError as exc:
        p.error(f"{args.config}: {'; '.join(exc.problems)}")
    belt = args.rate * base.line.part_pitch_mm
    if belt > base.line.max_speed_mm_s and not args.allow_overspeed:
        p.error(
            f"--rate {args.rate:g}: the belt would run at {belt:g} mm/s, over "
            f"line.max_speed_mm_s = {base.line.max_speed_mm_s:g} in {args.config} "
            "(--allow-overspeed runs it on purpose)"
        )
    # an overspeed belt is driven directly: no valid config describes one
    sim = {"speed_mm_s": min(belt, base.line.max_speed_mm_s)}
    if args.defect_rate is not None:
        sim["defect_rate"] = args.defect_rate
    if args.seed is not None:
        sim["seed"] = args.seed
    cfg = sim_config(base, sim=sim)
    template = default_template_path(cfg.node.state_dir, cfg)
    # the HMI server (when the config has it) listens on a free port, no client connected
    hmi = {"enabled": False} if args.no_hmi else {"endpoint": f"opc.tcp://127.0.0.1:{free_port()}/"}
    cfg = sim_config(
        cfg,
        inspection={"classical": {**cfg.inspection.classical.model_dump(), "template": template}},
        hmi=hmi,
    )
    t0 = time.monotonic()
    with Progress(
        TextColumn("parts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not sys.stderr.isatty(),
    ) as bar:
        task = bar.add_task("parts", total=args.parts)

        def tick(_: PartResult) -> None:
            bar.advance(task)

        report, _, _ = asyncio.run(run_line(cfg, args.parts, on_result=tick, belt_mm_s=belt))
    report = {
        "bench": "pipeline",
        "rate": args.rate,
        "belt_mm_s": belt,
        "wall_s": round(time.monotonic() - t0, 1),
        "backend": cfg.inspection.backend,
        "hmi": cfg.hmi.enabled,
        "machine": machine(),
        "config_sha256": config_sha256(cfg),
        "model_sha256": model_sha256(cfg),
        **report,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failure = run_failure(report)
    if failure is not None:
        print(f"pipeline bench: {failure}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
