"""PlcLink over a recording transport: one rule for what it sends, one lifecycle, one loss.

The transport here is a fake that records what the link hands it (the
transports themselves are proven against the PLC emulators in
``tests/integration/test_plc_transports.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest

from drivers.plc.base import EncoderSample, EncoderSource, RejectCommand, RejectOutput
from drivers.plc.errors import PlcConnectError, PlcLinkError
from drivers.plc.iomap import RESULT_COUNTER_MODULUS
from drivers.plc.link import PlcLink
from drivers.plc.settings import BackoffSettings, ModbusSettings, OpcUaSettings
from drivers.plc.tracked import PlcReporter, PlcResult
from drivers.plc.transport import LinkCounters, OutputValue, PlcTransport


class RecordingPulse:
    """A pulse channel that records every pulse."""

    def __init__(self) -> None:
        self.connected = False
        self.pulses: list[dict[str, OutputValue]] = []

    async def open(self) -> None:
        self.connected = True

    def pulse(self, values: Mapping[str, OutputValue]) -> None:
        self.pulses.append(dict(values))

    def close(self) -> None:
        self.connected = False


class RecordingTransport:
    """A transport whose PLC acknowledges a result as soon as ResultValid is written."""

    name = "fake"

    def __init__(self, result_seq: int | None = None) -> None:
        self.counters = LinkCounters()
        self.pulse_channel = RecordingPulse()
        self.writes: list[tuple[str, dict[str, OutputValue]]] = []
        self.connects = 0
        self.refuse_connect = False
        self.lost: str | None = None
        self._open = False
        self._result_seq = result_seq
        self._ack = False

    @property
    def endpoint(self) -> dict[str, object]:
        return {"url": "fake://plc"}

    @property
    def connected(self) -> bool:
        return self._open and self.lost is None

    async def connect(self) -> int | None:
        if self.refuse_connect:
            raise PlcConnectError("cannot connect to the fake PLC", "refused")
        self.connects += 1
        self._open = True
        return self._result_seq

    async def disconnect(self) -> None:
        self._open = False
        self.lost = None

    async def samples(self, closed: asyncio.Event) -> AsyncIterator[EncoderSample]:
        while not closed.is_set() and self.connected:
            yield EncoderSample(0, 1)
            await asyncio.sleep(0.001)

    async def probe_read(self) -> None:
        if self.lost is not None:
            raise PlcLinkError("read: not connected")

    async def write(self, what: str, values: Mapping[str, OutputValue]) -> None:
        if not self.connected:
            raise PlcLinkError(f"write {what}: not connected")
        self.writes.append((what, dict(values)))
        if "result_valid" in values:
            self._ack = bool(values["result_valid"])

    async def wait_input(self, name: str, value: bool, timeout_s: float) -> bool:
        return self._ack == value


def _link(
    settings: ModbusSettings | OpcUaSettings, transport: RecordingTransport | None = None
) -> tuple[PlcLink, RecordingTransport]:
    fake = transport or RecordingTransport()
    as_transport: PlcTransport = fake  # the fake must be a PlcTransport
    return PlcLink(settings, as_transport), fake


SETTINGS = [ModbusSettings(), OpcUaSettings()]


@pytest.mark.parametrize("settings", SETTINGS, ids=["modbus", "opcua"])
async def test_counter_widths_are_the_same_for_both_transports(
    settings: ModbusSettings | OpcUaSettings,
) -> None:
    """Whatever the transport, the link hands it part ids modulo 2**32 (pulse and result),
    a result counter modulo 2**16 and result_seq continued from the PLC's, modulo 2**16."""
    link, fake = _link(settings, RecordingTransport(result_seq=65535))
    async with link:
        link.fire(RejectCommand(2**32 + 5, 0, "defect"))
        await link.report(PlcResult(2**32 + 7, True, 123, 1, 2))
        for _ in range(RESULT_COUNTER_MODULUS + 1):
            await link.publish_verdict(2, 1)
    assert fake.pulse_channel.pulses == [{"fire_part_id": 5, "fire_reason": 1}]
    results = [v for what, v in fake.writes if what == "result"]
    assert results[0]["result_part_id"] == 7 and results[0]["result_seq"] == 0
    counters = [v["result_counter"] for what, v in fake.writes if what == "verdict"]
    assert counters[:2] == [1, 2] and counters[-2:] == [0, 1]


@pytest.mark.parametrize("settings", SETTINGS, ids=["modbus", "opcua"])
async def test_report_is_the_result_valid_ack_handshake(
    settings: ModbusSettings | OpcUaSettings,
) -> None:
    """report() writes the whole result block with ResultValid = 1 in one request (trigger
    last), then ResultValid = 0 alone."""
    link, fake = _link(settings)
    async with link:
        await link.report(PlcResult(9, True, 123, 1, 2))
    result, clear = [(w, v) for w, v in fake.writes if w.startswith("result")]
    assert result[0] == "result" and list(result[1])[-1] == "result_valid"
    assert result[1]["result_valid"] is True and result[1]["result_origin_count"] == 123
    assert clear == ("result_valid", {"result_valid": False})


async def test_link_is_entered_once() -> None:
    """A link is entered once: entering it while open is a RuntimeError, and closing it
    tells the PLC the node is no longer ready. It is the node's encoder source, reject
    output and PLC reporter at once."""
    link, fake = _link(ModbusSettings())
    edges: tuple[EncoderSource, RejectOutput, PlcReporter] = (link, link, link)
    assert all(e is link for e in edges)
    async with link:
        with pytest.raises(RuntimeError):
            await link.__aenter__()
        assert fake.connects == 1
    assert link.link_state == "closed"
    assert fake.writes[-1] == ("status", {"node_ready": False})


async def test_a_loss_is_counted_once_and_reconnected_with_backoff() -> None:
    """A channel the transport lost is counted once (state down, one loss); the link
    reconnects when the backoff is due, and the samples flow again."""
    settings = ModbusSettings(backoff=BackoffSettings(initial_s=0.3, max_s=0.3))
    link, fake = _link(settings)
    async with link:
        await link.heartbeat(True)
        fake.lost = "reset by peer"
        with pytest.raises(PlcLinkError):
            await link.probe_read()
        with pytest.raises(PlcLinkError, match="next connection attempt"):
            await link.heartbeat(False)
        assert link.link_state == "down" and link.counters.losses == 1
        assert link.counters.last_error == "reset by peer"
        samples = link.samples()
        await asyncio.wait_for(anext(samples), 2)
        await samples.aclose()
        assert link.link_state == "up" and link.counters.connects == 2
        assert link.counters.losses == 1


async def test_connect_failure_is_recorded_with_its_reason() -> None:
    """A failed connection attempt raises, records the transport's short reason and waits
    for the backoff before the next one."""
    link, fake = _link(ModbusSettings(backoff=BackoffSettings(initial_s=5.0, max_s=5.0)))
    fake.refuse_connect = True
    with pytest.raises(PlcConnectError):
        await link.__aenter__()
    assert link.counters.last_error == "refused" and link.link_state == "closed"
