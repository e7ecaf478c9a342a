"""The one supervisor per long-running task: log a crash, restart with backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger(__name__)

_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 5.0


async def supervise(
    name: str,
    run: Callable[[], Coroutine[Any, Any, None]],
    halt: asyncio.Event,
    on_restart: Callable[[], None],
) -> None:
    """Run ``run()`` until it returns or ``halt`` is set; restart it after a crash.

    Each crash is logged (``task_crashed``) and counted through ``on_restart``; the
    wait before the next start doubles from 0.1 s up to 5 s. A stage stuck in a crash
    loop makes no progress, so it starves the watchdog and the PLC heartbeat too.
    Cancellation is never swallowed.
    """
    backoff_s = _FIRST_BACKOFF_S
    while not halt.is_set():
        try:
            await run()
            return
        except Exception:  # the one place a task's crash is caught: log, then restart
            on_restart()
            log.exception("task_crashed", task=name, restart_in_s=backoff_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), backoff_s)
        backoff_s = min(backoff_s * 2, _MAX_BACKOFF_S)
