"""Run the HMI server with simulated parts and check it with a non-asyncua client.

Starts the HMI server in its own process as the node does (``HmiProcess``: OPC 40100
NodeSet, the shipped fakes, 10 parts/s) and runs
``node hil/hmi_client_check.cjs`` (node-opcua) against it::

    npm install --prefix /tmp/hmi-node node-opcua-client@2.186.4
    .venv/bin/python -m hil.hmi_client_check --node-modules /tmp/hmi-node/node_modules

Prints the client's JSON line; exits 0 when it read the explanation and got its events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
from pathlib import Path

from node.hmi import HmiSettings
from node.hmi.process import HmiProcess
from node.sim.hmi import MemoryResults, SimControl, sample_record
from node.state import VisionState

HERE = Path(__file__).resolve().parent
NODESET = HERE.parent / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"


async def check(node_modules: Path, events: int) -> int:
    """Serve, publish parts until the client exits; the client's exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = HmiSettings(endpoint="opc.tcp://127.0.0.1:0/lineside/", nodeset=NODESET)
        results = MemoryResults()
        async with HmiProcess(
            settings, state_dir=Path(tmp), control=SimControl(), results=results, node_name="hil"
        ) as hmi:
            hmi.set_state(VisionState.INITIALIZED)
            hmi.set_state(VisionState.READY)
            hmi.set_state(VisionState.CONTINUOUS)
            env = {**os.environ, "NODE_PATH": str(node_modules)}
            proc = await asyncio.create_subprocess_exec(
                "node", str(HERE / "hmi_client_check.cjs"), hmi.endpoint_url, str(events), env=env
            )
            i = 0
            while proc.returncode is None:
                rec = sample_record(i, reject=i % 2 == 0)
                results.add(rec)
                hmi.publish(rec, None, {"inspected": i + 1})
                i += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 0.1)
            return proc.returncode


def main() -> int:
    """Command line entry."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node-modules", type=Path, default=Path("/tmp/hmi-node/node_modules"))
    ap.add_argument("--events", type=int, default=3)
    args = ap.parse_args()
    return asyncio.run(check(args.node_modules, args.events))


if __name__ == "__main__":
    sys.exit(main())
