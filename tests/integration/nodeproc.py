"""A node as the tests run it: ``python -m node --json-logs run CONFIG`` in a session of
its own, its output appended to a log file, and stopped by a signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def start_node(config: Path, log: Path) -> subprocess.Popen[str]:
    """Start the node on ``config``; its JSON log lines are appended to ``log``."""
    with open(log, "a", encoding="utf-8") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "node", "--json-logs", "run", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )


def stop_node(
    proc: subprocess.Popen[str] | None, sig: int = signal.SIGTERM, *, group: bool = True
) -> None:
    """Send ``sig`` to the node (``group``: its whole session, renderers and HMI too; else
    the node alone, which stops its children itself) and wait; SIGKILL to the group after
    20 s."""
    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
