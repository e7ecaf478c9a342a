"""The ``lineside`` command line; the only place that calls ``sys.exit``.

Exit codes: 0 done, 1 unexpected error, 2 configuration error (or a resource the
config names that cannot be used at start: a port in use, a read-only folder),
3 camera error, 4 PLC error, 5 model error, 130 interrupted before the node was up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import (
    CameraError,
    ConfigError,
    LinesideError,
    ModelError,
    PlcError,
    StartupError,
)

EXIT_CODES: dict[type[LinesideError], int] = {
    ConfigError: 2,
    StartupError: 2,
    CameraError: 3,
    PlcError: 4,
    ModelError: 5,
}

log = structlog.get_logger("lineside")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lineside", description=__doc__.splitlines()[0])
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--json-logs", action="store_true", help="JSON log lines even in a terminal")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the inspection node")
    run.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    run.add_argument("--no-live", action="store_true", help="no live status table")

    chk = sub.add_parser("check-config", help="validate a config file and list every problem")
    chk.add_argument("config", type=Path)

    cams = sub.add_parser("cameras", help="list reachable GigE Vision / GenTL cameras")
    cams.add_argument(
        "--address",
        action="append",
        default=None,
        metavar="IP",
        help="ask this camera address (unicast; repeatable). Default: broadcast",
    )
    cams.add_argument(
        "--cti",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="GenTL producer for harvesters (repeatable). Default: GENICAM_GENTL64_PATH",
    )
    cams.add_argument(
        "--viky",
        action="store_true",
        help="also ask the viky.cti test producer shipped in the genicam wheel",
    )

    grab = sub.add_parser("grab", help="trigger the configured camera once and save the frame")
    grab.add_argument("config", type=Path)
    grab.add_argument("--out", type=Path, required=True, help="PNG file to write")

    teach = sub.add_parser("teach", help="learn the golden template from good parts")
    teach.add_argument("config", nargs="?", type=Path, default=DEFAULT_CONFIG)
    teach.add_argument("--images", type=Path, help="folder of good-part frames (default: the sim)")
    teach.add_argument("--out", type=Path, help="template file (default: the config's path)")
    teach.add_argument(
        "--if-missing",
        action="store_true",
        help="do nothing if the file exists or the config's backend is not classical",
    )

    from node.audit.cli import add_parsers as add_audit
    from node.cli.model import add_parsers as add_model
    from node.cli.shadow import add_parsers as add_shadow
    from node.fleet.cli import add_parsers as add_fleet
    from node.hmi.users import add_parsers as add_hmi
    from node.web.cli import add_parsers as add_web

    add_model(sub)
    add_shadow(sub)
    add_audit(sub)
    add_hmi(sub)
    add_web(sub)
    add_fleet(sub)
    return p


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``lineside`` console script."""
    args = _parser().parse_args(argv)
    from node.service.logs import configure

    configure(json=True if args.json_logs else None, level=args.log_level)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _cmd_run,
        "check-config": _cmd_check_config,
        "teach": _cmd_teach,
        "cameras": _cmd_cameras,
        "grab": _cmd_grab,
        "hmi": _cmd_hmi,
    }
    handler = handlers.get(args.command) or args.func
    try:
        code = handler(args)
    except LinesideError as exc:
        print(f"lineside: {exc}", file=sys.stderr)
        code = next((c for t, c in EXIT_CODES.items() if isinstance(exc, t)), 1)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


def _cmd_hmi(args: argparse.Namespace) -> int:
    from node.hmi.users import run_cli

    return run_cli(args)


def _cmd_check_config(args: argparse.Namespace) -> int:
    """Validate the file; with a model backend also open and verify its package (files,
    manifest digest, pin, signature, input size and scale) without running it."""
    try:
        cfg = load_config(args.config)
        if cfg.inspection.recipe.zone_image is not None:  # its colours must be in the image
            from node.recipe.zones import ZoneMap

            ZoneMap(
                cfg.inspection.recipe.zones,
                cfg.inspection.mm_per_px,
                cfg.inspection.recipe.zone_image,
            )
    except ConfigError as exc:
        return _print_problems(args.config, exc.problems)
    model = ""
    if cfg.inspection.backend != "classical":
        from node.wiring import check_model_package

        check = check_model_package(cfg)
        problems = list(check.problems)
        shadow = None
        if cfg.inspection.shadow.package is not None:
            shadow = check_model_package(cfg, shadow=True)
            problems += shadow.problems
        if problems or check.package is None:
            return _print_problems(args.config, [f"{args.config}: {p}" for p in problems])
        pinned = "pinned" if cfg.inspection.model.sha256 else "not pinned"
        model = (
            f"\n  model {cfg.inspection.model.package}: package_sha256 {check.package.sha256} "
            f"({pinned}; {check.signature})"
        )
        if shadow is not None and shadow.package is not None:
            model += (
                f"\n  shadow {cfg.inspection.shadow.package}: package_sha256 "
                f"{shadow.package.sha256} ({shadow.signature}; judges beside it, never acts)"
            )
    print(
        f"{args.config}: ok ({cfg.node.name}, {cfg.camera.driver} camera, "
        f"{cfg.inspection.backend} backend){model}"
    )
    return 0


