"""Audit store faults on the running node: visible, bounded, and nothing lost unseen."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hil import mounts
from hil.line import run_line, sim_config
from hil.plc_rig import PlcRig, run_plc_line
from node.audit.reader import AuditReader
from node.audit.schema import DB_NAME
from node.config import Config
from tests.unit.node.audit.mounts import fill, read_only_folder, tmpfs


def _node_toml(path: Path, cfg: Config, state: Path, audit: str = "") -> Path:
    path.write_text(f"""
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
template = "{cfg.inspection.classical.template}"
[audit]
{audit}
""")
    return path


def test_a_read_only_audit_folder_stops_the_start_with_one_line(
    taught_config: Config, tmp_path: Path
) -> None:
    """``lineside run`` with its audit folder on a read-only file system exits 2 with one
    line naming ``audit.directory`` and the OS's reason — no traceback."""
    with read_only_folder(tmp_path / "ro") as folder:
        cfg_path = _node_toml(
            tmp_path / "node.toml", taught_config, tmp_path / "state", f'directory = "{folder}"'
        )
        done = subprocess.run(
            [sys.executable, "-m", "node", "--json-logs", "run", "--no-live", str(cfg_path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"lineside: audit.directory: {folder}: cannot write there ("), line
    assert "Read-only file system" in line or "Permission denied" in line


async def test_a_damaged_store_is_moved_aside_and_the_node_runs_on_a_fresh_one(
    taught_config: Config, tmp_path: Path
) -> None:
    """A store whose database is not SQLite any more: the node starts anyway, on a fresh
    store that records every part, and its status names where the old file went."""
    folder = tmp_path / "audit"
    folder.mkdir()
    (folder / DB_NAME).write_bytes(b"\x00garbage where the pages were\x00" * 200)
    cfg = sim_config(taught_config, audit={"directory": folder})
    report, node, _ = await run_line(cfg, 12)
    alarm = node.status()["alarms"]["audit_moved_aside"]
    moved = sorted(folder.glob(f"{DB_NAME}.corrupt-*"))
    assert len(moved) == 1 and str(moved[0]) in alarm
    assert node.recorder is not None
    assert len(_records_of(folder, node.recorder.run_id)) == report["parts"] == 12


# ---- a full disk under the running node ------------------------------------------------------

TMPFS_BYTES = 4 * 1024 * 1024
ROOM_BYTES = 600_000
"""Free space left on the tmpfs before the run: the store opens, then fills it in a second."""


async def _until(condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _records_of(folder: Path, run_id: str) -> set[str]:
    with AuditReader(folder, create=False) as reader:
        return {r.result_id for r in reader.iter_records() if r.run_id == run_id}


async def _run_on_a_full_disk(
    cfg: Config, folder: Path, parts: int
) -> tuple[dict[str, Any], PlcRig, dict[str, Any]]:
    """Run ``parts`` parts behind the Modbus PLC emulator with the audit store on a tmpfs
    that is nearly full; once parts go unrecorded, free the space again. What the node and
    the PLC showed at each step is returned beside the report."""
    filler = fill(folder, ROOM_BYTES)
    seen: dict[str, Any] = {}

    async def disk_fills_then_empties(rig: PlcRig) -> None:
        node = rig.node
        await _until(lambda: "audit" in node.status()["alarms"])
        seen["failing"] = node.status()
        await _until(lambda: node.status()["audit"]["unrecorded_parts"] > 0)
        await asyncio.sleep(0.5)  # parts reach the camera meanwhile
        seen["full"] = node.status()
        seen["plc_full"] = (await rig.emulator.call("stats"))["outputs"]
        seen["tracked_at_full"] = node.summary.parts_tracked
        await asyncio.sleep(1.0)
        seen["tracked_at_free"] = node.summary.parts_tracked
        filler.unlink()
        await _until(lambda: "audit" not in node.status()["alarms"])
        await asyncio.sleep(0.3)  # the PLC state loop writes the cleared code
        seen["recovered"] = node.status()
        seen["plc_recovered"] = (await rig.emulator.call("stats"))["outputs"]

    report, rig = await run_plc_line(
        cfg, parts, transport="modbus", mode="node_timed", during=disk_fills_then_empties
    )
    return report, rig, seen


def _audit_cfg(taught_config: Config, folder: Path, on_failure: str) -> Config:
    return sim_config(
        taught_config,
        sim={"defect_rate": 0.3, "seed": 8},
        audit={
            "directory": folder,
            "sample_passes": 1.0,
            "queue_max": 15,
            "on_failure": on_failure,
        },
    )


@pytest.mark.slow
async def test_a_full_disk_with_on_failure_stop_fails_the_line_safe_and_loses_nothing_committed(
    taught_config: Config, tmp_path: Path
) -> None:
    """The audit store's disk fills up (a 4 MB tmpfs): the alarm is on status at once; when
    ``queue_max`` records wait the ``audit`` fault is raised — Error, PLC Ready dropped,
    node_error set, error_code 7 — and every part reaching the camera is a fail-safe
    reject ``audit_unavailable``. With space again the alarm
    and the fault clear, the waiting records are written, and every part is either in the
    database or counted unrecorded."""
    with tmpfs(tmp_path / "audit", TMPFS_BYTES) as folder:
        cfg = _audit_cfg(taught_config, folder, "stop")
        report, rig, seen = await _run_on_a_full_disk(cfg, folder, 160)
        node = rig.node
        assert node.recorder is not None
        stored = _records_of(folder, node.recorder.run_id)
    failing = seen["failing"]
    assert not failing["healthy"] and "cannot write" in failing["alarms"]["audit"]
    full = seen["full"]
    assert full["state"] == "Error" and "audit" in full["faults"]
    assert seen["plc_full"]["node_ready"] == 0 and seen["plc_full"]["node_error"] == 1
    # the error code names the fault holding Error: the audit one, unless the loaded
    # machine put the node in Error a moment before with a reject that did not go out
    if full["state_detail"].startswith("audit:"):
        code = 7
    else:
        assert full["state_detail"].startswith("plc: the reject of part"), full
        assert node.summary.reject_fire_failures > 0
        code = 4
    assert seen["plc_full"]["error_code"] == code
    # parts tracked after the fault reach the camera while it lasts: all fail-safe
    after = range(seen["tracked_at_full"] + 1, seen["tracked_at_free"] - 3)
    assert len(after) > 5
    for part_id in after:
        verdict = rig.results[part_id].verdict
        assert verdict.fail_safe and verdict.reason.value == "audit_unavailable", part_id
    # a pulse the loaded machine's Modbus link failed to deliver is reported, never silent
    assert report["escapes"] <= node.summary.reject_fire_failures, report
    recovered = seen["recovered"]
    assert "audit" not in recovered["faults"] and recovered["alarms"] == {}
    assert seen["plc_recovered"]["error_code"] == code  # still Error until an operator resets
    audit = node.status()["audit"]
    assert audit["pending"] == 0 and audit["committed"] == len(stored)
    assert audit["unrecorded_parts"] == node.summary.parts_decided - len(stored) > 0


@pytest.mark.slow
async def test_a_full_disk_with_on_failure_continue_keeps_judging_and_counts_every_lost_record(
    taught_config: Config, tmp_path: Path
) -> None:
    """The same full disk with ``on_failure = "continue"``: the node stays in
    ContinuousExecution and keeps judging, the alarm is on status (not healthy) and on the
    PLC as error_code 7 with node_error clear; the parts not recorded are counted — exactly
    the parts decided minus the records in the database — and the alarm clears with space."""
    with tmpfs(tmp_path / "audit", TMPFS_BYTES) as folder:
        cfg = _audit_cfg(taught_config, folder, "continue")
        report, rig, seen = await _run_on_a_full_disk(cfg, folder, 160)
        node = rig.node
        assert node.recorder is not None
        stored = _records_of(folder, node.recorder.run_id)
    full = seen["full"]
    # a reject the loaded machine did not get out in time puts the node in Error (PLC
    # fault, code 4) whatever the audit store does; the alarm must still be there
    late_reject = full["state_detail"].startswith("plc: the reject of part")
    if late_reject:
        assert full["state"] == "Error" and node.summary.reject_fire_failures > 0
        assert seen["plc_full"]["node_error"] == 1 and seen["plc_full"]["error_code"] == 4
    else:
        assert full["state"] == "ContinuousExecution"
        assert seen["plc_full"]["node_ready"] == 1 and seen["plc_full"]["node_error"] == 0
        assert seen["plc_full"]["error_code"] == 7
    assert full["faults"] == {}
    assert not full["healthy"] and "parts unrecorded" in full["alarms"]["audit"]
    assert not any(r.verdict.reason.value == "audit_unavailable" for r in rig.results.values())
    assert seen["recovered"]["alarms"] == {}
    assert seen["recovered"]["healthy"] or late_reject
    assert seen["plc_recovered"]["error_code"] == (4 if late_reject else 0)
    # a pulse the loaded machine's Modbus link failed to deliver is reported, never silent
    assert report["escapes"] <= node.summary.reject_fire_failures, report
    audit = node.status()["audit"]
    assert audit["pending"] == 0 and audit["committed"] == len(stored)
    assert audit["unrecorded_parts"] == node.summary.parts_decided - len(stored) > 0


def test_filling_a_disk_that_another_writer_shrank_ends_full_instead_of_failing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rig's disk filler measures the free space, then writes; when another writer takes
    space in between (simulated: the measurement reports 512 KiB more than is free), it
    stops at the full disk instead of raising ENOSPC (what made the campaign's
    audit_disk_full scenario fail now and then), and the disk is left full."""
    real = os.statvfs

    class Stale:
        def __init__(self, st: os.statvfs_result) -> None:
            self.f_frsize = st.f_frsize
            self.f_bavail = st.f_bavail + (512 * 1024) // st.f_frsize

    with tmpfs(tmp_path / "disk", 4 * 2**20) as disk:
        monkeypatch.setattr(mounts.os, "statvfs", lambda p: Stale(real(p)))
        filler = fill(disk, 0)
        monkeypatch.undo()
        st = os.statvfs(disk)
        assert st.f_bavail * st.f_frsize < 64 * 1024
        assert filler.stat().st_size > 3 * 2**20
