"""Signed fleet commands: a model package reference (deploy) or a promotion, as the fleet
sends them to lineside nodes in an NCMD and as a node checks them.

A command is JSON text (its *body*) inside a signed envelope, both plain JSON::

    {"format": "lineside-fleet-command", "algorithm": "ed25519", "key_id": "<16 hex>",
     "body": "<the command's JSON text>", "signature": "<64 bytes, hex>"}

The signature is over ``b"lineside-fleet-command-v1\\n"`` followed by the body's UTF-8
bytes, exactly as sent: the node checks the signature over the very text it then parses.
The prefix keeps a command signature from ever passing for a model package's.

The body (:class:`FleetCommand`)::

    {"command": "deploy" | "promote", "id": "<32 hex, unique>", "user": "who issued it",
     "nodes": ["<group>/<edge node>", ...], "issued_ms": <UTC ms>, "expires_ms": <UTC ms>,
     "package": "<path as the nodes see it>", "package_sha256": "<64 hex>",
     "reason": "...", "min_parts": 500, "force": false}

``package`` is set for a deploy (``package_sha256`` for both: a promotion naming one
promotes only that candidate); ``reason``, ``min_parts`` and ``force`` are the promotion's.

A node takes a command only when (:func:`open_command`): it is signed by one of its
trusted fleet keys (``north.fleet_keys``), names this node, is not expired, was not issued
in the future (beyond :data:`CLOCK_SKEW_MS`), is valid for at most :data:`MAX_VALIDITY_MS`,
and its id was not taken before (:class:`ReplayGuard`, kept on disk until it expires).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.signing import key_id

log = structlog.get_logger(__name__)

FORMAT = "lineside-fleet-command"
MESSAGE_PREFIX = b"lineside-fleet-command-v1\n"
CLOCK_SKEW_MS = 60_000
"""A command issued this far in the node's future is still taken (clocks differ)."""
MAX_VALIDITY_MS = 24 * 3600 * 1000
"""A command valid for longer than a day is refused: every id taken is kept until it
expires, so the replay record stays small."""

