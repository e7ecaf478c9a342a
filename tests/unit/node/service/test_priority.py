"""Background threads run nicer than the line's own threads; a process and the session
it leads run at the nice asked."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from node.service.priority import BACKGROUND_NICE, lower_priority


def test_a_background_thread_runs_nicer_and_leaves_the_others_alone() -> None:
    """A thread that lowers its priority runs BACKGROUND_NICE steps nicer than the calling
    (line) thread, whose own priority does not change."""
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[int] = []

    def body() -> None:
        lower_priority()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [min(19, mine + BACKGROUND_NICE)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_set_nice_sets_the_process_and_the_session_it_leads() -> None:
    """A process leading its own session (``setsid``) that calls set_nice(7) runs at nice 7
    and its session's autogroup too; one in its parent's session sets only its own."""
    code = (
        "import os, sys\n"
        "from node.service.priority import set_nice\n"
        "grouped = set_nice(7)\n"
        "group = open('/proc/self/autogroup').read().split()[-1] if grouped else '-'\n"
        "print(grouped, os.getpriority(os.PRIO_PROCESS, 0), group)\n"
    )
    led = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, start_new_session=True
    )
    shared = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert led.returncode == 0 and shared.returncode == 0, (led.stderr, shared.stderr)
    if Path("/proc/self/autogroup").exists():
        assert led.stdout.split() == ["True", "7", "7"]
    assert shared.stdout.split() == ["False", "7", "-"]
