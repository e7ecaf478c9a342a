"""The node on the simulated line, judged by the shipped defect model on ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

from hil.line import run_line, sim_config
from node.config import DEFAULT_CONFIG, load_config
from node.line.results import PartResult

MODEL_CONFIG = DEFAULT_CONFIG
"""configs/sim.toml: the default config judges with the shipped model."""


async def test_model_backend_rejects_defects_on_target_and_explains_them(tmp_path: Path) -> None:
    """80 parts, 30 % defective: every reject strikes its part, few defects escape, no part
    passes without a verdict, and each judged reject carries a sentence and its type.

    The demo model still misses some faint scratches that the classical detector catches
    (about 6 % of defective parts over 200 parts), so the bound here is loose; the rate
    itself is measured by ``bench/pipeline.py`` (on configs/sim.toml).
    """
    cfg = sim_config(
        load_config(MODEL_CONFIG),
        node={"state_dir": tmp_path},
        hmi={"enabled": False},
        sim={"defect_rate": 0.3, "seed": 17},
    )
    results: list[PartResult] = []
    report, node, _ = await run_line(cfg, 80, on_result=results.append)
    assert report["parts"] == 80
    assert report["missed_rejects"] == 0
    assert report["wrong_part_hits"] == 0
    assert report["escapes"] <= max(2, round(0.15 * report["defective_parts"])), report
    assert report["false_rejects"] <= 2, report
    # a loaded machine may make a part late; it is then rejected, never passed
    assert set(report["failsafe_reasons"]) <= {"trigger_late", "deadline_missed", "frame_missing"}
    judged = [r for r in results if r.verdict.reject and not r.verdict.fail_safe]
    assert judged
    for r in judged:
        assert r.verdict.explanation and r.verdict.defect_type
        assert r.verdict.findings is not None and r.verdict.findings.backend == "onnxruntime"
    assert node.summary.undecided_at_stop == 0
