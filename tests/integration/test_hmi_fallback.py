"""Without the OPC 40100 NodeSet the HMI server still serves the plain namespace, and says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from structlog.testing import capture_logs

from node.hmi import HmiServer, HmiSettings
from node.sim.hmi import MemoryResults, SimControl, sample_record
from node.state import VisionState


async def test_missing_nodeset_serves_plain_namespace_and_logs(tmp_path: Path) -> None:
    """No NodeSet file: a warning names it, no VisionSystem, plain variables and a BaseEvent per
    part still work; with no secured policies no certificate is made."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=tmp_path / "absent.xml",
        security_policies=[],
    )
    results = MemoryResults()
    with capture_logs() as logs:
        async with HmiServer(
            settings, state_dir=tmp_path, control=SimControl(), results=results, node_name="l1"
        ) as hmi:
            assert not hmi.has_machine_vision
            hmi.set_state(VisionState.INITIALIZED)
            async with Client(hmi.endpoint_url, timeout=5) as c:
                names = {
                    (await n.read_browse_name()).Name for n in await c.nodes.objects.get_children()
                }
                assert "Lineside" in names and "VisionSystem" not in names
                got: list[Any] = []
                arrived = asyncio.Event()

                class Handler:
                    def event_notification(self, event: Any) -> None:
                        got.append(event)
                        arrived.set()

                sub = await c.create_subscription(20, Handler())
                await sub.subscribe_events(
                    c.get_node("ns=2;s=Lineside"), ua.ObjectIds.BaseEventType
                )
                rec = sample_record(7)
                results.add(rec)
                hmi.publish(rec, None, {"inspected": 1})
                async with asyncio.timeout(5):
                    await arrived.wait()
                assert got[0].Message.Text == rec.explanation
                verdict = await c.get_node("ns=2;s=Lineside.LastResult.Verdict").read_value()
                assert verdict == "reject"
                state = await c.get_node("ns=2;s=Lineside.Health.State").read_value()
                assert state == "Initialized"
    assert any(e["event"] == "hmi_nodeset_missing" and e["log_level"] == "warning" for e in logs)
    assert not (tmp_path / "pki").exists()


async def test_the_server_stops_at_once_not_after_its_clock_tick(tmp_path: Path) -> None:
    """Closing the server takes what closing its sessions takes: asyncua's stop waited out the
    rest of its once-a-second ServerStatus clock (up to 1 s on every node stop)."""
    settings = HmiSettings(
        endpoint="opc.tcp://127.0.0.1:0/lineside/",
        nodeset=tmp_path / "absent.xml",
        security_policies=[],
    )
    hmi = HmiServer(
        settings, state_dir=tmp_path, control=SimControl(), results=MemoryResults(), node_name="l1"
    )
    await hmi.__aenter__()
    try:
        async with Client(hmi.endpoint_url, timeout=5) as c:
            # the clock that asyncua's stop waited for has written the time
            clock = c.get_node(ua.ObjectIds.Server_ServerStatus_CurrentTime)
            assert await clock.read_value() is not None
    finally:
        t0 = time.monotonic()
        await hmi.__aexit__(None, None, None)
        took_s = time.monotonic() - t0
    assert took_s < 0.4, f"stopping took {took_s:.2f} s"
