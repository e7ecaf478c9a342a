"""``lineside model ...``: the package's digest, keys and signatures from the command line."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from hil.line import sim_config
from models.package import load_package, write_manifest
from node.__main__ import main
from node.config import DEFAULT_CONFIG, Config, load_config
from node.errors import ModelError
from node.wiring import load_backend

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


SIM_TOML = DEFAULT_CONFIG.read_text()


def _config(tmp_path: Path, package: Path, *lines: str) -> Path:
    """configs/sim.toml judged by ``package``, with ``lines`` added to [inspection.model]."""
    old = 'package = "models/demo"'
    assert old in SIM_TOML
    text = SIM_TOML.replace(old, "\n".join([f'package = "{package}"', *lines]))
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def _keys(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[Path, Path]:
    code, out, _ = _run(["model", "keygen", str(tmp_path / name)], capsys)
    assert code == 0
    result = _json(out)
    return Path(result["private_key"]), Path(result["public_key"])


def test_keygen_writes_a_private_key_only_its_owner_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lineside model keygen PREFIX`` writes PREFIX.key with mode 0600 and PREFIX.pub, and
    refuses (exit 2) to overwrite an existing key."""
    private, public = _keys(tmp_path, "qa", capsys)
    assert private == tmp_path / "qa.key" and public == tmp_path / "qa.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public.read_bytes()
    before = private.read_bytes()
    code, _, err = _run(["model", "keygen", str(tmp_path / "qa")], capsys)
    assert code == 2 and "exists; not overwriting" in err
    assert private.read_bytes() == before


