"""The PLC I/O map: which PLC data the node reads and writes, and where it lives.

One map per transport. Every signal has a fixed meaning (see ``docs/plc.md``
for the tables and the handshake); the map only says *where* it is:

- Modbus TCP: table (coil, discrete input, holding register, input register),
  address (0-based, as on the wire), optional bit within a register, width
  (16 or 32 bit) and word order of 32-bit values, and device id.
- OPC UA: a NodeId string (``ns=3;s=DB10.Count``) or a browse path from the
  Objects folder (``["3:PLC", "3:Count"]``) on the PLC's server.

Inputs are read from the PLC; outputs are written by the node and owned by it
(the node keeps an image of every output register and always writes whole
registers, so several output bits may share one register). Outputs form
*groups* that are written in one request: ``fire`` (node-timed pulse),
``result`` (PLC-tracked handshake), ``status`` (heartbeat, ready, error) and
``verdict`` (last verdict, defect code, result counter). Each group's trigger
(``fire_seq``, ``result_valid``) is part of the same request, so the PLC sees
the data and the trigger together.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ModbusTable = Literal["coil", "discrete_input", "holding_register", "input_register"]
RegisterTable = Literal["holding_register", "input_register"]
WordOrder = Literal["high_first", "low_first"]
Address = Annotated[int, Field(ge=0, le=65535)]
DeviceId = Annotated[int, Field(ge=0, le=255)]

REGISTER_TABLES: frozenset[str] = frozenset({"holding_register", "input_register"})
WRITABLE_TABLES: frozenset[str] = frozenset({"holding_register", "coil"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- Modbus ------------------------------------------------------------------


class ModbusBit(_Model):
    """A boolean: a coil or discrete input, or one bit (0 = LSB) of a register."""

    table: ModbusTable
    address: Address
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    device_id: DeviceId | None = None
    """None: the connection's ``device_id``."""

    @model_validator(mode="after")
    def _bit_matches_table(self) -> ModbusBit:
        if self.table in REGISTER_TABLES and self.bit is None:
            raise ValueError(f"bit: required for a signal in a {self.table}")
        if self.table not in REGISTER_TABLES and self.bit is not None:
            raise ValueError(f"bit: only for registers, not for a {self.table}")
        return self

    def cells(self) -> list[tuple[str, int]]:
        """The (table, address) cells this signal occupies."""
        return [(self.table, self.address)]


class ModbusWord(_Model):
    """An unsigned integer in one (16-bit) or two (32-bit) registers."""

    table: RegisterTable
    address: Address
    width: Literal[16, 32] = 16
    word_order: WordOrder = "high_first"
    """32-bit only: which register holds the high word."""
    device_id: DeviceId | None = None

    @model_validator(mode="after")
    def _fits(self) -> ModbusWord:
        if self.address + self.registers - 1 > 65535:
            raise ValueError("address: a 32-bit value at 65535 runs past the end of the table")
        return self

    @property
    def registers(self) -> int:
        """How many registers the value takes."""
        return self.width // 16

    @property
    def max_value(self) -> int:
        """Largest value the word can hold."""
        return (1 << self.width) - 1

    def cells(self) -> list[tuple[str, int]]:
        """The (table, address) cells this signal occupies."""
        return [(self.table, self.address + i) for i in range(self.registers)]

    def encode(self, value: int) -> list[int]:
        """``value`` (taken modulo 2**width) as register values in wire order."""
        value &= self.max_value
        if self.width == 16:
            return [value]
        hi, lo = value >> 16, value & 0xFFFF
        return [hi, lo] if self.word_order == "high_first" else [lo, hi]

    def decode(self, regs: list[int]) -> int:
        """The value held by ``regs`` (this word's registers, in wire order)."""
        if self.width == 16:
            return regs[0]
        a, b = regs[0], regs[1]
        return (a << 16 | b) if self.word_order == "high_first" else (b << 16 | a)


