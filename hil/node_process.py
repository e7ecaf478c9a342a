"""The node in a process of its own on the simulated line, for a rig that kills it.

    python -m hil.node_process CONFIG.json PARTS

``CONFIG.json`` is a full config (``Config.model_dump(mode="json")``), with the
encoder from the PLC emulator the rig runs. The node starts as ``lineside run``
would; its simulated belt stands still until a line ``start <t_ns>`` arrives on
stdin (the emulator's belt starts at the same monotonic instant, so both see the
same parts). ``ready`` is printed once the node is up. SIGTERM drains and stops;
SIGKILL is what the rig uses to prove that a crash loses no committed record.
Results go to the audit store only: the rig reads them back from there.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.config import Config

_PARKED_NS = 3600 * 10**9


async def main(cfg: Config, parts: int) -> None:
    # Imported here, not at the top: multiprocessing runs this module again (as
    # __mp_main__) in each process the node spawns (its HMI server, its render worker),
    # which need none of the node's own modules.
    from node.app import Node
    from node.sim.line import build_sim_line
    from node.wiring import build_components

    sim = build_sim_line(cfg)
    sim.world.max_parts = parts
    sim.world.start(time.monotonic_ns() + _PARKED_NS)
    components, _ = build_components(cfg, sim)
    node = Node(cfg, components, sinks=[])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    async def commands() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            word, _, arg = line.decode().strip().partition(" ")
            if word == "start":
                sim.world.start(int(arg))
        stop.set()  # stdin closed: the rig that started this node is gone

    async def announce() -> None:
        await node.ready.wait()
        print("ready", flush=True)

    side = [asyncio.create_task(commands()), asyncio.create_task(announce())]
    try:
        await node.run(stop)
    finally:
        for task in side:
            task.cancel()


if __name__ == "__main__":
    from node.config import parse_config
    from node.service.logs import configure

    configure(json=True, level="warning", file=sys.stderr)
    path = Path(sys.argv[1])
    asyncio.run(main(parse_config(json.loads(path.read_text()), str(path)), int(sys.argv[2])))
