"""Shadow mode: the candidate (the shipped package on ONNX Runtime) judges what it is
offered beside a given active verdict, records both, and never blocks the caller."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.backend import Backend
from models.package import load_package
from models.runtime import open_runtime
from models.synth import PartSpec, render_part, render_scene
from node.config import RecipeSection
from node.line.judge import Judge, Reason, Verdict
from node.shadow import Shadow, plot_report, read_report

PACKAGE = Path(__file__).resolve().parents[3] / "models" / "demo"
MPP = 0.125
PART_MM = 24.0
"""The demo package's part size (the sim line's): the candidate judges parts it was made for."""


@pytest.fixture(scope="module")
def backend() -> Backend:
    return open_runtime("onnxruntime", load_package(PACKAGE), 1, 8, mm_per_px=MPP)


def crop(spec: PartSpec) -> npt.NDArray[np.uint8]:
    frame, _ = render_scene(render_part(spec, MPP), (256, 256), (127.5, 127.5), noise_seed=3)
    return frame


def active(part_id: int, reject: bool) -> Verdict:
    reason = Reason.DEFECT if reject else Reason.OK
    return Verdict(part_id, reject, reason, False, "", "crack" if reject else None, 1.0)


def test_both_verdicts_are_recorded_and_disagreements_kept_with_their_crop(
    backend: Backend, tmp_path: Path
) -> None:
    """A good part the active model passed is an agreement; the same part "rejected" by the
    active model, and a cracked part "passed" by it, are disagreements on either side, each
    with its crop saved; the report read back from disk says the same as the live counts."""
    good = crop(PartSpec("moulded_plastic", 5, None, PART_MM))
    cracked = crop(PartSpec("moulded_plastic", 6, "crack", PART_MM))
    judge = Judge(RecipeSection())
    with Shadow(backend, judge, tmp_path, package={"sha256": "ab" * 32}, queue_size=8) as s:
        assert s.offer(good, active(1, reject=False))
        assert s.offer(good, active(2, reject=True))
        assert s.offer(cracked, active(3, reject=False))
    counts = s.snapshot_counts()
    assert (counts.judged, counts.agree, counts.active_only, counts.candidate_only) == (3, 1, 1, 1)
    rows = [json.loads(line) for line in (tmp_path / "judged.jsonl").read_text().splitlines()]
    assert [r["part_id"] for r in rows] == [1, 2, 3]
    assert [r["agree"] for r in rows] == [True, False, False]
    assert rows[2]["candidate"]["reject"] and rows[2]["candidate"]["type"]
    assert rows[0]["image"] is None
    assert (tmp_path / "images" / "2.png").is_file() and (tmp_path / "images" / "3.png").is_file()
    report = read_report(tmp_path)
    assert report["judged"] == 3 and report["agree"] == 1
    assert (report["active_only"], report["candidate_only"]) == (1, 1)
    assert [e["part_id"] for e in report["examples"]] == [3, 2]  # newest first
    lo, hi = report["agreement_ci95"]
    assert lo < 1 / 3 < hi
    assert report["candidate"]["sha256"] == "ab" * 32
    png = plot_report(report, tmp_path / "report.png")
    assert png.stat().st_size > 10_000


def test_a_full_queue_skips_the_part_and_never_blocks(backend: Backend, tmp_path: Path) -> None:
    """Offered 60 parts at once into a queue of 2 (the model takes milliseconds per part),
    the parts it could not take are skipped and counted rather than waited for, and every
    part is either judged or skipped."""
    part = crop(PartSpec("moulded_plastic", 7, None, PART_MM))
    judge = Judge(RecipeSection())
    with Shadow(backend, judge, tmp_path, package={"sha256": "cd" * 32}, queue_size=2) as s:
        taken = [s.offer(part, active(i, reject=False)) for i in range(60)]
    counts = s.snapshot_counts()
    assert counts.skipped > 0
    assert counts.judged + counts.skipped == 60
    assert counts.skipped == taken.count(False)
    assert len((tmp_path / "judged.jsonl").read_text().splitlines()) == counts.judged
