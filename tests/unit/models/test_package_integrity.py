"""The manifest's own content is covered by the package digest: an edited manifest is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from models.package import (
    SIGNATURE_FILE,
    ModelPackage,
    PackageError,
    load_package,
    manifest_sha256,
    rehash_manifest,
    write_manifest,
)

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"


def _copy(pkg: ModelPackage, tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(pkg.root, root)
    return root


def _edit(root: Path, change: dict[str, dict[str, object]]) -> None:
    """Change keys of manifest sections by hand, as an editor would (digest left as it was)."""
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    for section, values in change.items():
        raw[section].update(values)
    path.write_text(json.dumps(raw, indent=2))


def test_the_shipped_demo_package_verifies_with_its_digest() -> None:
    """models/demo loads; its digest is the manifest's ``package_sha256`` and is the sha256
    of the rest of the manifest in canonical JSON."""
    pkg = load_package(DEMO)
    raw = json.loads((DEMO / "manifest.json").read_text())
    assert pkg.sha256 == raw["package_sha256"] == manifest_sha256(raw)
    assert len(pkg.sha256) == 64


def test_a_freshly_written_package_carries_a_matching_digest(tiny_package: ModelPackage) -> None:
    """What training writes verifies: the digest is over the manifest it wrote."""
    raw = json.loads((tiny_package.root / "manifest.json").read_text())
    assert tiny_package.sha256 == raw["package_sha256"] == manifest_sha256(raw)


@pytest.mark.parametrize(
    "change",
    [
        {"thresholds": {"image_score": 0.999}},  # turns off every defect reject
        {"input": {"normalization": {"mean": 0.4, "std": 1e-40}}},
        {"input": {"mm_per_px": 0.25}},
        {"dataset": {"images": 1}},
    ],
)
def test_an_edited_manifest_is_refused_with_one_line(
    tiny_package: ModelPackage, tmp_path: Path, change: dict[str, dict[str, object]]
) -> None:
    """Editing any manifest value by hand (files untouched) refuses the package with one line
    saying the content does not match its digest."""
    root = _copy(tiny_package, tmp_path)
    _edit(root, change)
    with pytest.raises(PackageError) as info:
        load_package(root)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        f"{root}: refused: manifest.json: content does not match its package_sha256 "
        "(edited after it was packaged)"
    )


def test_reformatting_the_manifest_keeps_the_digest(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """The digest is over the content, not the bytes: re-indenting and reordering keys
    leaves the package valid and its digest the same."""
    root = _copy(tiny_package, tmp_path)
    path = root / "manifest.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(dict(reversed(list(raw.items()))), indent=7))
    assert load_package(root).sha256 == tiny_package.sha256


def test_an_unhashed_manifest_is_refused_until_adopted(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """A manifest without ``package_sha256`` is refused with the way out named; adopting it
    (rehash) writes the digest of its content, and the package loads."""
    root = _copy(tiny_package, tmp_path)
    raw = json.loads((root / "manifest.json").read_text())
    del raw["package_sha256"]
    (root / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(PackageError, match=r"no package_sha256 .*lineside model rehash"):
        load_package(root)
    assert rehash_manifest(root) == tiny_package.sha256
    assert load_package(root).sha256 == tiny_package.sha256


def test_rehash_refuses_a_package_whose_files_changed(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """Adopting a manifest never blesses a changed graph: rehash refuses, manifest untouched."""
    root = _copy(tiny_package, tmp_path)
    before = (root / "manifest.json").read_bytes()
    with (root / "detect.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageError, match=r"not rehashed: detect\.onnx: sha256 mismatch"):
        rehash_manifest(root)
    assert (root / "manifest.json").read_bytes() == before


def test_rewriting_the_manifest_drops_a_stale_signature(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """A signature covers one digest: writing new content removes it."""
    root = _copy(tiny_package, tmp_path)
    (root / SIGNATURE_FILE).write_text("{}")
    fields = load_package(root).manifest.model_dump(mode="json")
    fields["thresholds"]["image_score"] = 0.5
    write_manifest(root, fields)
    assert not (root / SIGNATURE_FILE).exists()
    assert load_package(root).sha256 != tiny_package.sha256
