"""Modbus TCP PLC driver: encoder input, reject output, heartbeat and result handshake.

:class:`ModbusPlc` is at once an ``EncoderSource`` (``samples()``), a
``RejectOutput`` (``fire``, ``fire_lead_ns``, ``heartbeat``) and a
``PlcReporter`` (``report``). It is an async context manager that may be
entered more than once (the node enters it as its encoder and as its reject
output): the first entry connects, the last exit closes.

Two TCP connections:

- the *main* connection (pymodbus async client) carries polling, heartbeat,
  node state, verdicts and the result handshake — one request at a time under
  one lock, each with ``request_timeout_ms``; after
  ``timeouts_before_reconnect`` timeouts in a row, or any transport error, it is
  dropped and reopened with backoff;
- the *pulse* connection (pymodbus sync client) is used only by ``fire``, called
  on the node's pulse-timing thread: one pre-planned FC16 write, so no
  event-loop wake-up and no queueing behind a poll sits between the deadline
  and the PLC. Its measured round trip gives ``fire_lead_ns``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

import structlog
from pymodbus.client import AsyncModbusTcpClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import (
    PlcDriverError,
    PlcHandshakeTimeout,
    PlcLinkError,
    PlcReadbackMismatch,
    PlcWriteRefused,
)
from drivers.plc.iomap import ModbusBit, ModbusWord, next_seq, wire_part_id
from drivers.plc.link import Reconnect
from drivers.plc.modbus_map import (
    Cell,
    Image,
    OutputImage,
    Span,
    WriteRun,
    plan_reads,
    read_bit,
    read_word,
    signal_cells,
)
from drivers.plc.settings import ModbusSettings
from drivers.plc.tracked import PlcResult, reason_code
from drivers.plc.transport import EdgeLatchReader, LinkCounters, wait_event

log = structlog.get_logger(__name__)

_Request = Callable[[AsyncModbusTcpClient], Awaitable[ModbusPDU]]


def _nodelay(sock: object) -> None:
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PulseChannel:
    """The pulse connection: a blocking client used from the pulse thread only.

    ``fire`` writes the fire group (part id, reason, sequence) in one FC16
    request; the PLC pulses its output when the sequence changes.
    """

    def __init__(self, settings: ModbusSettings, image: OutputImage, counters: LinkCounters):
        self._s = settings
        self._image = image
        self._counters = counters
        self._lock = threading.Lock()
        self._client: ModbusTcpClient | None = None
        io = settings.io.outputs
        self._seq_cells = signal_cells(io.fire_seq, settings.device_id)
        self._cells = image.cells_of(("fire_part_id", "fire_reason", "fire_seq"))
        self._seq = 0

    @property
    def connected(self) -> bool:
        return self._client is not None

    def connect(self) -> None:
        """Open the connection and continue the PLC's fire sequence. Raises ``PlcLinkError``."""
        with self._lock:
            self._connect_locked()

    def _connect_locked(self) -> None:
        if self._client is not None:
            return
        s = self._s
        client = ModbusTcpClient(
            s.host, port=s.port, timeout=s.fire_timeout_ms / 1000, retries=0, name="lineside-pulse"
        )
        if not client.connect():  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
            raise PlcLinkError(f"pulse connection to {s.host}:{s.port} failed")
        _nodelay(client.socket)
        dev, _, addr = self._seq_cells[0]
        t0 = time.monotonic_ns()
        try:
            rr = client.read_holding_registers(addr, count=1, device_id=dev)
        except (ModbusException, OSError) as exc:
            client.close()  # type: ignore[no-untyped-call]
            raise PlcLinkError(f"pulse connection: reading fire_seq failed: {exc}") from exc
        if rr.isError():
            client.close()  # type: ignore[no-untyped-call]
            raise PlcLinkError(f"pulse connection: PLC refused reading fire_seq ({rr})")
        self._counters.fire_rtt.add(time.monotonic_ns() - t0)
        self._seq = rr.registers[0]
        self._client = client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
                self._client = None

    def fire(self, command: RejectCommand) -> None:
        """Write the fire group now. Raises ``PlcLinkError`` or ``PlcWriteRefused``."""
        with self._lock:
            self._connect_locked()
            assert self._client is not None
            seq = next_seq(self._seq)
            img = self._image
            img.set("fire_seq", seq)
            if "fire_part_id" in self._s.io.output_signals():
                img.set("fire_part_id", wire_part_id(command.part_id))
            if "fire_reason" in self._s.io.output_signals():
                img.set("fire_reason", reason_code(command.reason))
            (run,) = img.runs(self._cells)
            t0 = time.monotonic_ns()
            try:
                rr = self._client.write_registers(
                    run.start, list(run.values), device_id=run.device_id
                )
            except (ModbusException, OSError) as exc:
                self._client.close()  # type: ignore[no-untyped-call]
                self._client = None
                raise PlcLinkError(f"fire write failed: {exc}") from exc
            self._counters.fire_rtt.add(time.monotonic_ns() - t0)
            if rr.isError():
                self._counters.refused_writes += 1
                raise PlcWriteRefused("fire", f"exception code {rr.exception_code}")
            self._seq = seq