Kind = Literal["deploy", "promote"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ID = re.compile(r"^[0-9a-f]{32}$")


class CommandRefused(ValueError):
    """A command the node does not take; the message is the one-line reason."""


@dataclass(frozen=True, slots=True)
class FleetCommand:
    """One command's body; see the module docstring."""

    command: Kind
    id: str
    user: str
    nodes: tuple[str, ...]
    issued_ms: int
    expires_ms: int
    package: str | None = None
    package_sha256: str | None = None
    reason: str = ""
    min_parts: int = 500
    force: bool = False

    def to_json(self) -> str:
        """The body's JSON text."""
        data = asdict(self)
        data["nodes"] = list(self.nodes)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FleetCommand:
        """The command in ``text``. Raises ``CommandRefused`` naming the field at fault."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CommandRefused(f"body: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise CommandRefused("body: not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CommandRefused(f"body: unknown field(s) {', '.join(unknown)}")
        try:
            command = cls(
                command=_choice(data, "command"),
                id=_text(data, "id", _ID),
                user=_text(data, "user"),
                nodes=_nodes(data.get("nodes")),
                issued_ms=_int(data, "issued_ms"),
                expires_ms=_int(data, "expires_ms"),
                package=_optional_text(data, "package"),
                package_sha256=_optional_text(data, "package_sha256", _SHA256),
                reason=str(data.get("reason", "")),
                min_parts=_int(data, "min_parts", 500),
                force=bool(data.get("force", False)),
            )
        except (TypeError, ValueError) as exc:
            raise CommandRefused(str(exc)) from None
        if command.command == "deploy" and (not command.package or not command.package_sha256):
            raise CommandRefused("body: a deploy names package and package_sha256")
        if command.command == "promote" and not command.reason.strip():
            raise CommandRefused("body.reason: a promotion says why")
        return command


def _choice(data: dict[str, Any], key: str) -> Kind:
    value = data.get(key)
    if value not in ("deploy", "promote"):
        raise ValueError(f"body.{key}: {value!r} is neither 'deploy' nor 'promote'")
    return value  # type: ignore[no-any-return]


def _text(data: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"body.{key}: missing or empty")
    if pattern is not None and not pattern.match(value):
        raise ValueError(f"body.{key}: {value!r} is not of the expected form")
    return value


def _optional_text(
    data: dict[str, Any], key: str, pattern: re.Pattern[str] | None = None
) -> str | None:
    return None if data.get(key) is None else _text(data, key, pattern)


def _int(data: dict[str, Any], key: str, default: int | None = None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"body.{key}: not an integer")
    return value


def _nodes(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError("body.nodes: not a non-empty list")
    nodes = tuple(str(v) for v in value)
    for n in nodes:
        parse_node(n, "body.nodes")
    return nodes


def parse_node(text: str, key: str = "--nodes") -> tuple[str, str]:
    """``GROUP/EDGE`` → (group, edge node). Raises ``ValueError`` naming ``key``."""
    group, sep, edge = text.partition("/")
    bad = re.compile(r"[+/#]")
    if not sep or not group or not edge or bad.search(group) or bad.search(edge):
        raise ValueError(f"{key}: {text!r} is not GROUP/EDGE_NODE (Sparkplug ids)")
    return group, edge


def new_id() -> str:
    """A fresh command id (32 hex digits)."""
    return uuid.uuid4().hex


def _message(body: str) -> bytes:
    return MESSAGE_PREFIX + body.encode("utf-8")


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_command(command: FleetCommand, private_key: Ed25519PrivateKey) -> str:
    """The signed envelope (JSON text) of ``command``."""
    body = command.to_json()
    return json.dumps(
        {
            "format": FORMAT,
            "algorithm": "ed25519",
            "key_id": key_id(private_key.public_key()),
            "body": body,
            "signature": private_key.sign(_message(body)).hex(),
        }
    )


def open_command(
    text: str,
    trusted: Sequence[Ed25519PublicKey],
    *,
    node: str,
    now_ms: int,
    guard: ReplayGuard | None = None,
) -> FleetCommand:
    """The command in the envelope ``text``, checked for node ``node`` (``group/edge``)
    at ``now_ms``; its id is then taken in ``guard``.

    Raises ``CommandRefused`` with the one-line reason: no trusted key, a bad envelope or
    signature, another node's command, expired, from the future, valid too long, replayed.
    """
    if not trusted:
        raise CommandRefused("north.fleet_keys: none configured: fleet commands are refused")
    try:
        envelope = json.loads(text)
        if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT}")
        if envelope.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {envelope.get('algorithm')!r}, not ed25519")
        body = envelope["body"]
        signature = bytes.fromhex(str(envelope["signature"]))
        if not isinstance(body, str):
            raise ValueError("body is not text")
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandRefused(f"envelope: unreadable ({exc})") from None
    for public in trusted:
        try:
            public.verify(signature, _message(body))
        except InvalidSignature:
            continue
        break
    else:
        named = str(envelope.get("key_id", "?"))
        raise CommandRefused(
            f"signature: does not verify with any key in north.fleet_keys (signed as key {named})"
        )
    command = FleetCommand.from_json(body)
    if node not in command.nodes:
        raise CommandRefused(f"body.nodes: addressed to {', '.join(command.nodes)}, not {node}")
    if now_ms > command.expires_ms:
        raise CommandRefused(
            f"body.expires_ms: expired {(now_ms - command.expires_ms) / 1000:.0f} s ago"
        )
    if command.issued_ms > now_ms + CLOCK_SKEW_MS:
        raise CommandRefused("body.issued_ms: issued in the future (check the clocks)")
    if command.expires_ms - command.issued_ms > MAX_VALIDITY_MS:
        raise CommandRefused("body.expires_ms: valid for more than a day")
    if guard is not None:
        guard.take(command.id, command.expires_ms, now_ms)
    return command


def trusted_keys(paths: Sequence[Path]) -> list[tuple[Path, Ed25519PublicKey]]:
    """The public keys in ``paths``. Raises ``ValueError`` naming ``north.fleet_keys[i]``."""
    from models.signing import SigningError, load_public_key

    keys = []
    for i, path in enumerate(paths):
        try:
            keys.append((path, load_public_key(path)))
        except SigningError as exc:
            raise ValueError(f"north.fleet_keys[{i}]: {exc}") from exc
    return keys


@dataclass
class ReplayGuard:
    """Command ids already taken, with when each expires, kept in ``path`` (JSON; None:
    in memory only). Ids past their expiry are forgotten: the expiry check refuses them."""

    path: Path | None = None
    seen: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> ReplayGuard:
        """The guard kept in ``path`` (empty when there is none; logged when unreadable)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            seen = {str(k): int(v) for k, v in data.items()}
        except FileNotFoundError:
            seen = {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("fleet_commands_seen_unreadable", path=str(path), error=str(exc))
            seen = {}
        return cls(path, seen)

    def take(self, command_id: str, expires_ms: int, now_ms: int) -> None:
        """Record ``command_id``. Raises ``CommandRefused`` when it was taken before."""
        self.seen = {k: v for k, v in self.seen.items() if v >= now_ms}
        if command_id in self.seen:
            raise CommandRefused(f"body.id: {command_id} was taken before (a replay)")
        self.seen[command_id] = expires_ms
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text(json.dumps(self.seen), encoding="utf-8")
            os.replace(tmp, self.path)
