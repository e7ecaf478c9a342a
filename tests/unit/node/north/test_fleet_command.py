"""Signed fleet commands as a node opens them, and a deployed package fetched and checked."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.package import load_package
from node.north.fleet_command import (
    CommandRefused,
    FleetCommand,
    ReplayGuard,
    new_id,
    open_command,
    sign_command,
)
from node.north.rollout import fetch_package

DEMO = Path(__file__).resolve().parents[4] / "models" / "demo"
NODE = "plant-a/station-1"
NOW = 1_800_000_000_000
FLEET = Ed25519PrivateKey.generate()


def _deploy(**change: object) -> FleetCommand:
    cmd = FleetCommand(
        command="deploy",
        id=new_id(),
        user="qe-anna",
        nodes=(NODE, "plant-a/station-2"),
        issued_ms=NOW - 1000,
        expires_ms=NOW + 600_000,
        package=str(DEMO),
        package_sha256="ab" * 32,
    )
    return dataclasses.replace(cmd, **change)  # type: ignore[arg-type]


def _open(text: str, guard: ReplayGuard | None = None, now_ms: int = NOW) -> FleetCommand:
    return open_command(text, [FLEET.public_key()], node=NODE, now_ms=now_ms, guard=guard)


def test_a_command_signed_by_a_trusted_key_and_naming_the_node_opens_as_sent() -> None:
    """A deploy signed by the fleet key, for this node, in its validity: opened, every field
    as it was signed (also when another trusted key is listed first)."""
    cmd = _deploy()
    other = Ed25519PrivateKey.generate().public_key()
    got = open_command(sign_command(cmd, FLEET), [other, FLEET.public_key()], node=NODE, now_ms=NOW)
    assert got == cmd


def test_a_changed_body_or_another_key_fails_the_signature() -> None:
    """A body edited after signing (another package digest) and a command signed by a key
    the node does not trust are both refused for their signature; with no fleet key
    configured every command is refused, naming north.fleet_keys."""
    envelope = json.loads(sign_command(_deploy(), FLEET))
    envelope["body"] = envelope["body"].replace("ab" * 32, "cd" * 32)
    with pytest.raises(CommandRefused, match=r"^signature: does not verify"):
        _open(json.dumps(envelope))
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(CommandRefused, match=r"^signature: "):
        _open(sign_command(_deploy(), stranger))
    with pytest.raises(CommandRefused, match=r"^north\.fleet_keys: none configured"):
        open_command(sign_command(_deploy(), FLEET), [], node=NODE, now_ms=NOW)
    with pytest.raises(CommandRefused, match=r"^envelope: unreadable"):
        _open("not json")


def test_a_command_for_other_nodes_is_refused() -> None:
    """A command whose signed node list does not hold this node is refused, though it was
    sent to this node's topic."""
    with pytest.raises(CommandRefused, match=r"^body\.nodes: addressed to plant-b/x, not"):
        _open(sign_command(_deploy(nodes=("plant-b/x",)), FLEET))


def test_an_expired_or_future_or_too_long_command_is_refused() -> None:
    """Past its expiry, issued beyond the clock skew in the future, or valid for more than a
    day: each refused with the field named."""
    with pytest.raises(CommandRefused, match=r"^body\.expires_ms: expired 5 s ago"):
        _open(sign_command(_deploy(expires_ms=NOW - 5000), FLEET))
    with pytest.raises(CommandRefused, match=r"^body\.issued_ms: issued in the future"):
        _open(sign_command(_deploy(issued_ms=NOW + 120_000, expires_ms=NOW + 300_000), FLEET))
    with pytest.raises(CommandRefused, match=r"^body\.expires_ms: valid for more than a day"):
        _open(sign_command(_deploy(expires_ms=NOW + 2 * 86_400_000), FLEET))


def test_a_replayed_command_is_refused_also_after_a_restart(tmp_path: Path) -> None:
    """The same signed command a second time is refused as a replay, also by a guard read
    back from disk (a restarted node); ids past their expiry are forgotten."""
    seen = tmp_path / "north" / "commands-seen.json"
    text = sign_command(_deploy(), FLEET)
    _open(text, ReplayGuard.load(seen))
    with pytest.raises(CommandRefused, match=r"^body\.id: .* was taken before \(a replay\)"):
        _open(text, ReplayGuard.load(seen))
    guard = ReplayGuard.load(seen)
    _open(sign_command(_deploy(), FLEET), guard)
    guard.take(new_id(), NOW + 10, NOW + 5)
    guard.take(new_id(), NOW + 999_999_999, NOW + 600_001)  # the first two have expired
    assert len(ReplayGuard.load(seen).seen) == 1


def test_a_malformed_body_is_refused_naming_the_field() -> None:
    """A deploy without a package digest and a promotion without a reason are refused with
    the field named."""
    with pytest.raises(CommandRefused, match="package_sha256"):
        _open(sign_command(_deploy(package_sha256=None), FLEET))
    with pytest.raises(CommandRefused, match=r"^body\.reason"):
        _open(sign_command(_deploy(command="promote", package=None), FLEET))


def test_a_package_is_fetched_and_kept_only_when_its_digest_is_the_references(
    tmp_path: Path,
) -> None:
    """A reference whose digest is not the package's: refused, nothing kept. With the right
    digest the package is copied under the packages folder and verifies there; a second
    fetch reuses the copy."""
    store = tmp_path / "packages"
    wrong = "0" * 64
    with pytest.raises(CommandRefused, match=r"^body\.package_sha256: the reference names 0000"):
        fetch_package(DEMO, wrong, store)
    assert list(store.iterdir()) == []
    digest = load_package(DEMO).sha256
    local = fetch_package(DEMO, digest, store)
    assert local == store / digest[:16] and load_package(local).sha256 == digest
    assert fetch_package(Path("/nonexistent/share/pkg"), digest, store) == local
    with pytest.raises(CommandRefused, match=r"^body\.package: .* not a folder"):
        fetch_package(tmp_path / "missing", "1" * 64, store)
