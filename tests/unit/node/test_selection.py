"""The model selection a node keeps in its state directory where its config file is
read-only (the shipped unit's /etc/lineside): deploys and promotions still last."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomlkit

from models.package import load_package
from node.config import DEFAULT_CONFIG, load_config
from node.config_rewrite import prepare
from node.errors import ConfigError
from node.north.rollout import persist_shadow
from node.selection import SELECTION_FILE, read_selection, write_selection
from tests.unit.node.audit.mounts import read_only_files

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"
PROMOTE = {"model": {"package": str(DEMO)}, "shadow": {"package": "", "sha256": ""}}


def _text(state: Path, shadow: bool = False) -> str:
    doc = tomlkit.parse(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    doc["node"]["state_dir"] = str(state)  # type: ignore[index]
    doc["hmi"]["enabled"] = False  # type: ignore[index]
    doc["inspection"]["backend"] = "onnxruntime"  # type: ignore[index]
    doc["inspection"]["model"]["package"] = str(DEMO)  # type: ignore[index]
    if shadow:
        table = tomlkit.table()
        table.update({"package": str(DEMO), "sha256": load_package(DEMO).sha256})
        doc["inspection"]["shadow"] = table  # type: ignore[index]
    return tomlkit.dumps(doc)


def test_a_deploy_into_a_read_only_config_is_kept_in_the_state_directory(tmp_path: Path) -> None:
    """The config file cannot be written: the deployed candidate goes to
    <state>/models.toml, the config file is untouched, and loading the config runs it."""
    sha = load_package(DEMO).sha256
    state = tmp_path / "state"
    with read_only_files(tmp_path / "etc", {"lineside.toml": _text(state)}) as etc:
        config = etc / "lineside.toml"
        before = config.read_text()
        kept = persist_shadow(config, DEMO, sha)
        assert kept is not None and kept.backup is None
        assert str(state / SELECTION_FILE) in kept.describe()
        cfg = load_config(config)
        assert config.read_text() == before
    assert cfg.inspection.shadow.package == DEMO and cfg.inspection.shadow.sha256 == sha


def test_a_promotion_into_a_read_only_config_clears_the_file_s_own_candidate(
    tmp_path: Path,
) -> None:
    """A promotion (the candidate made active, no candidate left) the node cannot write
    into its config: the selection pins the model and says "no candidate", overriding the
    shadow the read-only file still names."""
    sha = load_package(DEMO).sha256
    state = tmp_path / "state"
    files = {"lineside.toml": _text(state, shadow=True)}
    with read_only_files(tmp_path / "etc", files) as etc:
        config = etc / "lineside.toml"
        assert load_config(config).inspection.shadow.package == DEMO
        rewrite = prepare(config, {**PROMOTE, "model": {**PROMOTE["model"], "sha256": sha}}, "t")
        assert rewrite is not None
        rewrite.commit()
        cfg = load_config(config)
    assert cfg.inspection.model.sha256 == sha
    assert cfg.inspection.shadow.package is None and cfg.inspection.shadow.sha256 is None


def test_a_writable_config_takes_the_selection_in_and_the_selection_file_goes(
    tmp_path: Path,
) -> None:
    """The selection file holds an earlier promotion; a deploy into a config the node can
    write puts both in the file (the old one kept) and removes the selection file, so the
    config file is the one truth again."""
    sha = load_package(DEMO).sha256
    state = tmp_path / "state"
    state.mkdir()
    (state / SELECTION_FILE).write_text(f'[inspection.model]\nsha256 = "{sha}"\n')
    config = tmp_path / "lineside.toml"
    config.write_text(_text(state))
    kept = persist_shadow(config, DEMO, sha)
    assert kept is not None and kept.backup is not None and kept.backup.is_file()
    assert not (state / SELECTION_FILE).exists()
    written = tomlkit.parse(config.read_text())
    assert written["inspection"]["model"]["sha256"] == sha  # type: ignore[index]
    assert written["inspection"]["shadow"]["sha256"] == sha  # type: ignore[index]
    assert persist_shadow(config, DEMO, sha) is None  # the same again: left as it is


def test_the_selection_file_reads_back_what_was_written(tmp_path: Path) -> None:
    """A package path with quotes and a backslash is written as TOML and read back as it
    was; an empty table is left out."""
    path = tmp_path / "state" / SELECTION_FILE
    odd = 'C:\\lines\\"line 3"'
    write_selection(path, {"model": {"package": odd, "sha256": "ab" * 32}, "shadow": {}})
    assert read_selection(path) == {"model": {"package": odd, "sha256": "ab" * 32}}


def test_a_bad_selection_file_stops_the_load_naming_it(tmp_path: Path) -> None:
    """A selection file with anything but the model and shadow package and digest is a
    config error naming the file, as any bad config is."""
    state = tmp_path / "state"
    state.mkdir()
    (state / SELECTION_FILE).write_text('[inspection.model]\nthreads = "4"\n')
    config = tmp_path / "lineside.toml"
    config.write_text(_text(state))
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(state / SELECTION_FILE) in info.value.problems[0]
    assert "package and sha256" in info.value.problems[0]


def test_a_selection_the_config_would_refuse_changes_nothing(tmp_path: Path) -> None:
    """A change that makes the config invalid (a malformed digest) is refused in one line
    and leaves the config and the state directory as they were."""
    state = tmp_path / "state"
    config = tmp_path / "lineside.toml"
    config.write_text(text := _text(state))
    with pytest.raises(ValueError, match=r"inspection\.shadow\.sha256"):
        prepare(config, {"shadow": {"package": str(DEMO), "sha256": "xyz"}}, "t")
    assert config.read_text() == text
    assert not (state / SELECTION_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lineside.toml"]
