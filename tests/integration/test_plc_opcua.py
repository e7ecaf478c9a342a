"""The OPC UA driver against the OPC UA PLC emulator (asyncua server) on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcConfigError, PlcLinkError, PlcWriteRefused
from drivers.plc.iomap import OpcUaIoMap
from drivers.plc.link import PlcLink, open_link
from drivers.plc.settings import BackoffSettings, OpcUaSettings
from drivers.plc.tracked import PlcResult
from drivers.simworld import SimWorld
from hil.plc_logic import PlcProgram, PlcProgramConfig
from hil.plc_opcua import OpcUaPlcEmulator


@pytest.fixture
async def plc() -> AsyncIterator[tuple[OpcUaPlcEmulator, PlcProgram]]:
    """An OPC UA PLC emulator on a free loopback port, its belt running at 1 m/s."""
    w = SimWorld(
        counts_per_mm=4,
        encoder_bits=32,
        pitch_mm=32,
        part_length_mm=24,
        speed_profile=[(0.0, 1000.0)],
        part_factory=lambda i: None,
        reject_position_mm=400,
        first_part_mm=32,
    )
    w.start()
    prog = PlcProgram(
        w,
        PlcProgramConfig(fire_offset_counts=1576, part_length_counts=96, heartbeat_timeout_s=0.3),
        32,
    )
    async with OpcUaPlcEmulator(prog) as emu:
        yield emu, prog


def _settings(emu: OpcUaPlcEmulator, **kw: object) -> OpcUaSettings:
    return OpcUaSettings(url=emu.url, backoff=BackoffSettings(initial_s=0.1, max_s=0.3), **kw)  # type: ignore[arg-type]


async def _take(drv: PlcLink, n: int) -> list[EncoderSample]:
    out = []
    async for s in drv.samples():
        out.append(s)
        if len(out) >= n:
            break
    return out


async def test_subscription_follows_the_counter_with_plc_timestamps(
    plc: tuple[OpcUaPlcEmulator, PlcProgram],
) -> None:
    """Counts arrive in order, dated close to when the PLC sampled them, edges latched once."""
    emu, prog = plc
    async with open_link(_settings(emu)) as drv:
        samples = await _take(drv, 300)
    counts = [s.raw_count for s in samples]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    edges = [e for s in samples for e in (s.edges or ())]
    assert len(edges) == len(set(edges)) and len(edges) >= 3
    # the belt moves 4 counts/ms: a sample's count and time agree with the belt's within 3 ms
    late = [prog.unwrapped(s.t_ns) - s.raw_count for s in samples[100:]]
    assert max(abs(d) for d in late) <= 12, late


async def test_late_notifications_never_make_the_belt_look_parked(
    plc: tuple[OpcUaPlcEmulator, PlcProgram],
) -> None:
    """With notifications batched every 300 ms, longer than the driver waits before it
    asks, the samples still tell one consistent story of the belt: the driver confirms a
    quiet counter by a Read and never dates an old count "now". From one sample to the
    next, time runs forward and the count never runs faster than the 4 counts/ms belt
    (25 % and 8 counts of slack, as the node's encoder check allows).

    (Batching delays even the freshest notification, so the mapped clock runs some ms
    late and converges slowly; the step from sample to sample is what the node checks.)"""
    emu, _ = plc
    async with open_link(_settings(emu, publishing_interval_ms=300.0)) as drv:
        samples = await _take(drv, 400)
    assert samples[-1].t_ns - samples[0].t_ns > 0.6e9  # several batches, several waits
    for a, b in itertools.pairwise(samples[1:]):  # the first may be a stale initial value
        dt_ms = (b.t_ns - a.t_ns) / 1e6
        assert dt_ms > 0 and 0 <= b.raw_count - a.raw_count <= 5.0 * dt_ms + 8, (a, b)


async def test_browse_path_and_fire(plc: tuple[OpcUaPlcEmulator, PlcProgram]) -> None:
    """Signals addressed by browse path work; each fire is one pulse in the PLC."""
    emu, prog = plc
    io = OpcUaIoMap.model_validate(
        {"outputs": {"fire_seq": {"browse_path": ["2:PLC", "2:FireSeq"]}}}
    )
    async with open_link(_settings(emu, io=io)) as drv:
        for i in range(5):
            await asyncio.to_thread(drv.fire, RejectCommand(i, 0, "defect"))
        assert prog.stats.fires_node_timed == 5
        assert drv.fire_lead_ns > 0


async def test_result_handshake(plc: tuple[OpcUaPlcEmulator, PlcProgram]) -> None:
    """report() completes ResultValid/Ack over subscriptions; the PLC fires exactly on count."""
    emu, prog = plc
    async with open_link(_settings(emu, reject_mode="plc_tracked")) as drv:
        task = asyncio.ensure_future(_take(drv, 10**6))
        try:
            origin = prog.raw_count(time.monotonic_ns()) + 400
            await drv.report(PlcResult(3, True, origin, 1, 0))
            await drv.report(PlcResult(4, False, origin + 10, 0, 0))
            assert prog.stats.results == 2
            await asyncio.sleep(0.6)
        finally:
            task.cancel()
    prog.sync()
    assert prog.unwrapped(prog.stats.fire_t_ns[3]) == origin + prog.cfg.fire_offset_counts
    assert 4 not in prog.stats.fire_t_ns


async def test_refused_write(plc: tuple[OpcUaPlcEmulator, PlcProgram]) -> None:
    """A write the server refuses (read-only node) raises PlcWriteRefused and is logged."""
    emu, _ = plc
    await emu.refuse_writes("heartbeat")
    async with open_link(_settings(emu)) as drv:
        with capture_logs() as logs, pytest.raises(PlcWriteRefused):
            await drv.heartbeat(True)
    assert any(e["event"] == "plc_write_refused" for e in logs)


async def test_unknown_node_is_a_config_error(plc: tuple[OpcUaPlcEmulator, PlcProgram]) -> None:
    """A NodeId the server does not have fails at open with the I/O map key in the message."""
    emu, _ = plc
    io = OpcUaIoMap.model_validate({"outputs": {"heartbeat": {"node_id": "ns=2;s=PLC.Nope"}}})
    with pytest.raises(PlcConfigError, match="heartbeat"):
        async with open_link(_settings(emu, io=io)):
            pass


@pytest.mark.slow
async def test_link_loss_resubscribes(plc: tuple[OpcUaPlcEmulator, PlcProgram]) -> None:
    """Server restarted: the link is seen down, then reconnected and resubscribed; the PLC
    saw the heartbeat stop meanwhile."""
    emu, prog = plc
    async with open_link(_settings(emu)) as drv:
        await drv.heartbeat(True)
        await drv.heartbeat(False)
        seen: list[str] = []
        got: list[EncoderSample] = []

        async def consume() -> None:
            async for s in drv.samples():
                got.append(s)
                seen.append(drv.link_state)

        task = asyncio.ensure_future(consume())
        try:
            await asyncio.sleep(0.3)
            await emu.stop()
            for _ in range(50):
                await asyncio.sleep(0.1)
                if drv.link_state == "down":
                    break
            assert drv.link_state == "down"
            with pytest.raises(PlcLinkError):
                await drv.heartbeat(True)
            prog.sync()
            assert prog.stats.heartbeat_losses == 1
            await emu.start()
            n = len(got)
            for _ in range(100):
                await asyncio.sleep(0.1)
                if drv.link_state == "up" and len(got) > n + 10:
                    break
            assert drv.link_state == "up" and len(got) > n + 10
            assert drv.counters.losses == 1 and drv.counters.connects == 2
        finally:
            task.cancel()
