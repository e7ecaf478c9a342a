"""An independent Modbus client (Debian's mbpoll) reads the node-facing registers."""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from drivers.plc.base import RejectCommand
from drivers.plc.link import open_link
from drivers.plc.settings import ModbusSettings
from drivers.sim.world import SimWorld
from hil.plc_logic import PlcProgram, PlcProgramConfig
from hil.plc_modbus import ModbusPlcEmulator

pytestmark = pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll not installed")


async def _mbpoll(port: int, table: int, ref: int, count: int) -> dict[int, int]:
    """Registers ``ref..ref+count-1`` (0-based) as mbpoll reads them.

    ``table``: 3 input registers, 4 holding registers.
    """
    proc = await asyncio.create_subprocess_exec(
        "mbpoll",
        "-m",
        "tcp",
        "-a",
        "1",
        "-0",
        "-1",
        "-t",
        str(table),
        "-r",
        str(ref),
        "-c",
        str(count),
        "-p",
        str(port),
        "127.0.0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, text
    return {int(a): int(v) for a, v in re.findall(r"^\[(\d+)\]:\s+(-?\d+)", text, re.M)}


async def test_mbpoll_reads_node_outputs_and_plc_inputs() -> None:
    """mbpoll sees the heartbeat/ready bits, verdict, defect code, result counter and a
    32-bit part id (high word first) the link wrote, and the 32-bit counter in input
    registers 0–1."""
    world = SimWorld(
        counts_per_mm=4,
        encoder_bits=32,
        pitch_mm=32,
        part_length_mm=24,
        speed_profile=[(0.0, 0.0)],
        part_factory=lambda i: None,
        count_offset=0x12345,
    )
    world.start()
    prog = PlcProgram(world, PlcProgramConfig(fire_offset_counts=100, part_length_counts=96), 32)
    emu = ModbusPlcEmulator(prog, ModbusSettings().io)
    async with emu, open_link(ModbusSettings(port=emu.port)) as link:
        await link.set_node_state(ready=True, error=False, error_code=0)
        await link.heartbeat(True)
        await link.publish_verdict(2, 3)
        await asyncio.to_thread(link.fire, RejectCommand(70_000, 0, "defect"))
        holding = await _mbpoll(emu.port, 4, 0, 12)
        inputs = await _mbpoll(emu.port, 3, 0, 2)
    assert holding[0] == 0b011  # heartbeat (bit 0) and ready (bit 1), no error (bit 2)
    assert holding[2] == 2 and holding[3] == 3  # last verdict: reject; defect: spot
    assert (holding[4] << 16 | holding[5]) == 1  # result counter: one verdict published
    assert (holding[10] << 16 | holding[11]) == 70_000  # fire part id, high word first
    assert (inputs[0] << 16 | inputs[1]) == 0x12345
