"""Fakes shipped with the HMI server: an in-memory audit trail and a node that obeys.

Used by the tests and ``bench/hmi.py``; the real ones are ``node.audit.store`` and
the node itself (``node/app.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from node.audit.record import AuditRecord, Review, VerdictText
from node.state import VisionState


class MemoryResults:
    """A :class:`~node.hmi.interfaces.ResultQuery` over a dict, newest first."""

    def __init__(self) -> None:
        self.records: dict[str, AuditRecord] = {}
        self.reviews: dict[str, Review] = {}

    def add(self, record: AuditRecord) -> None:
        """Store ``record``."""
        self.records[record.result_id] = record

    def get(self, result_id: str) -> AuditRecord | None:
        """One record, with its review if any."""
        rec = self.records.get(result_id)
        if rec is None or result_id not in self.reviews:
            return rec
        from dataclasses import replace

        return replace(rec, review=self.reviews[result_id])

    def query(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        verdict: VerdictText | None = None,
        defect_type: str | None = None,
        part_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Records matching every given filter, newest first."""
        out = [
            r
            for r in sorted(self.records.values(), key=lambda r: r.wall_time_ns, reverse=True)
            if (since_ns is None or r.wall_time_ns >= since_ns)
            and (until_ns is None or r.wall_time_ns < until_ns)
            and (verdict is None or r.verdict == verdict)
            and (defect_type is None or r.defect_type == defect_type)
            and (part_id is None or r.part_id == part_id)
        ]
        return out[offset : offset + limit]

    def review(
        self, result_id: str, verdict: VerdictText, defect_type: str | None, comment: str, user: str
    ) -> Review:
        """Store a review. Raises ``KeyError`` (unknown id) or ``ValueError`` (bad verdict)."""
        if result_id not in self.records:
            raise KeyError(result_id)
        if verdict not in ("pass", "reject"):
            raise ValueError(f"verdict must be pass or reject, not {verdict!r}")
        r = Review(result_id, verdict, defect_type, comment, user, time.time_ns())
        self.reviews[result_id] = r
        return r


class SimControl:
    """A :class:`~node.hmi.interfaces.NodeControl` that reports each command's new state
    through ``report`` (normally ``HmiServer.set_state``), as the node would."""

    def __init__(self, recipes: list[str] | None = None) -> None:
        self.report: Callable[[VisionState], None] = lambda s: None
        self.calls: list[str] = []
        self.prepared: str | None = None
        self._recipes = recipes or ["default"]

    async def halt(self) -> None:
        self.calls.append("halt")
        self.report(VisionState.HALTED)

    async def reset(self) -> None:
        self.calls.append("reset")
        self.report(VisionState.PREOPERATIONAL)
        self.report(VisionState.INITIALIZED)

    async def select_mode_automatic(self) -> None:
        self.calls.append("select_mode_automatic")
        self.report(VisionState.READY)

    async def start_continuous(self) -> None:
        self.calls.append("start_continuous")
        self.report(VisionState.CONTINUOUS)

    async def stop(self) -> None:
        self.calls.append("stop")
        self.report(VisionState.READY)

    def recipes(self) -> list[str]:
        return list(self._recipes)

    async def prepare_recipe(self, name: str) -> None:
        if name not in self._recipes:
            raise KeyError(name)
        self.calls.append(f"prepare_recipe:{name}")
        self.prepared = name


_SAMPLE_FINDING = {
    "defect_type": "scratch",
    "placement": {
        "x_mm": 4.1,
        "y_mm": 3.0,
        "length_mm": 3.2,
        "width_mm": 0.3,
        "area_mm2": 0.96,
        "location": "upper left",
        "zones": ["face"],
        "along_mm": 2.1,
        "along_from": "left end",
    },
    "rule": "no scratches on the face",
    "rejects": True,
}


def sample_record(part_id: int, *, run_id: str = "run1", reject: bool = True) -> AuditRecord:
    """A plausible record for ``part_id`` (a 3 mm scratch, or a pass)."""
    en = "Scratch 3.2 mm long at the top left." if reject else "No defect found."
    de = "Kratzer, 3,2 mm lang, oben links." if reject else "Kein Fehler gefunden."
    ja = "左上に長さ3.2 mmの傷。" if reject else "欠陥なし。"
    return AuditRecord(
        result_id=f"{run_id}-{part_id}",
        run_id=run_id,
        part_id=part_id,
        origin_count=part_id * 128,
        trigger_count=part_id * 128 + 40,
        fire_count=part_id * 128 + 1600,
        wall_time_ns=time.time_ns(),
        verdict="reject" if reject else "pass",
        reason="defect" if reject else "ok",
        fail_safe=False,
        defect_type="scratch" if reject else None,
        score=0.93 if reject else 0.04,
        explanation=en,
        explanation_source="model",
        explanations={"en": en, "de": de, "ja": ja},
        location="top left" if reject else None,
        size_mm=3.2 if reject else None,
        findings_json=json.dumps({"judged": [_SAMPLE_FINDING] if reject else []}),
        action="rejected" if reject else "passed",
        actuator_confirmed=None,
        latency_ms=12.5,
        budget_ms=150.0,
        budget_miss=False,
        model_name="demo",
        model_version="1.0",
        model_sha256="ab" * 32,
        thresholds_json='{"recipe": "default"}',
        rule="no scratches on the face" if reject else "within limits",
    )


