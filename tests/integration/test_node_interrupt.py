"""``lineside run`` stopped by Ctrl-C at a terminal (SIGINT to its whole process group)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.config import DEFAULT_CONFIG


def test_ctrl_c_drains_the_line_and_exits_0(tmp_path: Path) -> None:
    """SIGINT to the node's process group, the sim renderer included: the node drains the
    parts in flight (every one still gets its frame: no ``frame_missing``), prints its
    summary and exits 0, with no traceback from any process."""
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    text = text.replace('state_dir = "state"', f'state_dir = "{tmp_path}"')
    hmi_on = 'enabled = true\nendpoint = "opc.tcp://0.0.0.0:4840/lineside/"'
    assert hmi_on in text
    text = text.replace(hmi_on, "enabled = false")
    cfg = tmp_path / "node.toml"
    cfg.write_text(text, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "--json-logs", "run", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a foreground job
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"node_started"' in line:
                break
        time.sleep(3.0)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    summary = json.loads(out[out.rindex('{\n  "summary"') :])["summary"]
    assert summary["stats"]["inspected"] >= 20
    assert summary["undecided_at_stop"] == 0
    assert "frame_missing" not in summary["stats"]["fail_safe_by_reason"], summary
