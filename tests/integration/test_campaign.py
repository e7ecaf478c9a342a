"""The fault campaign, short: every scenario over 100 parts behind one PLC emulator each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hil.campaign import SCENARIO_NAMES
from node.config import Config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_every_fault_ends_in_a_recorded_fail_safe_never_a_silent_pass(tmp_path: Path) -> None:
    """``python -m hil.campaign --parts 100 --transport alternate``: every scenario passes —
    no defective part escaped because of the fault, no committed audit record lost, every
    unrecorded part counted, the node showed each fault (state, health or a fail-safe
    reason naming it), the PLC stopped trusting it within 5 s of each fault, and it
    refused the tampered package and the read-only audit folder — and each run left JSON
    and a PNG timeline; the exit status says so."""
    out = tmp_path / "campaign"
    args = ["--parts", "100", "--transport", "alternate", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "hil.campaign", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    summary = out / "campaign.json"
    assert summary.is_file(), (proc.returncode, proc.stderr[-3000:])
    rows = json.loads(summary.read_text())
    assert {r["scenario"] for r in rows} == set(SCENARIO_NAMES)
    failed = {
        r["scenario"]: (r["why_failed"], "".join(r.get("traceback", [])))
        for r in rows
        if not r["passed"]
    }
    assert not failed, failed
    assert proc.returncode == 0, proc.stdout[-3000:]
    for r in rows:
        if r.get("refused_at_start"):
            assert r["parts_passed"] == 0
            continue
        assert r["parts_passed"] >= 100
        assert r["fault_escapes"] == 0 and r["committed_records_lost"] == 0, r
        assert r["unrecorded_parts"] is not None
        assert (out / f"{r['scenario']}-{r['transport']}.png").stat().st_size > 10_000
    faults = [r for r in rows if not r.get("refused_at_start") and r["scenario"] != "hmi_flood"]
    assert faults and all(r["detect_ms"] is not None for r in faults), faults
    # the PLC stopped trusting the node within 5 s of each fault (heartbeat watch, Ready, Error)
    for r in faults:
        t = r["marks_s"]["inject"]
        seen = [p for p in r["plc_saw"] if t - 0.01 <= p["t_s"] <= t + 5.0]
        assert any(not p["heartbeat_ok"] for p in seen), (r["scenario"], r["plc_saw"])
    assert "fault campaign" in proc.stdout


def test_the_processes_a_campaign_spawns_do_not_import_the_campaign_again(tmp_path: Path) -> None:
    """``python -m hil.campaign`` runs from the package's ``__main__``, which
    ``multiprocessing`` does not re-run in a spawned child: the PLC emulator's process
    imports what it runs, not the campaign's scorer (hil.score, and SciPy with it), which
    cost each emulator and HMI process about a second of CPU at every scenario's start.
    ``-X importtime`` is passed on to spawned children, so stderr lists every process's
    imports."""
    out = tmp_path / "campaign"
    args = ["--only", "tampered_package", "--parts", "10", "--transport", "modbus"]
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hil.campaign", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()]
    assert imported.count("hil.plc_process") == 2  # the campaign's, and its emulator's own
    assert imported.count("hil.score") == 1  # the campaign's only


def test_the_node_process_s_own_processes_do_not_import_the_node_again(
    taught_config: Config, tmp_path: Path
) -> None:
    """``python -m hil.node_process`` (the node the SIGKILL scenario kills) imports the node's
    modules only in its own process: ``multiprocessing`` runs the main module again in each
    process the node spawns (here the render worker), where they cost time at every start.
    The node starts, says ``ready`` and stops when its stdin closes."""
    config_file = tmp_path / "node.json"
    config_file.write_text(json.dumps(taught_config.model_dump(mode="json")))
    stderr = tmp_path / "stderr.txt"  # a file: a full pipe would stop the node mid-start
    with stderr.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "hil.node_process", str(config_file), "5"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.communicate("", timeout=60)  # stdin closed: the node stops
        finally:
            if proc.poll() is None:
                proc.kill()
    err = stderr.read_text()
    assert proc.returncode == 0, err[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if "|" in line]
    assert imported.count("node.sim.render") == 2  # the node's, and its render worker's
    assert imported.count("node.app") == 1  # the node's only
