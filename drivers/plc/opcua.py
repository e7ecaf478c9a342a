"""OPC UA transport of the PLC link (asyncua client): subscription in, typed Writes out.

:class:`OpcUaTransport` is driven by ``drivers.plc.link.PlcLink``.

- Inputs arrive by one subscription (``sampling_interval_ms``,
  ``publishing_interval_ms``, a server-side queue per item so no counter value
  is lost); the Ack of the result handshake too. A sample is yielded per
  counter notification, dated by the PLC's SourceTimestamp mapped onto the
  node's monotonic clock (``drivers.plc.opcua_clock.ClockMap``), or by arrival. A quiet counter
  is confirmed with a Read (see ``_idle_sample``).
- Outputs are written with one Write request per group, trigger last, using
  each variable's own data type (read once at connect).
- The node-timed pulse has its own session on a private event loop in a
  thread of its own (``drivers.plc.opcua_session.OpcUaPulse``).
- Link loss (socket closed, keep-alive probe failed, request timeout, bad
  subscription status) marks the session lost; the link reconnects with
  backoff and the inputs are subscribed again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping
from typing import Any, Literal

import structlog
from asyncua import ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.ua.uaerrors import UaError

from drivers.plc.base import EncoderSample
from drivers.plc.errors import PlcConfigError, PlcLinkError, PlcReadbackMismatch, PlcWriteRefused
from drivers.plc.opcua_clock import ClockMap, wall_ns
from drivers.plc.opcua_session import UA_ERRORS, OpcUaPulse, UaSession, open_session
from drivers.plc.settings import OpcUaSettings
from drivers.plc.transport import (
    EdgeLatchReader,
    LinkCounters,
    OutputValue,
    wait_event,
)

log = structlog.get_logger(__name__)

_IDLE_S = 0.1
"""No notification this long: the counter has not changed; a sample says so."""


class OpcUaTransport:
    """A PLC's OPC UA server as a ``PlcTransport``; the node is a client. See the module
    docstring.

    ``encoder_bits`` is the width of the PLC's counter; counts and latched
    edges outside ``[0, 2**encoder_bits)`` are bad data, dropped and logged.
    """

    name = "opcua"

    def __init__(self, settings: OpcUaSettings, *, encoder_bits: Literal[16, 32] = 32) -> None:
        self.settings = settings
        self.counters = LinkCounters()
        self._bits = encoder_bits
        self._io = settings.io
        self._session: UaSession | None = None
        self._sub: Subscription | None = None
        self.pulse_channel = OpcUaPulse(settings, self.counters)
        self._clock = ClockMap()
        self._latch: EdgeLatchReader | None = None  # made at the first reading: slots = len - 1
        self._pending_edges: list[int] = []
        self._changed: dict[str, asyncio.Event] = {}
        """Inputs someone waits on (``wait_input``) → set at each of their notifications."""
        self._last_sample: EncoderSample | None = None
        self.inputs: dict[str, Any] = {}
        """The latest input values by signal name."""

    @property
    def endpoint(self) -> dict[str, object]:
        """``url`` of the PLC's server."""
        return {"url": self.settings.url}

    @property
    def connected(self) -> bool:
        """Whether the session is open and not lost."""
        return self._session is not None and not self._session.lost.is_set()

    @property
    def lost(self) -> str | None:
        """``"session lost"`` once the open session failed, until ``disconnect``."""
        if self._session is not None and self._session.lost.is_set():
            return "session lost"
        return None

    def _live(self, what: str) -> UaSession:
        session = self._session
        if session is None or session.lost.is_set():
            raise PlcLinkError(f"{what}: not connected")
        return session

    # -- connection ----------------------------------------------------------------
    async def connect(self) -> int | None:
        """Open the session, subscribe to the inputs, clear ResultValid (PLC-tracked).

        Returns the PLC's ``result_seq`` (None where unmapped). Raises
        ``PlcLinkError``, ``PlcConfigError`` or ``PlcWriteRefused``.
        """
        s = self.settings
        names = [*self._io.input_nodes(), *self._io.output_nodes()]
        read = [n for n in ("result_seq",) if n in self._io.output_nodes()]
        session, values = await open_session(s, names, read)
        sub = await self._subscribe(session)
        if s.reject_mode == "plc_tracked":
            self._check(
                await session.write({"result_valid": False}, s.request_timeout_ms / 1000),
                ["result_valid"],
            )
        session.client.connection_lost_callback = self._on_connection_lost(session)
        self._session, self._sub = session, sub
        self._clock.reset()
        self._last_sample = None
        # the edge latch keeps its baseline and the edges not yet passed on: edges the
        # PLC latched while the link was down arrive with the first notification
        return int(values["result_seq"] or 0) if read else None

    @staticmethod
    def _on_connection_lost(
        session: UaSession,
    ) -> Callable[[Exception], Coroutine[Any, Any, None]]:
        async def lost(exc: Exception) -> None:
            session.lost.set()

        return lost

    async def _subscribe(self, session: UaSession) -> Subscription:
        s = self.settings
        try:
            with session.patient(s.connect_timeout_ms / 1000):
                async with asyncio.timeout(s.connect_timeout_ms / 1000):
                    sub = await session.client.create_subscription(
                        s.publishing_interval_ms, handler=None, queue_maxsize=10_000
                    )
                    nodes = [session.nodes[n] for n in self._io.input_nodes()]
                    handles: list[int | ua.StatusCode] = await sub.subscribe_data_change(  # type: ignore[call-overload]  # ua.Double: a float the stubs type apart
                        nodes, queuesize=s.queue_size, sampling_interval=s.sampling_interval_ms
                    )
        except (TimeoutError, UaError, OSError) as exc:
            raise PlcLinkError(f"subscribing failed: {exc}") from exc
        bad = [
            n
            for n, h in zip(self._io.input_nodes(), handles, strict=True)
            if isinstance(h, ua.StatusCode)
        ]
        if bad:
            raise PlcConfigError(f"cannot subscribe to io.inputs {bad}")
        return sub

    async def disconnect(self) -> None:
        """Close the session (its subscription goes with it)."""
        session, self._session, self._sub = self._session, None, None
        if session is not None:
            session.lost.set()
            await session.close()

    # -- inputs --------------------------------------------------------------------
    async def samples(self, closed: asyncio.Event) -> AsyncIterator[EncoderSample]:
        """Yield one sample per encoder-count notification until the session is lost or
        ``closed`` is set; after ``_IDLE_S`` without one, a Read confirms the last sample."""
        session, sub = self._session, self._sub
        if session is None or sub is None:
            return
        while not closed.is_set() and not session.lost.is_set():
            ev: Any = None
            try:
                async with asyncio.timeout(_IDLE_S):
                    ev = await anext(sub)
            except TimeoutError:
                pass
            except StopAsyncIteration:
                session.lost.set()
                return
            if ev is None:
                # No notification for a while: the belt stopped, or notifications are
                # late. Ask, so the node's encoder stage does not look stalled while the
                # link is fine, and never claims a count it has not seen.
                try:
                    idle = await self._idle_sample(session)
                except PlcLinkError as exc:
                    log.debug("plc_idle_read_failed", error=str(exc))
                    continue
                if idle is not None:
                    self._last_sample = idle
                    yield idle
                continue
            if isinstance(ev, StatusChangeEvent):
                log.warning("plc_subscription_status", status=str(ev.notification.Status))
                if ev.notification.Status.is_bad():
                    session.lost.set()
                continue
            if isinstance(ev, DataChangeEvent):
                arrival = time.monotonic_ns()
                sample = self._on_change(session, ev, arrival)
                if sample is not None:
                    self._last_sample = sample
                    yield sample

    async def _idle_sample(self, session: UaSession) -> EncoderSample | None:
        """The last sample, confirmed at the time a Read of the count was sent, or None.

        A count unchanged since the last sample was unchanged when the request left,
        so that sample holds then. A changed count gives None: its notification is on
        its way, with its own timestamp. (Extrapolating the last sample to "now" would
        claim a standing belt whenever notifications are merely late, and the node
        would then refuse the true counts that follow as jumps.) Raises ``PlcLinkError``.
        """
        last = self._last_sample
        if last is None or session.client.uaclient.state != UaClientState.CONNECTED:
            return None
        sent = time.monotonic_ns()
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                (value,) = await session.client.read_values([session.nodes["encoder_count"]])
        except UA_ERRORS as exc:
            session.lost.set()
            raise PlcLinkError(f"read failed: {exc}") from exc
        if value != last.raw_count or sent <= last.t_ns:
            return None
        edges: tuple[int, ...] | None = None
        if last.edges is not None:
            edges = tuple(self._pending_edges)
            self._pending_edges.clear()
        return EncoderSample(last.raw_count, sent, last.part_present, edges)

    def _on_change(
        self, session: UaSession, ev: DataChangeEvent, arrival_ns: int
    ) -> EncoderSample | None:
        name = session.names.get(ev.node.nodeid)
        if name is None:
            return None
        dv = ev.data.monitored_item.Value
        if dv.StatusCode is not None and not dv.StatusCode.is_good():
            self.counters.bad_samples += 1
            log.warning("plc_input_bad_status", signal=name, status=str(dv.StatusCode))
            return None
        value = ev.value
        self.inputs[name] = value
        modulus = 1 << self._bits
        changed = self._changed.get(name)
        if changed is not None:
            changed.set()
        if name == "edge_latch":
            self._on_latch(value, modulus)
            return None
        if name != "encoder_count":
            return None
        if not isinstance(value, int) or not 0 <= value < modulus:
            self.counters.bad_samples += 1
            log.warning("encoder_count_out_of_range", raw_count=value, counter_bits=self._bits)
            return None
        if self.settings.timestamps == "source" and dv.SourceTimestamp is not None:
            t_ns = self._clock.to_monotonic(wall_ns(dv.SourceTimestamp), arrival_ns)
        else:
            t_ns = arrival_ns
        present = self.inputs.get("part_present")
        edges: tuple[int, ...] | None = None
        if "edge_latch" in session.nodes:
            edges = tuple(self._pending_edges)
            self._pending_edges.clear()
        return EncoderSample(value, t_ns, None if present is None else bool(present), edges)

    def _on_latch(self, value: Any, modulus: int) -> None:
        """Collect the edges new in an ``edge_latch`` notification for the next sample."""
        try:
            seq, slots = int(value[0]), [int(v) for v in value[1:]]
        except (TypeError, ValueError, IndexError):
            seq, slots = 0, []
        n = len(slots)
        if n == 0 or n & (n - 1) or (self._latch is not None and self._latch.slots != n):
            self.counters.bad_samples += 1
            log.warning("edge_latch_malformed", value=repr(value)[:80])
            return
        if self._latch is None:
            self._latch = EdgeLatchReader(n, self.counters)
        for e in self._latch.new_edges(seq, slots):
            if 0 <= e < modulus:
                self._pending_edges.append(e)
            else:
                self.counters.bad_samples += 1
                log.warning("latched_edge_out_of_range", edge=e, counter_bits=self._bits)

    async def probe_read(self) -> None:
        """Read the encoder count once with the Read service (round trip into ``read_rtt``).

        Raises ``PlcLinkError``.
        """
        session = self._live("read")
        t0 = time.monotonic_ns()
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                await session.client.read_values([session.nodes["encoder_count"]])
        except UA_ERRORS as exc:
            session.lost.set()
            raise PlcLinkError(f"read failed: {exc}") from exc
        self.counters.read_rtt.add(time.monotonic_ns() - t0)

    async def wait_input(self, name: str, value: bool, timeout_s: float) -> bool:
        """Wait for a notification that boolean input ``name`` is ``value`` (the
        subscription must be running: the link's ``samples()``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        changed = self._changed.setdefault(name, asyncio.Event())
        while bool(self.inputs.get(name)) != value:
            left = deadline - loop.time()
            if left <= 0:
                return False
            changed.clear()
            await wait_event(changed, left)
        return True

    # -- outputs -------------------------------------------------------------------
    def _check(self, results: list[ua.StatusCode], names: list[str]) -> None:
        bad = [(n, r) for n, r in zip(names, results, strict=True) if not r.is_good()]
        if bad:
            self.counters.refused_writes += 1
            detail = ", ".join(f"{n}: {r.name}" for n, r in bad)
            log.warning("plc_write_refused", transport="opcua", detail=detail)
            raise PlcWriteRefused(",".join(n for n, _ in bad), detail)

    async def write(self, what: str, values: Mapping[str, OutputValue]) -> None:
        """One Write request of the mapped ``values``, in their order (trigger last).

        Raises ``PlcLinkError``, ``PlcWriteRefused`` (bad status, naming the
        refused variables) or ``PlcReadbackMismatch``.
        """
        session = self._live(f"write {what}")
        names = [n for n in values if n in session.nodes]
        t0 = time.monotonic_ns()
        results = await session.write(
            {n: values[n] for n in names}, self.settings.request_timeout_ms / 1000
        )
        self.counters.write_rtt.add(time.monotonic_ns() - t0)
        self._check(results, names)
        if self.settings.verify_writes:
            try:
                async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                    back = await session.client.read_values([session.nodes[n] for n in names])
            except UA_ERRORS as exc:
                session.lost.set()
                raise PlcLinkError(f"read-back failed: {exc}") from exc
            wrong = {n: (values[n], b) for n, b in zip(names, back, strict=True) if b != values[n]}
            if wrong:
                self.counters.refused_writes += 1
                raise PlcReadbackMismatch(",".join(wrong), f"wrote/read back {wrong}")
