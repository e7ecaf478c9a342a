"""OS scheduling priority: the node's background threads, and a whole process.

The line's own threads (the event loop, the inference worker, the pulse thread)
keep the process's priority; the model's sentences, which may wait, are written
``BACKGROUND_NICE`` steps nicer, so on a busy machine the scheduler hands a core
to the line first. Only a thread that spends its time outside the GIL (the
decoder runs in ONNX Runtime) is lowered: one holding the GIL while the OS
keeps it waiting would hold up every other thread with it. Linux sets ``nice``
per thread; where the OS refuses, the thread keeps the process's priority and
the log says so.

Where the kernel groups CPU time by session (``kernel.sched_autogroup_enabled``), a
process's nice counts only against the other processes of its session; between sessions,
each session's own nice (its autogroup) does. :func:`set_nice` therefore also sets the
session's when the process leads one (a service, a detached start, ``setsid``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

BACKGROUND_NICE = 5
"""How much nicer than the process a background thread runs."""


def lower_priority() -> None:
    """Run the calling thread ``BACKGROUND_NICE`` steps nicer than it runs now (a thread
    initializer, or the first call of a thread's body)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
    except (AttributeError, OSError) as exc:
        log.warning(
            "thread_priority_unchanged", thread=threading.current_thread().name, error=str(exc)
        )


def set_nice(nice: int) -> bool:
    """Run this process at ``nice`` (threads started later inherit it) and, when it leads
    its session, give the session that nice too. Returns whether the session's was set.
    Raises ``OSError`` when the nice is not allowed (below 0 without the privilege)."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    if os.getsid(0) != os.getpid():
        return False
    try:
        Path("/proc/self/autogroup").write_text(str(nice), encoding="ascii")
    except OSError:
        return False
    return True
