"""Run the node on a PLC config against the matching PLC emulator, with the live status view.

    python -m hil.plc_line configs/modbus.toml [--parts N] [--no-live]

The config is used as it stands: ``[plc]`` says the transport and where the
PLC listens (Modbus ``host``/``port``, OPC UA ``url``); the emulator
(``hil.plc_process``) is started there, for the config's line geometry, and
takes its counter from the same simulated belt the sim camera photographs.
The node runs exactly as ``lineside run`` would run it on that config, until
Ctrl-C (or SIGTERM) or until ``--parts`` parts have a result; then the summary
and the rig's score (which part every strike hit) are printed as JSON.

Exit codes: 0 done, 2 config error, 4 PLC error (the node could not reach the
emulator), 1 anything else the node raised.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog

from node.config import Config, load_config
from node.errors import ConfigError, LinesideError, PlcError

log = structlog.get_logger("plc_line")

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def emulator_port(cfg: Config) -> int:
    """The loopback port the config's PLC link points at. Raises ``ConfigError``."""
    problems = []
    if cfg.plc is None:
        raise ConfigError(["plc: the config has no [plc] section (nothing to emulate)"])
    if "plc" not in (cfg.encoder.driver, cfg.reject.driver):
        problems.append("encoder.driver/reject.driver: neither is 'plc'")
    if cfg.camera.driver != "sim":
        problems.append("camera.driver: must be 'sim' (the emulator moves the simulated belt)")
    if cfg.plc.driver == "modbus":
        assert cfg.plc.modbus is not None
        host, port = cfg.plc.modbus.host, cfg.plc.modbus.port
        key = "plc.modbus.host"
    else:
        assert cfg.plc.opcua is not None
        url = urlsplit(cfg.plc.opcua.url)
        host, port = url.hostname or "", url.port or 4840
        key = "plc.opcua.url"
        if url.path.rstrip("/") != "/lineside/plc":
            problems.append(f"{key}: the emulator serves opc.tcp://HOST:PORT/lineside/plc")
        if cfg.plc.opcua.security_policy != "None":
            problems.append("plc.opcua.security_policy: the emulator serves 'None' only")
    if host not in _LOOPBACK:
        problems.append(f"{key}: the emulator listens on loopback, not {host!r}")
    if problems:
        raise ConfigError(problems)
    return port


def _summary(report: dict[str, Any], node_summary: dict[str, Any]) -> dict[str, Any]:
    rig_keys = (
        "parts",
        "defective_parts",
        "escapes",
        "missed_rejects",
        "false_rejects",
        "failsafe_rejects",
        "failsafe_reasons",
        "wrong_part_hits",
        "budget_misses",
        "latency_ms",
        "strike_error",
        "reject_fire_failures",
        "bad_encoder_samples",
    )
    return {
        "summary": {k: v for k, v in node_summary.items() if k != "stats"},
        "rig": {k: report[k] for k in rig_keys if k in report},
        "plc": {k: v for k, v in report["plc"].items() if k != "last_error"},
        "plc_program": report["plc_program"],
    }


async def run(cfg: Config, parts: int | None, *, live: bool) -> dict[str, Any]:
    """Run the node against the emulator until a signal or ``parts`` results; the JSON summary.

    Raises ``ConfigError`` (config unfit for the emulator) and whatever the node
    raises at startup (``PlcError``, ``ModelError``...).
    """
    # Imported here, not at the top: multiprocessing runs this module again (as
    # __mp_main__) in every process the run spawns (the emulator, the HMI server, the
    # render worker), and the rig's imports (the scorer, SciPy) cost each about a second.
    from hil.plc_rig import run_on_emulator

    port = emulator_port(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    on_status: Callable[[dict[str, Any]], None]
    live_view = None
    if live:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        from node.cli.status_view import render_status

        view_live = Live(auto_refresh=False, transient=False)
        live_view = view_live

        def on_status(snap: dict[str, Any]) -> None:
            view = render_status(cfg.node.name, snap)
            plc = snap.get("plc", {})
            line = (
                f"PLC {cfg.plc.driver if cfg.plc else ''} {plc.get('reject_mode', '')}: "
                f"link {plc.get('state', '?')}, losses {plc.get('losses', 0)}, "
                f"timeouts {plc.get('timeouts', 0)}, read p50 "
                f"{(plc.get('read_rtt_ms') or {}).get('p50')} ms"
            )
            view_live.update(Group(view, Text(line)), refresh=True)

        view_live.start()
    else:

        def on_status(snap: dict[str, Any]) -> None:
            log.info("node_status", **snap)

    try:
        report, rig = await run_on_emulator(cfg, parts, port=port, on_status=on_status, stop=stop)
    finally:
        if live_view is not None:
            live_view.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return _summary(report, dict(rig.node.summary.__dict__))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m hil.plc_line", description=__doc__.splitlines()[0])
    ap.add_argument("config", type=Path)
    ap.add_argument("--parts", type=int, default=None, help="stop after N parts (default: Ctrl-C)")
    ap.add_argument("--no-live", action="store_true", help="no live status table")
    ap.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = ap.parse_args(argv)
    if args.parts is not None and args.parts < 1:
        ap.error("--parts must be >= 1")
    # Logs go to stderr: stdout carries the live view, then the summary JSON.
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[args.log_level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    logging.basicConfig(level=logging.ERROR)  # asyncua/pymodbus notices
    live = sys.stdout.isatty() and not args.no_live
    try:
        cfg = load_config(args.config)
        summary = asyncio.run(run(cfg, args.parts, live=live))
    except ConfigError as exc:
        print(f"{args.config}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except PlcError as exc:
        print(f"plc_line: {exc}", file=sys.stderr)
        return 4
    except LinesideError as exc:
        print(f"plc_line: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
