"""The pipeline bench sees every part: untracked ones are counted and fail the run."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = [sys.executable, str(REPO / "bench" / "pipeline.py"), "--seed", "3"]


def _bench(*args: str, hmi: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BENCH, *([] if hmi else ["--no-hmi"]), *args],
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


@pytest.mark.slow
def test_the_curve_reports_each_rate_and_draws_it(tmp_path: Path) -> None:
    """--curve 20,120 runs one line per rate: a point each, the one whose belt is over the
    config's rated maximum run on a line rated for it (and saying so), every part judged;
    --plot writes the PNG."""
    png = tmp_path / "curve.png"
    run = _bench("--parts", "20", "--curve", "20,120", "--plot", str(png))
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["bench"] == "pipeline-curve" and report["parts_per_rate"] == 20
    slow, fast = report["points"]
    assert (slow["rate"], fast["rate"]) == (20.0, 120.0)
    assert slow["max_speed_mm_s"] == 3000.0 and fast["max_speed_mm_s"] == 120 * 32.0
    for point in (slow, fast):
        assert point["latency_ms"]["p99"] > 0 and 0.0 <= point["failsafe_share"] <= 1.0
        assert point["missed_rejects"] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_plot_without_a_curve_is_a_usage_error() -> None:
    """--plot alone names what is missing (exit 2, no traceback)."""
    run = _bench("--parts", "10", "--plot", "x.png")
    assert run.returncode == 2
    assert "--plot draws a curve: give --curve too" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_web_attaches_browsers_that_receive_the_results_as_cards() -> None:
    """--web 1: lineside web follows the node and one headless Chromium shows /live while
    the line runs (attached before the belt started); the page received the cards, the web's
    feed read every published result from the audit store (but a few at the very end),
    the CPU the load took is reported, and the web is gone once the bench exits."""
    run = _bench("--parts", "200", "--rate", "20", "--web", "1", hmi=True)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["hmi"] is True and report["parts_passed"] == 200
    web = report["web"]
    assert web["browsers"] == 1 and len(web["cards"]) == 1
    # attached before the first part: the page saw most results as cards (a web that falls
    # behind hands a page only the newest web.cards of a batch)
    assert web["cards"][0]["results"] > report["parts"] // 2
    assert web["feed"]["seen"] >= report["parts"] - 5
    assert web["feed"]["viewers"] == 1
    cpu = web["cpu_s"]
    assert cpu["web"] > 0 and cpu["browsers"] > 0 and cpu["window_s"] >= 8
    with pytest.raises(OSError):
        urllib.request.urlopen(web["url"] + "/status", timeout=2)


def test_web_needs_the_hmi_server() -> None:
    """--web with --no-hmi is a usage error naming both (exit 2, no traceback)."""
    run = _bench("--parts", "10", "--web", "1")
    assert run.returncode == 2
    assert "drop --no-hmi" in run.stderr and "Traceback" not in run.stderr
