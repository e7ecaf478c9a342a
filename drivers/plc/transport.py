"""What a PLC transport is to :class:`drivers.plc.link.PlcLink`, and the pieces transports share.

A transport (``drivers/plc/modbus.py``, ``drivers/plc/opcua.py``) knows its
wire protocol and its I/O map: how to open the main channel, how inputs
arrive, how an output group goes out in one request, and how the pulse goes
out on a channel of its own. Everything that is the same for every PLC — the
lifecycle, reconnecting with backoff, link state, heartbeat, node state,
verdicts, the ResultValid/Ack handshake and the widths of what is sent — is
the link's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import structlog

from drivers.plc.base import EncoderSample

LinkState = Literal["connecting", "up", "down", "closed"]
"""``connecting``: never connected yet; ``up``: requests go through; ``down``: lost,
reconnecting with backoff; ``closed``: the link was closed."""

OutputValue = int | bool

log = structlog.get_logger(__name__)


class PulseChannel(Protocol):
    """The node-timed pulse's own connection, used from the node's pulse-timing thread.

    It never waits behind the main channel or the node's event loop, so the
    deadline and the output are not separated by a poll or a loop wake-up.
    """

    @property
    def connected(self) -> bool:
        """Whether the channel is open (``pulse`` may still reconnect on its own)."""
        ...

    async def open(self) -> None:
        """Open the channel and continue the PLC's ``fire_seq``. Raises ``PlcDriverError``."""
        ...

    def pulse(self, values: Mapping[str, OutputValue]) -> None:
        """Write the fire group now: ``values`` plus the next ``fire_seq``, in one request.

        Blocking and thread-safe; reconnects first when the channel was lost.
        ``fire_seq`` advances only when the PLC took the write. Raises
        ``PlcLinkError`` (no connection, no answer within ``fire_timeout_ms``)
        or ``PlcWriteRefused``.
        """
        ...

    def close(self) -> None:
        """Close the channel (blocking; the link calls it from a worker thread)."""
        ...


class PlcTransport(Protocol):
    """One PLC's wire protocol and I/O map, driven by a ``PlcLink``.

    The transport never reconnects by itself: a failed request marks the main
    channel lost (``lost``) and raises ``PlcLinkError``; the link records the
    loss, disconnects and reconnects with backoff.
    """

    @property
    def name(self) -> str:
        """``"modbus"`` or ``"opcua"``: the ``transport`` field of the link's log events."""
        ...

    @property
    def counters(self) -> LinkCounters:
        """The link's counters. The transport adds its I/O to them (round trips, timeouts,
        refused writes, bad samples, edges lost); the link keeps the rest."""
        ...

    @property
    def pulse_channel(self) -> PulseChannel:
        """The node-timed pulse's own connection."""
        ...

    @property
    def endpoint(self) -> Mapping[str, object]:
        """Where the PLC is, as fields of the ``plc_link_up`` event (host and port, or url)."""
        ...

    @property
    def connected(self) -> bool:
        """Whether the main channel is open and not lost."""
        ...

    @property
    def lost(self) -> str | None:
        """Why the open main channel was lost, until ``disconnect``; None while it works."""
        ...

    async def connect(self) -> int | None:
        """Open the main channel and clear a ResultValid left from before (PLC-tracked).

        Returns the ``result_seq`` the PLC holds (None where it is not mapped),
        so results continue from it. Raises ``PlcLinkError`` (``PlcConnectError``
        says why in its ``reason``), ``PlcConfigError`` when the I/O map does not
        fit the PLC, or ``PlcWriteRefused``.
        """
        ...

    async def disconnect(self) -> None:
        """Close the main channel (idempotent; never raises)."""
        ...

    def samples(self, closed: asyncio.Event) -> AsyncIterator[EncoderSample]:
        """Samples from the open main channel, in time order.

        Ends when the channel is lost or ``closed`` is set. Bad readings are
        logged, counted and skipped.
        """
        ...

    async def probe_read(self) -> None:
        """Read the inputs once for a round trip (into ``counters.read_rtt``).

        Raises ``PlcLinkError``.
        """
        ...

    async def write(self, what: str, values: Mapping[str, OutputValue]) -> None:
        """Write ``values`` (output name → value, trigger last) in one request per group.

        ``what`` is a group of ``drivers.plc.iomap.OUTPUT_GROUPS`` or a single
        output's name; it names the write in errors and logs. Outputs the I/O
        map leaves out are skipped. Raises ``PlcLinkError``, ``PlcWriteRefused``
        or ``PlcReadbackMismatch`` (``verify_writes``).
        """
        ...

    async def wait_input(self, name: str, value: bool, timeout_s: float) -> bool:
        """Whether boolean input ``name`` reads ``value`` within ``timeout_s`` (checked at least
        once). Raises ``PlcLinkError``."""
        ...


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
    """Counters a link keeps about itself; shown in the node's status."""

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
    slots means some were overwritten (logged and counted in
    ``counters.edges_lost``); a counter that went backwards (the PLC
    restarted) re-baselines (logged), and the edges the restarted PLC latched are
    counted in ``edges_lost`` too: their counts belong to a counter the node has not
    re-anchored on. The baseline is kept across
    reconnects: the edges latched while the link was down are new in the first reading.
    """

    def __init__(self, slots: int, counters: LinkCounters) -> None:
        self.slots = slots
        self._counters = counters
        self._last: int | None = None

    def new_edges(self, seq: int, slot_values: list[int]) -> tuple[int, ...]:
        """The edges new in a reading of the counter ``seq`` and all slots, oldest first."""
        last = self._last
        self._last = seq
        if last is None:
            return ()
        diff = (seq - last) & 0xFFFF
        if diff == 0:
            return ()
        if diff >= 0x8000:  # went backwards: the PLC restarted
            # Its edges since then (1..seq) carry counts of its restarted encoder counter,
            # which the node has not re-anchored on: they cannot be placed, so they are
            # parts that passed unseen, never nothing.
            self._counters.edges_lost += seq
            log.warning("edge_latch_restarted", latch_seq=seq, edges_lost=seq)
            return ()
        lost = max(0, diff - self.slots)
        if lost:
            self._counters.edges_lost += lost
            log.warning("latched_edges_lost", lost=lost, latch_seq=seq)
        first = last + 1 + lost
        return tuple(slot_values[(n - 1) % self.slots] for n in range(first, last + diff + 1))


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` at most ``timeout_s``; return whether it is set.

    ``asyncio.timeout`` rather than ``asyncio.wait_for``: on Python 3.11,
    ``wait_for`` can swallow a cancellation that arrives as the wait completes.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    return event.is_set()
