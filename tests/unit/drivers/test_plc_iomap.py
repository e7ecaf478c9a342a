"""The PLC I/O maps: defaults valid, mistakes rejected with a reason, register codecs exact."""

from __future__ import annotations

import pydantic
import pytest
from structlog.testing import capture_logs

from drivers.plc.iomap import (
    PART_ID_MODULUS,
    RESULT_COUNTER_MODULUS,
    ModbusIoMap,
    ModbusWord,
    OpcUaIoMap,
    UaNode,
    next_result_counter,
    next_seq,
    wire_part_id,
)
from drivers.plc.modbus_map import OutputImage, plan_reads
from drivers.plc.settings import BackoffSettings, OpcUaSettings
from drivers.plc.transport import EdgeLatchReader, LinkCounters


def test_default_maps_are_valid() -> None:
    """The shipped defaults validate and name every signal of docs/plc.md."""
    m = ModbusIoMap()
    assert set(m.input_signals()) >= {"encoder_count", "part_present", "edge_latch", "result_ack"}
    assert set(m.output_signals()) >= {"heartbeat", "fire_seq", "result_valid"}
    assert set(OpcUaIoMap().input_nodes()) == set(m.input_signals())


def test_output_in_read_only_table_is_rejected() -> None:
    """An output mapped to input registers is a config error naming the signal."""
    with pytest.raises(pydantic.ValidationError, match=r"outputs\.heartbeat"):
        ModbusIoMap.model_validate(
            {"outputs": {"heartbeat": {"table": "input_register", "address": 40, "bit": 0}}}
        )


def test_shared_cell_is_rejected() -> None:
    """Two signals on the same register bit are refused."""
    with pytest.raises(pydantic.ValidationError, match="also used by"):
        ModbusIoMap.model_validate(
            {"outputs": {"node_ready": {"table": "holding_register", "address": 0, "bit": 0}}}
        )


def test_fire_group_must_be_one_block() -> None:
    """The pulse must go out in one request, so its registers must be contiguous."""
    with pytest.raises(pydantic.ValidationError, match="fire group"):
        ModbusIoMap.model_validate(
            {"outputs": {"fire_seq": {"table": "holding_register", "address": 30}}}
        )


def test_bit_needs_register_table() -> None:
    """A register bit needs ``bit``; a coil must not have one."""
    with pytest.raises(pydantic.ValidationError, match="bit"):
        ModbusIoMap.model_validate(
            {"inputs": {"part_present": {"table": "coil", "address": 1, "bit": 3}}}
        )


@pytest.mark.parametrize("order", ["high_first", "low_first"])
def test_32_bit_word_order_round_trips(order: str) -> None:
    """32-bit values are split and joined in the configured word order."""
    w = ModbusWord(table="input_register", address=0, width=32, word_order=order)  # type: ignore[arg-type]
    regs = w.encode(0x12345678)
    assert regs == ([0x1234, 0x5678] if order == "high_first" else [0x5678, 0x1234])
    assert w.decode(regs) == 0x12345678


def test_reads_are_batched() -> None:
    """The default inputs are read in one request; a far-away input adds one."""
    m = ModbusIoMap()
    assert len(plan_reads(m.input_signals().values(), 1, 8)) == 1
    far = ModbusIoMap.model_validate(
        {"inputs": {"reject_confirm": {"table": "input_register", "address": 200}}}
    )
    assert len(plan_reads(far.input_signals().values(), 1, 8)) == 2


def test_output_bits_share_a_register() -> None:
    """Heartbeat, ready and error bits of one register are written as one value."""
    img = OutputImage(ModbusIoMap(), 1)
    img.set("heartbeat", True)
    img.set("node_error", True)
    (run,) = img.runs(img.cells_of(("heartbeat", "node_ready", "node_error")))
    assert run.values == (0b101,)


def test_edge_latch_reader_counts_lost_and_restart() -> None:
    """New edges come out in order; overwritten ones are counted and logged; a PLC restart
    re-baselines, and the edges the restarted PLC latched before the reading (their counts
    from a counter the node has not re-anchored on) are counted as lost, not dropped."""
    counters = LinkCounters()
    r = EdgeLatchReader(4, counters)
    assert r.new_edges(10, [0, 0, 0, 0]) == ()
    slots = [100, 101, 102, 103]  # edge n sits in slot (n - 1) % 4
    assert r.new_edges(12, slots) == (slots[2], slots[3])
    with capture_logs() as logs:
        assert len(r.new_edges(18, slots)) == 4
        assert r.new_edges(1, slots) == ()
        assert counters.edges_lost == 2 + 1
        assert r.new_edges(3, slots) == (slots[1], slots[2])  # after the restart: as usual
        assert r.new_edges(0, slots) == ()  # restarted again, nothing latched since
    assert counters.edges_lost == 3
    events = [e["event"] for e in logs]
    assert events == ["latched_edges_lost", "edge_latch_restarted", "edge_latch_restarted"]


def test_ua_node_needs_exactly_one_address() -> None:
    """A UA signal is a NodeId or a browse path, not both or neither."""
    with pytest.raises(pydantic.ValidationError):
        UaNode()
    with pytest.raises(pydantic.ValidationError):
        UaNode(node_id="ns=2;s=X", browse_path=("2:X",))
    assert UaNode(browse_path=("2:PLC", "2:X")).describe() == "2:PLC/2:X"


def test_security_needs_certificates() -> None:
    """A security policy without certificate and key is refused, naming both keys."""
    with pytest.raises(pydantic.ValidationError, match=r"certificate.*private_key"):
        OpcUaSettings(security_policy="Basic256Sha256")


def test_backoff_grows_to_its_cap() -> None:
    """Reconnect waits double from the first wait up to the cap."""
    b = BackoffSettings(initial_s=0.1, max_s=0.5)
    assert [b.delay_s(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.5]


def test_width_rule() -> None:
    """Part ids go out modulo 2**32; the result counter and sequence numbers wrap at 2**16."""
    assert PART_ID_MODULUS == 2**32 and RESULT_COUNTER_MODULUS == 2**16
    assert wire_part_id(2**32 - 1) == 2**32 - 1 and wire_part_id(2**32 + 5) == 5
    assert next_result_counter(0) == 1 and next_result_counter(65535) == 0
    assert next_seq(65534) == 65535 and next_seq(65535) == 0
