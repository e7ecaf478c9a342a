"""``lineside fleet``: the plant's lineside nodes in one table, from the MQTT broker."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from node.errors import ConfigError


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fleet`` to the ``lineside`` command line."""
    p = subparsers.add_parser(
        "fleet", help="follow every lineside node on an MQTT broker (Sparkplug B primary host)"
    )
    p.add_argument("--broker", default="127.0.0.1:1883", help="host[:port] of the broker")
    p.add_argument("--group", action="append", help="Sparkplug group(s) to follow (default all)")
    p.add_argument(
        "--host-id",
        default="lineside-fleet",
        help="this host's STATE id and MQTT client id (its session): one per running host",
    )
    p.add_argument("--json", action="store_true", help="JSON lines instead of the table")
    p.add_argument("--for", dest="for_s", type=float, help="stop after this many seconds")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--username", help="broker user")
    p.add_argument("--password-env", help="environment variable holding the broker password")
    p.add_argument("--tls", action="store_true", help="TLS to the broker")
    p.add_argument("--ca", type=Path, help="CA file for --tls")
    # gathering reviewed images into one training set: node/fleet/collect.py
    p.add_argument(
        "--collect",
        type=Path,
        metavar="DIR",
        help="gather every node's reviewed images into DIR (MVTec AD layout)",
    )
    p.add_argument(
        "--collect-token-file",
        type=Path,
        metavar="F",
        help="file holding the bearer token the nodes' collect path asks for",
    )
    p.add_argument(
        "--collect-ca", type=Path, metavar="CAFILE", help="CA for the nodes' HTTPS (web.https)"
    )
    p.add_argument(
        "--collect-allow-http",
        action="store_true",
        help="send the token over plain HTTP to other machines too (default: loopback only)",
    )
    p.set_defaults(func=run_cli)
    from node.fleet.deploy import add_command_parsers

    add_command_parsers(p)  # lineside fleet deploy | promote


def run_cli(args: argparse.Namespace) -> int:
    """Follow until Ctrl-C (or ``--for``); returns the exit code."""
    from rich.console import Console
    from rich.live import Live

    from node.fleet.host import Broker, FleetHost, parse_broker
    from node.fleet.table import render, snapshot, with_collect
    from node.service.logs import configure

    # stdout is the table or the JSON: log lines go to stderr
    configure(json=True if args.json_logs else None, level=args.log_level, file=sys.stderr)

    try:
        host, port = parse_broker(args.broker)
    except ValueError as exc:
        raise ConfigError([f"--broker: {exc}"]) from exc
    if args.interval <= 0 or (args.for_s is not None and args.for_s <= 0):
        raise ConfigError(["--interval/--for: must be positive"])
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ConfigError([f"--password-env: {args.password_env} is not set"])
    from node.fleet.collect import open_collector

    collector = open_collector(
        args.collect,
        args.collect_token_file,
        args.collect_ca,
        allow_http=args.collect_allow_http,
    )
    fleet_host = FleetHost(
        Broker(host, port, args.username, password, args.tls, args.ca),
        host_id=args.host_id,
        groups=tuple(args.group or ["+"]),
        on_message=None if collector is None else collector.notice,
    )
    if collector is not None:
        collector.start()
    fleet_host.start()
    end = None if args.for_s is None else time.monotonic() + args.for_s

    def rows() -> list[dict[str, Any]]:
        found = snapshot(fleet_host.fleet)
        if collector is not None:
            with_collect(found, collector.snapshot())
        return found

    def report() -> dict[str, object]:
        return {
            "broker": f"{host}:{port}",
            "connected": fleet_host.connected,
            "bad_messages": fleet_host.bad_messages,
            "rebirths_asked": fleet_host.rebirths_asked,
            "resends_asked": fleet_host.resends_asked,
            "nodes": rows(),
        } | ({} if collector is None else {"collect": collector.snapshot()})

    def title() -> str:
        up = "connected" if fleet_host.connected else "[red]not connected[/]"
        return f"lineside fleet · {host}:{port} {up}"

    try:
        if args.json:
            while end is None or time.monotonic() < end:
                deadline = time.monotonic() + args.interval
                while (left := deadline - time.monotonic()) > 0:
                    fleet_host.drain(left)
                print(json.dumps(report()), flush=True)
        else:
            console = Console()
            with Live(render([], title()), console=console, refresh_per_second=4) as live:
                while end is None or time.monotonic() < end:
                    fleet_host.drain(args.interval)
                    live.update(render(rows(), title()))
    except KeyboardInterrupt:
        pass
    finally:
        fleet_host.stop()
        if collector is not None:
            collector.stop()
    if args.json and end is None:
        print(json.dumps(report()), file=sys.stdout)
    return 0