def test_sign_then_verify_names_the_trusted_signer(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signed package verifies against its key (digest and key id printed); against
    another key it is refused (exit 5); a forged signature is refused as invalid."""
    private, public = _keys(tmp_path, "qa", capsys)
    _, other = _keys(tmp_path, "other", capsys)
    code, out, _ = _run(["model", "sign", str(package), "--key", str(private)], capsys)
    assert code == 0 and (package / "signature.json").is_file()
    signed = _json(out)
    code, out, _ = _run(["model", "verify", str(package), "--key", str(public)], capsys)
    result = _json(out)
    assert code == 0 and result["signature"] == "valid"
    assert result["package_sha256"] == load_package(package).sha256 == signed["package_sha256"]
    assert result["key_id"] == signed["key_id"]
    code, _, err = _run(["model", "verify", str(package), "--key", str(other)], capsys)
    assert code == 5 and f"signed by key {signed['key_id']}, which is not trusted" in err
    record = json.loads((package / "signature.json").read_text())
    record["signature"] = "00" * 64
    (package / "signature.json").write_text(json.dumps(record))
    code, _, err = _run(["model", "verify", str(package)], capsys)
    assert code == 5 and "the signature does not verify" in err


def test_check_config_reports_a_missing_package_by_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config naming a package that does not exist fails check-config (exit 2) with one
    line naming inspection.model.package."""
    cfg = _config(tmp_path, tmp_path / "nowhere")
    code, out, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2, out
    assert "1 problem(s)" in err
    assert f"inspection.model.package: {tmp_path / 'nowhere'}: not a model package" in err


def test_check_config_reports_a_corrupt_graph_and_an_edited_manifest(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package whose ONNX graph does not match its hash, or whose manifest was edited,
    fails check-config with the file and the key named, without running the model."""
    cfg = _config(tmp_path, package)
    assert _run(["check-config", str(cfg)], capsys)[0] == 0
    with (package / "detect.onnx").open("ab") as f:
        f.write(b"\0")
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2 and "inspection.model.package:" in err
    assert "detect.onnx: sha256 mismatch" in err
    shutil.copy(DEMO / "detect.onnx", package / "detect.onnx")
    raw = json.loads((package / "manifest.json").read_text())
    raw["thresholds"]["image_score"] = 0.999
    (package / "manifest.json").write_text(json.dumps(raw))
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2 and "content does not match its package_sha256" in err


def test_check_config_checks_the_pin_the_signature_and_the_geometry(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config names inspection.model.sha256 for a wrong pin,
    inspection.model.require_signature for an unsigned package,
    inspection.model.trusted_keys for an untrusted signer and for a key file that is
    missing, and inspection.roi_size_px for a package of another input size; a pinned
    package signed by a trusted key is ok, its digest and signer printed."""
    digest = load_package(package).sha256
    private, public = _keys(tmp_path, "qa", capsys)
    _, other = _keys(tmp_path, "other", capsys)
    wrong = _config(tmp_path, package, f'sha256 = "{"0" * 64}"')
    code, _, err = _run(["check-config", str(wrong)], capsys)
    assert code == 2 and f"inspection.model.sha256: pins {'0' * 64}, but" in err
    assert digest in err
    required = _config(
        tmp_path, package, "require_signature = true", f"trusted_keys = ['{public}']"
    )
    code, _, err = _run(["check-config", str(required)], capsys)
    assert code == 2 and "inspection.model.require_signature:" in err and "not signed" in err
    assert _run(["model", "sign", str(package), "--key", str(private)], capsys)[0] == 0
    untrusted = _config(tmp_path, package, f"trusted_keys = ['{other}']")
    code, _, err = _run(["check-config", str(untrusted)], capsys)
    assert code == 2 and "inspection.model.trusted_keys:" in err and "not among them" in err
    missing = _config(tmp_path, package, f"trusted_keys = ['{public}', '{tmp_path / 'no.pub'}']")
    code, _, err = _run(["check-config", str(missing)], capsys)
    assert code == 2 and "inspection.model.trusted_keys[1]:" in err and "cannot read" in err
    ok = _config(
        tmp_path,
        package,
        f'sha256 = "{digest}"',
        "require_signature = true",
        f"trusted_keys = ['{public}']",
    )
    code, out, err = _run(["check-config", str(ok)], capsys)
    assert code == 0, err
    assert digest in out and "pinned" in out and "signed by trusted key" in out
    small = ok.read_text().replace("roi_size_px = 256", "roi_size_px = 128")
    ok.write_text(small)
    code, _, err = _run(["check-config", str(ok)], capsys)
    assert code == 2 and "inspection.roi_size_px is 128" in err


def test_the_node_refuses_to_run_a_package_its_config_does_not_trust(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Loading the backend (what ``lineside run`` does) refuses a wrong pin and a signature
    carried over from another package, naming the key; the pinned, signed package runs."""
    digest = load_package(package).sha256
    private, public = _keys(tmp_path, "qa", capsys)
    base = load_config(DEFAULT_CONFIG)

    def cfg(**model: object) -> Config:
        return sim_config(base, inspection={"model": {"package": package, **model}})

    with pytest.raises(ModelError, match=r"^inspection\.model\.sha256: pins 1{64}, but"):
        load_backend(cfg(sha256="1" * 64))
    other = tmp_path / "other"
    shutil.copytree(package, other)
    fields = load_package(other).manifest.model_dump(mode="json")
    fields["thresholds"]["image_score"] = 0.9
    write_manifest(other, fields)  # another package: another digest
    assert _run(["model", "sign", str(other), "--key", str(private)], capsys)[0] == 0
    shutil.copy(other / "signature.json", package / "signature.json")
    with pytest.raises(ModelError, match=r"inspection\.model\.package: .*not this package's"):
        load_backend(cfg(trusted_keys=(public,)))
    assert _run(["model", "sign", str(package), "--key", str(private)], capsys)[0] == 0
    backend = load_backend(cfg(sha256=digest, trusted_keys=(public,), require_signature=True))
    assert backend.name == "onnxruntime"


def test_check_config_verifies_the_shadow_candidate_by_its_own_keys(
    package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shadow candidate is verified like the active package and reported under
    inspection.shadow: a sound one is listed beside the model; a missing one, a changed
    one (against its pin) and one on the classical backend are each refused by key."""
    digest = load_package(package).sha256
    good = _config(tmp_path, DEMO).read_text() + "\n[inspection.shadow]\n"
    cfg = tmp_path / "shadow.toml"
    cfg.write_text(good + f'package = "{package}"\nsha256 = "{digest}"\n')
    code, out, _ = _run(["check-config", str(cfg)], capsys)
    assert code == 0 and f"shadow {package}: package_sha256 {digest}" in out
    cfg.write_text(good + f'package = "{tmp_path / "nowhere"}"\n')
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2 and "inspection.shadow.package: " in err and "not a model package" in err
    cfg.write_text(good + f'package = "{package}"\nsha256 = "{"0" * 64}"\n')
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2 and f"inspection.shadow.sha256: pins {'0' * 64}" in err
    classical = good.replace('backend = "onnxruntime"', 'backend = "classical"')
    assert classical != good
    cfg.write_text(classical + f'package = "{package}"\n')
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2
    assert "inspection.shadow.package: a shadow candidate needs a model backend" in err


def test_check_config_refuses_a_recipe_rule_for_a_type_the_model_does_not_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rule over a type the package cannot report ("dent") would never fire: check-config
    names the rule's key and the types the model knows, exit 2."""
    cfg = _config(tmp_path, DEMO)
    rim_cracks = 'zone = "rim"\ntypes = ["crack"]'
    text = cfg.read_text().replace(rim_cracks, rim_cracks.replace("crack", "dent"))
    assert '"dent"' in text
    cfg.write_text(text)
    code, _, err = _run(["check-config", str(cfg)], capsys)
    assert code == 2
    assert "inspection.recipe.rules.0.types: the model reports no type 'dent'" in err
    assert "crack" in err and "1 problem(s)" in err
