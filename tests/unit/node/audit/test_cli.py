"""``lineside audit export`` and ``audit dataset``: formats, time ranges, the MVTec layout."""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import time
from pathlib import Path

import pytest

from models.data.mvtec import read_mvtec
from node.audit.cli import add_parsers, parse_when
from node.audit.export import CSV_COLUMNS
from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditStore
from node.config import DEFAULT_CONFIG, load_config
from node.line.judge import Reason
from tests.unit.node.audit import factories as F

H_NS = 3600 * 1_000_000_000


def run(argv: list[str]) -> int:
    """Parse ``argv`` as ``lineside`` would (after ``add_parsers``) and run the command."""
    p = argparse.ArgumentParser(prog="lineside")
    add_parsers(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """A closed store: six parts over the last six hours, two reviewed, images of all kept."""
    now = time.time_ns()
    directory = tmp_path / "state" / "audit"
    with AuditStore(AuditSettings(sample_passes=1.0), directory) as s:
        for i in range(6):
            kind = ("scratch", None, "spot")[i % 3]
            s.record(F.record(i, kind, wall_time_ns=now - (6 - i) * H_NS), F.image(i))
        s.flush()
        s.review("run1-0", "reject", None, "agreed", "anna")
        s.review("run1-1", "pass", None, "fine", "anna")
    return directory


def test_jsonl_export_keeps_the_record_shape(store_dir: Path, tmp_path: Path) -> None:
    """JSON lines hold one object per record, oldest first, with findings decoded and the review."""
    out = tmp_path / "out.jsonl"
    assert (
        run(["audit", "export", "--store", str(store_dir), "--format", "jsonl", "--out", str(out)])
        == 0
    )
    objs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [o["part_id"] for o in objs] == list(range(6))
    assert objs[0]["findings"]["regions"][0]["location"] == "upper left"
    assert objs[0]["explanations"]["de"].startswith("Kratzer")
    assert objs[0]["review"]["comment"] == "agreed" and objs[2]["review"] is None
    assert objs[0]["wall_time_utc"].endswith("Z") and objs[0]["thresholds"]["reject_score"] == 6.0


def test_csv_export_to_stdout_with_a_time_range(
    store_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CSV goes to stdout with the documented header; --since/--until bound the rows."""
    argv = ["audit", "export", "--store", str(store_dir), "--format", "csv"]
    assert run([*argv, "--since", "270m", "--until", "90m"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and tuple(rows[0]) == CSV_COLUMNS
    assert [int(r["part_id"]) for r in rows] == [2, 3, 4]
    assert rows[2]["explanation_en"] == "no defect found" and rows[2]["review_verdict"] == ""


def test_parse_when_reads_iso_and_relative_times() -> None:
    """--since accepts ISO dates (UTC with Z or an offset) and times ago; rejects the rest."""
    assert parse_when("1970-01-02T00:00:00Z") == 86_400 * 1_000_000_000
    assert parse_when("1970-01-01T01:00:00+01:00") == 0
    assert parse_when("2h", now_ns=10 * H_NS) == 8 * H_NS
    assert parse_when("1.5d", now_ns=48 * H_NS) == 12 * H_NS
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO date"):
        parse_when("yesterday")


def test_dataset_export_is_read_by_the_mvtec_reader(store_dir: Path, tmp_path: Path) -> None:
    """Reviewed images land where their review puts them and the project's reader loads them."""
    now = time.time_ns()
    with AuditStore(AuditSettings(sample_passes=1.0), store_dir) as s:
        s.record(
            F.record(20, fail_safe=Reason.FAILSAFE_MODEL, wall_time_ns=now - H_NS), F.image(20)
        )
        s.flush()
        s.review("run1-20", "reject", None, "blurred", "ben")
        s.review("run1-2", "reject", "missing feature", "a pin is missing", "ben")  # was a spot
        s.review("run1-4", "pass", None, "no defect", "ben")  # a pass, sampled
    out = tmp_path / "ds"
    assert run(["audit", "dataset", "--store", str(store_dir), "--out", str(out)]) == 0
    ds = read_mvtec(out)
    by_folder: dict[str, list[str]] = {}
    for sample in ds.samples:
        by_folder.setdefault(f"{sample.split}/{sample.defect_type}", []).append(sample.path.name)
    assert by_folder == {
        "train/good": ["run1-1.png", "run1-4.png"],
        "test/scratch": ["run1-0.png"],
        "test/missing_feature": ["run1-2.png"],
        "test/unknown_anomaly": ["run1-20.png"],
    }
    with AuditStore(AuditSettings(), store_dir) as s:
        rec = s.get("run1-2")
        assert rec is not None and rec.image_path is not None
        src = s.image_dir / rec.image_path
    copied = out / "test" / "missing_feature" / "run1-2.png"
    assert copied.read_bytes() == src.read_bytes()
    assert hashlib.sha256(copied.read_bytes()).hexdigest() == rec.image_sha256
    captions = {s.path.name: s.caption for s in ds.samples if s.caption}
    assert captions == {
        "run1-0.png": "scratch, <size>, <place>",
        "run1-2.png": "missing feature, <size>, <place>",
    }


def test_a_changed_review_moves_the_image_on_the_next_export(
    store_dir: Path, tmp_path: Path
) -> None:
    """Exporting again after a new review leaves the image only under its new label."""
    out = tmp_path / "ds"
    assert run(["audit", "dataset", "--store", str(store_dir), "--out", str(out)]) == 0
    assert (out / "test" / "scratch" / "run1-0.png").is_file()
    with AuditStore(AuditSettings(), store_dir) as s:
        s.review("run1-0", "pass", None, "was a reflection", "carl")
    assert run(["audit", "dataset", "--store", str(store_dir), "--out", str(out)]) == 0
    assert not (out / "test" / "scratch" / "run1-0.png").exists()
    ds = read_mvtec(out)
    assert {s.path.name for s in ds.select("train", "good")} == {"run1-0.png", "run1-1.png"}
    assert all(s.caption is None for s in ds.samples)


def test_the_store_is_found_from_the_node_config(store_dir: Path, tmp_path: Path) -> None:
    """Without --store the config's state_dir locates the store (audit/ inside it by default)."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8").replace(
        'state_dir = "state"', f'state_dir = "{store_dir.parent}"'
    )
    cfg_file = tmp_path / "node.toml"
    cfg_file.write_text(text, encoding="utf-8")
    assert load_config(cfg_file).audit_directory == store_dir
    out = tmp_path / "x.csv"
    assert (
        run(["audit", "export", "--config", str(cfg_file), "--format", "csv", "--out", str(out)])
        == 0
    )
    assert len(out.read_text(encoding="utf-8").splitlines()) == 7


def test_export_pages_through_many_records_in_time_order(tmp_path: Path) -> None:
    """An export longer than one read page has every record once, oldest first, ties in order."""
    now = time.time_ns()
    directory = tmp_path / "audit"
    with AuditStore(AuditSettings(synchronous="normal"), directory) as s:
        for i in range(1234):
            s.record(F.record(i, None, wall_time_ns=now + (i // 7) * 1000), None)
    out = tmp_path / "all.jsonl"
    assert run(["audit", "export", "--store", str(directory), "--out", str(out)]) == 0
    parts = [json.loads(line)["part_id"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert parts == list(range(1234))


def test_export_of_a_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing at a folder without a store raises an AuditError naming it (exit 1 in main)."""
    with pytest.raises(AuditError, match="no audit store there"):
        run(["audit", "export", "--store", str(tmp_path / "nothing")])
    assert not (tmp_path / "nothing").exists()
