"""Background threads run nicer than the line's own threads."""

from __future__ import annotations

import os
import threading

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
