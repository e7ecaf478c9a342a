"""Reading the Modbus inputs: the batched read plan and decoding a reading into a sample."""

from __future__ import annotations

from typing import Literal

import structlog

from drivers.plc.base import EncoderSample
from drivers.plc.iomap import ModbusBit, ModbusWord
from drivers.plc.modbus_map import Image, Span, plan_reads, read_bit, read_word, signal_cells
from drivers.plc.settings import ModbusSettings
from drivers.plc.transport import EdgeLatchReader, LinkCounters

log = structlog.get_logger(__name__)


class InputDecoder:
    """What to read for the inputs (``spans``, the one holding the count: ``count_span``)
    and what a reading means.

    ``encoder_bits`` is the width of the PLC's counter: a count or latched edge
    outside ``[0, 2**encoder_bits)`` is bad data, counted in ``counters`` and logged.
    """

    def __init__(
        self, settings: ModbusSettings, counters: LinkCounters, encoder_bits: Literal[16, 32]
    ) -> None:
        self.counters = counters
        self._bits = encoder_bits
        self._dev = settings.device_id
        self._io = settings.io
        self.spans: list[Span] = plan_reads(
            self._io.input_signals().values(), self._dev, settings.max_read_gap
        )
        count_cell = signal_cells(self._io.inputs.encoder_count, self._dev)[0]
        self.count_span = next(
            i
            for i, sp in enumerate(self.spans)
            if sp.device_id == count_cell[0]
            and sp.table == count_cell[1]
            and sp.start <= count_cell[2] < sp.start + sp.count
        )
        latch = self._io.inputs.edge_latch
        self._latch = EdgeLatchReader(latch.slots, counters) if latch is not None else None
        self.inputs: dict[str, int | bool] = {}
        """The latest decoded inputs by name."""

    def decode(self, image: Image, t_ns: int, t_err_ns: int = 0) -> EncoderSample | None:
        """The sample in ``image`` (read at ``t_ns`` ± ``t_err_ns``), or None when it is
        bad data.

        Updates ``inputs``; new latched edges come with the sample, even one
        whose count is out of range (they are read now or never).
        """
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
            new = self._latch.new_edges(seq, slots)
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
        return EncoderSample(
            count, t_ns, None if present is None else bool(present), edges, t_err_ns
        )
