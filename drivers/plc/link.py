"""The PLC link: one object that is the node's encoder source, reject output and PLC reporter.

:class:`PlcLink` drives one :class:`drivers.plc.transport.PlcTransport`
(Modbus TCP or OPC UA) and owns everything that is the same for every PLC:

- the lifecycle: an async context manager entered once (the node's two PLC
  edges share it through ``node.plc.NodePlc``, which counts them);
- connecting and reconnecting with backoff, the link state and its counters;
- the heartbeat (which also reopens a lost pulse channel), node ready/error,
  the last verdict with its result counter;
- the node-timed pulse (``fire`` on the node's pulse-timing thread, straight
  onto the transport's pulse channel) and ``fire_lead_ns``;
- the PLC-tracked ResultValid/Ack handshake (``report``);
- the widths of what it sends, one rule for every transport
  (``drivers.plc.iomap``: part ids modulo 2**32, the result counter and the
  sequence numbers modulo 2**16).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Literal, TypeVar

import structlog

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import (
    PlcConfigError,
    PlcConnectError,
    PlcDriverError,
    PlcHandshakeTimeout,
    PlcLinkError,
)
from drivers.plc.iomap import OUTPUT_GROUPS, next_result_counter, next_seq, wire_part_id
from drivers.plc.settings import BackoffSettings, ModbusSettings, OpcUaSettings
from drivers.plc.tracked import PlcResult, reason_code
from drivers.plc.transport import LinkState, OutputValue, PlcTransport, wait_event

log = structlog.get_logger(__name__)

T = TypeVar("T")


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


def open_link(
    settings: ModbusSettings | OpcUaSettings, *, encoder_bits: Literal[16, 32] = 32
) -> PlcLink:
    """The link ``settings`` describe (only that transport's library is imported).

    ``encoder_bits`` is the width of the PLC's counter: counts and latched
    edges outside ``[0, 2**encoder_bits)`` are bad data, dropped and logged.
    """
    transport: PlcTransport
    if isinstance(settings, ModbusSettings):
        from drivers.plc.modbus import ModbusTransport

        transport = ModbusTransport(settings, encoder_bits=encoder_bits)
    else:
        from drivers.plc.opcua import OpcUaTransport

        transport = OpcUaTransport(settings, encoder_bits=encoder_bits)
    return PlcLink(settings, transport)


class PlcLink:
    """A PLC reached over ``transport``; see the module docstring.

    At once an ``EncoderSource`` (``samples``), a ``RejectOutput`` (``fire``,
    ``fire_lead_ns``, ``heartbeat``) and a ``PlcReporter`` (``report``).
    ``settings`` are the ones ``transport`` was made from.
    """

    def __init__(self, settings: ModbusSettings | OpcUaSettings, transport: PlcTransport) -> None:
        self.settings = settings
        self.transport = transport
        self.counters = transport.counters
        self._reconnect = Reconnect(settings.backoff)
        self._connect_lock = asyncio.Lock()
        self._report_lock = asyncio.Lock()
        self._closed = asyncio.Event()
        self._open = False
        self._channel_up = False
        """The open main channel's loss is not yet recorded."""
        self._outputs: dict[str, OutputValue] = {}
        """The status and verdict outputs as last set (written whole, by group)."""
        self._result_seq = 0
        self._result_counter = 0

    # -- lifecycle ---------------------------------------------------------------
    async def __aenter__(self) -> PlcLink:
        """Connect the main channel and, node-timed, the pulse channel.

        Raises ``PlcLinkError`` when the PLC cannot be reached, ``PlcConfigError``
        when the I/O map does not fit it, and ``RuntimeError`` when the link is
        already open (it is entered once).
        """
        if self._open:
            raise RuntimeError("the PLC link is already open; enter it once")
        self._open = True
        self._closed.clear()
        try:
            await self._up()
            if self.settings.reject_mode == "node_timed":
                await self.transport.pulse_channel.open()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Tell the PLC the node is no longer ready (best effort), then disconnect."""
        await self._check_lost()
        if self.transport.connected and self.settings.io.outputs.node_ready is not None:
            self._outputs["node_ready"] = False
            with contextlib.suppress(PlcDriverError):
                await self._write_group("status")
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closed.set()
        self.counters.state = "closed"
        self._channel_up = False
        await self.transport.disconnect()
        await asyncio.to_thread(self.transport.pulse_channel.close)
        self._open = False

    @property
    def link_state(self) -> LinkState:
        """``connecting`` | ``up`` | ``down`` | ``closed``."""
        return self.counters.state

    # -- connection ----------------------------------------------------------------
    async def _up(self) -> None:
        """Make sure the main channel is open: reconnect when due.

        Raises ``PlcLinkError`` (closed, backoff running, connect failed),
        ``PlcConfigError`` or ``PlcWriteRefused`` (from the transport's connect).
        """
        if self.transport.connected:
            return
        await self._check_lost()
        async with self._connect_lock:
            if self.transport.connected:
                return
            if self._closed.is_set():
                raise PlcLinkError("the PLC link is closed")
            wait = self._reconnect.wait_s()
            if wait > 0:
                raise PlcLinkError(f"link down; next connection attempt in {wait:.2f} s")
            try:
                result_seq = await self.transport.connect()
            except PlcConfigError:
                raise  # the I/O map does not fit this PLC: no retry helps
            except PlcDriverError as exc:
                self._connect_failed(exc.reason if isinstance(exc, PlcConnectError) else str(exc))
                raise
            if result_seq is not None:
                self._result_seq = result_seq
            self._reconnect.succeeded()
            self._channel_up = True
            first = self.counters.connects == 0
            self.counters.connects += 1
            self.counters.state = "up"
            log.info(
                "plc_link_up", transport=self.transport.name, **self.transport.endpoint, first=first
            )

    def _connect_failed(self, reason: str) -> None:
        delay = self._reconnect.failed()
        self.counters.last_error = reason
        if self.counters.state == "up":
            self.counters.state = "down"
        log.warning(
            "plc_connect_failed",
            transport=self.transport.name,
            reason=reason,
            retry_in_s=round(delay, 3),
            failures=self._reconnect.failures,
        )

    async def _check_lost(self) -> None:
        """Record a loss the transport saw (once per channel) and close what is left of it."""
        reason = self.transport.lost
        if reason is None:
            return
        if self._channel_up:
            self._channel_up = False
            self.counters.last_error = reason
            if self.counters.state == "up":
                self.counters.state = "down"
                self.counters.losses += 1
                log.error("plc_link_lost", transport=self.transport.name, reason=reason)
            self._reconnect.failed()
        await self.transport.disconnect()

    async def _io(self, request: Callable[[], Awaitable[T]]) -> T:
        """Run one request on the main channel, (re)connecting first when due.

        A request that failed because the channel was lost records the loss.
        """
        await self._up()
        try:
            return await request()
        except PlcDriverError:
            await self._check_lost()
            raise

    # -- inputs --------------------------------------------------------------------
    async def samples(self) -> AsyncIterator[EncoderSample]:
        """Yield the PLC's encoder samples until the link is closed.

        While the link is down nothing is yielded; it is reopened with the
        backoff (each failed attempt is logged as ``plc_connect_failed``).
        """
        while not self._closed.is_set():
            wait = self._reconnect.wait_s()
            if wait > 0 and not self.transport.connected:
                await wait_event(self._closed, wait)
                continue
            try:
                await self._up()
            except PlcLinkError:
                continue  # already logged; the backoff says when to try again
            async for sample in self.transport.samples(self._closed):
                yield sample
            await self._check_lost()

    async def probe_read(self) -> None:
        """Read the inputs once (Modbus: the polled input block; OPC UA: a Read of the
        counter), for a round trip in ``counters.read_rtt``. Raises ``PlcLinkError``."""
        await self._io(self.transport.probe_read)

    # -- outputs -------------------------------------------------------------------
    async def _write_group(self, group: str) -> None:
        values = {n: self._outputs[n] for n in OUTPUT_GROUPS[group] if n in self._outputs}
        await self._io(lambda: self.transport.write(group, values))

    @property
    def fire_lead_ns(self) -> int:
        """Half the median pulse-write round trip (≈ node → PLC) plus ``output_delay_ms``."""
        rtt = self.counters.fire_rtt.percentile_ns(0.5) or 0
        return rtt // 2 + int(self.settings.output_delay_ms * 1e6)

    def fire(self, command: RejectCommand) -> None:
        """Start the reject pulse for ``command.part_id`` now, on the calling thread.

        Blocking and thread-safe; the write goes out on the pulse channel
        without touching the event loop. Raises ``PlcLinkError`` (no
        connection, no answer within ``fire_timeout_ms``) or ``PlcWriteRefused``.
        """
        self.transport.pulse_channel.pulse(
            {
                "fire_part_id": wire_part_id(command.part_id),
                "fire_reason": reason_code(command.reason),
            }
        )

    async def heartbeat(self, alive: bool) -> None:
        """Write the node heartbeat (the node toggles it while healthy).

        Node-timed, also reopens the pulse channel if it was lost. Raises
        ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        self._outputs["heartbeat"] = bool(alive)
        await self._write_group("status")
        if self.settings.reject_mode == "node_timed" and not self.transport.pulse_channel.connected:
            try:
                async with asyncio.timeout(self.settings.connect_timeout_ms / 1000):
                    await self.transport.pulse_channel.open()
            except (TimeoutError, PlcDriverError) as exc:
                log.warning("plc_pulse_connect_failed", error=str(exc))

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error and the error code (one request).

        Raises ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        self._outputs.update(node_ready=ready, node_error=error, error_code=error_code)
        await self._write_group("status")

    async def publish_verdict(self, verdict: int, defect: int) -> None:
        """Write the last verdict code, defect code and the result counter (one request).

        Codes: ``drivers.plc.tracked.VERDICT_*`` and ``DEFECT_CODES``. The
        result counter counts every call, modulo 2**16
        (a call whose write fails is counted too: the PLC sees the gap). Raises
        ``PlcLinkError`` or ``PlcWriteRefused``.
        """
        self._result_counter = next_result_counter(self._result_counter)
        self._outputs.update(
            last_verdict=verdict, defect_code=defect, result_counter=self._result_counter
        )
        await self._write_group("verdict")

    # -- PLC-tracked handshake -----------------------------------------------------
    async def _wait_ack(self, want: bool, deadline: float, phase: str) -> None:
        loop = asyncio.get_running_loop()
        if await self._io(
            lambda: self.transport.wait_input("result_ack", want, deadline - loop.time())
        ):
            return
        self.counters.handshake_timeouts += 1
        raise PlcHandshakeTimeout(
            f"result handshake: Ack did not become {int(want)} ({phase}) within "
            f"{self.settings.handshake_timeout_ms:.0f} ms"
        )

    async def report(self, result: PlcResult) -> None:
        """Hand one result to the PLC's shift register (ResultValid/Ack, see ``docs/plc.md``).

        1. wait for Ack = 0 (the PLC finished the previous result);
        2. write the result block with ResultValid = 1 (one request);
        3. wait for Ack = 1, then write ResultValid = 0.

        Over OPC UA the Ack arrives by subscription, so ``samples()`` must be
        running. Raises ``PlcHandshakeTimeout`` (a ``PlcLinkError``),
        ``PlcLinkError`` or ``PlcWriteRefused``; ResultValid is cleared (best
        effort) on failure.
        """
        if self.settings.io.inputs.result_ack is None:
            raise PlcDriverError("io.inputs.result_ack is not configured: no PLC-tracked mode")
        timeout = self.settings.handshake_timeout_ms / 1000
        loop = asyncio.get_running_loop()
        async with self._report_lock:
            await self._wait_ack(False, loop.time() + timeout, "ready")
            seq = next_seq(self._result_seq)
            values: dict[str, OutputValue] = {
                "result_part_id": wire_part_id(result.part_id),
                "result_origin_count": result.origin_raw_count,
                "result_reject": result.reject,
                "result_reason": result.reason_code,
                "result_defect": result.defect_code,
                "result_seq": seq,
                "result_valid": True,
            }
            try:
                await self._io(lambda: self.transport.write("result", values))
                self._result_seq = seq
                await self._wait_ack(True, loop.time() + timeout, "accepted")
            finally:
                try:
                    await self._io(
                        lambda: self.transport.write("result_valid", {"result_valid": False})
                    )
                except PlcDriverError as exc:
                    log.warning("result_valid_not_cleared", error=str(exc))
