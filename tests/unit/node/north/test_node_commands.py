"""The node's fleet command taker: answers, the shadow hand-over, persistence, the record."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import tomlkit
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from models.package import load_package
from node.cli.shadow import promote
from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import StartupError
from node.north import metrics as M
from node.north.commands import FleetOps, NodeCommands, open_commands
from node.north.fleet_command import FleetCommand, new_id, sign_command
from node.north.sparkplug import DataType, Metric, Payload, Value
from node.shadow import Shadow
from node.wiring import open_shadow

DEMO = Path(__file__).resolve().parents[4] / "models" / "demo"
NODE = "plant-a/station-1"
FLEET = Ed25519PrivateKey.generate()


class Host:
    """The running node as the command taker sees it: holds the candidate, closes the one
    it replaces, and takes none once stopping."""

    def __init__(self) -> None:
        self.shadow: Shadow | None = None
        self.stopping = False
        self.closed: list[Shadow] = []

    def install_shadow(self, shadow: Shadow) -> bool:
        if self.stopping:
            return False
        old, self.shadow = self.shadow, shadow
        if old is not None:
            old.close()
            self.closed.append(old)
        return True

    def current_shadow(self) -> Shadow | None:
        return self.shadow


def _config(tmp_path: Path, backend: str = "onnxruntime") -> Path:
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    doc["node"]["state_dir"] = str(tmp_path / "state")  # type: ignore[index]
    doc["hmi"]["enabled"] = False  # type: ignore[index]
    doc["inspection"]["backend"] = backend  # type: ignore[index]
    doc["inspection"]["model"]["package"] = str(DEMO)  # type: ignore[index]
    north = tomlkit.table()
    north.update({"enabled": True, "group_id": "plant-a", "edge_node_id": "station-1"})
    doc["north"] = north
    path = tmp_path / "node.toml"
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path


def _command(kind: str = "deploy", package: Path = DEMO, **extra: object) -> str:
    now = time.time_ns() // 1_000_000
    sha = load_package(package).sha256 if kind == "deploy" else None
    cmd = FleetCommand(
        command=kind,  # type: ignore[arg-type]
        id=new_id(),
        user="qe-anna",
        nodes=(NODE,),
        issued_ms=now,
        expires_ms=now + 60_000,
        package=str(package) if kind == "deploy" else None,
        package_sha256=sha,
        **extra,  # type: ignore[arg-type]
    )
    return sign_command(cmd, FLEET)


def _answers(taker: NodeCommands, final: int, timeout_s: float = 30) -> list[dict[str, Value]]:
    """Every answer published until ``final`` non-``received`` ones came."""
    got: list[dict[str, Value]] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for metrics in taker.updates(0):
            values = {m.name: m.value for m in metrics if m.name is not None}
            if M.COMMAND_ID in values:
                got.append(values)
        if sum(a[M.COMMAND_STATUS] != "received" for a in got) >= final:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{final} answers: not within {timeout_s} s: {got}")


def _taker(cfg: Config, config: Path | None, host: Host) -> NodeCommands:
    ops = FleetOps(config, open_candidate=open_shadow, promote=promote)
    return NodeCommands(cfg, host, keys=[FLEET.public_key()], ops=ops)


def _send(taker: NodeCommands, text: str, metric: str = M.DEPLOY) -> None:
    taker.receive(Payload((Metric(metric, DataType.STRING, text),)))


def test_refusals_are_answered_with_their_reason_and_recorded(tmp_path: Path) -> None:
    """A stranger's signature, a replay of an accepted command, a deploy sent as a promotion
    and a deploy to a node on the classical detector: each answered ``refused`` with its
    reason, and each on record in model-history.jsonl."""
    config = _config(tmp_path, backend="classical")
    cfg = load_config(config)
    host = Host()
    good = _command()
    with _taker(cfg, config, host) as taker:
        _send(taker, sign_command(FleetCommand.from_json(json.loads(good)["body"]), FLEET))
        _send(taker, good)
        stranger = Ed25519PrivateKey.generate()
        _send(taker, sign_command(FleetCommand.from_json(json.loads(good)["body"]), stranger))
        _send(taker, _command(), M.PROMOTE)
        answers = [a for a in _answers(taker, 4) if a[M.COMMAND_STATUS] == "refused"]
    reasons = [str(a[M.COMMAND_REASON]) for a in answers]
    assert reasons[0].startswith("inspection.backend: 'classical'")
    assert reasons[1].startswith("body.id: ") and "a replay" in reasons[1]
    assert reasons[2].startswith("signature: does not verify")
    assert reasons[3] == "body.command: 'deploy' sent as 'promote'"
    history = (cfg.node.state_dir / "model-history.jsonl").read_text().splitlines()
    events = [json.loads(x)["event"] for x in history]
    assert events == ["fleet_deploy_refused"] * 3 + ["fleet_promote_refused"]
    assert host.shadow is None


def test_a_deploy_runs_the_verified_copy_keeps_it_in_the_config_and_reports_figures(
    tmp_path: Path,
) -> None:
    """A deploy: the package's verified copy runs as the candidate, the config names it,
    pinned, with the old config kept, and the births carry its figures; the same package
    deployed again is accepted without a reload."""
    config = _config(tmp_path)
    cfg = load_config(config)
    digest = load_package(DEMO).sha256
    host = Host()
    with _taker(cfg, config, host) as taker:
        _send(taker, _command())
        (first,) = [a for a in _answers(taker, 1) if a[M.COMMAND_STATUS] != "received"]
        assert first[M.COMMAND_STATUS] == "accepted", first
        assert "kept in" in str(first[M.COMMAND_REASON])
        running = host.shadow
        assert running is not None
        _send(taker, _command())
        (again,) = [a for a in _answers(taker, 1) if a[M.COMMAND_STATUS] != "received"]
        assert "already running" in str(again[M.COMMAND_REASON]) and host.shadow is running
        figures = {m.name: m.value for m in taker.birth_metrics(0)}
        assert figures[M.SHADOW_SHA256] == digest and figures[M.SHADOW_JUDGED] == 0
    running.close()
    local = cfg.node.state_dir / "packages" / digest[:16]
    assert running.package["path"] == str(local)
    after = load_config(config).inspection.shadow
    assert after.package == local and after.sha256 == digest
    assert len(list(tmp_path.glob("node.toml.*.bak"))) == 1  # the second left it as it was
    history = (cfg.node.state_dir / "model-history.jsonl").read_text().splitlines()
    events = [json.loads(x)["event"] for x in history]
    assert events == ["fleet_deploy", "fleet_deploy"]


def test_a_stopping_node_takes_no_candidate(tmp_path: Path) -> None:
    """A deploy carried out while the node stops: refused, the candidate it loaded closed."""
    config = _config(tmp_path)
    cfg = load_config(config)
    host = Host()
    host.stopping = True
    with _taker(cfg, None, host) as taker:
        _send(taker, _command())
        (answer,) = [a for a in _answers(taker, 1) if a[M.COMMAND_STATUS] != "received"]
    assert answer[M.COMMAND_STATUS] == "refused"
    assert answer[M.COMMAND_REASON] == "the node is stopping"
    assert host.shadow is None
    assert not any(t.name == "shadow" for t in threading.enumerate())


def test_no_config_file_means_not_kept_and_no_promotion(tmp_path: Path) -> None:
    """Without the config file's path a deploy runs but says it is not kept across a
    restart, and a promotion is refused."""
    cfg = load_config(_config(tmp_path))
    host = Host()
    with _taker(cfg, None, host) as taker:
        _send(taker, _command())
        _send(taker, _command("promote", reason="better", min_parts=0), M.PROMOTE)
        answers = [a for a in _answers(taker, 2) if a[M.COMMAND_STATUS] != "received"]
    assert answers[0][M.COMMAND_STATUS] == "accepted"
    assert "not kept across a restart" in str(answers[0][M.COMMAND_REASON])
    assert answers[1][M.COMMAND_STATUS] == "refused"
    assert "without a config file" in str(answers[1][M.COMMAND_REASON])
    assert host.shadow is not None
    host.shadow.close()


def test_an_unreadable_fleet_key_stops_the_start_naming_the_key(tmp_path: Path) -> None:
    """A ``north.fleet_keys`` file that is not an ed25519 public key: a StartupError naming
    ``north.fleet_keys[1]``, so the node does not run with a trust it cannot check."""
    good, bad = tmp_path / "fleet.pub", tmp_path / "junk.pub"
    good.write_bytes(
        FLEET.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    bad.write_text("not a key\n")
    cfg = load_config(_config(tmp_path))
    cfg = cfg.model_copy(update={"north": cfg.north.model_copy(update={"fleet_keys": (good, bad)})})
    ops = FleetOps(None, open_candidate=open_shadow, promote=promote)
    with pytest.raises(StartupError, match=r"^north\.fleet_keys\[1\]: .*junk\.pub"):
        open_commands(cfg, Host(), ops)
    cfg = cfg.model_copy(update={"north": cfg.north.model_copy(update={"fleet_keys": (good,)})})
    assert isinstance(open_commands(cfg, Host(), ops), NodeCommands)