class ModbusPlc:
    """A PLC on Modbus TCP; see the module docstring.

    ``encoder_bits`` is the width of the PLC's counter (``line.encoder_bits``):
    a count or latched edge outside ``[0, 2**encoder_bits)`` is bad data and
    dropped with a logged reason.
    """

    def __init__(self, settings: ModbusSettings, *, encoder_bits: Literal[16, 32] = 32) -> None:
        self.settings = settings
        self.counters = LinkCounters()
        self._bits = encoder_bits
        self._dev = settings.device_id
        self._io = settings.io
        self._spans: list[Span] = plan_reads(
            self._io.input_signals().values(), self._dev, settings.max_read_gap
        )
        count_cell = signal_cells(self._io.inputs.encoder_count, self._dev)[0]
        self._count_span = next(
            i
            for i, sp in enumerate(self._spans)
            if sp.device_id == count_cell[0]
            and sp.table == count_cell[1]
            and sp.start <= count_cell[2] < sp.start + sp.count
        )
        self._image = OutputImage(self._io, self._dev)
        self._pulse = _PulseChannel(settings, self._image, self.counters)
        latch = self._io.inputs.edge_latch
        self._latch = EdgeLatchReader(latch.slots) if latch is not None else None
        self._client: AsyncModbusTcpClient | None = None
        self._lock = asyncio.Lock()
        self._connect_lock = asyncio.Lock()
        self._report_lock = asyncio.Lock()
        self._reconnect = Reconnect(settings.backoff)
        self._consecutive_timeouts = 0
        self._entered = 0
        self._closed = asyncio.Event()
        self._polled = asyncio.Event()
        self._result_seq = 0
        self.inputs: dict[str, int | bool] = {}
        """The latest decoded inputs (``line_running``, ``plc_heartbeat``, ``result_ack``...)."""

    # -- lifecycle ---------------------------------------------------------
    async def __aenter__(self) -> ModbusPlc:
        """Connect (first entry only). Raises ``PlcLinkError`` when the PLC cannot be reached."""
        self._entered += 1
        if self._entered == 1:
            self._closed.clear()
            try:
                await self._connect()
                if self.settings.reject_mode == "node_timed":
                    await asyncio.to_thread(self._pulse.connect)
            except BaseException:
                self._entered = 0
                await self._shutdown()
                raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close (last exit only): tell the PLC the node is no longer ready, then disconnect."""
        self._entered = max(0, self._entered - 1)
        if self._entered:
            return
        if self._client is not None and "node_ready" in self._io.output_signals():
            self._image.set("node_ready", False)
            with contextlib.suppress(PlcDriverError):
                await self._write_group("status")
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed.set()
        self.counters.state = "closed"
        if self._client is not None:
            self._client.close()
            self._client = None
        await asyncio.to_thread(self._pulse.close)

    @property
    def link_state(self) -> str:
        """``connecting`` | ``up`` | ``down`` | ``closed``."""
        return self.counters.state

    # -- connection ---------------------------------------------------------
    async def _connect(self) -> AsyncModbusTcpClient:
        async with self._connect_lock:
            if self._client is not None:
                return self._client
            if self._closed.is_set() and self._entered == 0:
                raise PlcLinkError("driver is closed")
            wait = self._reconnect.wait_s()
            if wait > 0:
                raise PlcLinkError(f"link down; next connection attempt in {wait:.2f} s")
            s = self.settings
            client = AsyncModbusTcpClient(
                s.host,
                port=s.port,
                timeout=s.connect_timeout_ms / 1000,
                retries=0,
                reconnect_delay=0,
                name="lineside",
            )
            try:
                async with asyncio.timeout(s.connect_timeout_ms / 1000):
                    ok = await client.connect()
                if ok:
                    _nodelay(
                        client.ctx.transport.get_extra_info("socket")
                        if client.ctx.transport
                        else None
                    )
                    await self._resume(client)
            except (TimeoutError, ModbusException, OSError, PlcDriverError) as exc:
                client.close()
                self._connect_failed(f"{type(exc).__name__}: {exc}")
                raise PlcLinkError(f"cannot connect to {s.host}:{s.port}: {exc}") from exc
            if not ok:
                client.close()
                self._connect_failed("connection refused")
                raise PlcLinkError(f"cannot connect to {s.host}:{s.port}")
            self._client = client
            self._reconnect.succeeded()
            self._consecutive_timeouts = 0
            first = self.counters.connects == 0
            self.counters.connects += 1
            self.counters.state = "up"
            log.info("plc_link_up", transport="modbus", host=s.host, port=s.port, first=first)
            return client

    def _connect_failed(self, reason: str) -> None:
        delay = self._reconnect.failed()
        self.counters.last_error = reason
        if self.counters.state == "up":
            self.counters.state = "down"
        log.warning(
            "plc_connect_failed",
            transport="modbus",
            reason=reason,
            retry_in_s=round(delay, 3),
            failures=self._reconnect.failures,
        )

    async def _resume(self, client: AsyncModbusTcpClient) -> None:
        """Continue the PLC's sequence counters and clear a ResultValid left from before."""
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
                self._result_seq = rr.registers[0]
        if self.settings.reject_mode == "plc_tracked":
            self._image.set("result_valid", False)
            for run in self._image.runs(self._image.cells_of(("result_valid",))):
                async with asyncio.timeout(self.settings.request_timeout_ms / 1000):
                    rr = await self._send_write(client, run)
                if rr.isError():
                    raise PlcLinkError(f"PLC refused clearing result_valid ({rr})")
        if self._latch is not None:
            self._latch.reset()

    def _drop(self, reason: str) -> None:
        """Close the main connection after a transport failure; the next call reconnects."""
        if self._client is not None:
            self._client.close()
            self._client = None
        self.counters.last_error = reason
        if self.counters.state == "up":
            self.counters.state = "down"
            self.counters.losses += 1
            log.error("plc_link_lost", transport="modbus", reason=reason)
        self._reconnect.failed()

    async def _call(self, what: str, request: _Request, rtt: Any) -> ModbusPDU:
        """Run one request under the lock with the request timeout.

        Raises ``PlcLinkError`` (link down, timeout, transport error); returns
        the response, which may be an exception response.
        """
        client = self._client or await self._connect()
        timeout_s = self.settings.request_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout_s):
                async with self._lock:
                    if self._client is not client:
                        raise PlcLinkError("connection was replaced")
                    t0 = time.monotonic_ns()
                    rr = await request(client)
                    rtt.add(time.monotonic_ns() - t0)
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

    # -- inputs ---------------------------------------------------------------
    async def _read_span(self, span: Span) -> tuple[list[int], int]:
        """Read one span; return its values and the request's midpoint time (ns)."""
        t_start = time.monotonic_ns()

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
        t_mid = (t_start + time.monotonic_ns()) // 2
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
        return values[: span.count], t_mid

    async def read_inputs(self) -> tuple[Image, int]:
        """Read every input once; return the image and the time the count was read (ns).

        Raises ``PlcLinkError``.
        """
        image: Image = {}
        t_count = 0
        for i, span in enumerate(self._spans):
            values, t_mid = await self._read_span(span)
            if i == self._count_span:
                t_count = t_mid
            for k, v in enumerate(values):
                image[(span.device_id, span.table, span.start + k)] = v
        return image, t_count

    def _decode(self, image: Image, t_ns: int) -> EncoderSample | None:
        io = self._io.inputs
        dev = self._dev
        modulus = 1 << self._bits
        inputs: dict[str, int | bool] = {}
        for name, sig in self._io.input_signals().items():
            if isinstance(sig, ModbusBit):
                inputs[name] = read_bit(image, sig, dev)
            elif isinstance(sig, ModbusWord):
                inputs[name] = read_word(image, sig, dev)
        self.inputs = inputs
        count = int(inputs["encoder_count"])
        edges: tuple[int, ...] | None = None
        if io.edge_latch is not None and self._latch is not None:
            latch = io.edge_latch
            seq = read_word(image, latch.seq, dev)
            slots = [read_word(image, latch.slot(i), dev) for i in range(latch.slots)]
            new, lost, restarted = self._latch.new_edges(seq, slots)
            if lost:
                self.counters.edges_lost += lost
                log.warning("latched_edges_lost", lost=lost, latch_seq=seq)
            if restarted:
                log.warning("edge_latch_restarted", latch_seq=seq)
            good = tuple(e for e in new if 0 <= e < modulus)
            if len(good) != len(new):
                self.counters.bad_samples += 1
                log.warning("latched_edge_out_of_range", edges=new, counter_bits=self._bits)
            edges = good
        if not 0 <= count < modulus:
            self.counters.bad_samples += 1
            log.warning("encoder_count_out_of_range", raw_count=count, counter_bits=self._bits)
            if not edges:
                return None
            # the latched edges are read now or never: pass them on with the bad count,
            # which the tracker refuses while it still places the edges
        present = inputs.get("part_present")
        return EncoderSample(count, t_ns, None if present is None else bool(present), edges)

    async def samples(self) -> AsyncIterator[EncoderSample]:
        """Poll the inputs every ``poll_interval_ms`` and yield one sample per poll.

        Runs until the driver is closed. While the link is down nothing is
        yielded; reconnection follows the backoff. Bad readings are logged and
        skipped. ``t_ns`` is the midpoint of the request that read the count.
        """
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        interval = self.settings.poll_interval_ms / 1000
        next_t = loop.time()
        while not self._closed.is_set():
            # pymodbus's own wait_for can swallow a cancellation that races a response
            # (Python 3.11); a cancelled poller must stop, or the node cannot.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            try:
                image, t_ns = await self.read_inputs()
            except PlcLinkError as exc:
                log.debug("plc_poll_failed", error=str(exc))
                await self._sleep(max(interval, self._reconnect.wait_s()))
                next_t = loop.time()
                continue
            sample = self._decode(image, t_ns)
            self._polled.set()
            if sample is not None:
                yield sample
            next_t += interval
            delay = next_t - loop.time()
            if delay < -interval:  # fell behind (loop busy, slow PLC): resync
                next_t = loop.time()
                delay = 0.0
            await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await wait_event(self._closed, seconds)

    # -- outputs ---------------------------------------------------------------
    @staticmethod
    def _send_write(client: AsyncModbusTcpClient, run: WriteRun) -> Awaitable[ModbusPDU]:
        if run.table == "coil":
            return client.write_coils(
                run.start, [bool(v) for v in run.values], device_id=run.device_id
            )
        if len(run.values) == 1:
            return client.write_register(run.start, run.values[0], device_id=run.device_id)
        return client.write_registers(run.start, list(run.values), device_id=run.device_id)

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

    async def _write_group(self, group: str) -> None:
        from drivers.plc.iomap import OUTPUT_GROUPS

        await self._write_cells(group, self._image.cells_of(OUTPUT_GROUPS[group]))

    @property
    def fire_lead_ns(self) -> int:
        """Half the median pulse-write round trip (≈ node → PLC) plus ``output_delay_ms``."""
        rtt = self.counters.fire_rtt.percentile_ns(0.5) or 0
        return rtt // 2 + int(self.settings.output_delay_ms * 1e6)

    def fire(self, command: RejectCommand) -> None:
        """Start the reject pulse for ``command.part_id`` now (thread-safe, blocking).

        Raises ``PlcLinkError`` (no connection, timeout) or ``PlcWriteRefused``.
        """
        self._pulse.fire(command)

    async def heartbeat(self, alive: bool) -> None:
        """Write the node heartbeat bit (the node toggles it while healthy).

        Also reopens the pulse connection if it was lost. Raises ``PlcLinkError``
        or ``PlcWriteRefused``.
        """
        self._image.set("heartbeat", alive)
        await self._write_group("status")
        if self.settings.reject_mode == "node_timed" and not self._pulse.connected:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_ms / 1000):
                    await asyncio.to_thread(self._pulse.connect)
            except (TimeoutError, PlcLinkError) as exc:
                log.warning("plc_pulse_connect_failed", error=str(exc))

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error and the error code.

        Raises ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        signals = self._io.output_signals()
        for name, value in (
            ("node_ready", ready),
            ("node_error", error),
            ("error_code", error_code),
        ):
            if name in signals:
                self._image.set(name, value)
        await self._write_group("status")

    async def publish_verdict(self, verdict: int, defect: int, result_counter: int) -> None:
        """Write the last verdict code, defect code and result counter (one request).

        Codes: ``drivers.plc.tracked.VERDICT_*`` and ``DEFECT_CODES``. Raises
        ``PlcLinkError``/``PlcWriteRefused``.
        """
        signals = self._io.output_signals()
        for name, value in (
            ("last_verdict", verdict),
            ("defect_code", defect),
            ("result_counter", result_counter),
        ):
            if name in signals:
                self._image.set(name, value)
        await self._write_group("verdict")

    # -- PLC-tracked handshake ----------------------------------------------------
    async def _ack(self) -> bool:
        sig = self._io.inputs.result_ack
        assert sig is not None
        dev, table, addr = signal_cells(sig, self._dev)[0]
        values, _ = await self._read_span(Span(dev, table, addr, 1))
        return read_bit({(dev, table, addr): values[0]}, sig, self._dev)

    async def _wait_ack(self, want: bool, deadline: float, phase: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if await self._ack() == want:
                return
            left = deadline - loop.time()
            if left <= 0:
                self.counters.handshake_timeouts += 1
                raise PlcHandshakeTimeout(
                    f"result handshake: Ack did not become {int(want)} ({phase}) within "
                    f"{self.settings.handshake_timeout_ms:.0f} ms"
                )
            # the next poll (or a poll interval) before asking again
            self._polled.clear()
            await wait_event(self._polled, min(left, self.settings.poll_interval_ms / 1000))

    async def report(self, result: PlcResult) -> None:
        """Hand one result to the PLC's shift register (ResultValid/Ack, see ``docs/plc.md``).

        1. wait for Ack = 0 (the PLC finished the previous result);
        2. write the result block with ResultValid = 1 (one request);
        3. wait for Ack = 1, then write ResultValid = 0.

        Raises ``PlcHandshakeTimeout`` (a ``PlcLinkError``), ``PlcLinkError`` or
        ``PlcWriteRefused``; ResultValid is cleared (best effort) on failure.
        """
        if self._io.inputs.result_ack is None:
            raise PlcDriverError("io.inputs.result_ack is not configured: no PLC-tracked mode")
        timeout = self.settings.handshake_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        async with self._report_lock:
            await self._wait_ack(False, loop.time() + timeout, "ready")
            seq = next_seq(self._result_seq)
            img = self._image
            signals = self._io.output_signals()
            values: dict[str, int | bool] = {
                "result_part_id": wire_part_id(result.part_id),
                "result_origin_count": result.origin_raw_count,
                "result_reject": result.reject,
                "result_reason": result.reason_code,
                "result_defect": result.defect_code,
                "result_seq": seq,
                "result_valid": True,
            }
            for name, value in values.items():
                if name in signals:
                    img.set(name, value)
            try:
                await self._write_group("result")
                self._result_seq = seq
                await self._wait_ack(True, loop.time() + timeout, "accepted")
            finally:
                img.set("result_valid", False)
                try:
                    await self._write_cells("result_valid", img.cells_of(("result_valid",)))
                except PlcDriverError as exc:
                    log.warning("result_valid_not_cleared", error=str(exc))
