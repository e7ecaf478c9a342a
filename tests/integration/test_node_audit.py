"""The node writes its audit trail: one record per part, rejects with their images."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from hil.line import run_line, sim_config
from node.audit.reader import AuditReader
from node.audit.schema import DB_NAME
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
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
    with AuditReader(cfg.audit_directory, create=False) as reader:
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


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        out += [int(c) for c in text.split()]
    return out


def test_store_opens_cleanly_after_the_node_is_killed(
    taught_config: Config, tmp_path: Path
) -> None:
    """``lineside run`` killed with SIGKILL while it writes results: the store reopens (WAL
    recovery), passes SQLite's integrity check, and every record that names an image has it,
    with the recorded hash; the sim line's render worker exits with the node. (That nothing
    confirmed is lost is proved per record by test_audit_crash.py, where the writer reports
    what it committed.)"""
    state = tmp_path / "state"
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text(f"""
[node]
state_dir = "{state}"
[line]
counts_per_mm = 4.0
part_pitch_mm = 32.0
part_length_mm = 24.0
camera_position_mm = 100.0
reject_position_mm = 400.0
actuator_lead_mm = 6.0
[inspection.classical]
template = "{taught_config.inspection.classical.template}"
[audit]
sample_passes = 0.5
[sim]
speed_mm_s = 640.0
defect_rate = 0.3
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "--json-logs", "run", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"node_started"' in line:
                break
        time.sleep(4.0)  # about 80 parts at 20 parts/s
        children = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # the sim's render worker does not outlive the node it rendered for
    assert children, "the sim line renders in a worker process"
    deadline = time.monotonic() + 5.0
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [c for c in children if Path(f"/proc/{c}").exists()], children
    directory = state / "audit"
    with AuditStore(AuditSettings(), directory) as store:
        records = store.query(limit=10_000)
        images = [r for r in records if r.image_path is not None]
    assert len(records) >= 20
    assert images
    for rec in images:
        path = directory / "images" / str(rec.image_path)
        assert hashlib.sha256(path.read_bytes()).hexdigest() == rec.image_sha256
    db = sqlite3.connect(directory / DB_NAME)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
