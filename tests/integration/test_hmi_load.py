"""Load: 50 parts/s for 60 s with 5 subscribed clients — no ResultReadyEvent is missed."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from pathlib import Path

import pytest

from node.hmi import HmiServer, HmiSettings
from node.sim.hmi import MemoryResults, SimControl, panel_process, sample_record
from node.state import VisionState

NODESET = Path(__file__).resolve().parents[2] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"
RATE, SECONDS, CLIENTS = 50, 60, 5


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_50_parts_per_s_for_60_s_with_5_clients_misses_no_event(tmp_path: Path) -> None:
    """Every one of 3000 parts reaches each of 5 clients (in a panel process of their own, also
    watching LastResult at 20 ms) as a ResultReadyEvent, in order, and the server drops nothing."""
    settings = HmiSettings(endpoint="opc.tcp://127.0.0.1:0/lineside/", nodeset=NODESET)
    results = MemoryResults()
    async with HmiServer(
        settings, state_dir=tmp_path, control=SimControl(), results=results, node_name="l1"
    ) as hmi:
        hmi.set_state(VisionState.INITIALIZED)
        ctx = mp.get_context("spawn")
        here, there = ctx.Pipe()
        proc = ctx.Process(target=panel_process, args=(hmi.endpoint_url, CLIENTS, there, True))
        proc.start()
        loop = asyncio.get_running_loop()
        try:
            assert await asyncio.wait_for(loop.run_in_executor(None, here.recv), 60) == "ready"
            t0 = loop.time()
            n = RATE * SECONDS
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / RATE - loop.time()))
                rec = sample_record(i, reject=i % 7 == 0)
                results.add(rec)
                hmi.publish(rec, None, {"inspected": i + 1})
            await hmi.drain()
            behind_s = loop.time() - t0 - SECONDS
            # the panels collect until each client has all n events (or 2 s pass without one)
            told = loop.time()
            here.send(n)
            arrivals = await asyncio.wait_for(loop.run_in_executor(None, here.recv), 60)
            answered_s = loop.time() - told
        finally:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        assert hmi.dropped == 0
        assert behind_s < 2.0, f"the server fell {behind_s:.1f} s behind"
        for a in arrivals:
            assert list(a) == [str(i) for i in range(n)]
        # every event was there: the panels did not wait out their 2 s of quiet
        assert answered_s < 1.5, f"the panels answered {answered_s:.1f} s after being told"
