"""A PLC emulator on OPC UA: an asyncua server in front of a :class:`PlcProgram`.

The address space is the default of ``drivers.plc.iomap.OpcUaIoMap``: one
object ``PLC`` in namespace ``urn:lineside:plc-emulator`` (index 2 on a fresh
server) with one variable per signal, NodeId ``ns=2;s=PLC.<Name>``, BrowseName
``2:<Name>``. A scan task runs every ``scan_ms``: it advances the program and
writes every changed input with the SourceTimestamp of the instant it was
computed, as a PLC's OPC UA server samples its process image. Writes by the
node reach the program as soon as the server has applied them.

Fault injection: ``refuse_writes(name)`` makes an output read-only (the node's
write gets a Bad status); ``program.count_override`` feeds bad counter values.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import structlog
from asyncua import Server, ua
from asyncua.common.callback import Callback, CallbackType, ServerItemCallback

from hil.plc_logic import PlcProgram
from hil.plc_modbus import free_port
from node.hmi.uahelp import stop_server

log = structlog.get_logger(__name__)

NAMESPACE = "urn:lineside:plc-emulator"

# signal → (BrowseName, type, written by the node)
SIGNALS: dict[str, tuple[str, ua.VariantType, bool]] = {
    "encoder_count": ("EncoderCount", ua.VariantType.UInt32, False),
    "part_present": ("PartPresent", ua.VariantType.Boolean, False),
    "line_running": ("LineRunning", ua.VariantType.Boolean, False),
    "plc_heartbeat": ("PlcHeartbeat", ua.VariantType.Boolean, False),
    "result_ack": ("ResultAck", ua.VariantType.Boolean, False),
    "reject_confirm": ("RejectConfirmCount", ua.VariantType.UInt16, False),
    "edge_latch": ("EdgeLatch", ua.VariantType.UInt32, False),
    "heartbeat": ("NodeHeartbeat", ua.VariantType.Boolean, True),
    "node_ready": ("NodeReady", ua.VariantType.Boolean, True),
    "node_error": ("NodeError", ua.VariantType.Boolean, True),
    "error_code": ("NodeErrorCode", ua.VariantType.UInt16, True),
    "last_verdict": ("LastVerdict", ua.VariantType.UInt16, True),
    "defect_code": ("DefectCode", ua.VariantType.UInt16, True),
    "result_counter": ("ResultCounter", ua.VariantType.UInt32, True),
    "fire_part_id": ("FirePartId", ua.VariantType.UInt32, True),
    "fire_reason": ("FireReason", ua.VariantType.UInt16, True),
    "fire_seq": ("FireSeq", ua.VariantType.UInt16, True),
    "result_part_id": ("ResultPartId", ua.VariantType.UInt32, True),
    "result_origin_count": ("ResultOriginCount", ua.VariantType.UInt32, True),
    "result_reject": ("ResultReject", ua.VariantType.Boolean, True),
    "result_reason": ("ResultReasonCode", ua.VariantType.UInt16, True),
    "result_defect": ("ResultDefectCode", ua.VariantType.UInt16, True),
    "result_seq": ("ResultSeq", ua.VariantType.UInt16, True),
    "result_valid": ("ResultValid", ua.VariantType.Boolean, True),
}


def _default(vtype: ua.VariantType) -> Any:
    return False if vtype == ua.VariantType.Boolean else 0


class OpcUaPlcEmulator:
    """Serves ``program`` at ``opc.tcp://127.0.0.1:<port>/lineside/plc``.

    An async context manager; ``stop()``/``start()`` restart the server (a new
    server instance; the program and the outputs' values live on).
    """

    def __init__(
        self,
        program: PlcProgram,
        *,
        port: int | None = None,
        scan_ms: float = 2.0,
        server_certificate: tuple[str, str] | None = None,
    ) -> None:
        self.program = program
        self.port = port or free_port()
        self.scan_ms = scan_ms
        self.url = f"opc.tcp://127.0.0.1:{self.port}/lineside/plc"
        self._cert = server_certificate
        self._server: Server | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._names: dict[ua.NodeId, str] = {}
        self._held: dict[str, Any] = {n: _default(t) for n, (_, t, out) in SIGNALS.items() if out}
        self._published: dict[str, Any] = {}
        self._refused: set[str] = set()
        self._scan: asyncio.Task[None] | None = None
        self._wall_minus_mono = time.time_ns() - time.monotonic_ns()
        self.writes = 0
        program.init_fire_seq(0)

    async def __aenter__(self) -> OpcUaPlcEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Build the address space and listen."""
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_server_name("lineside PLC emulator")
        if self._cert is not None:
            await server.load_certificate(self._cert[0])
            await server.load_private_key(self._cert[1])
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.NoSecurity,
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ]
            )
        idx = await server.register_namespace(NAMESPACE)
        plc = await server.nodes.objects.add_object(
            ua.NodeId("PLC", idx), ua.QualifiedName("PLC", idx)
        )
        # the program lives on across a restart of its server: inputs start at its values
        now = self.inputs(time.monotonic_ns())
        for name, (browse, vtype, out) in SIGNALS.items():
            nodeid = ua.NodeId(f"PLC.{browse}", idx)
            if name in now:
                value = ua.Variant(now[name], vtype)
            else:
                value = ua.Variant(self._held.get(name, _default(vtype)), vtype)
            var = await plc.add_variable(nodeid, ua.QualifiedName(browse, idx), value)
            if out:
                await var.set_writable(name not in self._refused)
            self._nodes[name] = nodeid
            self._names[nodeid] = name
        server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
        await server.start()
        self._server = server
        self._published = {}
        self._scan = asyncio.get_running_loop().create_task(self._scan_loop(), name="plc-scan")
        log.info("plc_emulator_started", transport="opcua", url=self.url)

    async def stop(self) -> None:
        """Stop the scan and the server (client connections drop)."""
        if self._scan is not None:
            self._scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan
            self._scan = None
        if self._server is not None:
            await stop_server(self._server)
            self._server = None
            log.info("plc_emulator_stopped", transport="opcua", url=self.url)

    async def refuse_writes(self, name: str, refuse: bool = True) -> None:
        """Make output ``name`` read-only (``refuse``) or writable again."""
        (self._refused.add if refuse else self._refused.discard)(name)
        if self._server is not None:
            await self._server.get_node(self._nodes[name]).set_writable(not refuse)

    # -- scan ---------------------------------------------------------------
    def inputs(self, t_ns: int) -> dict[str, Any]:
        """Every input's value at ``t_ns`` (the program is synced first)."""
        p = self.program
        p.sync(t_ns)
        return {
            "encoder_count": p.raw_count(t_ns),
            "part_present": p.part_present(t_ns),
            "line_running": p.line_running,
            "plc_heartbeat": p.plc_heartbeat(t_ns),
            "result_ack": p.result_ack,
            "reject_confirm": p.reject_confirm,
            "edge_latch": [p.latch_seq, *p.latch_slots],
        }

    async def _publish(self) -> None:
        assert self._server is not None
        now = time.monotonic_ns()
        ts = datetime.fromtimestamp((now + self._wall_minus_mono) / 1e9, UTC)
        for name, value in self.inputs(now).items():
            if self._published.get(name) == value:
                continue
            self._published[name] = value
            vtype = SIGNALS[name][1]
            dv = ua.DataValue(ua.Variant(value, vtype), SourceTimestamp=ts, ServerTimestamp=ts)
            await self._server.write_attribute_value(self._nodes[name], dv)

    async def _scan_loop(self) -> None:
        period = self.scan_ms / 1000
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while True:
            await self._publish()
            next_t += period
            delay = next_t - loop.time()
            if delay < -period:
                next_t = loop.time()
            await asyncio.sleep(max(0.0, delay))

    async def _on_write(self, event: Callback, _dispatcher: object) -> None:
        if not isinstance(event, ServerItemCallback) or not event.is_external:
            return
        now = time.monotonic_ns()
        values: dict[str, int] = {}
        for wv, status in zip(
            event.request_params.NodesToWrite, event.response_params, strict=True
        ):
            name = self._names.get(wv.NodeId)
            if name is None or not status.is_good() or wv.AttributeId != ua.AttributeIds.Value:
                continue
            value = wv.Value.Value.Value
            self._held[name] = value
            values[name] = int(value)
        if values:
            self.writes += 1
            self.program.write(values, now)
