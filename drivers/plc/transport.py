"""What both PLC transports share: link state and counters, round trips, the edge latch."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Literal

LinkState = Literal["connecting", "up", "down", "closed"]
"""``connecting``: never connected yet; ``up``: requests go through; ``down``: lost,
reconnecting with backoff; ``closed``: the driver was closed."""


class RttWindow:
    """The last ``size`` round trips in nanoseconds; thread-safe, O(1) to add."""

    def __init__(self, size: int = 512) -> None:
        self._values: collections.deque[int] = collections.deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ns: int) -> None:
        """Record one round trip (ns)."""
        with self._lock:
            self._values.append(ns)

    def percentile_ns(self, q: float) -> int | None:
        """The ``q`` quantile (0..1) in ns, or None before the first sample."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return None
        return values[min(len(values) - 1, int(q * len(values)))]

    def summary_ms(self) -> dict[str, float | int | None]:
        """``{"n", "p50", "p99", "max"}`` in milliseconds."""
        with self._lock:
            values = sorted(self._values)
        if not values:
            return {"n": 0, "p50": None, "p99": None, "max": None}

        def q(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))] / 1e6, 3)

        return {"n": len(values), "p50": q(0.5), "p99": q(0.99), "max": round(values[-1] / 1e6, 3)}


@dataclass
class LinkCounters:
    """Counters a driver keeps about its link; shown in the node's status."""

    state: LinkState = "connecting"
    connects: int = 0
    """Successful (re)connects, the first one included."""
    losses: int = 0
    timeouts: int = 0
    refused_writes: int = 0
    bad_samples: int = 0
    """Input readings dropped as bad data (value out of range)."""
    edges_lost: int = 0
    """Latched part-present edges overwritten in the PLC before the node read them."""
    handshake_timeouts: int = 0
    last_error: str = ""
    read_rtt: RttWindow = field(default_factory=RttWindow)
    write_rtt: RttWindow = field(default_factory=RttWindow)
    fire_rtt: RttWindow = field(default_factory=RttWindow)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "state": self.state,
            "connects": self.connects,
            "losses": self.losses,
            "timeouts": self.timeouts,
            "refused_writes": self.refused_writes,
            "bad_samples": self.bad_samples,
            "edges_lost": self.edges_lost,
            "handshake_timeouts": self.handshake_timeouts,
            "last_error": self.last_error,
            "read_rtt_ms": self.read_rtt.summary_ms(),
            "write_rtt_ms": self.write_rtt.summary_ms(),
            "fire_rtt_ms": self.fire_rtt.summary_ms(),
        }


class EdgeLatchReader:
    """Turns the PLC's latch counter and slots into the edges new since the last reading.

    ``slots`` slots hold the last edges; edge ``n`` (1-based, counted by the
    PLC modulo 2**16) is in slot ``(n - 1) % slots``. More new edges than
    slots means some were overwritten (counted in ``lost``); a counter that
    went backwards (the PLC restarted) re-baselines without edges.
    """

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._slots = slots
        self._last: int | None = None
        self.lost = 0

    def reset(self) -> None:
        """Forget the last counter (the next reading is a new baseline)."""
        self._last = None

    def new_edges(self, seq: int, slot_values: list[int]) -> tuple[tuple[int, ...], int, bool]:
        """Return ``(edges, lost, restarted)`` for a reading of the counter and all slots."""
        last = self._last
        self._last = seq
        if last is None:
            return (), 0, False
        diff = (seq - last) & 0xFFFF
        if diff == 0:
            return (), 0, False
        if diff >= 0x8000:  # went backwards: the PLC's counter restarted
            return (), 0, True
        lost = max(0, diff - self._slots)
        self.lost += lost
        first = last + 1 + lost
        edges = tuple(slot_values[(n - 1) % self._slots] for n in range(first, last + diff + 1))
        return edges, lost, False


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; return whether it is set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11,
    ``wait_for`` can swallow a cancellation that arrives as the wait completes.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    return event.is_set()
