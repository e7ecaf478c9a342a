"""The Modbus pulse connection: the node-timed fire write, straight from the pulse thread.

A blocking pymodbus client used only by ``PlcLink.fire`` on the node's
pulse-timing thread: one pre-planned FC16 write of the fire group, so no
event-loop wake-up and no queueing behind a poll sits between the deadline and
the PLC. Its measured round trips (``counters.fire_rtt``) give the link's
``fire_lead_ns``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Mapping

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from drivers.plc.errors import PlcLinkError, PlcWriteRefused
from drivers.plc.iomap import OUTPUT_GROUPS, next_seq
from drivers.plc.modbus_map import OutputImage, signal_cells
from drivers.plc.settings import ModbusSettings
from drivers.plc.transport import LinkCounters, OutputValue


def set_nodelay(sock: object) -> None:
    """Send small requests at once (no Nagle delay) on ``sock`` when it is a TCP socket."""
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ModbusPulse:
    """The pulse connection: a blocking client used from the pulse thread only.

    ``pulse`` writes the fire group (part id, reason, sequence) in one FC16
    request; the PLC pulses its output when the sequence changes.
    """

    def __init__(self, settings: ModbusSettings, image: OutputImage, counters: LinkCounters):
        self._s = settings
        self._image = image
        self._counters = counters
        self._lock = threading.Lock()
        self._client: ModbusTcpClient | None = None
        self._seq_cells = signal_cells(settings.io.outputs.fire_seq, settings.device_id)
        self._cells = image.cells_of(OUTPUT_GROUPS["fire"])
        self._mapped = frozenset(settings.io.output_signals())
        self._seq = 0

    @property
    def connected(self) -> bool:
        """Whether the connection is open."""
        return self._client is not None

    async def open(self) -> None:
        """Open the connection and continue the PLC's fire sequence. Raises ``PlcLinkError``."""
        await asyncio.to_thread(self._connect)

    def _connect(self) -> None:
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
        set_nodelay(client.socket)
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
        """Close the connection (blocking)."""
        with self._lock:
            if self._client is not None:
                self._client.close()  # type: ignore[no-untyped-call]
                self._client = None

    def pulse(self, values: Mapping[str, OutputValue]) -> None:
        """Write the fire group now. Raises ``PlcLinkError`` or ``PlcWriteRefused``."""
        with self._lock:
            self._connect_locked()
            assert self._client is not None
            seq = next_seq(self._seq)
            img = self._image
            img.set("fire_seq", seq)
            for name, value in values.items():
                if name in self._mapped:
                    img.set(name, value)
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
