"""The Modbus TCP driver against the Modbus PLC emulator on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcLinkError, PlcWriteRefused
from drivers.plc.link import PlcLink, open_link
from drivers.plc.settings import BackoffSettings, ModbusSettings
from drivers.plc.tracked import PlcResult
from drivers.simworld import SimWorld
from hil.plc_logic import PlcProgram, PlcProgramConfig
from hil.plc_modbus import ModbusPlcEmulator


def _world(bits: int = 32) -> SimWorld:
    w = SimWorld(
        counts_per_mm=4,
        encoder_bits=bits,
        pitch_mm=32,
        part_length_mm=24,
        speed_profile=[(0.0, 1000.0)],
        part_factory=lambda i: None,
        reject_position_mm=400,
        first_part_mm=32,
    )
    w.start()
    return w


@pytest.fixture
async def plc() -> AsyncIterator[tuple[ModbusPlcEmulator, PlcProgram]]:
    """A Modbus PLC emulator on a free loopback port, its belt running at 1 m/s."""
    prog = PlcProgram(
        _world(),
        PlcProgramConfig(fire_offset_counts=1576, part_length_counts=96, heartbeat_timeout_s=0.3),
        32,
    )
    async with ModbusPlcEmulator(prog, ModbusSettings().io) as emu:
        yield emu, prog


def _settings(emu: ModbusPlcEmulator, **kw: object) -> ModbusSettings:
    return ModbusSettings(port=emu.port, backoff=BackoffSettings(initial_s=0.05, max_s=0.2), **kw)  # type: ignore[arg-type]


async def _take(drv: PlcLink, n: int) -> list[EncoderSample]:
    out = []
    async for s in drv.samples():
        out.append(s)
        if len(out) >= n:
            break
    return out


async def test_samples_follow_the_counter_and_latch_every_edge(
    plc: tuple[ModbusPlcEmulator, PlcProgram],
) -> None:
    """Polled counts rise with the belt and every part-present edge arrives latched, once:
    exactly the belt's edges between the first read (the baseline) and the last."""
    emu, prog = plc
    async with open_link(_settings(emu)) as drv:
        samples = await _take(drv, 150)
    counts = [s.raw_count for s in samples]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    edges = [e for s in samples for e in (s.edges or ())]
    w = prog.world
    belt = [
        (int((p.cross_mm - p.length_mm / 2) * w.counts_per_mm) + w.count_offset)
        % (1 << w.encoder_bits)
        for p in w.parts
    ]
    assert len(belt) >= 5  # the belt is still running on: later edges are not asked for
    assert edges == [e for e in belt if counts[0] < e <= counts[-1]]
    assert all(s.t_ns > 0 for s in samples)


async def test_fire_strikes_on_the_write(plc: tuple[ModbusPlcEmulator, PlcProgram]) -> None:
    """Each node-timed fire is one pulse in the PLC, and the lead is half a measured round trip."""
    emu, prog = plc
    async with open_link(_settings(emu)) as drv:
        for i in range(10):
            await asyncio.to_thread(drv.fire, RejectCommand(i, 0, "defect"))
        assert prog.stats.fires_node_timed == 10
        assert sorted(prog.stats.fire_t_ns) == list(range(10))
        assert 0 < drv.fire_lead_ns < 20_000_000


async def test_result_handshake_loads_the_shift_register(
    plc: tuple[ModbusPlcEmulator, PlcProgram],
) -> None:
    """report() completes ResultValid/Ack and the PLC fires at origin + its offset, exactly."""
    emu, prog = plc
    async with open_link(_settings(emu, reject_mode="plc_tracked")) as drv:
        origin = prog.raw_count(time.monotonic_ns()) + 400  # 0.1 s ahead of the fire point
        await drv.report(PlcResult(7, True, origin, 1, 2))
        assert prog.stats.results == 1 and not prog.result_ack
        await asyncio.sleep(0.6)
        prog.sync()
    assert prog.stats.fire_t_ns[7] > 0
    fired_at = prog.unwrapped(prog.stats.fire_t_ns[7])
    assert fired_at == origin + prog.cfg.fire_offset_counts


async def test_refused_write_is_an_error_not_a_crash(
    plc: tuple[ModbusPlcEmulator, PlcProgram],
) -> None:
    """A write the PLC refuses raises PlcWriteRefused, is counted, and polling goes on."""
    emu, _ = plc
    emu.refuse = {"heartbeat"}
    async with open_link(_settings(emu)) as drv:
        with capture_logs() as logs, pytest.raises(PlcWriteRefused):
            await drv.heartbeat(True)
        assert drv.counters.refused_writes == 1
        assert any(e["event"] == "plc_write_refused" for e in logs)
        assert len(await _take(drv, 5)) == 5


async def test_out_of_range_count_is_dropped(plc: tuple[ModbusPlcEmulator, PlcProgram]) -> None:
    """A count outside the counter's width is logged and skipped — unless latched edges came
    with it, which are passed on (the tracker refuses the count and keeps the edges)."""
    emu, prog = plc
    prog.count_override = 70_000  # impossible for a 16-bit counter
    async with open_link(_settings(emu), encoder_bits=16) as drv:
        with capture_logs() as logs:
            task = asyncio.ensure_future(_take(drv, 3))
            await asyncio.sleep(0.05)
            prog.count_override = None
            samples = await asyncio.wait_for(task, 5)
    assert drv.counters.bad_samples >= 1
    assert any(e["event"] == "encoder_count_out_of_range" for e in logs)
    assert all(0 <= s.raw_count < 65536 or s.edges for s in samples)


async def test_link_loss_reconnects_and_plc_sees_heartbeat_loss(
    plc: tuple[ModbusPlcEmulator, PlcProgram],
) -> None:
    """Emulator restarted: link goes down (state and count visible), comes back, polls again;
    the PLC sees the node's heartbeat stop meanwhile."""
    emu, prog = plc
    async with open_link(_settings(emu)) as drv:
        await drv.heartbeat(True)
        await drv.heartbeat(False)
        await _take(drv, 3)
        await emu.stop()
        for _ in range(20):  # a dead peer is a timeout or a reset: a few requests at most
            with pytest.raises(PlcLinkError):
                await drv.probe_read()
            if drv.link_state == "down":
                break
        assert drv.link_state == "down"
        await asyncio.sleep(0.4)
        prog.sync()
        assert prog.stats.heartbeat_losses == 1 and not prog.heartbeat_ok
        await emu.start()
        samples = await asyncio.wait_for(_take(drv, 3), 5)
        assert len(samples) == 3
        assert drv.link_state == "up"
        assert drv.counters.losses == 1 and drv.counters.connects == 2
        await drv.heartbeat(True)
        assert prog.heartbeat_ok


async def test_unreachable_plc_fails_at_open() -> None:
    """Opening a driver with no PLC behind it raises PlcLinkError (the node exits with 4)."""
    from hil.plc_modbus import free_port

    with pytest.raises(PlcLinkError):
        async with open_link(ModbusSettings(port=free_port(), connect_timeout_ms=200)):
            pass
