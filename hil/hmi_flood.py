"""A flood of HMI clients: many OPC UA sessions browsing, reading and subscribing at once.

    python -m hil.hmi_flood opc.tcp://127.0.0.1:4840/lineside/ [--clients 10] [--seconds 20]

What a busy plant network does to the node's HMI server: every client opens its
own session, browses the whole address space from Objects down, reads every
variable it found, subscribes to all of them, and starts again. It runs in a
process of its own and prints one JSON line at the end (also when stopped early by
SIGTERM): sessions opened, browse/read/subscribe calls, errors.

Real clients run on other machines; here they share the node's cores, so the process
runs at ``--nice`` (default 19): the flood then loads the node's HMI server as a plant's
panels would, without also taking the CPU of the node and of the PLC it stands beside
(on two cores, clients at the node's own priority delayed the PLC emulator's encoder
updates by 50-115 ms, a starved machine rather than a flooded server).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from typing import Any

from asyncua import Client, ua
from asyncua.common.node import Node


async def _walk(node: Node, found: list[Node], depth: int, counts: Counter[str]) -> None:
    if depth > 8 or len(found) > 2000:
        return
    counts["browse"] += 1
    for child in await node.get_children():
        if child.nodeid.NamespaceIndex == 0 and depth > 0:
            continue  # the standard's own nodes: a panel skips them too
        found.append(child)
        await _walk(child, found, depth + 1, counts)


class _Sink:
    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        self._counts["notifications"] += 1


async def one_client(endpoint: str, until: float, counts: Counter[str]) -> None:
    """Browse, read, subscribe, disconnect — again and again until ``until``."""
    while time.monotonic() < until:
        try:
            async with Client(endpoint, timeout=10) as client:
                counts["sessions"] += 1
                found: list[Node] = []
                await _walk(client.nodes.objects, found, 0, counts)
                variables = []
                for node in found:
                    counts["reads"] += 1
                    if await node.read_node_class() == ua.NodeClass.Variable:
                        variables.append(node)
                if variables:
                    counts["reads"] += 1
                    await client.read_values(variables)
                    sub = await client.create_subscription(100, _Sink(counts))
                    counts["subscribe"] += 1
                    await sub.subscribe_data_change(variables[:200])
                    await asyncio.sleep(min(2.0, max(0.0, until - time.monotonic())))
                    await sub.delete()
        except Exception as exc:  # noqa: BLE001 - a refused or dropped client counts, tries again
            counts["errors"] += 1
            counts[f"error:{type(exc).__name__}"] += 1
            await asyncio.sleep(0.2)


async def flood(endpoint: str, clients: int, seconds: float) -> dict[str, Any]:
    """Run ``clients`` clients for ``seconds``, or until SIGTERM; print the counts as one
    JSON line at once (closing the sessions may then take the server's time) and return
    them."""
    counts: Counter[str] = Counter()
    start = time.monotonic()
    until = start + seconds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = [asyncio.create_task(one_client(endpoint, until, counts)) for _ in range(clients)]
    stopped = asyncio.create_task(stop.wait())
    while not stop.is_set() and not all(t.done() for t in tasks):
        await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
    ran = round(time.monotonic() - start, 2)
    result = {"clients": clients, "seconds": seconds, "ran_s": ran, **counts}
    print(json.dumps(result), flush=True)
    for task in [*tasks, stopped]:
        task.cancel()
    # a client closing its session waits on the server; the counts do not wait for that
    await asyncio.wait([*tasks, stopped], timeout=2.0)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("endpoint")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--nice", type=int, default=19, help="run this much nicer (0..19)")
    args = p.parse_args()
    if args.clients < 1 or args.seconds <= 0:
        print("--clients and --seconds must be positive", file=sys.stderr)
        sys.exit(2)
    if not 0 <= args.nice <= 19:
        print("--nice must be 0..19", file=sys.stderr)
        sys.exit(2)
    os.nice(args.nice)
    import logging

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    asyncio.run(flood(args.endpoint, args.clients, args.seconds))


if __name__ == "__main__":
    main()
