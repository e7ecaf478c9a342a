"""Waiting in the integration tests for something a real peer does."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    what: str,
    check: Callable[[], Any],
    timeout_s: float = 10.0,
    *,
    poll_s: float = 0.05,
    context: Callable[[], str] = lambda: "",
) -> Any:
    """``check()``'s first truthy value, polled every ``poll_s``; after ``timeout_s`` an
    ``AssertionError`` naming ``what``, the last value and ``context()`` (a log's tail)."""
    end = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s} s (last: {last!r})\n{context()}")
