"""NodePlc: the node's two PLC edges share one link, opened once; link errors become PlcError."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

import pytest

from drivers.plc.base import EncoderSample
from drivers.plc.errors import PlcConnectError
from drivers.plc.link import PlcLink
from drivers.plc.settings import ModbusSettings
from drivers.plc.transport import LinkCounters, OutputValue
from node.errors import PlcError
from node.plc import NodePlc


class _Pulse:
    connected = True

    async def open(self) -> None:
        pass

    def pulse(self, values: Mapping[str, OutputValue]) -> None:
        pass

    def close(self) -> None:
        pass


class _Transport:
    """A transport that counts its connections and can refuse them."""

    name = "fake"
    lost = None

    def __init__(self, *, refuse: bool = False) -> None:
        self.counters = LinkCounters()
        self.pulse_channel = _Pulse()
        self.connected = False
        self.connects = 0
        self._refuse = refuse

    @property
    def endpoint(self) -> dict[str, object]:
        return {}

    async def connect(self) -> int | None:
        if self._refuse:
            raise PlcConnectError("cannot connect to the fake PLC", "refused")
        self.connects += 1
        self.connected = True
        return None

    async def disconnect(self) -> None:
        self.connected = False

    async def samples(self, closed: asyncio.Event) -> AsyncIterator[EncoderSample]:
        return
        yield

    async def probe_read(self) -> None:
        pass

    async def write(self, what: str, values: Mapping[str, OutputValue]) -> None:
        pass

    async def wait_input(self, name: str, value: bool, timeout_s: float) -> bool:
        return value


async def test_both_edges_share_one_link_opened_once() -> None:
    """Entered as encoder and as reject output, NodePlc opens its link once and closes it
    when the last edge leaves."""
    transport = _Transport()
    plc = NodePlc(PlcLink(ModbusSettings(), transport), "node_timed")
    async with plc:
        async with plc:
            assert transport.connects == 1
        assert plc.snapshot()["state"] == "up"
    assert plc.snapshot() == {**plc.link.counters.snapshot(), "reject_mode": "node_timed"}
    assert plc.snapshot()["state"] == "closed"


async def test_link_error_at_open_is_a_plc_error() -> None:
    """A link that cannot be opened raises node.errors.PlcError."""
    plc = NodePlc(PlcLink(ModbusSettings(), _Transport(refuse=True)), "node_timed")
    with pytest.raises(PlcError, match="fake PLC"):
        async with plc:
            pass
