"""The pipeline bench sees every part: untracked ones are counted and fail the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, str(REPO / "bench" / "pipeline.py"), "--no-hmi", "--seed", "3"]


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        check=False,
    )


@pytest.mark.slow
def test_an_overspeed_belt_counts_its_untracked_parts_and_fails_the_run() -> None:
    """A belt over line.max_speed_mm_s (asked for on purpose): the node tracks almost nothing,
    the bench still counts every part that passed, its defective ones as escapes, and exits 1
    with a one-line reason while the JSON still prints."""
    run = _bench("--parts", "40", "--rate", "200", "--allow-overspeed", "--defect-rate", "0.3")
    assert run.returncode == 1, run.stderr
    report = json.loads(run.stdout)
    assert report["parts_passed"] == 40
    untracked = report["untracked_parts"]
    assert untracked["good"] + untracked["defective"] == report["unjudged_parts"] > 30
    assert untracked["defective"] > 0
    assert report["escapes"] >= untracked["defective"]
    assert report["machine"]["cores"] >= 1 and len(report["config_sha256"]) == 64
    # the node's own error log lines (JSON) come first; the verdict is one plain line
    reason = run.stderr.strip().splitlines()[-1]
    assert reason.startswith("pipeline bench: ") and "passed the reject station unjudged" in reason


def test_an_overspeed_rate_is_refused_unless_asked_for() -> None:
    """A rate whose belt exceeds the config's max speed is a usage error naming the key."""
    run = _bench("--parts", "10", "--rate", "200")
    assert run.returncode == 2
    assert "line.max_speed_mm_s" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_a_clean_run_judges_every_part_and_passes() -> None:
    """At a plausible speed every part that passed was judged and the bench exits 0."""
    run = _bench("--parts", "30", "--rate", "20")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["parts_passed"] == 30 and report["unjudged_parts"] == 0
    assert report["parts_tracked"] >= 30
