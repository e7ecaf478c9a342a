"""``lineside teach``: when it teaches the classical template and when it leaves it alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.line import CLASSICAL_CONFIG
from node.__main__ import main
from node.config import DEFAULT_CONFIG


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, _ = capsys.readouterr()
    return int(info.value.code or 0), out


def _classical_config(tmp_path: Path) -> Path:
    text = CLASSICAL_CONFIG.read_text(encoding="utf-8")
    text = text.replace('state_dir = "state"', f'state_dir = "{tmp_path}"')
    text = text.replace("teach_parts = 120", "teach_parts = 12")
    text = text.replace('"state/sim-template.npz"', f'"{tmp_path / "template.npz"}"')
    cfg = tmp_path / "node.toml"
    cfg.write_text(text, encoding="utf-8")
    return cfg


def test_teach_if_missing_skips_a_model_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``make run``'s ``teach --if-missing`` on the default (model) config teaches nothing."""
    out_file = tmp_path / "template.npz"
    code, out = _run(["teach", str(DEFAULT_CONFIG), "--if-missing", "--out", str(out_file)], capsys)
    assert code == 0
    assert "onnxruntime backend judges" in out
    assert not out_file.exists()


def test_teach_writes_the_classical_template_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a classical config ``teach`` learns the template from the sim line; a second
    ``--if-missing`` run leaves the file as it is."""
    cfg = _classical_config(tmp_path)
    template = tmp_path / "template.npz"
    code, out = _run(["teach", str(cfg)], capsys)
    assert code == 0 and template.is_file()
    assert "from 12 good parts" in out
    before = template.read_bytes()
    with np.load(template) as data:
        assert data.files  # a readable template archive
    code, out = _run(["teach", str(cfg), "--if-missing"], capsys)
    assert code == 0 and "not teaching again" in out
    assert template.read_bytes() == before
