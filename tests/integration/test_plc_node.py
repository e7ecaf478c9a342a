"""The whole node behind the PLC emulators, with its PLC link built from the config.

Each emulator runs in its own process and takes its counter from the same
simulated belt the sim camera renders; the node reads the count and part-present
edges over the transport and fires rejects in both modes. These tests prove the
rejects strike the right parts; timing precision is measured by ``bench/plc.py``.
"""

from __future__ import annotations

import pytest

from hil.line import sim_config
from hil.plc_rig import run_plc_line
from node.config import Config


@pytest.mark.parametrize("mode", ["node_timed", "plc_tracked"])
async def test_node_over_modbus_rejects_on_target(taught_config: Config, mode: str) -> None:
    """The node over Modbus: 200 parts, 30% defective; every reject strikes its own part."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 5, "speed_mm_s": 640.0})
    report, rig = await run_plc_line(cfg, 200, transport="modbus", mode=mode)  # type: ignore[arg-type]
    assert report["parts"] == 200
    assert report["missed_rejects"] == 0, report
    assert report["wrong_part_hits"] == 0
    assert report["reject_fire_failures"] == 0
    assert report["strike_error"]["n"] > 30
    if mode == "plc_tracked":
        # exact in counts: within the one-count quantisation of the PLC counter
        assert report["strike_error"]["max_abs_mm"] <= 1 / cfg.line.counts_per_mm + 1e-6
        assert report["plc_program"]["late_results"] == 0
    assert rig.node.status()["plc"]["state"] == "closed"


@pytest.mark.parametrize("mode", ["node_timed", "plc_tracked"])
async def test_node_over_opcua_rejects_on_target(taught_config: Config, mode: str) -> None:
    """The node over OPC UA: 200 parts, 30% defective; every reject strikes its own part.

    A node-timed pulse over OPC UA is a Write whose round trip on this loopback varies by
    tens of milliseconds when both processes share two busy cores, so that mode runs the
    belt at 240 mm/s (a 24 mm part is under the actuator for 100 ms).
    """
    speed = 240.0 if mode == "node_timed" else 480.0
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 6, "speed_mm_s": speed})
    report, rig = await run_plc_line(
        cfg,
        200,
        transport="opcua",
        mode=mode,  # type: ignore[arg-type]
    )
    assert report["parts"] == 200
    assert report["missed_rejects"] == 0, report
    assert report["wrong_part_hits"] == 0
    assert report["reject_fire_failures"] == 0
    if mode == "plc_tracked":
        assert report["strike_error"]["max_abs_mm"] <= 1 / cfg.line.counts_per_mm + 1e-6
        assert report["plc_program"]["late_results"] == 0
    status = rig.node.status()["plc"]
    assert status["state"] == "closed" and status["losses"] == 0
