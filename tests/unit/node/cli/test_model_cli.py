"""``lineside synth|train|eval|explain`` and the model backends' config checks."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from hil.line import sim_config
from node.__main__ import main
from node.config import DEFAULT_CONFIG, load_config
from node.errors import ModelError
from node.wiring import load_backend

DEMO = Path(__file__).resolve().parents[4] / "models" / "demo"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_synth_writes_the_mvtec_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``lineside synth`` writes train/good, test/<type> and masks, and prints the counts."""
    argv = ["synth", "--out", str(tmp_path), "--seed", "3", "--families", "moulded_plastic"]
    argv += ["--train-good", "2", "--test-good", "1", "--test-per-kind", "1"]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    counts = json.loads(out[out.index("{\n") :])  # log lines may come first
    assert counts["moulded_plastic"]["train/good"] == 2
    cat = tmp_path / "moulded_plastic"
    assert len(list((cat / "train" / "good").glob("*.png"))) == 2
    assert list((cat / "ground_truth").glob("*/*_mask.png"))


def test_explain_refuses_a_missing_package_with_the_model_exit_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package folder that does not exist is a model error: exit 5 and a message."""
    code, _, err = _run(["explain", str(tmp_path / "nope"), str(tmp_path / "x.png")], capsys)
    assert code == 5
    assert "nope" in err


def test_explain_names_a_missing_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An image that does not exist is bad input: exit 2, naming the file."""
    code, _, err = _run(["explain", str(DEMO), str(tmp_path / "missing.png")], capsys)
    assert code == 2
    assert "missing.png" in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--holdout", "0.95"], "--holdout"),
        (["--cv", "1"], "--cv"),
        (["--holdout-list", "nowhere.txt"], "nowhere.txt"),
        (["--max-false-alarm", "0.7"], "--max-false-alarm"),
        (["--part-threshold", "300"], "--part-threshold"),
    ],
)
def test_train_refuses_bad_holdout_settings_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    """A holdout share out of range, fewer than two folds or a missing holdout list:
    exit 2 and one line naming the option or file, before any training."""
    _run(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--seed",
            "3",
            "--families",
            "moulded_plastic",
            "--train-good",
            "2",
            "--test-good",
            "2",
            "--test-per-kind",
            "2",
        ],
        capsys,
    )
    argv = ["train", str(tmp_path / "moulded_plastic"), "--out", str(tmp_path / "pkg"), *extra]
    code, _, err = _run(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("lineside:")]
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in err


def test_train_starts_from_the_shipped_package_unless_told_otherwise(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``lineside train`` on images of the shipped package's size starts from its weights
    (the manifest names it, and the types kept in place that ``--in-place`` named);
    ``--from`` with ``--scratch``, and an ``--in-place`` name that is no defect type of
    the data set, are refused in one line, exit 2."""
    from models.package import load_package

    argv = ["synth", "--out", str(tmp_path), "--seed", "3", "--families", "moulded_plastic"]
    argv += ["--train-good", "3", "--test-good", "2", "--test-per-kind", "2"]
    assert _run(argv, capsys)[0] == 0
    data = str(tmp_path / "moulded_plastic")
    code, _, err = _run(
        ["train", data, "--out", str(tmp_path / "x"), "--from", str(DEMO), "--scratch"], capsys
    )
    lines = [line for line in err.splitlines() if line.startswith("lineside:")]
    assert code == 2 and len(lines) == 1 and "--scratch" in lines[0]
    argv = ["train", data, "--out", str(tmp_path / "pkg"), "--steps", "0"]
    code, _, err = _run([*argv, "--in-place", "missing_feature", "screw"], capsys)
    lines = [line for line in err.splitlines() if line.startswith("lineside:")]
    assert code == 2 and len(lines) == 1 and "--in-place" in lines[0] and "'screw'" in lines[0]
    assert not (tmp_path / "pkg").exists()
    code, out, _ = _run([*argv, "--in-place", "missing_feature", "spot"], capsys)
    assert code == 0, out
    trained = load_package(tmp_path / "pkg")
    assert trained.manifest.training["from_package_sha256"] == load_package(DEMO).sha256
    assert trained.manifest.training["fixed_place_types"] == ["missing_feature", "spot"]


def test_model_backend_checks_the_package_against_the_config(tmp_path: Path) -> None:
    """The node refuses a missing package and one trained for another ROI size, by key."""
    base = load_config(DEFAULT_CONFIG)
    missing = sim_config(
        base,
        inspection={"backend": "onnxruntime", "model": {"package": tmp_path / "none"}},
    )
    with pytest.raises(ModelError, match=r"inspection\.model\.package"):
        load_backend(missing)
    other_size = sim_config(
        base,
        inspection={"backend": "onnxruntime", "roi_size_px": 128, "model": {"package": DEMO}},
    )
    with pytest.raises(ModelError, match="roi_size_px"):
        load_backend(other_size)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_model_backend_names_the_key_of_a_runtime_that_cannot_start() -> None:
    """A runtime that cannot start (TensorRT not installed) is a ModelError naming the backend."""
    cfg = sim_config(
        load_config(DEFAULT_CONFIG),
        inspection={"backend": "tensorrt", "model": {"package": DEMO}},
    )
    want = "inspection.backend = 'tensorrt': the TensorRT backend needs the tensorrt package"
    with pytest.raises(ModelError, match=re.escape(want)):
        load_backend(cfg)


def test_explain_with_a_config_judges_by_its_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``explain --config`` adds the recipe's verdict, the cited rule, each finding's zones
    and millimetres, and the sentence in en/de/ja naming the zone and the length."""
    argv = ["synth", "--out", str(tmp_path), "--seed", "3", "--families", "moulded_plastic"]
    argv += ["--train-good", "1", "--test-good", "1", "--test-per-kind", "1"]
    assert _run(argv, capsys)[0] == 0
    image = tmp_path / "moulded_plastic" / "test" / "crack" / "000.png"
    code, out, _ = _run(["explain", str(DEMO), str(image), "--config", str(DEFAULT_CONFIG)], capsys)
    assert code == 0
    got = json.loads(out[out.index("{\n") :])
    assert got["verdict"] == "reject" and got["rule"]
    (finding,) = got["judged"]
    assert set(finding["zones"]) <= {"rim", "boss", "ribs", "face"}
    assert set(got["sentences"]) == {"en", "de", "ja"}
    en = got["sentences"]["en"]
    assert en.startswith(got["defect_type"].capitalize() + ", ")
    assert [z for z in finding["zones"] if f"on the {z}," in en]  # a zone it touches
    assert got["facts_text"]["en"].split(", ")[1] in en  # the calibrated length, as the facts say


def test_explain_with_a_bad_config_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config whose rule names an unknown zone is refused before the model runs: exit 2."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(
        DEFAULT_CONFIG.read_text().replace('zone = "boss"\ntypes', 'zone = "gate"\ntypes')
    )
    code, _, err = _run(
        ["explain", str(DEMO), str(tmp_path / "x.png"), "--config", str(cfg)], capsys
    )
    assert code == 2
    assert "inspection.recipe.rules.1.zone: no zone named 'gate'" in err
