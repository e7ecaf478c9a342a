"""The fleet bench: simulated edge nodes through a real Mosquitto that restarts mid-run,
the primary host takes every result."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hil.mosquitto import MOSQUITTO

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed")
def test_a_broker_restart_loses_no_result_and_the_fleet_recovers(tmp_path: Path) -> None:
    """Three nodes (in one worker process) at 10 results/s for 4 s, the broker down from
    1 s to 4 s: the host takes every result each store committed (none missing, none
    short, no seq gap), every node is born again, and the report has a recovery time,
    latencies, the CPU figures and the terminal table's text."""
    screen = tmp_path / "screen.txt"
    run = subprocess.run(
        [
            *(sys.executable, str(REPO / "bench" / "fleet.py"), "--nodes", "3", "--rate", "10"),
            *("--seconds", "4", "--broker-restart-at", "1", "--down-s", "3", "--workers", "1"),
            *("--settle-s", "15", "--screenshot", str(screen) if shutil.which("tmux") else ""),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    r = report["results"]
    assert r["written"] == 3 * 40, r
    assert (r["taken"], r["missing"], r["seq_gaps"], r["short"]) == (r["written"], 0, 0, []), r
    assert r["births"] >= 6, r  # each node born before the restart and again after it
    restart = report["restart"]
    assert restart["nodes_reborn"] == 3 and 0 < restart["recovery_s"] < 15, restart
    assert report["latency_ms"]["p50"] > 0 and report["latency_ms_all"]["max"] > 1000
    assert report["cpu_s"]["per_node"] > 0 and report["cpu_s"]["north_per_node"] > 0
    assert report["machine"]["cores"] >= 1 and len(report["loadavg"]) == 3
    if shutil.which("tmux"):
        text = screen.read_text()
        assert "lineside fleet" in text and "missing" in text and "online" in text, text
