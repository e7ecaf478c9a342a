"""``[north]``: its keys are checked at startup, each problem named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Config, parse_config
from node.errors import ConfigError, StartupError
from node.north.factory import open_north
from node.north.settings import NorthSettings
from node.recorder import ModelIdentity

LINE = {
    "counts_per_mm": 4.0,
    "part_pitch_mm": 32.0,
    "part_length_mm": 24.0,
    "camera_position_mm": 100.0,
    "reject_position_mm": 400.0,
}
MODEL = ModelIdentity("onnxruntime:demo", "2026-01-01", "ef" * 32)


def _config(tmp_path: Path, **north: object) -> Config:
    return parse_config(
        {
            "node": {"name": "line 3 / station 1", "state_dir": str(tmp_path)},
            "line": LINE,
            "north": {"enabled": True, **north},
        }
    )


@pytest.mark.parametrize("key", ["group_id", "edge_node_id", "device_id"])
def test_an_id_with_topic_characters_is_refused(tmp_path: Path, key: str) -> None:
    """A Sparkplug id holding '+', '/' or '#' would break the topic: refused by its key."""
    with pytest.raises(ConfigError, match=rf"north\.{key}: .*'\+', '/', '#'"):
        _config(tmp_path, **{key: "line+3"})


def test_north_needs_the_audit_store(tmp_path: Path) -> None:
    """The publisher forwards the audit store's records: north without audit is refused."""
    with pytest.raises(ConfigError, match=r"north\.enabled: .*audit"):
        parse_config({"line": LINE, "north": {"enabled": True}, "audit": {"enabled": False}})


def test_ids_and_files_default_from_the_node(tmp_path: Path) -> None:
    """The edge node id is node.name made valid; the cursor lives under node.state_dir;
    the client id names both ids."""
    cfg = _config(tmp_path, group_id="plant-a")
    publisher = open_north(cfg, MODEL)
    assert publisher.edge_node_id == "line 3 - station 1"
    assert publisher.snapshot()["cursor"] == 0 and publisher.snapshot()["connected"] is False
    assert cfg.north.edge_node("x") == "x"
    assert NorthSettings(edge_node_id="e1").edge_node("ignored") == "e1"


def test_the_password_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """password_env wins over password_file; an unset variable or unreadable file stops the
    start with the key that names it."""
    secret = tmp_path / "password"
    secret.write_text("from-file\n")
    assert NorthSettings(password_file=secret).password() == "from-file"
    monkeypatch.setenv("LINESIDE_NORTH_PASSWORD", "from-env")
    both = NorthSettings(password_env="LINESIDE_NORTH_PASSWORD", password_file=secret)
    assert both.password() == "from-env"
    assert NorthSettings().password() is None
    monkeypatch.delenv("LINESIDE_NORTH_PASSWORD")
    with pytest.raises(StartupError, match=r"north\.password_env: .*LINESIDE_NORTH_PASSWORD"):
        open_north(_config(tmp_path, password_env="LINESIDE_NORTH_PASSWORD"), MODEL)
    with pytest.raises(StartupError, match=r"north\.password_file: "):
        open_north(_config(tmp_path, password_file=str(tmp_path / "none")), MODEL)
    (tmp_path / "empty").write_text("")
    with pytest.raises(StartupError, match=r"north\.password_file: .*empty"):
        open_north(_config(tmp_path, password_file=str(tmp_path / "empty")), MODEL)


def test_missing_tls_files_stop_the_start(tmp_path: Path) -> None:
    """With tls on, a CA, certificate or key file that is not there is named by its key."""
    with pytest.raises(StartupError, match=r"north\.ca_file: .*does not exist"):
        open_north(_config(tmp_path, tls=True, ca_file=str(tmp_path / "ca.pem")), MODEL)
    with pytest.raises(StartupError, match=r"north\.key_file: set north\.cert_file"):
        (tmp_path / "k.pem").write_text("")
        open_north(_config(tmp_path, tls=True, key_file=str(tmp_path / "k.pem")), MODEL)
