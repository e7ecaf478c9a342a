"""Modbus TCP transport of the PLC link: batched polling, an output image, FC16 writes.

:class:`ModbusTransport` is driven by ``drivers.plc.link.PlcLink``. Two TCP
connections:

- the *main* connection (pymodbus async client) carries polling, heartbeat,
  node state, verdicts and the result handshake — one request at a time under
  one lock, each with ``request_timeout_ms``; after
  ``timeouts_before_reconnect`` timeouts in a row, or any transport error, it is
  dropped (the link reopens it with backoff). Inputs, the Ack included, are
  polled: one batched read per table and device every ``poll_interval_ms``;
- the *pulse* connection (pymodbus sync client, :class:`ModbusPulse`) is used
  only by the node-timed ``fire``, called on the node's pulse-timing thread:
  one pre-planned FC16 write, so no event-loop wake-up and no queueing behind
  a poll sits between the deadline and the PLC. Its measured round trip gives
  the link's ``fire_lead_ns``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Literal

import structlog
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.plc.base import EncoderSample
from drivers.plc.errors import (
    PlcConnectError,
    PlcDriverError,
    PlcLinkError,
    PlcReadbackMismatch,
    PlcWriteRefused,
)
from drivers.plc.iomap import OUTPUT_GROUPS, ModbusBit
from drivers.plc.modbus_inputs import InputDecoder
from drivers.plc.modbus_map import (
    Cell,
    Image,
    OutputImage,
    Span,
    WriteRun,
    read_bit,
    signal_cells,
)
from drivers.plc.modbus_pulse import ModbusPulse, set_nodelay
from drivers.plc.settings import ModbusSettings
from drivers.plc.transport import (
    LinkCounters,
    OutputValue,
    RttWindow,
    wait_event,
)

log = structlog.get_logger(__name__)

_Request = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]


class ModbusTransport:
    """A PLC's Modbus TCP server as a ``PlcTransport``; see the module docstring.

    ``encoder_bits`` is the width of the PLC's counter (``line.encoder_bits``):
    a count or latched edge outside ``[0, 2**encoder_bits)`` is bad data and
    dropped with a logged reason.
    """

    name = "modbus"

    def __init__(self, settings: ModbusSettings, *, encoder_bits: Literal[16, 32] = 32) -> None:
        self.settings = settings
        self.counters = LinkCounters()
        self._bits = encoder_bits
        self._dev = settings.device_id
        self._io = settings.io
        self._decoder = InputDecoder(settings, self.counters, encoder_bits)
        self._image = OutputImage(self._io, self._dev)
        self._mapped = frozenset(self._io.output_signals())
        self.pulse_channel = ModbusPulse(settings, self._image, self.counters)
        self._client: AsyncModbusTcpClient | None = None
        self._lost: str | None = None
        self._lock = asyncio.Lock()
        self._consecutive_timeouts = 0
        self._last_when = (0, 0)
        """Midpoint and half width (monotonic ns) of the last request, measured inside
        the lock."""
        self._polled = asyncio.Event()

    @property
    def inputs(self) -> dict[str, int | bool]:
        """The latest decoded inputs (``line_running``, ``plc_heartbeat``, ``result_ack``...)."""
        return self._decoder.inputs

    @property
    def endpoint(self) -> dict[str, object]:
        """``host`` and ``port`` of the PLC."""
        return {"host": self.settings.host, "port": self.settings.port}

    @property
    def connected(self) -> bool:
        """Whether the main connection is open."""
        return self._client is not None

    @property
    def lost(self) -> str | None:
        """Why the main connection was dropped, until ``disconnect``."""
        return self._lost

    # -- connection ---------------------------------------------------------------
    async def connect(self) -> int | None:
        """Open the main connection and continue the PLC's sequence counters.

        Returns the PLC's ``result_seq`` (None where unmapped). Raises ``PlcConnectError``.
        """
        s = self.settings
        client = AsyncModbusTcpClient(
            s.host,
            port=s.port,
            timeout=s.connect_timeout_ms / 1000,
            retries=0,
            reconnect_delay=0,
            name="lineside",
        )
        result_seq: int | None = None
        try:
            async with asyncio.timeout(s.connect_timeout_ms / 1000):
                ok = await client.connect()
            if ok:
                set_nodelay(
                    client.ctx.transport.get_extra_info("socket") if client.ctx.transport else None
                )
                result_seq = await self._resume(client)
        except (TimeoutError, ModbusException, OSError, PlcDriverError) as exc:
            client.close()
            raise PlcConnectError(
                f"cannot connect to {s.host}:{s.port}: {exc}", f"{type(exc).__name__}: {exc}"
            ) from exc
        if not ok:
            client.close()
            raise PlcConnectError(f"cannot connect to {s.host}:{s.port}", "connection refused")
        self._client = client
        self._lost = None
        self._consecutive_timeouts = 0
        return result_seq

    async def _resume(self, client: AsyncModbusTcpClient) -> int | None:
        """Continue the PLC's sequence counters and clear a ResultValid left from before."""
        result_seq: int | None = None
        out = self._io.outputs
        for name in ("fire_seq", "result_seq"):
            sig = getattr(out, name)
            if sig is None:
                continue
            dev, _, addr = signal_cells(sig, self._dev)[0]
            async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                rr = await client.read_holding_registers(addr, count=1, device_id=dev)
            if rr.isError():
                raise PlcLinkError(f"PLC refused reading {name} ({rr})")
            self._image.load((dev, "holding_register", addr), rr.registers[0])
            if name == "result_seq":
                result_seq = rr.registers[0]
        if self.settings.reject_mode == "plc_tracked":
            self._image.set("result_valid", False)
            for run in self._image.runs(self._image.cells_of(("result_valid",))):
                async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                    rr = await self._send_write(client, run)
                if rr.isError():
                    raise PlcLinkError(f"PLC refused clearing result_valid ({rr})")
        # the edge latch keeps its baseline: edges the PLC latched while the link was
        # down arrive with the first reading (a new baseline would lose their parts)
        return result_seq

    async def disconnect(self) -> None:
        """Close the main connection."""
        self._drop(None)

    def _drop(self, reason: str | None) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._lost = reason

    async def _call(self, what: str, request: _Request, rtt: RttWindow) -> ModbusPDU:
        """Run one request under the lock with the request timeout.

        Raises ``PlcLinkError`` (not connected, timeout, transport error; the
        last and ``timeouts_before_reconnect`` timeouts in a row drop the
        connection); returns the response, which may be an exception response.
        """
        client = self._client
        if client is None:
            raise PlcLinkError(f"{what}: not connected")
        timeout_s = self.settings.request_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                async with self._lock:
                    if self._client is not client:
                        raise PlcLinkError("connection was replaced")
                    t0 = time.monotonic_ns()
                    rr = await request(client)
                    t1 = time.monotonic_ns()
                    rtt.add(t1 - t0)
                    self._last_when = ((t0 + t1) // 2, (t1 - t0 + 1) // 2)
        except TimeoutError as exc:
            self.counters.timeouts += 1
            self._consecutive_timeouts += 1
            if self._consecutive_timeouts >= self.settings.timeouts_before_reconnect:
                self._drop(f"{self._consecutive_timeouts} timeouts in a row")
            raise PlcLinkError(f"{what}: no answer within {timeout_s * 1000:.0f} ms") from exc
        except (ModbusException, OSError) as exc:
            self._drop(f"{what}: {exc}")
            raise PlcLinkError(f"{what}: {exc}") from exc
        self._consecutive_timeouts = 0
        return rr

    # -- inputs -------------------------------------------------------------------
    async def _read_span(self, span: Span) -> tuple[list[int], tuple[int, int]]:
        """Read one span; return its values and the request's midpoint and half width (ns).

        The midpoint is taken around the request itself, after the connection's lock
        was won: time spent waiting behind a report or a fire would otherwise date the
        count too early, and the belt would be placed ahead of where it is. The half
        width bounds the error: the PLC read its counter somewhere inside the request,
        and a busy event loop that resumes late only widens it.
        """

        async def req(c: AsyncModbusTcpClient) -> ModbusPDU:
            dev, start, n = span.device_id, span.start, span.count
            if span.table == "input_register":
                return await c.read_input_registers(start, count=n, device_id=dev)
            if span.table == "holding_register":
                return await c.read_holding_registers(start, count=n, device_id=dev)
            if span.table == "coil":
                return await c.read_coils(start, count=n, device_id=dev)
            return await c.read_discrete_inputs(start, count=n, device_id=dev)

        rr = await self._call(f"read {span.table} {span.start}", req, self.counters.read_rtt)
        when = self._last_when  # set by this request: nothing ran since it finished
        if rr.isError():
            raise PlcLinkError(
                f"PLC refused reading {span.table} {span.start}+{span.count}: "
                f"exception code {rr.exception_code}"
            )
        if span.table.endswith("register"):
            values = list(rr.registers)
        else:
            values = [int(b) for b in rr.bits]
        if len(values) < span.count:
            raise PlcLinkError(
                f"short answer reading {span.table} {span.start}: {len(values)} values"
            )
        return values[: span.count], when

    async def read_inputs(self) -> tuple[Image, tuple[int, int]]:
        """Read every input once; return the image and when the count was read: the
        request's midpoint and half width (ns).

        Raises ``PlcLinkError``.
        """
        image: Image = {}
        t_count = (0, 0)
        for i, span in enumerate(self._decoder.spans):
            values, when = await self._read_span(span)
            if i == self._decoder.count_span:
                t_count = when
            for k, v in enumerate(values):
                image[(span.device_id, span.table, span.start + k)] = v
        return image, t_count

    async def probe_read(self) -> None:
        """Read the input block once (round trips into ``read_rtt``). Raises ``PlcLinkError``."""
        await self.read_inputs()

    async def samples(self, closed: asyncio.Event) -> AsyncIterator[EncoderSample]:
        """Poll the inputs every ``poll_interval_ms`` and yield one sample per poll.

        Ends when the connection is dropped or ``closed`` is set. A poll that
        failed without dropping it is retried after an interval. ``t_ns`` is the
        midpoint of the request that read the count, ``t_err_ns`` its half width.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interval = self.settings.poll_interval_ms / 1000
        next_t = loop.time()
        while not closed.is_set():
            # pymodbus's own wait_for can swallow a cancellation that races a response
            # (Python 3.11); a cancelled poller must stop, or the node cannot.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                image, (t_ns, t_err_ns) = await self.read_inputs()
            except PlcLinkError as exc:
                log.debug("plc_poll_failed", error=str(exc))
                if not self.connected:
                    return
                await wait_event(closed, interval)
                next_t = loop.time()
                continue
            sample = self._decoder.decode(image, t_ns, t_err_ns)
            self._polled.set()
            if sample is not None:
                yield sample
            next_t += interval
            delay = next_t - loop.time()
            if delay < -interval:  # fell behind (loop busy, slow PLC): resync
                next_t = loop.time()
                delay = 0.0
            if delay <= 0:
                await asyncio.sleep(0)
            else:
                await wait_event(closed, delay)

    async def wait_input(self, name: str, value: bool, timeout_s: float) -> bool:
        """Read bit input ``name`` until it is ``value``: at once, then after each poll
        (or a poll interval). Raises ``PlcLinkError``."""
        sig = self._io.input_signals()[name]
        assert isinstance(sig, ModbusBit)
        dev, table, addr = signal_cells(sig, self._dev)[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            values, _ = await self._read_span(Span(dev, table, addr, 1))
            if read_bit({(dev, table, addr): values[0]}, sig, self._dev) == value:
                return True
            left = deadline - loop.time()
            if left <= 0:
                return False
            self._polled.clear()
            await wait_event(self._polled, min(left, self.settings.poll_interval_ms / 1000))

    # -- outputs ------------------------------------------------------------------
    @staticmethod
    def _send_write(client: AsyncModbusTcpClient, run: WriteRun) -> Awaitable[ModbusPDU]:
        if run.table == "coil":
            return client.write_coils(
                run.start, [bool(v) for v in run.values], device_id=run.device_id
            )
        if len(run.values) == 1:
            return client.write_register(run.start, run.values[0], device_id=run.device_id)
        return client.write_registers(run.start, list(run.values), device_id=run.device_id)

    async def write(self, what: str, values: Mapping[str, OutputValue]) -> None:
        """Set ``values`` in the output image and write every register of ``what`` from it.

        ``what`` is an output group (all its registers go out, in one FC16 request
        per contiguous run) or one output's name. Raises ``PlcLinkError``,
        ``PlcWriteRefused`` or ``PlcReadbackMismatch``.
        """
        for name, value in values.items():
            if name in self._mapped:
                self._image.set(name, value)
        cells = self._image.cells_of(OUTPUT_GROUPS.get(what, (what,)))
        await self._write_cells(what, cells)

    async def _write_cells(self, what: str, cells: list[Cell]) -> None:
        for run in self._image.runs(cells):
            rr = await self._call(
                f"write {what}",
                lambda c, run=run: self._send_write(c, run),  # type: ignore[misc]
                self.counters.write_rtt,
            )
            if rr.isError():
                self.counters.refused_writes += 1
                log.warning(
                    "plc_write_refused",
                    signal=what,
                    table=run.table,
                    address=run.start,
                    exception_code=rr.exception_code,
                )
                raise PlcWriteRefused(what, f"exception code {rr.exception_code}")
            if self.settings.verify_writes:
                await self._verify(what, run)

    async def _verify(self, what: str, run: WriteRun) -> None:
        span = Span(
            run.device_id,
            "holding_register" if run.table != "coil" else "coil",
            run.start,
            len(run.values),
        )
        values, _ = await self._read_span(span)
        if tuple(values) != run.values:
            self.counters.refused_writes += 1
            log.warning("plc_readback_mismatch", signal=what, wrote=run.values, read=values)
            raise PlcReadbackMismatch(what, f"wrote {list(run.values)}, read back {values}")