def panel_process(url: str, n_clients: int, pipe: Connection, plain: bool = False) -> None:
    """Simulated HMI panels in a process of their own (run with ``multiprocessing``).

    Connects ``n_clients`` asyncua clients, each subscribed to the VisionSystem's
    ResultReadyEvents at a 10 ms publishing interval (and, with ``plain``, to
    LastResult.PartId and .Verdict at 20 ms); sends ``"ready"`` on ``pipe``, collects
    until it receives anything and then until nothing arrived for 2 s, then sends one
    ``{PartId: arrival monotonic ns}`` dict per client. Sent a number ``n`` instead, it
    stops as soon as every client has ``n`` events (or, as before, after 2 s of nothing):
    a test that knows how many parts it published need not wait out the quiet time.
    """
    import asyncio
    import logging

    from asyncua.client.client import Client

    from node.hmi.uahelp import nid

    # asyncua logs a traceback for each 40100 structure it resolves on a second pass
    logging.getLogger("asyncua.common.structures104").setLevel(logging.CRITICAL)

    async def run() -> list[dict[str, int]]:
        arrivals: list[dict[str, int]] = [{} for _ in range(n_clients)]
        clients = []

        class Handler:
            def __init__(self, k: int) -> None:
                self.k = k

            def event_notification(self, event: Any) -> None:
                arrivals[self.k][event.PartId.Id] = time.monotonic_ns()

            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                pass

        try:
            for k in range(n_clients):
                c = Client(url, timeout=10)
                await c.connect()
                clients.append(c)
                await c.load_data_type_definitions()
                ns = await c.get_namespace_index("http://opcfoundation.org/UA/MachineVision")
                vs = await c.nodes.objects.get_child("2:VisionSystem")
                sub = await c.create_subscription(10, Handler(k))
                await sub.subscribe_events(vs, nid(1024, ns), queuesize=10_000)
                if plain:
                    sub2 = await c.create_subscription(20, Handler(k))
                    nodes = [
                        c.get_node(f"ns=2;s=Lineside.LastResult.{n}") for n in ("PartId", "Verdict")
                    ]
                    await sub2.subscribe_data_change(nodes, queuesize=100)
            pipe.send("ready")
            told = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            expected = told if isinstance(told, int) else None
            # late is not lost: collect until every client has what was published, or
            # until nothing came for 2 s (at most 60 s)
            deadline = time.monotonic() + 60.0
            while time.monotonic() < deadline:
                if expected is not None and all(len(a) >= expected for a in arrivals):
                    break
                last = max((max(a.values(), default=0) for a in arrivals), default=0)
                if time.monotonic_ns() - last > 2_000_000_000:
                    break
                await asyncio.sleep(0.05)
        finally:
            for c in clients:
                await c.disconnect()
        return arrivals

    pipe.send(asyncio.run(run()))


def flood_process(url: str, n_clients: int, pipe: Connection, nice: int = 0) -> None:
    """Busy anonymous panels in a process of their own (run with ``multiprocessing``).

    Each of ``n_clients`` asyncua clients connects to ``url`` (retrying until the
    server listens), subscribes to LastResult at 10 ms and to the VisionSystem's
    events where there is one, then browses the whole address space, reading each
    node's name, over and over. Refused requests (the server's limits) are counted
    and the client goes on. Sends ``"ready"`` on ``pipe`` at once, runs until it
    receives anything, then sends its counters (``requests``, ``refused``,
    ``errors``, ``connects``, ``notifications``). ``nice`` lowers this process's
    priority: the clients stand for panel PCs elsewhere on the network.
    """
    import asyncio
    import logging
    import os

    from asyncua.client.client import Client
    from asyncua.ua.uaerrors import UaError, UaStatusCodeError

    from node.hmi.uahelp import nid

    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    if nice:
        os.nice(nice)
    counts = dict.fromkeys(("requests", "refused", "errors", "connects", "notifications"), 0)

    class Handler:
        def event_notification(self, event: Any) -> None:
            counts["notifications"] += 1

        def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
            counts["notifications"] += 1

    async def browse(node: Any, depth: int, stop: asyncio.Event) -> None:
        if depth == 0 or stop.is_set():
            return
        try:
            counts["requests"] += 1
            children = await node.get_children()
        except UaStatusCodeError:
            counts["refused"] += 1
            return
        for child in children:
            if stop.is_set():
                return
            try:
                counts["requests"] += 1
                await child.read_browse_name()
            except UaStatusCodeError:
                counts["refused"] += 1
            await browse(child, depth - 1, stop)

    async def panel(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with Client(url, timeout=10) as c:
                    counts["connects"] += 1
                    sub = await c.create_subscription(10, Handler())
                    names = ("PartId", "Verdict", "Explanation", "Thumbnail")
                    await sub.subscribe_data_change(
                        [c.get_node(f"ns=2;s=Lineside.LastResult.{n}") for n in names]
                    )
                    try:
                        ns = await c.get_namespace_index(
                            "http://opcfoundation.org/UA/MachineVision"
                        )
                        vs = await c.nodes.objects.get_child("2:VisionSystem")
                        await sub.subscribe_events(vs, nid(1024, ns), queuesize=100)
                    except (UaError, ValueError):
                        pass  # no 40100 model served
                    while not stop.is_set():
                        await browse(c.nodes.objects, 6, stop)
            except Exception:  # noqa: BLE001 - a refused or dropped session: count, reconnect
                counts["errors"] += 1
                await asyncio.sleep(0.2)

    async def run() -> None:
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            for k in range(n_clients):
                tg.create_task(panel(stop), name=f"panel-{k}")
            pipe.send("ready")
            await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
            stop.set()

    asyncio.run(run())
    pipe.send(counts)
