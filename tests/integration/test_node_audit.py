"""The node writes its audit trail: one record per part, rejects with their images."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hil.line import run_line, sim_config
from node.audit.cli import store_directory
from node.audit.reader import AuditReader
from node.config import Config


async def test_every_part_is_recorded_with_reject_images(
    taught_config: Config, tmp_path: Path
) -> None:
    """A run of 60 parts leaves 60 records of that run; every judged reject's image is on disk
    with the recorded hash (a fail-safe reject has one only if a frame came); each record
    names the template that judged it and the recipe."""
    cfg = sim_config(
        taught_config,
        node={"state_dir": tmp_path},
        sim={"defect_rate": 0.3, "seed": 21},
        audit={"sample_passes": 0.0},
    )
    report, node, _ = await run_line(cfg, 60)
    assert node.recorder is not None
    run_id = node.recorder.run_id
    with AuditReader(store_directory(cfg), create=False) as reader:
        records = [r for r in reader.iter_records() if r.run_id == run_id]
        assert len(records) == report["parts"] == 60
        template_sha = hashlib.sha256(cfg.inspection.classical.template.read_bytes()).hexdigest()
        rejects = [r for r in records if r.verdict == "reject"]
        assert rejects, "a 30 % defect rate gives rejects"
        for rec in records:
            assert rec.model_sha256 == template_sha
            assert '"reject_score"' in rec.thresholds_json
            if rec.verdict == "reject" and not rec.fail_safe:
                assert rec.image_path is not None, rec.result_id
            if rec.image_path is not None:
                path = reader.image_file(rec)
                assert path is not None and path.is_file(), rec.result_id
                assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.image_sha256
            if rec.verdict == "pass":
                assert rec.image_path is None  # passes are not sampled in this run
    status = node.status()["audit"]
    assert status["dropped"] == 0 and status["committed"] >= 60
