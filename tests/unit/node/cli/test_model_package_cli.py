"""``lineside model ...``: the package's digest, keys and signatures from the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.package import load_package
from node.__main__ import main

DEMO = Path(__file__).resolve().parents[4] / "models" / "demo"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def _json(out: str) -> dict[str, str]:
    result: dict[str, str] = json.loads(out[out.index("{\n") :])  # log lines may come first
    return result


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A copy of the shipped demo package."""
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".engines"))
    return root


def test_rehash_adopts_an_edited_manifest_and_prints_its_digest(
    package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An edited manifest is refused (exit 5, one line); ``lineside model rehash`` adopts it,
    prints the new digest, and the package loads with it."""
    path = package / "manifest.json"
    raw = json.loads(path.read_text())
    raw["thresholds"]["image_score"] = 0.2
    path.write_text(json.dumps(raw, indent=2))
    code, _, err = _run(["explain", str(package), str(package / "none.png")], capsys)
    assert code == 5 and "content does not match its package_sha256" in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = _run(["model", "rehash", str(package)], capsys)
    assert code == 0
    digest = _json(out)["package_sha256"]
    assert load_package(package).sha256 == digest != raw["package_sha256"]
