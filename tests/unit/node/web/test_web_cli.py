"""``lineside web``: bad input is one line naming the key, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.__main__ import main
from node.config import DEFAULT_CONFIG


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    _, err = capsys.readouterr()
    return int(info.value.code or 0), err


def _config(tmp_path: Path, old: str, new: str) -> Path:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'state_dir = "state"', f'state_dir = "{tmp_path}"'
    )
    assert old in text
    cfg = tmp_path / "node.toml"
    cfg.write_text(text.replace(old, new), encoding="utf-8")
    return cfg


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("port = 8080", "port = 70000", "web.port"),
        ("port = 8080", "port = 8080\nlanguage = 'fr'", "web.language"),
        ("port = 8080", "port = 8080\ncolour = 'red'", "web.colour"),
        ("enabled = true\nendpoint", "enabled = false\nendpoint", "hmi.enabled"),
    ],
)
def test_a_bad_web_config_names_its_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str
) -> None:
    """Out-of-range, unknown or missing prerequisites: exit 2, the key on stderr, no traceback."""
    code, err = _run(["web", str(_config(tmp_path, old, new))], capsys)
    assert code == 2
    assert key in err and "Traceback" not in err


def test_https_before_the_node_made_its_certificate_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """web.https needs the node's certificate: without it, one line saying to start the node
    first, and a non-zero exit instead of a server without TLS."""
    cfg = _config(tmp_path, "port = 8080", "port = 8080\nhttps = true")
    code, err = _run(["web", str(cfg)], capsys)
    assert code != 0
    assert "web.https" in err and "start the node" in err and "Traceback" not in err
