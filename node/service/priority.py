"""OS scheduling priority for the node's background threads.

The line's own threads (the event loop, the inference worker, the pulse thread)
keep the process's priority; the model's sentences, which may wait, are written
``BACKGROUND_NICE`` steps nicer, so on a busy machine the scheduler hands a core
to the line first. Only a thread that spends its time outside the GIL (the
decoder runs in ONNX Runtime) is lowered: one holding the GIL while the OS
keeps it waiting would hold up every other thread with it. Linux sets ``nice``
per thread; where the OS refuses, the thread keeps the process's priority and
the log says so.
"""

from __future__ import annotations

import os
import threading

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
