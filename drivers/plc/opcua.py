"""OPC UA PLC driver (asyncua client): encoder input, reject output, heartbeat, handshake.

:class:`OpcUaPlc` is at once an ``EncoderSource``, a ``RejectOutput`` and a
``PlcReporter``, like ``drivers.plc.modbus.ModbusPlc``, and may be entered more
than once (first entry connects, last exit closes).

- Inputs arrive by one subscription (``sampling_interval_ms``,
  ``publishing_interval_ms``, a server-side queue per item so no counter value
  is lost). A sample is yielded per counter notification, dated by the
  PLC's SourceTimestamp mapped onto the node's monotonic clock (or by arrival).
- Outputs are written with one Write request per group, trigger last, using
  each variable's own data type (read once at connect).
- ``fire`` runs on the node's pulse thread. It must not wait for the node's
  busy event loop, so the pulse has its own session on a private event loop
  in a thread of its own: ``fire`` hands it the write and blocks for the
  answer (``fire_timeout_ms``).
- Link loss (socket closed, keep-alive probe failed, request timeout) drops
  the session; ``samples()`` reconnects with backoff and subscribes again.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.common.node import Node
from asyncua.common.subscription import DataChangeEvent, StatusChangeEvent, Subscription
from asyncua.crypto import security_policies
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import (
    PlcConfigError,
    PlcDriverError,
    PlcHandshakeTimeout,
    PlcLinkError,
    PlcReadbackMismatch,
    PlcWriteRefused,
)
from drivers.plc.iomap import OUTPUT_GROUPS, UaNode, next_seq, wire_part_id
from drivers.plc.link import Reconnect
from drivers.plc.settings import OpcUaSettings
from drivers.plc.tracked import PlcResult, reason_code
from drivers.plc.transport import EdgeLatchReader, LinkCounters, wait_event

log = structlog.get_logger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLOCK_WINDOW = 2000
_IDLE_S = 0.1
"""No notification this long: the counter has not changed; a sample says so."""
_UA_ERRORS = (UaError, OSError, ConnectionError, TimeoutError, asyncio.TimeoutError)


def _wall_ns(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


class _ClockMap:
    """Maps the PLC's SourceTimestamps onto ``time.monotonic_ns()``.

    The offset's target is min(arrival − source) over the last samples: the
    least-delayed notification is the best estimate of the clocks' offset (as
    in NTP's minimum filter). The offset moves towards it by at most
    ``1/_SLEW`` of the source time elapsed, so consecutive samples keep their
    spacing (a jump in the offset would look like a jump of the belt). The
    first ``_SETTLE`` samples after (re)subscribing set it directly: the first
    notifications carry the SourceTimestamp of the value's last *change*,
    which may be long ago.
    """

    _SLEW = 50
    _SETTLE = 50

    def __init__(self) -> None:
        self._window: collections.deque[int] = collections.deque(maxlen=_CLOCK_WINDOW)
        self._min: int | None = None
        self._offset: int | None = None
        self._last_src = 0
        self._n = 0

    def reset(self) -> None:
        self._window.clear()
        self._min = self._offset = None
        self._n = 0

    def to_monotonic(self, source_wall_ns: int, arrival_ns: int) -> int:
        d = arrival_ns - source_wall_ns
        dropped = self._window[0] if len(self._window) == self._window.maxlen else None
        self._window.append(d)
        if self._min is None or d < self._min:
            self._min = d
        elif dropped is not None and dropped == self._min:
            self._min = min(self._window)
        self._n += 1
        if self._offset is None or self._n <= self._SETTLE:
            self._offset = self._min
        else:
            step = max(0, source_wall_ns - self._last_src) // self._SLEW
            self._offset += max(-step, min(step, self._min - self._offset))
        self._last_src = source_wall_ns
        return source_wall_ns + self._offset


async def _make_client(s: OpcUaSettings) -> Client:
    client = Client(s.url, timeout=s.request_timeout_ms / 1000, watchdog_intervall=1.0)
    client.application_uri = s.application_uri
    client.name = "lineside"
    if s.user is not None:
        client.set_user(s.user)
        password = s.password()
        if password is not None:
            client.set_password(password)
    if s.security_policy != "None":
        assert s.certificate is not None and s.private_key is not None
        policy = getattr(security_policies, f"SecurityPolicy{s.security_policy}")
        await client.set_security(
            policy,
            str(s.certificate),
            str(s.private_key),
            s.private_key_password(),
            None if s.server_certificate is None else str(s.server_certificate),
            getattr(ua.MessageSecurityMode, s.security_mode),
        )
    return client


async def _resolve(client: Client, where: UaNode) -> Node:
    if where.node_id is not None:
        return client.get_node(where.node_id)
    assert where.browse_path is not None
    return await client.nodes.objects.get_child(list(where.browse_path))


class _Session:
    """One connected client with its resolved nodes and output data types."""

    def __init__(self, client: Client, nodes: dict[str, Node], vtypes: dict[str, ua.VariantType]):
        self.client = client
        self.nodes = nodes
        self.vtypes = vtypes
        self.names = {node.nodeid: name for name, node in nodes.items()}
        self.lost = asyncio.Event()

    async def write(self, values: dict[str, Any], timeout_s: float) -> list[ua.StatusCode]:
        """One Write request for ``values`` (in order). Raises ``PlcLinkError``."""
        names = list(values)
        ids = [self.nodes[n].nodeid for n in names]
        dvs = [ua.DataValue(ua.Variant(values[n], self.vtypes[n])) for n in names]
        try:
            async with asyncio.timeout(timeout_s):
                return await self.client.uaclient.write_attributes(ids, dvs, AttributeIds.Value)
        except _UA_ERRORS as exc:
            self.lost.set()
            raise PlcLinkError(f"write {names}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):
                await self.client.disconnect()


async def _open_session(
    s: OpcUaSettings, names: Sequence[str], read: Sequence[str] = ()
) -> tuple[_Session, dict[str, Any]]:
    """Connect, resolve ``names`` (I/O map entries), read output types and ``read`` values."""
    client = await _make_client(s)
    try:
        async with asyncio.timeout(s.connect_timeout_ms / 1000):
            await client.connect()
    except (*_UA_ERRORS, ValueError) as exc:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise PlcLinkError(f"cannot connect to {s.url}: {type(exc).__name__}: {exc}") from exc
    ok = False
    try:
        wanted = {**s.io.input_nodes(), **s.io.output_nodes()}
        nodes: dict[str, Node] = {}
        vtypes: dict[str, ua.VariantType] = {}
        async with asyncio.timeout(s.connect_timeout_ms / 1000):
            for name in names:
                try:
                    node = await _resolve(client, wanted[name])
                    if name in s.io.output_nodes():
                        vtypes[name] = await node.read_data_type_as_variant_type()
                except UaStatusCodeError as exc:
                    raise PlcConfigError(
                        f"io.{name}: {wanted[name].describe()} on {s.url}: {exc}"
                    ) from exc
                nodes[name] = node
            values = {}
            if read:
                got = await client.read_values([nodes[n] for n in read])
                values = dict(zip(read, got, strict=True))
        ok = True
        return _Session(client, nodes, vtypes), values
    except (TimeoutError, UaError, OSError) as exc:
        raise PlcLinkError(f"{s.url}: setting up the session failed: {exc}") from exc
    finally:
        if not ok:
            with contextlib.suppress(Exception):
                await client.disconnect()


class _PulseLoop:
    """The pulse session on a private event loop in its own thread."""

    def __init__(self, settings: OpcUaSettings, counters: LinkCounters) -> None:
        self._s = settings
        self._counters = counters
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="plc-pulse-loop", daemon=True
        )
        self._session: _Session | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._names = [n for n in OUTPUT_GROUPS["fire"] if n in settings.io.output_nodes()]

    def start(self) -> None:
        self._thread.start()

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.lost.is_set()

    async def _connect(self) -> None:
        if self.connected:
            return
        if self._session is not None:
            await self._session.close()
            self._session = None
        t0 = time.monotonic_ns()
        session, values = await _open_session(self._s, self._names, read=("fire_seq",))
        self._counters.fire_rtt.add(time.monotonic_ns() - t0)
        self._seq = int(values["fire_seq"] or 0)
        self._session = session

    def connect_future(self) -> concurrent.futures.Future[None]:
        """Connect on the pulse loop; the future completes when done."""
        return asyncio.run_coroutine_threadsafe(self._connect(), self._loop)

    async def _write(self, command: RejectCommand) -> None:
        await self._connect()
        assert self._session is not None
        seq = next_seq(self._seq)
        values: dict[str, Any] = {
            "fire_part_id": wire_part_id(command.part_id),
            "fire_reason": reason_code(command.reason),
            "fire_seq": seq,
        }
        values = {k: v for k, v in values.items() if k in self._names}
        t0 = time.monotonic_ns()
        results = await self._session.write(values, self._s.fire_timeout_ms / 1000)
        self._counters.fire_rtt.add(time.monotonic_ns() - t0)
        bad = [(n, r) for n, r in zip(values, results, strict=True) if not r.is_good()]
        if bad:
            self._counters.refused_writes += 1
            raise PlcWriteRefused("fire", ", ".join(f"{n}: {r.name}" for n, r in bad))
        self._seq = seq

    def fire(self, command: RejectCommand) -> None:
        with self._lock:
            fut = asyncio.run_coroutine_threadsafe(self._write(command), self._loop)
            try:
                fut.result(timeout=self._s.fire_timeout_ms / 1000)
            except concurrent.futures.TimeoutError as exc:
                fut.cancel()
                raise PlcLinkError("fire: no answer within fire_timeout_ms") from exc

    def close(self) -> None:
        async def _close() -> None:
            if self._session is not None:
                await self._session.close()
                self._session = None

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(_close(), self._loop).result(timeout=2.0)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(2.0)
        self._loop.close()


class OpcUaPlc:
    """A PLC's OPC UA server; see the module docstring.

    ``encoder_bits`` is the width of the PLC's counter; counts and latched
    edges outside ``[0, 2**encoder_bits)`` are bad data, dropped and logged.
    """

    def __init__(self, settings: OpcUaSettings, *, encoder_bits: Literal[16, 32] = 32) -> None:
        self.settings = settings
        self.counters = LinkCounters()
        self._bits = encoder_bits
        self._io = settings.io
        self._session: _Session | None = None
        self._sub: Subscription | None = None
        self._reconnect = Reconnect(settings.backoff)
        self._connect_lock = asyncio.Lock()
        self._report_lock = asyncio.Lock()
        self._entered = 0
        self._closed = asyncio.Event()
        self._pulse = _PulseLoop(settings, self.counters)
        self._clock = _ClockMap()
        self._latch: EdgeLatchReader | None = None  # made at the first reading: slots = len - 1
        self._pending_edges: list[int] = []
        self._status: dict[str, Any] = {}
        self._result_seq = 0
        self._ack_changed = asyncio.Event()
        self._last_sample: EncoderSample | None = None
        self.inputs: dict[str, Any] = {}
        """The latest input values by signal name."""

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> OpcUaPlc:
        """Connect and subscribe (first entry). Raises ``PlcLinkError``/``PlcConfigError``."""
        self._entered += 1
        if self._entered == 1:
            self._closed.clear()
            try:
                await self._connect()
                if self.settings.reject_mode == "node_timed":
                    self._pulse.start()
                    async with asyncio.timeout(self.settings.connect_timeout_ms / 1000):
                        await asyncio.wrap_future(self._pulse.connect_future())
            except BaseException:
                self._entered = 0
                await self._shutdown()
                raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close (last exit): tell the PLC the node is no longer ready, then disconnect."""
        self._entered = max(0, self._entered - 1)
        if self._entered:
            return
        if self._session is not None and "node_ready" in self._io.output_nodes():
            self._status["node_ready"] = False
            with contextlib.suppress(PlcDriverError):
                await self._write_group("status")
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed.set()
        self.counters.state = "closed"
        await self._drop_session()
        await asyncio.to_thread(self._pulse.close)

    @property
    def link_state(self) -> str:
        """``connecting`` | ``up`` | ``down`` | ``closed``."""
        return self.counters.state

    # -- connection ----------------------------------------------------------------
    async def _connect(self) -> _Session:
        async with self._connect_lock:
            if self._session is not None and not self._session.lost.is_set():
                return self._session
            if self._closed.is_set():
                raise PlcLinkError("driver is closed")
            if self._session is not None:
                self._lost("session lost")
            wait = self._reconnect.wait_s()
            if wait > 0:
                raise PlcLinkError(f"link down; next connection attempt in {wait:.2f} s")
            s = self.settings
            names = [*self._io.input_nodes(), *self._io.output_nodes()]
            read = [n for n in ("result_seq",) if n in self._io.output_nodes()]
            try:
                session, values = await _open_session(s, names, read)
                sub = await self._subscribe(session)
                if s.reject_mode == "plc_tracked":
                    await self._check(
                        await session.write({"result_valid": False}, s.request_timeout_ms / 1000),
                        ["result_valid"],
                    )
            except PlcDriverError as exc:
                if self._session is None and isinstance(exc, PlcConfigError):
                    raise
                delay = self._reconnect.failed()
                self.counters.last_error = str(exc)
                log.warning(
                    "plc_connect_failed",
                    transport="opcua",
                    reason=str(exc),
                    retry_in_s=round(delay, 3),
                    failures=self._reconnect.failures,
                )
                raise
            self._result_seq = int(values.get("result_seq") or 0)
            session.client.connection_lost_callback = self._on_connection_lost(session)
            self._session, self._sub = session, sub
            self._reconnect.succeeded()
            self._clock.reset()
            self._last_sample = None
            if self._latch is not None:
                self._latch.reset()
            self._pending_edges.clear()
            first = self.counters.connects == 0
            self.counters.connects += 1
            self.counters.state = "up"
            log.info("plc_link_up", transport="opcua", url=s.url, first=first)
            return session

    def _on_connection_lost(self, session: _Session) -> Any:
        async def lost(exc: Exception) -> None:
            session.lost.set()

        return lost

    async def _subscribe(self, session: _Session) -> Subscription:
        s = self.settings
        try:
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

    def _lost(self, reason: str) -> None:
        self.counters.last_error = reason
        if self.counters.state == "up":
            self.counters.state = "down"
            self.counters.losses += 1
            log.error("plc_link_lost", transport="opcua", reason=reason)

    async def _drop_session(self) -> None:
        session, self._session, self._sub = self._session, None, None
        if session is not None:
            session.lost.set()
            await session.close()

    async def _live(self) -> _Session:
        if self._session is not None and not self._session.lost.is_set():
            return self._session
        if self._session is not None:
            self._lost("session lost")
            await self._drop_session()
            self._reconnect.failed()
        return await self._connect()

    # -- inputs --------------------------------------------------------------------
    async def samples(self) -> AsyncIterator[EncoderSample]:
        """Yield one sample per encoder-count notification until closed.

        While the link is down nothing is yielded; it is reopened with
        backoff and the inputs subscribed again.
        """
        while not self._closed.is_set():
            try:
                await self._live()
            except PlcLinkError as exc:
                log.debug("plc_subscription_down", error=str(exc))
                await wait_event(self._closed, max(0.05, self._reconnect.wait_s()))
                continue
            session, sub = self._session, self._sub
            assert session is not None and sub is not None
            ev: Any = None
            try:
                async with asyncio.timeout(_IDLE_S):
                    ev = await anext(sub)
            except TimeoutError:
                pass
            except StopAsyncIteration:
                session.lost.set()
                continue
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

    async def _idle_sample(self, session: _Session) -> EncoderSample | None:
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
        except _UA_ERRORS as exc:
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
        self, session: _Session, ev: DataChangeEvent, arrival_ns: int
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
        if name == "result_ack":
            self._ack_changed.set()
        if name == "edge_latch":
            try:
                seq, slots = int(value[0]), [int(v) for v in value[1:]]
            except (TypeError, ValueError, IndexError):
                seq, slots = 0, []
            n = len(slots)
            if n == 0 or n & (n - 1) or (self._latch is not None and self._latch.slots != n):
                self.counters.bad_samples += 1
                log.warning("edge_latch_malformed", value=repr(value)[:80])
                return None
            if self._latch is None:
                self._latch = EdgeLatchReader(n)
            new, lost, restarted = self._latch.new_edges(seq, slots)
            if lost:
                self.counters.edges_lost += lost
                log.warning("latched_edges_lost", lost=lost, latch_seq=seq)
            if restarted:
                log.warning("edge_latch_restarted", latch_seq=seq)
            for e in new:
                if 0 <= e < modulus:
                    self._pending_edges.append(e)
                else:
                    self.counters.bad_samples += 1
                    log.warning("latched_edge_out_of_range", edge=e, counter_bits=self._bits)
            return None
        if name != "encoder_count":
            return None
        if not isinstance(value, int) or not 0 <= value < modulus:
            self.counters.bad_samples += 1
            log.warning("encoder_count_out_of_range", raw_count=value, counter_bits=self._bits)
            return None
        if self.settings.timestamps == "source" and dv.SourceTimestamp is not None:
            t_ns = self._clock.to_monotonic(_wall_ns(dv.SourceTimestamp), arrival_ns)
        else:
            t_ns = arrival_ns
        present = self.inputs.get("part_present")
        edges: tuple[int, ...] | None = None
        if "edge_latch" in session.nodes:
            edges = tuple(self._pending_edges)
            self._pending_edges.clear()
        return EncoderSample(value, t_ns, None if present is None else bool(present), edges)

    async def probe_read(self) -> None:
        """Read the encoder count once with the Read service (round trip into ``read_rtt``).

        Raises ``PlcLinkError``.
        """
        session = await self._live()
        t0 = time.monotonic_ns()
        try:
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                await session.client.read_values([session.nodes["encoder_count"]])
        except _UA_ERRORS as exc:
            session.lost.set()
            raise PlcLinkError(f"read failed: {exc}") from exc
        self.counters.read_rtt.add(time.monotonic_ns() - t0)

    # -- outputs -----------------------------------------------------------------------
    async def _check(self, results: list[ua.StatusCode], names: list[str]) -> None:
        bad = [(n, r) for n, r in zip(names, results, strict=True) if not r.is_good()]
        if bad:
            self.counters.refused_writes += 1
            detail = ", ".join(f"{n}: {r.name}" for n, r in bad)
            log.warning("plc_write_refused", transport="opcua", detail=detail)
            raise PlcWriteRefused(",".join(n for n, _ in bad), detail)

    async def _write(self, values: dict[str, Any]) -> None:
        session = await self._live()
        names = [n for n in values if n in session.nodes]
        t0 = time.monotonic_ns()
        results = await session.write(
            {n: values[n] for n in names}, self.settings.request_timeout_ms / 1000
        )
        self.counters.write_rtt.add(time.monotonic_ns() - t0)
        await self._check(results, names)
        if self.settings.verify_writes:
            try:
                async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                    back = await session.client.read_values([session.nodes[n] for n in names])
            except _UA_ERRORS as exc:
                session.lost.set()
                raise PlcLinkError(f"read-back failed: {exc}") from exc
            wrong = {n: (values[n], b) for n, b in zip(names, back, strict=True) if b != values[n]}
            if wrong:
                self.counters.refused_writes += 1
                raise PlcReadbackMismatch(",".join(wrong), f"wrote/read back {wrong}")

    async def _write_group(self, group: str) -> None:
        await self._write({n: self._status[n] for n in OUTPUT_GROUPS[group] if n in self._status})

    @property
    def fire_lead_ns(self) -> int:
        """Half the median pulse-write round trip plus ``output_delay_ms``."""
        rtt = self.counters.fire_rtt.percentile_ns(0.5) or 0
        return rtt // 2 + int(self.settings.output_delay_ms * 1e6)

    def fire(self, command: RejectCommand) -> None:
        """Start the reject pulse now (thread-safe, blocking up to ``fire_timeout_ms``).

        Raises ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        self._pulse.fire(command)

    async def heartbeat(self, alive: bool) -> None:
        """Write the node heartbeat; reopen the pulse session if it was lost.

        Raises ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        self._status["heartbeat"] = bool(alive)
        await self._write_group("status")
        if self.settings.reject_mode == "node_timed" and not self._pulse.connected:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_ms / 1000):
                    await asyncio.wrap_future(self._pulse.connect_future())
            except (TimeoutError, PlcDriverError) as exc:
                log.warning("plc_pulse_connect_failed", error=str(exc))

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error and the error code (one request)."""
        self._status.update(node_ready=ready, node_error=error, error_code=error_code)
        await self._write_group("status")

    async def publish_verdict(self, verdict: int, defect: int, result_counter: int) -> None:
        """Write the last verdict code, defect code and result counter (one request)."""
        self._status.update(last_verdict=verdict, defect_code=defect, result_counter=result_counter)
        await self._write_group("verdict")

    # -- PLC-tracked handshake ---------------------------------------------------------
    async def _wait_ack(self, want: bool, deadline: float, phase: str) -> None:
        loop = asyncio.get_running_loop()
        while bool(self.inputs.get("result_ack")) != want:
            left = deadline - loop.time()
            if left <= 0:
                self.counters.handshake_timeouts += 1
                raise PlcHandshakeTimeout(
                    f"result handshake: Ack did not become {int(want)} ({phase}) within "
                    f"{self.settings.handshake_timeout_ms:.0f} ms"
                )
            self._ack_changed.clear()
            await wait_event(self._ack_changed, left)

    async def report(self, result: PlcResult) -> None:
        """Hand one result to the PLC (ResultValid/Ack, see ``docs/plc.md``).

        Ack is taken from the subscription, so ``samples()`` must be running.
        Raises ``PlcHandshakeTimeout``, ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        if "result_ack" not in self._io.input_nodes():
            raise PlcDriverError("io.inputs.result_ack is not configured: no PLC-tracked mode")
        timeout = self.settings.handshake_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        async with self._report_lock:
            await self._wait_ack(False, loop.time() + timeout, "ready")
            seq = next_seq(self._result_seq)
            values: dict[str, Any] = {
                "result_part_id": wire_part_id(result.part_id),
                "result_origin_count": result.origin_raw_count,
                "result_reject": result.reject,
                "result_reason": result.reason_code,
                "result_defect": result.defect_code,
                "result_seq": seq,
                "result_valid": True,
            }
            try:
                await self._write({k: v for k, v in values.items() if k in self._io.output_nodes()})
                self._result_seq = seq
                await self._wait_ack(True, loop.time() + timeout, "accepted")
            finally:
                try:
                    await self._write({"result_valid": False})
                except PlcDriverError as exc:
                    log.warning("result_valid_not_cleared", error=str(exc))
