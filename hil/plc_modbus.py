"""A PLC emulator on Modbus TCP: pymodbus's server in front of a :class:`PlcProgram`.

The register layout is the node's own I/O map (``drivers.plc.iomap.ModbusIoMap``),
so the emulator serves whatever map the driver is configured with. Inputs are
computed at the instant each read request is served (the HSC is read live);
writes are handed to the program as soon as the request arrives.

Fault injection for tests: ``refuse`` (output names whose writes get exception
code 4, "server device failure"), ``silent`` (no answers at all: requests time
out), ``program.count_override`` (bad counter values).
"""

from __future__ import annotations

import asyncio
import socket
import time
from types import TracebackType

import structlog
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.plc.iomap import ModbusBit, ModbusEdgeLatch, ModbusIoMap, ModbusWord
from drivers.plc.modbus_map import Cell, Image, signal_cells
from hil.plc_logic import PlcProgram

log = structlog.get_logger(__name__)

_TABLE_OF_FC = {
    1: "coil",
    5: "coil",
    15: "coil",
    2: "discrete_input",
    3: "holding_register",
    6: "holding_register",
    16: "holding_register",
    4: "input_register",
}
_TABLES = ("coil", "discrete_input", "holding_register", "input_register")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ModbusPlcEmulator:
    """Serves ``program`` on ``127.0.0.1:port`` with the layout of ``io``.

    An async context manager; ``stop()``/``start()`` restart the server (the
    program, its counters and its output registers live on, like a PLC whose
    network link was interrupted).
    """

    def __init__(
        self, program: PlcProgram, io: ModbusIoMap, *, device_id: int = 1, port: int | None = None
    ) -> None:
        self.program = program
        self.io = io
        self.device_id = device_id
        self.port = port or free_port()
        self.refuse: set[str] = set()
        self.silent = False
        self.requests = 0
        self._server: ModbusTcpServer | None = None
        self._held: Image = {}  # output cells as written by the node
        self._outputs = io.output_signals()
        self._inputs = io.input_signals()
        self._out_cells: dict[Cell, list[str]] = {}
        for name, sig in self._outputs.items():
            for cell in signal_cells(sig, device_id):
                self._held.setdefault(cell, 0)
                self._out_cells.setdefault(cell, []).append(name)
        fire_seq = signal_cells(io.outputs.fire_seq, device_id)[0]
        program.init_fire_seq(self._held[fire_seq])

    # -- lifecycle -------------------------------------------------------------
    async def __aenter__(self) -> ModbusPlcEmulator:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Listen on the port (again)."""
        server = ModbusTcpServer(self._device(), address=("127.0.0.1", self.port))
        await server.serve_forever(background=True)
        self._server = server
        log.info("plc_emulator_started", transport="modbus", port=self.port)

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        if self._server is not None:
            await self._server.shutdown()
            self._server = None
            await asyncio.sleep(0)  # let the transports close
            log.info("plc_emulator_stopped", transport="modbus", port=self.port)

    def _device(self) -> SimDevice:
        extent = dict.fromkeys(_TABLES, 0)
        for sig in [*self._inputs.values(), *self._outputs.values()]:
            for _, table, addr in signal_cells(sig, self.device_id):
                extent[table] = max(extent[table], addr + 1)
        blocks: list[list[SimData]] = []
        for table in _TABLES:
            if table in ("coil", "discrete_input"):
                n = max(16, -(-extent[table] // 16) * 16)
                blocks.append([SimData(0, values=[False] * n, datatype=DataType.BITS)])
            else:
                n = max(1, extent[table])
                blocks.append([SimData(0, count=n, values=0, datatype=DataType.REGISTERS)])
        return SimDevice(
            self.device_id,
            simdata=(blocks[0], blocks[1], blocks[2], blocks[3]),
            action=self._action,
        )

    # -- requests --------------------------------------------------------------
    def input_image(self, t_ns: int) -> Image:
        """Every input cell's value at ``t_ns`` (the program is synced first)."""
        p = self.program
        p.sync(t_ns)
        img: Image = {}

        def put_word(sig: ModbusWord, value: int) -> None:
            for cell, reg in zip(signal_cells(sig, self.device_id), sig.encode(value), strict=True):
                img[cell] = reg

        def put_bit(sig: ModbusBit, value: bool) -> None:
            (cell,) = signal_cells(sig, self.device_id)
            if sig.bit is None:
                img[cell] = int(value)
            else:
                img[cell] = img.get(cell, 0) | (int(value) << sig.bit)

        values: dict[str, int | bool] = {
            "encoder_count": p.raw_count(t_ns),
            "part_present": p.part_present(t_ns),
            "line_running": p.line_running,
            "plc_heartbeat": p.plc_heartbeat(t_ns),
            "result_ack": p.result_ack,
            "reject_confirm": p.reject_confirm,
        }
        for name, sig in self._inputs.items():
            if isinstance(sig, ModbusEdgeLatch):
                put_word(sig.seq, p.latch_seq)
                for i in range(sig.slots):
                    put_word(sig.slot(i), p.latch_slots[i])
            elif isinstance(sig, ModbusWord):
                put_word(sig, int(values[name]))
            else:
                put_bit(sig, bool(values[name]))
        return img

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request, before it reads or stores ``registers``."""
        self.requests += 1
        if self.silent:
            await asyncio.sleep(3600)  # never answer: the client times out
        now = time.monotonic_ns()
        table = _TABLE_OF_FC.get(function_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        bits = table in ("coil", "discrete_input")
        if set_values is None:
            if table in ("input_register", "discrete_input"):
                image = self.input_image(now)
            else:
                image = self._held
            self._fill(registers, start_address, table, address, count, image, bits)
            return None
        written: Image = {}
        for i, v in enumerate(set_values):
            written[(self.device_id, table, address + i)] = int(v)
        touched = sorted({n for c in written for n in self._out_cells.get(c, [])})
        refused = self.refuse.intersection(touched)
        if refused:
            log.warning("plc_emulator_write_refused", signals=sorted(refused))
            return ExcCodes.DEVICE_FAILURE
        self._held.update(written)
        values: dict[str, int] = {}
        for name in touched:
            sig = self._outputs[name]
            cells = signal_cells(sig, self.device_id)
            if isinstance(sig, ModbusWord):
                values[name] = sig.decode([self._held[c] for c in cells])
            elif sig.bit is None:
                values[name] = self._held[cells[0]]
            else:
                values[name] = self._held[cells[0]] >> sig.bit & 1
        self.program.write(values, now)
        return None

    def _fill(
        self,
        registers: list[int],
        start: int,
        table: str,
        address: int,
        count: int,
        image: Image,
        bits: bool,
    ) -> None:
        dev = self.device_id
        if not bits:
            for i in range(count):
                registers[address + i - start] = image.get((dev, table, address + i), 0)
            return
        for i in range(count):
            a = address + i
            reg = a // 16 - start
            mask = 1 << (a % 16)
            if image.get((dev, table, a), 0):
                registers[reg] |= mask
            else:
                registers[reg] &= ~mask