class ModbusEdgeLatch(_Model):
    """The PLC's capture of the counter at each rising edge of the part-present sensor.

    ``seq_address`` holds how many edges the PLC has latched (16 bit, wraps);
    edge number ``n`` (1-based) is stored in slot ``(n - 1) % slots`` starting at
    ``address``, each slot ``width`` bits wide.
    """

    table: RegisterTable = "input_register"
    seq_address: Address
    address: Address
    slots: Literal[1, 2, 4, 8, 16, 32] = 8
    """A power of two, so slot numbering stays continuous when the 16-bit counter wraps."""
    width: Literal[16, 32] = 32
    word_order: WordOrder = "high_first"
    device_id: DeviceId | None = None

    def slot(self, index: int) -> ModbusWord:
        """The register word of slot ``index``."""
        return ModbusWord(
            table=self.table,
            address=self.address + index * (self.width // 16),
            width=self.width,
            word_order=self.word_order,
            device_id=self.device_id,
        )

    @property
    def seq(self) -> ModbusWord:
        """The 16-bit latch counter."""
        return ModbusWord(table=self.table, address=self.seq_address, device_id=self.device_id)

    def cells(self) -> list[tuple[str, int]]:
        """The (table, address) cells this signal occupies."""
        out = self.seq.cells()
        for i in range(self.slots):
            out.extend(self.slot(i).cells())
        return out


def _ir(address: int, width: Literal[16, 32] = 16) -> ModbusWord:
    return ModbusWord(table="input_register", address=address, width=width)


def _hr(address: int, width: Literal[16, 32] = 16) -> ModbusWord:
    return ModbusWord(table="holding_register", address=address, width=width)


def _irbit(address: int, bit: int) -> ModbusBit:
    return ModbusBit(table="input_register", address=address, bit=bit)


def _hrbit(address: int, bit: int) -> ModbusBit:
    return ModbusBit(table="holding_register", address=address, bit=bit)


class ModbusInputs(_Model):
    """What the node reads. The defaults fit in one read of input registers 0–20."""

    encoder_count: ModbusWord = _ir(0, 32)
    part_present: ModbusBit | None = _irbit(2, 0)
    line_running: ModbusBit | None = _irbit(2, 1)
    plc_heartbeat: ModbusBit | None = _irbit(2, 2)
    result_ack: ModbusBit | None = _irbit(2, 3)
    reject_confirm: ModbusWord | None = _ir(3)
    """Counts the actuator's strokes (16 bit, wraps)."""
    edge_latch: ModbusEdgeLatch | None = ModbusEdgeLatch(seq_address=4, address=5)


class ModbusOutputs(_Model):
    """What the node writes, by group (see the module docstring)."""

    # status group
    heartbeat: ModbusBit = _hrbit(0, 0)
    node_ready: ModbusBit | None = _hrbit(0, 1)
    node_error: ModbusBit | None = _hrbit(0, 2)
    error_code: ModbusWord | None = _hr(1)
    # verdict group
    last_verdict: ModbusWord | None = _hr(2)
    defect_code: ModbusWord | None = _hr(3)
    result_counter: ModbusWord | None = _hr(4, 32)
    # fire group (node-timed): one request, the PLC pulses when fire_seq changes
    fire_part_id: ModbusWord | None = _hr(10, 32)
    fire_reason: ModbusWord | None = _hr(12)
    fire_seq: ModbusWord = _hr(13)
    # result group (PLC-tracked): one request with result_valid; then result_valid alone
    result_part_id: ModbusWord | None = _hr(20, 32)
    result_origin_count: ModbusWord = _hr(22, 32)
    result_reject: ModbusBit = _hrbit(24, 0)
    result_reason: ModbusWord | None = _hr(25)
    result_defect: ModbusWord | None = _hr(26)
    result_seq: ModbusWord | None = _hr(27)
    result_valid: ModbusBit = _hrbit(28, 0)


OUTPUT_GROUPS: dict[str, tuple[str, ...]] = {
    "status": ("heartbeat", "node_ready", "node_error", "error_code"),
    "verdict": ("last_verdict", "defect_code", "result_counter"),
    "fire": ("fire_part_id", "fire_reason", "fire_seq"),
    "result": (
        "result_part_id",
        "result_origin_count",
        "result_reject",
        "result_reason",
        "result_defect",
        "result_seq",
        "result_valid",
    ),
}
"""Output signals written together, by group name."""

# -- widths of what the node sends: one rule for every transport ---------------------

PART_ID_MODULUS: Final = 1 << 32
"""Part ids (``fire_part_id``, ``result_part_id``: u32) are sent modulo 2**32."""
RESULT_COUNTER_MODULUS: Final = 1 << 16
"""``result_counter`` counts published verdicts modulo 2**16 (in its u32 register)."""
SEQ_MODULUS: Final = 1 << 16
"""``fire_seq`` and ``result_seq`` are 16-bit sequence numbers."""


def wire_part_id(part_id: int) -> int:
    """``part_id`` as the PLC receives it: modulo :data:`PART_ID_MODULUS`."""
    return part_id % PART_ID_MODULUS


def next_result_counter(counter: int) -> int:
    """The result counter after one more published verdict (modulo 2**16)."""
    return (counter + 1) % RESULT_COUNTER_MODULUS


def next_seq(seq: int) -> int:
    """The sequence number after ``seq`` (``fire_seq``, ``result_seq``; modulo 2**16)."""
    return (seq + 1) % SEQ_MODULUS


ModbusSignal = ModbusBit | ModbusWord | ModbusEdgeLatch


class ModbusIoMap(_Model):
    """The Modbus TCP I/O map (``[plc.modbus.io]``).

    Raises ``ValueError`` (a pydantic validation error) when outputs sit in a
    read-only table, two signals share a cell (register bit, coil), an output
    shares a register with an input, or the fire/result group is not one
    contiguous block of holding registers (each must go out in one request).
    """

    inputs: ModbusInputs = ModbusInputs()
    outputs: ModbusOutputs = ModbusOutputs()

    def input_signals(self) -> dict[str, ModbusSignal]:
        """Every configured input, by name."""
        return {
            k: v
            for k, v in ((k, getattr(self.inputs, k)) for k in ModbusInputs.model_fields)
            if v is not None
        }

    def output_signals(self) -> dict[str, ModbusBit | ModbusWord]:
        """Every configured output, by name."""
        return {
            k: v
            for k, v in ((k, getattr(self.outputs, k)) for k in ModbusOutputs.model_fields)
            if v is not None
        }

    @model_validator(mode="after")
    def _consistent(self) -> ModbusIoMap:
        problems: list[str] = []
        whole: dict[tuple[int | None, str, int], str] = {}
        bits: dict[tuple[int | None, str, int, int], str] = {}
        bit_regs: dict[tuple[int | None, str, int], str] = {}
        side: dict[tuple[int | None, str, int], str] = {}

        def claim(name: str, sig: ModbusSignal) -> None:
            bit = sig.bit if isinstance(sig, ModbusBit) else None
            for table, addr in sig.cells():
                reg = (sig.device_id, table, addr)
                here = name.split(".")[0]
                if side.setdefault(reg, here) != here:
                    problems.append(f"{name}: {table} {addr} holds an input and an output")
                    return
                if bit is None:
                    other = whole.get(reg) or bit_regs.get(reg)
                    whole[reg] = name
                else:
                    other = whole.get(reg) or bits.get((*reg, bit))
                    bits[(*reg, bit)] = name
                    bit_regs[reg] = name
                if other is not None:
                    problems.append(f"{name}: {table} {addr} is also used by {other}")
                    return

        for name, sig in self.input_signals().items():
            claim(f"inputs.{name}", sig)
        for name, out in self.output_signals().items():
            if out.table not in WRITABLE_TABLES:
                problems.append(f"outputs.{name}: {out.table} is read-only; use a holding register")
                continue
            claim(f"outputs.{name}", out)
        for group in ("fire", "result"):
            problems.extend(self._check_block(group))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _check_block(self, group: str) -> list[str]:
        signals = self.output_signals()
        members = [signals[n] for n in OUTPUT_GROUPS[group] if n in signals]
        if {(m.table, m.device_id) for m in members} != {
            ("holding_register", members[0].device_id)
        }:
            return [f"outputs: the {group} group must be holding registers of one device"]
        cells = sorted({a for m in members for _, a in m.cells()})
        if cells[-1] - cells[0] + 1 != len(cells):
            return [f"outputs: the {group} group must be one contiguous block of registers"]
        return []

    def group_members(self, group: str) -> dict[str, ModbusBit | ModbusWord]:
        """The configured outputs of ``group``, by name."""
        signals = self.output_signals()
        return {n: signals[n] for n in OUTPUT_GROUPS[group] if n in signals}


# -- OPC UA ------------------------------------------------------------------


class UaNode(_Model):
    """One variable on the PLC's OPC UA server: by NodeId or by browse path (exactly one).

    ``node_id`` uses the standard string form (``ns=3;s=DB10.Count``,
    ``ns=4;i=1002``); ``browse_path`` is a list of qualified names
    ``"<namespace index>:<BrowseName>"`` from the Objects folder.
    """

    node_id: str | None = None
    browse_path: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UaNode:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("set exactly one of node_id and browse_path")
        if self.browse_path is not None and not self.browse_path:
            raise ValueError("browse_path: must not be empty")
        return self

    def describe(self) -> str:
        """The address as written in the config, for messages."""
        return self.node_id if self.node_id is not None else "/".join(self.browse_path or ())


def _ua(name: str) -> UaNode:
    return UaNode(node_id=f"ns=2;s=PLC.{name}")


class OpcUaInputs(_Model):
    """Variables the node subscribes to.

    ``edge_latch`` is one UInt32 array ``[seq, slot0, slot1, ...]`` so that the
    latch counter and the slots always arrive together (see ``ModbusEdgeLatch``).
    """

    encoder_count: UaNode = _ua("EncoderCount")
    part_present: UaNode | None = _ua("PartPresent")
    line_running: UaNode | None = _ua("LineRunning")
    plc_heartbeat: UaNode | None = _ua("PlcHeartbeat")
    result_ack: UaNode | None = _ua("ResultAck")
    reject_confirm: UaNode | None = _ua("RejectConfirmCount")
    edge_latch: UaNode | None = _ua("EdgeLatch")


class OpcUaOutputs(_Model):
    """Variables the node writes, by group (one Write request per group, trigger last)."""

    heartbeat: UaNode = _ua("NodeHeartbeat")
    node_ready: UaNode | None = _ua("NodeReady")
    node_error: UaNode | None = _ua("NodeError")
    error_code: UaNode | None = _ua("NodeErrorCode")
    last_verdict: UaNode | None = _ua("LastVerdict")
    defect_code: UaNode | None = _ua("DefectCode")
    result_counter: UaNode | None = _ua("ResultCounter")
    fire_part_id: UaNode | None = _ua("FirePartId")
    fire_reason: UaNode | None = _ua("FireReason")
    fire_seq: UaNode = _ua("FireSeq")
    result_part_id: UaNode | None = _ua("ResultPartId")
    result_origin_count: UaNode = _ua("ResultOriginCount")
    result_reject: UaNode = _ua("ResultReject")
    result_reason: UaNode | None = _ua("ResultReasonCode")
    result_defect: UaNode | None = _ua("ResultDefectCode")
    result_seq: UaNode | None = _ua("ResultSeq")
    result_valid: UaNode = _ua("ResultValid")


class OpcUaIoMap(_Model):
    """The OPC UA I/O map (``[plc.opcua.io]``). Raises ``ValueError`` when a node is used twice."""

    inputs: OpcUaInputs = OpcUaInputs()
    outputs: OpcUaOutputs = OpcUaOutputs()

    def input_nodes(self) -> dict[str, UaNode]:
        """Every configured input, by name."""
        return {
            k: v
            for k, v in ((k, getattr(self.inputs, k)) for k in OpcUaInputs.model_fields)
            if v is not None
        }

    def output_nodes(self) -> dict[str, UaNode]:
        """Every configured output, by name."""
        return {
            k: v
            for k, v in ((k, getattr(self.outputs, k)) for k in OpcUaOutputs.model_fields)
            if v is not None
        }

    def group_members(self, group: str) -> dict[str, UaNode]:
        """The configured outputs of ``group``, by name, trigger last."""
        nodes = self.output_nodes()
        return {n: nodes[n] for n in OUTPUT_GROUPS[group] if n in nodes}

    @model_validator(mode="after")
    def _unique(self) -> OpcUaIoMap:
        seen: dict[str, str] = {}
        problems = []
        for prefix, nodes in (("inputs", self.input_nodes()), ("outputs", self.output_nodes())):
            for name, node in nodes.items():
                key = node.describe()
                if key in seen:
                    problems.append(f"{prefix}.{name}: {key} is also used by {seen[key]}")
                seen[key] = f"{prefix}.{name}"
        if problems:
            raise ValueError("; ".join(problems))
        return self
