"""The PLC link against the PLC emulators on loopback, over Modbus TCP and OPC UA.

Tests without a transport in their name run over both transports (the ``plc``
fixture is parametrized); ``test_modbus_*`` and ``test_opcua_*`` prove what
only that transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from structlog.testing import capture_logs

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcConfigError, PlcLinkError, PlcWriteRefused
from drivers.plc.iomap import OpcUaIoMap
from drivers.plc.link import PlcLink, open_link
from drivers.plc.settings import BackoffSettings, ModbusSettings, OpcUaSettings
from drivers.plc.tracked import PlcResult
from drivers.sim.world import SimWorld
from hil.plc_logic import PlcProgram, PlcProgramConfig
from hil.plc_modbus import ModbusPlcEmulator, free_port
from hil.plc_opcua import OpcUaPlcEmulator

Transport = Literal["modbus", "opcua"]


@dataclass
class Plc:
    """An emulated PLC on loopback and how to reach it."""

    transport: Transport
    emu: ModbusPlcEmulator | OpcUaPlcEmulator
    prog: PlcProgram

    def link(self, *, encoder_bits: Literal[16, 32] = 32, **settings: Any) -> PlcLink:
        """A link to this PLC with a short backoff (so tests see reconnects quickly)."""
        if isinstance(self.emu, ModbusPlcEmulator):
            backoff = BackoffSettings(initial_s=0.05, max_s=0.2)
            s: ModbusSettings | OpcUaSettings = ModbusSettings(
                port=self.emu.port, backoff=backoff, **settings
            )
        else:
            backoff = BackoffSettings(initial_s=0.1, max_s=0.3)
            s = OpcUaSettings(url=self.emu.url, backoff=backoff, **settings)
        return open_link(s, encoder_bits=encoder_bits)

    async def refuse(self, name: str) -> None:
        """Make the PLC refuse writes of output ``name``."""
        if isinstance(self.emu, ModbusPlcEmulator):
            self.emu.refuse = {name}
        else:
            await self.emu.refuse_writes(name)


def _program() -> PlcProgram:
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
    return PlcProgram(
        w,
        PlcProgramConfig(fire_offset_counts=1576, part_length_counts=96, heartbeat_timeout_s=0.3),
        32,
    )


@pytest.fixture(params=["modbus", "opcua"])
async def plc(request: pytest.FixtureRequest) -> AsyncIterator[Plc]:
    """A PLC emulator on a free loopback port, its belt running at 1 m/s."""
    prog = _program()
    transport: Transport = request.param
    emu: ModbusPlcEmulator | OpcUaPlcEmulator
    if transport == "modbus":
        emu = ModbusPlcEmulator(prog, ModbusSettings().io)
    else:
        emu = OpcUaPlcEmulator(prog)
    async with emu:
        yield Plc(transport, emu, prog)


only_modbus = pytest.mark.parametrize("plc", ["modbus"], indirect=True)
only_opcua = pytest.mark.parametrize("plc", ["opcua"], indirect=True)


async def _take(link: PlcLink, n: int) -> list[EncoderSample]:
    out = []
    async for s in link.samples():
        out.append(s)
        if len(out) >= n:
            break
    return out


def _belt_edges(prog: PlcProgram) -> list[int]:
    """The raw counter value at every part-present rising edge the belt has had."""
    w = prog.world
    return [
        (int((p.cross_mm - p.length_mm / 2) * w.counts_per_mm) + w.count_offset)
        % (1 << w.encoder_bits)
        for p in w.parts
    ]


# -- inputs ------------------------------------------------------------------------------


async def test_samples_follow_the_counter_and_latch_edges_once(plc: Plc) -> None:
    """Counts arrive in order and rise with the belt; latched part-present edges arrive
    once each, and every one is an edge of the belt."""
    async with plc.link() as link:
        samples = await _take(link, 300)
    counts = [s.raw_count for s in samples]
    assert counts == sorted(counts) and counts[-1] > counts[0]
    edges = [e for s in samples for e in (s.edges or ())]
    assert len(edges) == len(set(edges)) and len(edges) >= 3
    assert set(edges) <= set(_belt_edges(plc.prog))
    assert all(s.t_ns > 0 for s in samples)


@only_modbus
async def test_modbus_latches_exactly_the_belts_edges(plc: Plc) -> None:
    """Polled over Modbus, every part-present edge arrives latched, once: exactly the belt's
    edges between the first read (the baseline) and the last."""
    async with plc.link() as link:
        samples = await _take(link, 150)
    counts = [s.raw_count for s in samples]
    edges = [e for s in samples for e in (s.edges or ())]
    belt = _belt_edges(plc.prog)
    assert len(belt) >= 5  # the belt is still running on: later edges are not asked for
    assert edges == [e for e in belt if counts[0] < e <= counts[-1]]


@only_modbus
async def test_modbus_samples_are_dated_by_their_request_not_the_wait_before_it(plc: Plc) -> None:
    """A read that waits behind another request (a report, a fire) on the connection is
    dated by the request itself: every sample's count is the belt's count at its time,
    within a loopback round trip, even while the connection is held 30 ms at a time (under
    the 50 ms request timeout, so the reads wait rather than fail)."""
    async with plc.link() as link:
        transport = link.transport
        lock: asyncio.Lock = transport._lock  # type: ignore[attr-defined]  # what a report holds

        async def busy() -> None:
            while True:
                async with lock:
                    await asyncio.sleep(0.03)
                await asyncio.sleep(0.002)

        hog = asyncio.create_task(busy())
        try:
            samples = await _take(link, 40)
        finally:
            hog.cancel()
    w = plc.prog.world
    off = [abs(s.raw_count - w.raw_count(s.t_ns)) for s in samples]
    # 1 m/s is 4 counts per ms: 20 counts is 5 ms; dated from before the wait, a read
    # that waited 30 ms would be 15 ms (60 counts) early
    assert max(off) <= 20, off
    # and the half width the sample carries holds the PLC's reading: the count is the
    # belt's count at some instant within t_ns ± t_err_ns
    for s in samples:
        assert s.t_err_ns > 0
        lo, hi = w.raw_count(s.t_ns - s.t_err_ns), w.raw_count(s.t_ns + s.t_err_ns)
        assert lo - 1 <= s.raw_count <= hi + 1, (s, lo, hi)


@only_opcua
async def test_opcua_server_restarts_without_waiting_out_its_clock(plc: Plc) -> None:
    """The emulator's server stops at once (asyncua's stop waited out the rest of its
    once-a-second clock) and serves again after its restart."""
    assert isinstance(plc.emu, OpcUaPlcEmulator)
    await asyncio.sleep(0.1)  # the clock task is in its one-second sleep
    t0 = time.monotonic()
    await plc.emu.stop()
    took_s = time.monotonic() - t0
    assert took_s < 0.4, f"stopping took {took_s:.2f} s"
    await plc.emu.start()
    async with plc.link() as link:
        assert len(await asyncio.wait_for(_take(link, 3), 10)) == 3


@only_opcua
async def test_opcua_samples_are_dated_by_plc_timestamps(plc: Plc) -> None:
    """Over OPC UA a sample is dated close to when the PLC sampled it (SourceTimestamp
    mapped onto the node's clock): its count and time agree with the belt's within 3 ms."""
    async with plc.link() as link:
        samples = await _take(link, 300)
    # the belt moves 4 counts/ms
    late = [plc.prog.unwrapped(s.t_ns) - s.raw_count for s in samples[100:]]
    assert max(abs(d) for d in late) <= 12, late


@only_opcua
async def test_opcua_late_notifications_never_make_the_belt_look_parked(plc: Plc) -> None:
    """With notifications batched every 300 ms, longer than the link waits before it
    asks, the samples still tell one consistent story of the belt: a quiet counter is
    confirmed by a Read and an old count is never dated "now". From one sample to the
    next, time runs forward and the count never runs faster than the 4 counts/ms belt
    (25 % and 8 counts of slack, as the node's encoder check allows).

    (Batching delays even the freshest notification, so the mapped clock runs some ms
    late and converges slowly; the step from sample to sample is what the node checks.)"""
    async with plc.link(publishing_interval_ms=300.0) as link:
        samples = await _take(link, 400)
    assert samples[-1].t_ns - samples[0].t_ns > 0.6e9  # several batches, several waits
    for a, b in itertools.pairwise(samples[1:]):  # the first may be a stale initial value
        dt_ms = (b.t_ns - a.t_ns) / 1e6
        assert dt_ms > 0 and 0 <= b.raw_count - a.raw_count <= 5.0 * dt_ms + 8, (a, b)


async def test_out_of_range_count_is_dropped(plc: Plc) -> None:
    """A count outside the counter's width is logged and skipped — unless latched edges came
    with it, which are passed on (the tracker refuses the count and keeps the edges)."""
    plc.prog.count_override = 70_000  # impossible for a 16-bit counter
    async with plc.link(encoder_bits=16) as link:
        with capture_logs() as logs:
            task = asyncio.ensure_future(_take(link, 3))
            await asyncio.sleep(0.05)
            plc.prog.count_override = None
            samples = await asyncio.wait_for(task, 5)
    assert link.counters.bad_samples >= 1
    assert any(e["event"] == "encoder_count_out_of_range" for e in logs)
    assert all(0 <= s.raw_count < 65536 or s.edges for s in samples)


# -- outputs -----------------------------------------------------------------------------


async def test_fire_strikes_on_the_write(plc: Plc) -> None:
    """Each node-timed fire is one pulse in the PLC for its part, and the lead is half a
    measured round trip (less than the pulse timeout)."""
    async with plc.link() as link:
        for i in range(10):
            await asyncio.to_thread(link.fire, RejectCommand(i, 0, "defect"))
        assert plc.prog.stats.fires_node_timed == 10
        assert sorted(plc.prog.stats.fire_t_ns) == list(range(10))
        assert 0 < link.fire_lead_ns < link.settings.fire_timeout_ms * 1e6


@only_opcua
async def test_opcua_browse_path_addresses_a_signal(plc: Plc) -> None:
    """A signal addressed by browse path (here the pulse trigger) works: each fire is one
    pulse in the PLC."""
    io = OpcUaIoMap.model_validate(
        {"outputs": {"fire_seq": {"browse_path": ["2:PLC", "2:FireSeq"]}}}
    )
    async with plc.link(io=io) as link:
        for i in range(5):
            await asyncio.to_thread(link.fire, RejectCommand(i, 0, "defect"))
        assert plc.prog.stats.fires_node_timed == 5
        assert link.fire_lead_ns > 0


async def test_part_ids_and_result_counter_reach_the_plc_by_one_rule(plc: Plc) -> None:
    """Part ids reach the PLC modulo 2**32 in a pulse and in a result, and the result
    counter counts the published verdicts — the same on every transport."""
    async with plc.link(reject_mode="node_timed") as link:
        await asyncio.to_thread(link.fire, RejectCommand(2**32 + 3, 0, "defect"))
        await link.publish_verdict(2, 3)
        await link.publish_verdict(1, 0)
    assert plc.prog.outputs["fire_part_id"] == 3 and 3 in plc.prog.stats.fire_t_ns
    assert plc.prog.outputs["result_counter"] == 2
    async with plc.link(reject_mode="plc_tracked") as link:
        task = asyncio.ensure_future(_take(link, 10**6))  # OPC UA: the Ack comes this way
        try:
            origin = plc.prog.raw_count(time.monotonic_ns()) + 400
            await link.report(PlcResult(2**32 + 7, True, origin, 1, 2))
        finally:
            task.cancel()
    assert plc.prog.outputs["result_part_id"] == 7 and 7 in plc.prog.stats.result_origins


async def test_refused_write_is_an_error_not_a_crash(plc: Plc) -> None:
    """A write the PLC refuses raises PlcWriteRefused, is counted and logged, and the inputs
    keep coming."""
    await plc.refuse("heartbeat")
    async with plc.link() as link:
        with capture_logs() as logs, pytest.raises(PlcWriteRefused):
            await link.heartbeat(True)
        assert link.counters.refused_writes == 1
        assert any(e["event"] == "plc_write_refused" for e in logs)
        assert len(await _take(link, 5)) == 5


# -- PLC-tracked handshake --------------------------------------------------------------


async def test_result_handshake_loads_the_shift_register(plc: Plc) -> None:
    """report() completes ResultValid/Ack (Ack is down again when it returns); the PLC fires
    a reject exactly at origin + its offset, and never for a pass."""
    async with plc.link(reject_mode="plc_tracked") as link:
        task = asyncio.ensure_future(_take(link, 10**6))  # OPC UA: the Ack comes this way
        try:
            origin = plc.prog.raw_count(time.monotonic_ns()) + 400  # 0.1 s before the fire point
            await link.report(PlcResult(3, True, origin, 1, 2))
            assert plc.prog.stats.results == 1 and not plc.prog.result_ack
            await link.report(PlcResult(4, False, origin + 10, 0, 0))
            assert plc.prog.stats.results == 2
            await asyncio.sleep(0.6)
        finally:
            task.cancel()
    plc.prog.sync()
    assert (
        plc.prog.unwrapped(plc.prog.stats.fire_t_ns[3]) == origin + plc.prog.cfg.fire_offset_counts
    )
    assert 4 not in plc.prog.stats.fire_t_ns


@only_modbus
async def test_modbus_handshake_reads_the_ack_itself(plc: Plc) -> None:
    """Over Modbus report() polls the Ack on its own: it completes with no sample stream
    running, and the PLC fires exactly at origin + its offset."""
    prog = plc.prog
    async with plc.link(reject_mode="plc_tracked") as link:
        origin = prog.raw_count(time.monotonic_ns()) + 400
        await link.report(PlcResult(7, True, origin, 1, 2))
        assert prog.stats.results == 1 and not prog.result_ack
        await asyncio.sleep(0.6)
        prog.sync()
    assert prog.unwrapped(prog.stats.fire_t_ns[7]) == origin + prog.cfg.fire_offset_counts


# -- the link ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "plc", ["modbus", pytest.param("opcua", marks=pytest.mark.slow)], indirect=True
)
async def test_link_loss_reconnects_and_plc_sees_heartbeat_loss(plc: Plc) -> None:
    """PLC server restarted: the link is seen down within a few requests (state and count
    visible), then reconnected, its inputs flowing again; the PLC saw the node's heartbeat
    stop meanwhile and sees it again after."""
    emu, prog = plc.emu, plc.prog
    async with plc.link() as link:
        await link.heartbeat(True)
        await link.heartbeat(False)
        await _take(link, 3)
        await emu.stop()
        for _ in range(20):  # a dead peer is a timeout or a reset: a few requests at most
            with pytest.raises(PlcLinkError):
                await link.probe_read()
            if link.link_state == "down":
                break
        assert link.link_state == "down"
        with pytest.raises(PlcLinkError):
            await link.heartbeat(True)
        await asyncio.sleep(0.4)
        prog.sync()
        assert prog.stats.heartbeat_losses == 1 and not prog.heartbeat_ok
        await emu.start()
        samples = await asyncio.wait_for(_take(link, 11), 10)
        assert len(samples) == 11
        assert link.link_state == "up"
        assert link.counters.losses == 1 and link.counters.connects == 2
        await link.heartbeat(True)
        assert prog.heartbeat_ok


async def test_edges_latched_while_the_link_was_down_arrive_when_it_is_back(plc: Plc) -> None:
    """A short link outage (the PLC server restarts) loses no part: the PLC went on latching
    edges, and the first readings after the reconnect bring every one of them, once, with
    the edges before and after the outage — exactly the belt's edges over the whole run.
    (The belt runs at 25 mm/s here, an edge every 1.28 s, so the outage and reconnect —
    3 to 5 s on a busy machine over OPC UA, where the server's restart is slow — fill fewer
    than the eight latch slots; at 50 mm/s a 5.2 s one overran them.)"""
    emu, prog = plc.emu, plc.prog
    prog.world.set_speed(time.monotonic_ns(), 25.0)
    samples: list[EncoderSample] = []
    async with plc.link() as link:

        async def collect() -> None:
            async for s in link.samples():
                samples.append(s)

        task = asyncio.create_task(collect())
        try:
            await asyncio.sleep(1.0)
            before = len(samples)
            await emu.stop()
            while link.link_state != "down":
                with contextlib.suppress(PlcLinkError):
                    await link.probe_read()
            await asyncio.sleep(0.7)  # the belt runs on: a part passes the sensor meanwhile
            await emu.start()
            deadline = time.monotonic() + 10
            while link.counters.connects < 2 or len(samples) < before + 50:
                assert time.monotonic() < deadline, "no samples after the reconnect"
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)
            lost = link.counters.edges_lost
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    counts = [s.raw_count for s in samples]
    edges = [e for s in samples for e in (s.edges or ())]
    belt = [e for e in _belt_edges(prog) if counts[0] < e <= counts[-1]]
    assert len(belt) >= 3
    assert lost == 0  # more edges than slots would be an outage too long for this test
    assert len(edges) == len(set(edges))
    assert sorted(edges) == belt, (edges, belt)


@pytest.mark.parametrize("transport", ["modbus", "opcua"])
async def test_unreachable_plc_fails_at_open(transport: Transport) -> None:
    """Opening a link with no PLC behind it raises PlcLinkError (the node exits with 4)."""
    settings: ModbusSettings | OpcUaSettings
    if transport == "modbus":
        settings = ModbusSettings(port=free_port(), connect_timeout_ms=200)
    else:
        settings = OpcUaSettings(url=f"opc.tcp://127.0.0.1:{free_port()}/", connect_timeout_ms=200)
    with pytest.raises(PlcLinkError):
        async with open_link(settings):
            pass


@only_opcua
async def test_opcua_unknown_node_is_a_config_error(plc: Plc) -> None:
    """A NodeId the server does not have fails at open with the I/O map key in the message."""
    io = OpcUaIoMap.model_validate({"outputs": {"heartbeat": {"node_id": "ns=2;s=PLC.Nope"}}})
    with pytest.raises(PlcConfigError, match="heartbeat"):
        async with plc.link(io=io):
            pass
