"""Lost encoder tracking is a fault: Error, PLC Ready dropped, heartbeat stopped, no escapes."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from structlog.testing import capture_logs

from hil.line import sim_config
from node.app import Node
from node.config import Config
from node.state import VisionState
from node.wiring import build_components


async def test_an_overspeeding_belt_puts_the_node_in_error_and_stops_its_heartbeat(
    taught_config: Config,
) -> None:
    """The sim belt jumps to twice line.max_speed_mm_s: every sample is refused, and within
    line.tracking_loss_ms the node says so — Error state, not healthy, the encoder fault with
    the measured speed, no more heartbeats — and parts in flight are fail-safe rejects."""
    cfg = sim_config(taught_config, line={"max_speed_mm_s": 300.0}, sim={"speed_mm_s": 200.0})
    components, sim = build_components(cfg)
    assert sim is not None
    results: list[Any] = []

    class Sink:
        def publish(self, result: Any) -> None:
            results.append(result)

    node = Node(cfg, components, sinks=[Sink()])
    stop = asyncio.Event()
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        await node.ready.wait()
        await asyncio.sleep(1.5)
        seen["before"] = node.status()
        sim.world.set_speed(time.monotonic_ns(), 640.0)
        await asyncio.sleep(0.6)
        seen["beats"] = sim.output.heartbeats
        seen["during"] = node.status()
        await asyncio.sleep(1.2)
        seen["beats_later"] = sim.output.heartbeats
        stop.set()

    with capture_logs() as logs:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(scenario())
            await node.run(stop)
    assert seen["before"]["healthy"] and seen["before"]["state"] == "ContinuousExecution"
    during = seen["during"]
    assert during["state"] == VisionState.ERROR.value and not during["healthy"]
    assert "over line.max_speed_mm_s" in during["faults"]["encoder"]
    assert seen["beats_later"] == seen["beats"], "the heartbeat must stop while tracking is lost"
    assert node.summary.tracking_losses >= 1
    assert any(e["event"] == "fault_raised" and e["fault"] == "encoder" for e in logs)
    lost = [r for r in results if r.verdict.reason.value == "tracking_lost"]
    assert lost and all(r.verdict.reject and r.verdict.fail_safe for r in lost)
