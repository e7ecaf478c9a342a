"""``lineside fleet deploy | promote``: model roll-out from the centre, over the broker.

``deploy PACKAGE --nodes GROUP/EDGE[,...] --key FLEET_KEY`` verifies the package here,
writes a package reference (where the nodes find it — ``--package-path``, default the
package's absolute path, e.g. on a share mounted alike on every node — its digest, the
nodes, issued and expiry time, a fresh id, ``--user``), signs it with the fleet's ed25519
private key and writes it to each node as NCMD ``Model Control/Deploy``. ``promote
--nodes ... --key ... --user U --reason R`` does the same with a promotion
(``Model Control/Promote``). Both then wait (``--timeout``) for each node's answer
(``Command/*`` in its DDATA) and print one line per node (``--json``: JSON lines).

Exit codes: 0 every node accepted; 1 a node refused or did not answer (or the broker
could not be reached); 2 bad input, one line naming the argument. The command format and
what a node checks: ``node.north.fleet_command``, docs/north.md.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.north import metrics as M
from node.north.fleet_command import FleetCommand, Kind, new_id, parse_node, sign_command

FINAL = frozenset({"accepted", "refused", "promoted"})
"""The answers a command waits for (``received`` comes first, from a node at work)."""


def add_command_parsers(fleet: argparse.ArgumentParser) -> None:
    """Add ``deploy`` and ``promote`` under ``lineside fleet`` (which still runs without)."""
    sub = fleet.add_subparsers(dest="fleet_command", metavar="{deploy,promote}")
    d = sub.add_parser("deploy", help="send a signed package reference: nodes run it in shadow")
    d.add_argument("package", type=Path, help="the model package folder")
    d.add_argument(
        "--package-path",
        help="the package's path as the nodes see it (default: PACKAGE, absolute)",
    )
    _common(d)
    d.add_argument("--user", help="who deploys it (recorded; default: the login name)")
    d.set_defaults(func=run_deploy)
    p = sub.add_parser("promote", help="send a signed promotion of the nodes' shadow candidate")
    _common(p)
    p.add_argument("--user", required=True, help="who promotes it (recorded)")
    p.add_argument("--reason", required=True, help="why (recorded)")
    p.add_argument(
        "--min-parts",
        type=int,
        default=500,
        help="parts the candidate must have judged on each node (default 500)",
    )
    p.add_argument("--force", action="store_true", help="promote with fewer parts judged")
    p.add_argument("--sha256", help="promote only a candidate with this package digest")
    p.set_defaults(func=run_promote)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", required=True, help="GROUP/EDGE_NODE[,GROUP/EDGE_NODE...]")
    p.add_argument("--key", type=Path, required=True, help="the fleet's ed25519 private key")
    p.add_argument("--broker", default="127.0.0.1:1883", help="host[:port] of the broker")
    p.add_argument("--username", help="broker user")
    p.add_argument("--password-env", help="environment variable holding the broker password")
    p.add_argument("--tls", action="store_true", help="TLS to the broker")
    p.add_argument("--ca", type=Path, help="CA file for --tls")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for answers")
    p.add_argument("--ttl", type=float, default=600.0, help="seconds the command stays valid")
    p.add_argument("--json", action="store_true", help="one JSON line per node")


class BadInput(ValueError):
    """One line naming the argument at fault (exit 2)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One node a command goes to."""

    group: str
    edge: str

    @property
    def name(self) -> str:
        return f"{self.group}/{self.edge}"


def _targets(text: str) -> list[Target]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BadInput("--nodes: name at least one GROUP/EDGE_NODE")
    try:
        targets = [Target(*parse_node(n)) for n in names]
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    return list(dict.fromkeys(targets))


def _fail(message: str) -> int:
    print(f"lineside: {message}", file=sys.stderr)
    return 2


def _log_to_stderr(args: argparse.Namespace) -> None:
    """stdout is the answers: log lines go to stderr."""
    from node.service.logs import configure

    configure(json=True if args.json_logs else None, level=args.log_level, file=sys.stderr)


def run_deploy(args: argparse.Namespace) -> int:
    """``lineside fleet deploy``; returns the exit code."""
    from models.package import PackageError, load_package

    _log_to_stderr(args)
    try:
        try:
            package = load_package(args.package)
        except (PackageError, OSError) as exc:
            raise BadInput(f"PACKAGE: {args.package}: {exc}") from None
        where = args.package_path or str(args.package.resolve())
        if not Path(where).is_absolute():
            raise BadInput(f"--package-path: {where} is not an absolute path")
        return _send(args, "deploy", package=where, package_sha256=package.sha256)
    except BadInput as exc:
        return _fail(str(exc))


def run_promote(args: argparse.Namespace) -> int:
    """``lineside fleet promote``; returns the exit code."""
    import re

    _log_to_stderr(args)
    try:
        if not args.user.strip() or not args.reason.strip():
            raise BadInput("--user and --reason: must not be empty (they are the audit trail)")
        if args.min_parts < 0:
            raise BadInput("--min-parts: must be 0 or more")
        if args.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", args.sha256):
            raise BadInput("--sha256: not 64 lowercase hex digits")
        return _send(
            args,
            "promote",
            package_sha256=args.sha256,
            reason=args.reason,
            min_parts=args.min_parts,
            force=args.force,
        )
    except BadInput as exc:
        return _fail(str(exc))


def _send(args: argparse.Namespace, kind: Kind, **fields: Any) -> int:
    from models.signing import SigningError, load_private_key
    from node.fleet.host import Broker, parse_broker

    targets = _targets(args.nodes)
    try:
        key = load_private_key(args.key)
    except SigningError as exc:
        raise BadInput(f"--key: {exc}") from None
    try:
        host, port = parse_broker(args.broker)
    except ValueError as exc:
        raise BadInput(f"--broker: {exc}") from None
    if args.timeout <= 0 or args.ttl <= 0:
        raise BadInput("--timeout/--ttl: must be positive")
    if args.ttl > 24 * 3600:
        raise BadInput("--ttl: at most a day (86400 s): nodes refuse longer")
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise BadInput(f"--password-env: {args.password_env} is not set")
    now_ms = time.time_ns() // 1_000_000
    command = FleetCommand(
        command=kind,
        id=new_id(),
        user=args.user or getpass.getuser(),
        nodes=tuple(t.name for t in targets),
        issued_ms=now_ms,
        expires_ms=now_ms + int(args.ttl * 1000),
        **fields,
    )
    broker = Broker(host, port, args.username, password, args.tls, args.ca)
    try:
        answers = send_command(broker, targets, command, sign_command(command, key), args.timeout)
    except OSError as exc:
        print(f"lineside: --broker {host}:{port}: cannot connect: {exc}", file=sys.stderr)
        return 1
    ok = "promoted" if kind == "promote" else "accepted"
    for t in targets:
        got = answers.get(t.name, {})
        line = {
            "node": t.name,
            "id": command.id,
            "command": kind,
            "status": got.get("status", "no answer"),
            "reason": got.get("reason", f"no answer within {args.timeout:g} s"),
            "package_sha256": command.package_sha256,
        }
        if args.json:
            print(json.dumps(line), flush=True)
        else:
            print(f"{t.name}: {line['status']} - {line['reason']}", flush=True)
    return 0 if all(answers.get(t.name, {}).get("status") == ok for t in targets) else 1


def send_command(
    broker: Any, targets: list[Target], command: FleetCommand, text: str, timeout_s: float
) -> dict[str, dict[str, str]]:
    """Write the signed ``text`` to each target as an NCMD and collect their final answers
    (``{"status", "reason"}`` by node name) until all answered or ``timeout_s`` passed.

    Raises ``OSError`` when the broker cannot be reached.
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from node.north.mqtt import secure_client
    from node.north.sparkplug import (
        DataType,
        MessageType,
        Metric,
        Payload,
        decode,
        encode,
        parse_topic,
        topic,
    )

    metric = M.DEPLOY if command.command == "deploy" else M.PROMOTE
    answers: dict[str, dict[str, str]] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    done = threading.Event()
    wanted = {t.name for t in targets}
    pending_subs: set[int] = set()

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            return
        topics = [
            (f"spBv1.0/{t.group}/{kind}/{t.edge}/+", 1)
            for t in targets
            for kind in ("DDATA", "DBIRTH")
        ]
        _, mid = client.subscribe(topics)
        if mid is not None:
            pending_subs.add(mid)

    def on_subscribe(client: mqtt.Client, userdata: Any, mid: int, *rest: Any) -> None:
        pending_subs.discard(mid)
        if not pending_subs:
            subscribed.set()

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            t = parse_topic(message.topic)
            values = decode(bytes(message.payload)).values()
        except ValueError:
            return
        if values.get(M.COMMAND_ID) != command.id or values.get(M.COMMAND_STATUS) not in FINAL:
            return
        name = f"{t.group_id}/{t.edge_node_id}"
        with lock:
            answers[name] = {
                "status": str(values[M.COMMAND_STATUS]),
                "reason": str(values.get(M.COMMAND_REASON) or ""),
            }
            if wanted <= set(answers):
                done.set()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"lineside-fleet-{command.id[:12]}",
        clean_session=True,
    )
    secure_client(
        client,
        username=broker.username,
        password=broker.password,
        tls=broker.tls,
        ca_file=broker.ca_file,
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(broker.host, broker.port, keepalive=10)
    client.loop_start()
    try:
        end = time.monotonic() + timeout_s
        if not subscribed.wait(min(timeout_s, 10.0)):
            raise OSError("no subscription acknowledged by the broker")
        now_ms = time.time_ns() // 1_000_000
        body = encode(Payload((Metric(metric, DataType.STRING, text, now_ms),), None, now_ms))
        for target in targets:
            info = client.publish(topic(target.group, MessageType.NCMD, target.edge), body, qos=1)
            info.wait_for_publish(max(0.1, end - time.monotonic()))
        done.wait(max(0.0, end - time.monotonic()))
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return dict(answers)
