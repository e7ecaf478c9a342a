"""The running node serves its results, state and methods to an OPC UA panel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from hil.line import Collector, build_components, ensure_template, sim_config
from hil.plc_modbus import free_port
from node.__main__ import main
from node.app import Node
from node.audit.images import file_stem
from node.audit.reader import AuditReader
from node.config import Config
from node.hmi import hash_password
from node.line.results import PartResult

NODESET = Path(__file__).resolve().parents[2] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"
MV = "http://opcfoundation.org/UA/MachineVision"
OPERATOR = ("olga", "orange-7")
ENGINEER = ("emil", "emerald-9")


_progress = asyncio.Event()
"""Set whenever a part is published or an event arrives."""


class _Events:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def event_notification(self, event: Any) -> None:
        self.events.append(event)
        _progress.set()


def _int32(v: int) -> ua.Variant:
    return ua.Variant(v, ua.VariantType.Int32)


async def _state(vs: Any, ns: int) -> str:
    top = await vs.get_child([f"{ns}:VisionStateMachine", "0:CurrentState"])
    return str((await top.read_value()).Text)


async def _until(pred: Any, within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not pred():
            _progress.clear()
            await _progress.wait()


async def test_panel_sees_every_part_and_halt_makes_parts_fail_safe(
    taught_config: Config, tmp_path: Path
) -> None:
    """A client gets one ResultReadyEvent per published part and the node's state; an
    operator's Halt makes the node reject every part as ``not_inspecting`` (never pass
    one); Reset and an engineer's StartContinuous resume inspection; anonymous Halt is
    refused (the panel uses the unsigned endpoint, allowed by the commissioning key). An
    operator's ReviewResult of a rejected part lands in the audit store, and
    ``lineside audit dataset`` puts that part's image where the review says."""
    port = free_port()
    cfg = sim_config(
        taught_config,
        node={"state_dir": tmp_path},
        sim={"defect_rate": 0.2, "seed": 31, "speed_mm_s": 320.0},
        hmi={
            "enabled": True,
            "endpoint": f"opc.tcp://127.0.0.1:{port}/lineside/",
            "nodeset": NODESET,
            "allow_insecure_writes": True,
            "users": [
                {
                    "name": OPERATOR[0],
                    "role": "operator",
                    "password_hash": hash_password(OPERATOR[1]),
                },
                {
                    "name": ENGINEER[0],
                    "role": "engineer",
                    "password_hash": hash_password(ENGINEER[1]),
                },
            ],
        },
    )
    ensure_template(cfg)
    components, _ = build_components(cfg)
    stop = asyncio.Event()
    results: list[PartResult] = []

    def on_result(result: PartResult) -> None:
        results.append(result)
        _progress.set()

    collector = Collector(10_000, stop, on_result=on_result)
    node = Node(cfg, components, sinks=[collector])

    async def panel() -> None:
        await node.ready.wait()
        url = f"opc.tcp://127.0.0.1:{port}/lineside/"
        async with Client(url, timeout=5) as anon:
            ns = await anon.get_namespace_index(MV)
            vs = await anon.nodes.objects.get_child("2:VisionSystem")
            handler = _Events()
            sub = await anon.create_subscription(20, handler)
            await sub.subscribe_events(vs, ua.NodeId(1024, ns), queuesize=1000)
            await _until(lambda: len(results) >= 10)
            assert await _state(vs, ns) == "Operational"
            sm = await vs.get_child(f"{ns}:VisionStateMachine")
            try:
                await sm.call_method(f"{ns}:Halt", _int32(0), "anonymous")
                raise AssertionError("an anonymous Halt must be refused")
            except ua.uaerrors.BadUserAccessDenied:
                pass
            op = Client(url, timeout=5)
            op.set_user(OPERATOR[0])
            op.set_password(OPERATOR[1])
            async with op:
                osm = await (await op.nodes.objects.get_child("2:VisionSystem")).get_child(
                    f"{ns}:VisionStateMachine"
                )
                await osm.call_method(f"{ns}:Halt", _int32(0), "jam at the feeder")
                first_halted = node.tracker.next_part_id  # created after the halt
                await _until(lambda: any(r.part_id >= first_halted + 6 for r in results))
                assert await _state(vs, ns) == "Halted"
                await osm.call_method(f"{ns}:Reset", _int32(0), "cleared")
            eng = Client(url, timeout=5)
            eng.set_user(ENGINEER[0])
            eng.set_password(ENGINEER[1])
            async with eng:
                await eng.load_data_type_definitions()
                auto = await (await eng.nodes.objects.get_child("2:VisionSystem")).get_child(
                    [f"{ns}:VisionStateMachine", f"{ns}:AutomaticModeStateMachine"]
                )
                await auto.call_method(
                    f"{ns}:StartContinuous",
                    ua.MeasIdDataType(Id=""),
                    ua.PartIdDataType(Id=""),
                    # a client in another process cannot build RecipeIdExternalDataType from
                    # the 40100 dictionary (asyncua); empty: keep the recipe in force
                    ua.Variant(),
                    ua.ProductIdDataType(Id=""),
                    ua.Variant([], ua.VariantType.Variant),
                )
            first_resumed = node.tracker.next_part_id
            await _until(lambda: any(r.part_id >= first_resumed + 6 for r in results))
            op = Client(url, timeout=5)
            op.set_user(OPERATOR[0])
            op.set_password(OPERATOR[1])
            async with op:
                # an operator overrules a judged reject: it was a good part
                judged = next(r for r in results if r.verdict.reason.value == "defect")
                assert node.recorder is not None
                reviewed["id"] = f"{node.recorder.run_id}-{judged.part_id}"
                lin = await op.nodes.objects.get_child("2:Lineside")
                await lin.call_method("2:ReviewResult", reviewed["id"], "pass", "", "false alarm")
            published = len(results)
            await _until(lambda: len(handler.events) >= published)
            stop.set()
            # an event for every part published so far, and none that is not a part
            assert published <= len(handler.events) <= len(results)
            # every part created after the halt reached the camera before the reset
            halted = [r for r in results if first_halted <= r.part_id <= first_halted + 6]
            assert len(halted) == 7
            assert all(r.verdict.reason.value == "not_inspecting" for r in halted), [
                (r.part_id, r.verdict.reason.value) for r in halted
            ]
            assert all(r.action == "rejected" for r in halted)
            resumed = [r for r in results if r.part_id >= first_resumed]
            # inspected again (a busy machine may still reject one as trigger_late)
            reasons = [r.verdict.reason.value for r in resumed]
            assert set(reasons) <= {"ok", "defect", "trigger_late"}, reasons
            assert sum(x in ("ok", "defect") for x in reasons) >= 4, reasons

    reviewed: dict[str, str] = {}

    async with asyncio.TaskGroup() as tg:
        tg.create_task(panel())
        await node.run(stop)

    out = tmp_path / "dataset"
    with pytest.raises(SystemExit) as done:
        main(["audit", "dataset", "--store", str(cfg.audit_directory), "--out", str(out)])
    assert done.value.code == 0
    good = sorted(out.rglob("train/good/*.png"))
    assert [p.stem for p in good] == [file_stem(reviewed["id"])]
    with AuditReader(cfg.audit_directory) as reader:
        rec = reader.get(reviewed["id"])
    assert rec is not None and rec.verdict == "reject"  # the original decision stays
    assert rec.review is not None and rec.review.verdict == "pass"
    assert rec.review.user == OPERATOR[0] and rec.review.comment == "false alarm"
