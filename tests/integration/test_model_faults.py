"""Model faults on the simulated line: a model that computes NaN passes no part."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from hil.line import run_line
from models.backend import Backend, Image
from models.findings import Findings
from models.package import load_package, write_manifest
from node.config import DEFAULT_CONFIG, load_config, parse_config
from node.line.judge import Reason
from node.line.results import PartResult

DEMO = Path(__file__).resolve().parents[2] / "models" / "demo"


def nan_package(tmp_path: Path) -> Path:
    """The demo package with ``normalization.std = 1e-40``, written (and hashed) as a
    packaging tool would: it loads, and every score it computes is NaN."""
    root = tmp_path / "nan-model"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".engines"))
    fields = load_package(root).manifest.model_dump(mode="json")
    fields["input"]["normalization"]["std"] = 1e-40
    write_manifest(root, fields)
    return root


# As in production, where numpy's overflow warning is printed, not raised: the NaN must be
# caught by the node's own checks, not by the test run's warnings-as-errors.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
async def test_a_model_computing_nan_rejects_every_part_fail_safe(tmp_path: Path) -> None:
    """12 parts, some defective, judged by a package whose scores are NaN: no part passes,
    every part is a fail-safe reject that strikes its part, the judged ones as
    ``model_error`` with the cause, and the node holds the model fault."""
    data = load_config(DEFAULT_CONFIG).model_dump(mode="python")
    data["inspection"]["model"]["package"] = nan_package(tmp_path)
    data["node"]["state_dir"] = tmp_path / "state"
    data["hmi"]["enabled"] = False
    data["sim"]["defect_rate"] = 0.3
    data["sim"]["seed"] = 17
    cfg = parse_config(data)
    results: list[PartResult] = []
    report, node, _ = await run_line(cfg, 12, on_result=results.append)
    assert report["parts"] == 12 and len(results) == 12
    assert all(r.action == "rejected" and r.verdict.fail_safe for r in results), report
    assert report["failsafe_rejects"] == 12 and report["missed_rejects"] == 0, report
    assert report["escapes"] == 0 and report["defective_parts"] > 0, report
    # a loaded machine may make a part late; it is then rejected too
    late = {"trigger_late", "deadline_missed", "frame_missing"}
    assert set(report["failsafe_reasons"]) <= {"model_error", *late}, report
    model = [r for r in results if r.verdict.reason is Reason.FAILSAFE_MODEL]
    assert len(model) >= 8, report
    assert all("not finite" in r.verdict.detail for r in model)
    assert node.operation.fault == "model" and "not finite" in node.operation.machine.detail


class NanScores:
    """Fault injection: a backend whose findings carry a NaN score (as one that does not check
    its own output would give), whatever the model underneath found."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        return [replace(f, anomaly_score=float("nan")) for f in self.inner.infer(images)]


async def test_nan_findings_from_any_backend_are_rejected_and_raise_the_model_fault(
    tmp_path: Path,
) -> None:
    """A backend that hands NaN scores to the node: the judge rejects every judged part as
    ``model_error`` (none passes) and the node holds the model fault."""
    data = load_config(DEFAULT_CONFIG).model_dump(mode="python")
    data["node"]["state_dir"] = tmp_path / "state"
    data["hmi"]["enabled"] = False
    data["sim"]["defect_rate"] = 0.3
    cfg = parse_config(data)
    results: list[PartResult] = []
    report, node, _ = await run_line(cfg, 10, backend_wrapper=NanScores, on_result=results.append)
    assert report["parts"] == 10 and report["escapes"] == 0, report
    assert all(r.action == "rejected" and r.verdict.fail_safe for r in results), report
    late = {"trigger_late", "deadline_missed", "frame_missing"}
    assert set(report["failsafe_reasons"]) <= {"model_error", *late}, report
    model = [r for r in results if r.verdict.reason is Reason.FAILSAFE_MODEL]
    assert len(model) >= 6 and all("anomaly_score nan" in r.verdict.detail for r in model)
    assert node.operation.fault == "model"
    assert node.operation.machine.detail.startswith("model: anomaly_score nan")
