"""Modbus register images: batched read plans, decoding inputs, the node's output image.

Pure and synchronous, shared by the Modbus driver and the PLC emulator in
``hil/``. A *cell* is one coil/discrete input (its value 0 or 1) or one 16-bit
register, keyed ``(device_id, table, address)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from drivers.plc.iomap import ModbusBit, ModbusEdgeLatch, ModbusIoMap, ModbusWord

Cell = tuple[int, str, int]
Image = dict[Cell, int]

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000
MAX_REGISTERS_PER_WRITE = 123
MAX_BITS_PER_WRITE = 1968


@dataclass(frozen=True, slots=True)
class Span:
    """A run of cells read or written in one request."""

    device_id: int
    table: str
    start: int
    count: int


@dataclass(frozen=True, slots=True)
class WriteRun:
    """Values for one write request (registers: 16-bit values; coils: 0/1)."""

    device_id: int
    table: str
    start: int
    values: tuple[int, ...]


def signal_cells(sig: ModbusBit | ModbusWord | ModbusEdgeLatch, default_device: int) -> list[Cell]:
    """The cells ``sig`` occupies, with its device id resolved."""
    dev = default_device if sig.device_id is None else sig.device_id
    return [(dev, t, a) for t, a in sig.cells()]


def plan_reads(
    signals: Iterable[ModbusBit | ModbusWord | ModbusEdgeLatch], default_device: int, max_gap: int
) -> list[Span]:
    """Group the cells of ``signals`` into as few read requests as the protocol allows.

    Cells of one device and table closer than ``max_gap`` are read together
    (the cells between are read and ignored).
    """
    by_table: dict[tuple[int, str], set[int]] = {}
    for sig in signals:
        for dev, table, addr in signal_cells(sig, default_device):
            by_table.setdefault((dev, table), set()).add(addr)
    spans: list[Span] = []
    for (dev, table), addrs in sorted(by_table.items()):
        limit = MAX_REGISTERS_PER_READ if table.endswith("register") else MAX_BITS_PER_READ
        ordered = sorted(addrs)
        start = prev = ordered[0]
        for addr in ordered[1:]:
            if addr - prev - 1 > max_gap or addr - start + 1 > limit:
                spans.append(Span(dev, table, start, prev - start + 1))
                start = addr
            prev = addr
        spans.append(Span(dev, table, start, prev - start + 1))
    return spans


def read_word(image: Image, sig: ModbusWord, default_device: int) -> int:
    """The value of ``sig`` in ``image``. Raises ``KeyError`` when a cell was not read."""
    return sig.decode([image[c] for c in signal_cells(sig, default_device)])


def read_bit(image: Image, sig: ModbusBit, default_device: int) -> bool:
    """The value of ``sig`` in ``image``. Raises ``KeyError`` when its cell was not read."""
    value = image[signal_cells(sig, default_device)[0]]
    if sig.bit is None:
        return bool(value)
    return bool(value >> sig.bit & 1)


class OutputImage:
    """The node's image of every output cell; outputs are always written from it.

    Bits inside a register are set in the image and the whole register is
    written, so the node must own every bit of its output registers.
    """

    def __init__(self, io: ModbusIoMap, default_device: int) -> None:
        self._io = io
        self._dev = default_device
        self._cells: Image = {}
        for sig in io.output_signals().values():
            for cell in signal_cells(sig, default_device):
                self._cells.setdefault(cell, 0)

    def set(self, name: str, value: int | bool) -> None:
        """Set output ``name`` (an ``outputs`` field) in the image.

        Raises:
            KeyError: ``name`` is not configured in the I/O map.
        """
        sig = self._io.output_signals()[name]
        cells = signal_cells(sig, self._dev)
        if isinstance(sig, ModbusWord):
            for cell, reg in zip(cells, sig.encode(int(value)), strict=True):
                self._cells[cell] = reg
        elif sig.bit is None:
            self._cells[cells[0]] = int(bool(value))
        else:
            mask = 1 << sig.bit
            old = self._cells[cells[0]]
            self._cells[cells[0]] = (old | mask) if value else (old & ~mask)

    def load(self, cell: Cell, value: int) -> None:
        """Take a cell's value as read from the PLC (to continue from it after a restart)."""
        if cell in self._cells:
            self._cells[cell] = value

    def cells_of(self, names: Iterable[str]) -> list[Cell]:
        """The cells of the configured outputs among ``names``."""
        signals = self._io.output_signals()
        out: set[Cell] = set()
        for name in names:
            if name in signals:
                out.update(signal_cells(signals[name], self._dev))
        return sorted(out)

    def runs(self, cells: Iterable[Cell]) -> list[WriteRun]:
        """The write requests that put ``cells`` on the PLC: contiguous runs, in address order."""
        runs: list[WriteRun] = []
        cur: list[Cell] = []
        for cell in sorted(set(cells)):
            limit = MAX_REGISTERS_PER_WRITE if cell[1].endswith("register") else MAX_BITS_PER_WRITE
            if cur and (cell[:2] != cur[-1][:2] or cell[2] != cur[-1][2] + 1 or len(cur) >= limit):
                runs.append(self._run(cur))
                cur = []
            cur.append(cell)
        if cur:
            runs.append(self._run(cur))
        return runs

    def _run(self, cells: list[Cell]) -> WriteRun:
        dev, table, start = cells[0]
        return WriteRun(dev, table, start, tuple(self._cells[c] for c in cells))

    def value(self, cell: Cell) -> int:
        """The image's value of ``cell``. Raises ``KeyError`` for a cell that is no output."""
        return self._cells[cell]
