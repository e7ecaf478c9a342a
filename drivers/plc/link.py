"""Reconnecting a PLC link: when the next attempt is due."""

from __future__ import annotations

import time

from drivers.plc.settings import BackoffSettings


class Reconnect:
    """When the next connection attempt is due, from consecutive failures and the backoff."""

    def __init__(self, backoff: BackoffSettings) -> None:
        self._backoff = backoff
        self.failures = 0
        self._due_ns = 0

    def failed(self) -> float:
        """Record a failed attempt or a lost link; return the wait before the next try (s)."""
        self.failures += 1
        delay = self._backoff.delay_s(self.failures)
        self._due_ns = time.monotonic_ns() + int(delay * 1e9)
        return delay

    def succeeded(self) -> None:
        """Record a successful connect."""
        self.failures = 0
        self._due_ns = 0

    def wait_s(self) -> float:
        """Seconds until the next attempt is due (0: now)."""
        return max(0.0, (self._due_ns - time.monotonic_ns()) / 1e9)
