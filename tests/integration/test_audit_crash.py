"""Crash safety of the audit store: a writer killed with SIGKILL loses nothing it confirmed."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from node.audit.images import file_sha256
from node.audit.schema import DB_NAME
from node.audit.settings import AuditSettings, Synchronous
from node.audit.store import AuditStore

ROOT = Path(__file__).resolve().parents[2]

# The child writes parts in threes (a scratch reject, a pass, a crack reject), 128 px images,
# half of the passes' images kept, and prints the ids of each three once flush() confirms them.
CHILD = r"""
import itertools, sys
from pathlib import Path

import structlog

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from tests.unit.node.audit import factories as F

directory, run_id, sync = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
store = AuditStore(AuditSettings(sample_passes=0.5, synchronous=sync), directory)
print("ready", flush=True)
for i in itertools.count():
    ids = []
    for j, kind in enumerate(("scratch", None, "crack")):
        part = 3 * i + j
        rec = F.record(part, kind, run_id=run_id)
        store.record(rec, F.image(part, 128))
        ids.append(rec.result_id)
    store.flush()
    print(" ".join(ids), flush=True)
"""


def _kill_mid_write(
    directory: Path, run_id: str, sync: Synchronous, rng: random.Random
) -> list[str]:
    """Start the child, let it confirm a few batches, SIGKILL it; the ids it confirmed."""
    err_path = directory.parent / f"{run_id}.stderr"
    with err_path.open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(directory), run_id, sync],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == "ready\n", err_path.read_text()
            lines = [child.stdout.readline() for _ in range(rng.randint(3, 12))]
            assert all(lines), f"child stopped early: {err_path.read_text()}"
            time.sleep(rng.uniform(0.0, 0.03))  # land the kill anywhere in a write
            os.kill(child.pid, signal.SIGKILL)
            lines += child.stdout.read().splitlines(keepends=True)
        finally:
            child.kill()
            child.wait()
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
    # every line printed was confirmed by flush(); a cut-off last line was not printed in full
    return [rid for line in lines if line.endswith("\n") for rid in line.split()]


@pytest.mark.parametrize("sync", ["full", "normal"])
def test_sigkill_loses_no_confirmed_record_or_image(tmp_path: Path, sync: Synchronous) -> None:
    """After SIGKILL mid-write the store opens cleanly (WAL recovered) and holds every record
    the child confirmed, each reject with an image whose sha256 matches; repeated three times."""
    directory = tmp_path / "audit"
    rng = random.Random(sync)
    confirmed: list[str] = []
    for round_ in range(3):
        ids = _kill_mid_write(directory, f"crash{round_}", sync, rng)
        confirmed += ids
        with capture_logs() as logs, AuditStore(AuditSettings(synchronous=sync), directory) as s:
            for rid in confirmed:
                rec = s.get(rid)
                assert rec is not None, f"{rid} confirmed but missing after the kill"
                if rec.verdict == "reject":
                    assert rec.image_path is not None, rid
                if rec.image_path is not None:
                    assert file_sha256(s.image_dir / rec.image_path) == rec.image_sha256, rid
            every = s.query(limit=1_000_000)
            held = len(every)
            named = {r.image_path for r in every if r.image_path is not None}
        opened = next(e for e in logs if e["event"] == "audit_store_opened")
        assert opened["records"] == held >= len(confirmed) > 0 and opened["recovered"] is True
        pngs = {
            p.relative_to(directory / "images").as_posix() for p in directory.glob("images/*/*.png")
        }
        assert pngs == named, "every image on disk belongs to a committed record"
        assert not list((directory / "images" / ".tmp").iterdir())
        with sqlite3.connect(directory / DB_NAME) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()