def _print_problems(config: Path, problems: Sequence[str]) -> int:
    print(f"{config}: {len(problems)} problem(s)", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def _cmd_teach(args: argparse.Namespace) -> int:
    from rich.progress import track

    from node.cli.teach import teach_template
    from node.sim.line import teach_images_from_sim
    from node.wiring import read_teach_images

    cfg = load_config(args.config)
    insp = cfg.inspection
    out: Path = args.out or insp.classical.template
    if args.if_missing and out.is_file():
        print(f"{out} exists; not teaching again")
        return 0
    if args.if_missing and insp.backend != "classical":
        print(f"the {insp.backend} backend judges; the classical template is not needed")
        return 0
    if args.images is not None:
        try:
            frames = read_teach_images(args.images)
        except (OSError, ValueError) as exc:
            raise ConfigError([f"--images: {exc}"]) from exc
        source = str(args.images)
    elif cfg.camera.driver == "sim":
        frames = teach_images_from_sim(cfg, insp.classical.teach_parts)
        source = "the simulated line"
    else:
        raise ConfigError(["--images: required when the camera is not simulated"])
    progress = track(range(len(frames)), description="learning good parts", transient=True)
    used = teach_template(cfg, frames, out, progress)
    print(f"taught {out} from {used} good parts ({source})")
    return 0


def _cmd_cameras(args: argparse.Namespace) -> int:
    from drivers.camera.cli import list_cameras, viky_cti

    cti: list[Path] = list(args.cti)
    if args.viky:
        producer = viky_cti()
        if producer is None:
            raise ConfigError(["--viky: the genicam wheel with viky.cti is not installed"])
        cti.append(producer)
    found = list_cameras(aravis_addresses=args.address, cti_files=cti)
    if not found:
        print("no cameras found")
        return 0
    rows = [("backend", "vendor", "model", "serial", "address", "name")]
    rows += [(d.backend, d.vendor, d.model, d.serial, d.address, d.user_name) for d in found]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _cmd_grab(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if cfg.camera.driver == "sim":
        raise ConfigError([f"{args.config}: camera.driver: grab needs a real camera, not 'sim'"])
    return asyncio.run(_grab(cfg, args.out))


async def _grab(cfg: Config, out: Path) -> int:
    from drivers.camera.base import FrameStatus
    from drivers.camera.cli import write_png
    from node.wiring import open_camera

    async with open_camera(cfg) as cam:
        frames = cam.frames()
        await cam.trigger(0, 0)
        async with asyncio.timeout(cfg.camera.timeout_ms / 1000 + 5.0):
            frame = await anext(aiter(frames))
    if frame.status is not FrameStatus.COMPLETE:
        raise CameraError(
            f"camera ({cfg.camera.driver}): frame {frame.status.value}: {frame.detail}"
        )
    try:
        write_png(frame, out)
    except OSError as exc:
        raise LinesideError(f"--out: cannot write {out}: {exc.strerror}") from exc
    h, w = frame.pixels.shape[:2]
    print(f"saved {out}: {w}x{h} {frame.pixel_format}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    live = sys.stdout.isatty() and not args.no_live and not args.json_logs
    return asyncio.run(_run(cfg, live=live, config_path=args.config))


async def _run(cfg: Config, *, live: bool, config_path: Path | None = None) -> int:
    from node.app import Node
    from node.cli.shadow import promote
    from node.north.commands import FleetOps
    from node.service.sdnotify import SystemdNotifier, watchdog_interval_s
    from node.wiring import build_components, open_shadow

    components, _ = build_components(cfg)
    # fleet commands rewrite the config file the node came from, as `lineside shadow` does
    fleet = FleetOps(config_path, open_candidate=open_shadow, promote=promote)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)

    on_status: Callable[[dict[str, Any]], None]
    if live:
        from rich.live import Live

        from node.cli.status_view import render_status

        live_view = Live(auto_refresh=False, transient=False)

        def on_status(snap: dict[str, Any]) -> None:
            live_view.update(render_status(cfg.node.name, snap), refresh=True)

        live_view.start()
    else:
        live_view = None

        def on_status(snap: dict[str, Any]) -> None:
            log.info("node_status", **snap)

    with SystemdNotifier(os.environ) as notifier:
        node = Node(
            cfg,
            components,
            notifier=notifier,
            on_status=on_status,
            watchdog_interval_s=watchdog_interval_s(os.environ),
            fleet=fleet,
        )
        try:
            summary = await node.run(stop)
        finally:
            if live_view is not None:
                live_view.stop()
    print(json.dumps({"summary": {**summary.__dict__}}, indent=2, default=str))
    return 0


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("stop_requested", signal=sig.name)
    stop.set()


if __name__ == "__main__":
    main()
