"""Audit store faults on the running node: visible, bounded, and nothing lost unseen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from node.config import Config
from tests.unit.node.audit.mounts import read_only_folder


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
