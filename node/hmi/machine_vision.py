"""The OPC 40100 (Machine Vision) model: a VisionSystem that mirrors the node.

Built from the official NodeSet2 file, imported at start. One ``VisionSystem``
object (``ns=<lineside>;s=VisionSystem`` under Objects, type VisionSystemType)
with:

- ``VisionStateMachine`` whose ``CurrentState`` (and ``CurrentState.Id``) follow
  the node's :class:`~node.state.VisionState`, and whose
  ``AutomaticModeStateMachine.CurrentState`` shows Initialized / Ready /
  ContinuousExecution while Operational (empty otherwise);
- the methods Halt, Reset, SelectModeAutomatic and, on the automatic-mode
  machine, StartContinuous, Stop and Abort (as Stop);
- ``ResultManagement`` (GetResultById, GetResultListFiltered) and
  ``RecipeManagement`` (GetRecipeListFiltered, PrepareRecipe);
- a ``ResultReadyEventType`` event per part, emitted by the VisionSystem (and,
  for clients that only watch the Server object, by the Server object too).

Optional parts the node does not implement are not instantiated;
mandatory methods it does not implement answer ``BadNotImplemented``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.instantiate_util import instantiate
from asyncua.common.node import Node
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from node.audit.record import AuditRecord
from node.hmi.uahelp import ObjectIds, dv, nid
from node.state import VisionState

log = structlog.get_logger(__name__)

MV_URI = "http://opcfoundation.org/UA/MachineVision"
RESULT_COMPLETED = 1
RESULT_FAILED = 4
"""ResultStateDataType values (40100-1 §12.19): a fail-safe result is Failed."""

Handler = Callable[..., Awaitable[Any]]

_TYPE_IDS = {
    "VisionSystemType": 1003,
    "VisionStateMachineType": 1017,
    "VisionAutomaticModeStateMachineType": 1021,
    "ResultReadyEventType": 1024,
}
"""Numeric ids in the NodeSet's own namespace (stable across the 1.00 NodeSet)."""

_TYPES_OF_PARTS = {
    "VisionStateMachine/AutomaticModeStateMachine": 1021,
    "RecipeManagement": 1004,
    "ResultManagement": 1007,
}
"""Optional components the node implements, instantiated with their mandatory parts
only (VisionAutomaticModeStateMachineType, RecipeManagementType, ResultManagementType).
Other optional components (ConfigurationManagement, SafetyStateManagement,
SystemState, DiagnosticLevel, the step models, AddRecipe, ...) are left out."""

_STATE_NAMES = {
    "VisionStateMachineType": ["Preoperational", "Operational", "Error", "Halted"],
    "VisionAutomaticModeStateMachineType": [
        "Initialized",
        "Ready",
        "SingleExecution",
        "ContinuousExecution",
    ],
}

METHODS = {
    "VisionStateMachine/Halt": "halt",
    "VisionStateMachine/Reset": "reset",
    "VisionStateMachine/SelectModeAutomatic": "select_mode_automatic",
    "VisionStateMachine/AutomaticModeStateMachine/StartContinuous": "start_continuous",
    "VisionStateMachine/AutomaticModeStateMachine/Stop": "stop",
    "VisionStateMachine/AutomaticModeStateMachine/Abort": "abort",
    "ResultManagement/GetResultById": "get_result_by_id",
    "ResultManagement/GetResultListFiltered": "get_result_list_filtered",
    "RecipeManagement/GetRecipeListFiltered": "get_recipe_list_filtered",
    "RecipeManagement/PrepareRecipe": "prepare_recipe",
}
"""Browse path below the VisionSystem → name of the handler in ``node.hmi.methods``."""


_X = ua.VariantType.ExtensionObject
_EVENT_FIELD_TYPES = {
    "ResultId": _X,
    "IsPartial": ua.VariantType.Boolean,
    "ResultState": ua.VariantType.Int32,
    "PartId": _X,
    "InternalRecipeId": _X,
    "InternalConfigurationId": _X,
    "JobId": _X,
    "CreationTime": ua.VariantType.DateTime,
    "ProcessingTimes": _X,
    "ResultContent": ua.VariantType.Variant,
}


def share_event_fields(gen: EventGenerator) -> None:
    """Make ``gen``'s event hand its field values to each subscriber without copying them.

    asyncua deep-copies every selected field for every monitored item, which costs
    about 1 ms per client per event for a ResultReadyEvent and made 50 parts/s
    with 5 clients fall behind on two cores. The copies guard against the values
    being mutated while queued; this server never mutates them — it assigns fresh
    objects to the event for every part (and ``trigger`` does the same for
    EventId, Time, Message) — so sharing them is safe.
    """
    event = gen.event

    def to_event_fields(select_clauses: list[ua.SimpleAttributeOperand]) -> list[ua.Variant]:
        fields = []
        for sattr in select_clauses:
            if not sattr.BrowsePath:
                name = AttributeIds(sattr.AttributeId).name
            else:
                name = event.browse_path_to_attribute_name(sattr.BrowsePath)
            val = getattr(event, name, None)
            fields.append(ua.Variant() if val is None else ua.Variant(val, event.data_types[name]))
        return fields

    event.to_event_fields = to_event_fields


def ua_type(name: str) -> Any:
    """A structure or enum class generated from the NodeSet (after it was loaded)."""
    return getattr(ua, name)


def utc(wall_time_ns: int) -> datetime:
    """UTC datetime of an epoch time in ns."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=wall_time_ns // 1000)


def recipe_of(record: AuditRecord) -> str:
    """The recipe name recorded in ``thresholds_json`` (``name`` or ``recipe``), or ""."""
    try:
        t = json.loads(record.thresholds_json)
    except ValueError:
        return ""
    if isinstance(t, Mapping):
        for key in ("recipe", "name"):
            if isinstance(t.get(key), str):
                return str(t[key])
    return ""


def judged_findings(record: AuditRecord) -> list[dict[str, object]]:
    """Each finding as the recipe judged it (type, zones, millimetres, rule), from the
    record's ``findings_json``; empty for records without them."""
    try:
        judged = json.loads(record.findings_json).get("judged") or []
    except (ValueError, AttributeError):
        return []
    out: list[dict[str, object]] = []
    for j in judged:
        p = j.get("placement") or {}
        out.append(
            {
                "defect_type": j.get("defect_type"),
                "zones": p.get("zones", []),
                "length_mm": p.get("length_mm"),
                "width_mm": p.get("width_mm"),
                "area_mm2": p.get("area_mm2"),
                "x_mm": p.get("x_mm"),
                "y_mm": p.get("y_mm"),
                "rule": j.get("rule"),
                "rejects": j.get("rejects"),
            }
        )
    return out


def result_content(record: AuditRecord) -> list[ua.Variant]:
    """ResultContent: the explanation per language (LocalizedText, English first), then
    one JSON String with the decision (verdict, defect_type, score, location, size_mm,
    reason, rule, findings placed on the part, fail_safe, action, review)."""
    texts = {"en": record.explanation, **dict(record.explanations)}
    content = [ua.Variant(ua.LocalizedText(texts.pop("en"), "en"))]
    content += [ua.Variant(ua.LocalizedText(t, lang)) for lang, t in sorted(texts.items())]
    decision = {
        "result_id": record.result_id,
        "part_id": record.part_id,
        "verdict": record.verdict,
        "defect_type": record.defect_type,
        "score": record.score,
        "location": record.location,
        "size_mm": record.size_mm,
        "reason": record.reason,
        "rule": record.rule,
        "findings": judged_findings(record),
        "fail_safe": record.fail_safe,
        "action": record.action,
        "review": None
        if record.review is None
        else {
            "verdict": record.review.verdict,
            "defect_type": record.review.defect_type,
            "comment": record.review.comment,
            "user": record.review.user,
        },
    }
    content.append(ua.Variant(json.dumps(decision, ensure_ascii=False), ua.VariantType.String))
    return content


def _ids(record: AuditRecord, recipe: str) -> dict[str, Any]:
    created = utc(record.wall_time_ns)
    latency_ms = record.latency_ms or 0.0
    cfg_hash = bytes.fromhex(record.model_sha256) if _is_hex(record.model_sha256) else None
    return {
        "ResultId": ua_type("ResultIdDataType")(Id=record.result_id),
        "IsPartial": False,
        "ResultState": RESULT_FAILED if record.fail_safe else RESULT_COMPLETED,
        "PartId": ua_type("PartIdDataType")(
            Id=str(record.part_id), Description=ua.LocalizedText(record.verdict, "en")
        ),
        "InternalRecipeId": ua_type("RecipeIdInternalDataType")(Id=recipe),
        "InternalConfigurationId": ua_type("ConfigurationIdDataType")(
            Id=record.model_name,
            Version=record.model_version,
            Hash=cfg_hash,
            HashAlgorithm="http://www.w3.org/2001/04/xmlenc#sha256" if cfg_hash else None,
        ),
        "JobId": ua_type("JobIdDataType")(Id=record.run_id),
        "CreationTime": created,
        "ProcessingTimes": ua_type("ProcessingTimesDataType")(
            StartTime=created - timedelta(milliseconds=latency_ms),
            EndTime=created,
            ProcessingDuration=float(latency_ms),
        ),
        "ResultContent": result_content(record),
    }


def _is_hex(s: str) -> bool:
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return len(s) > 0


def result_data(record: AuditRecord, recipe: str | None = None) -> Any:
    """The record as a 40100 ``ResultDataType``."""
    r = ua_type("ResultDataType")()
    for name, value in _ids(record, recipe_of(record) if recipe is None else recipe).items():
        setattr(r, name, value)
    return r


async def import_nodeset(server: Server, path: Path | None) -> int | None:
    """Import the 40100 NodeSet; its namespace index, or None (logged) where it is absent.

    Raises:
        ValueError, OSError, UaError: the file exists but cannot be imported.
    """
    if path is None or not path.is_file():  # noqa: ASYNC240 - one stat at start-up
        log.warning(
            "hmi_nodeset_missing",
            path=None if path is None else str(path),
            effect="serving the plain namespace only, no OPC 40100 VisionSystem",
        )
        return None
    await server.import_xml(str(path))
    ns = await server.get_namespace_index(MV_URI)
    log.info("hmi_nodeset_loaded", path=str(path), namespace=ns)
    return ns


class MachineVisionModel:
    """The VisionSystem instance; build with :meth:`build`."""

    def __init__(self, server: Server, ns: int, idx: int) -> None:
        self._server = server
        self._ns = ns
        self._idx = idx
        self.root: Node | None = None
        self._top_state: Node | None = None
        self._top_id: Node | None = None
        self._auto_state: Node | None = None
        self._auto_id: Node | None = None
        self._state_ids: dict[str, ua.NodeId] = {}
        self._events: list[EventGenerator] = []

    def _qn(self, path: str) -> list[str]:
        return [f"{self._ns}:{p}" for p in path.split("/")]

    async def build(self, handlers: Mapping[str, Handler], not_implemented: Handler) -> None:
        """Instantiate the VisionSystem and link ``handlers`` (by name) to its methods."""
        s, ns = self._server, self._ns
        vst = s.get_node(nid(_TYPE_IDS["VisionSystemType"], ns))
        nodes = await instantiate(
            s.nodes.objects,
            vst,
            nodeid=nid("VisionSystem", self._idx),
            bname=ua.QualifiedName("VisionSystem", self._idx),
            dname=ua.LocalizedText("VisionSystem"),
            instantiate_optional=False,
        )
        root = self.root = nodes[0]
        for path, type_id in _TYPES_OF_PARTS.items():
            *parent_path, name = path.split("/")
            parent = await root.get_child(self._qn("/".join(parent_path))) if parent_path else root
            await instantiate(
                parent,
                s.get_node(nid(type_id, ns)),
                nodeid=nid(f"VisionSystem.{path.replace('/', '.')}", self._idx),
                bname=ua.QualifiedName(name, ns),
                dname=ua.LocalizedText(name),
                instantiate_optional=False,
            )
        # SelectModeAutomatic is optional in VisionStateMachineType: declared like the type's
        vsm_type = s.get_node(nid(_TYPE_IDS["VisionStateMachineType"], ns))
        decl = await vsm_type.get_child(f"{ns}:SelectModeAutomatic")
        outputs = await (await decl.get_child("0:OutputArguments")).read_value()
        vsm = await root.get_child(self._qn("VisionStateMachine"))
        await vsm.add_method(
            nid("VisionSystem.VisionStateMachine.SelectModeAutomatic", self._idx),
            ua.QualifiedName("SelectModeAutomatic", ns),
            handlers["select_mode_automatic"],
            [],
            outputs,
        )

        for tname, names in _STATE_NAMES.items():
            tnode = s.get_node(nid(_TYPE_IDS[tname], ns))
            for name in names:
                self._state_ids[name] = (await tnode.get_child(f"{ns}:{name}")).nodeid
        self._top_state = await root.get_child([*self._qn("VisionStateMachine"), "0:CurrentState"])
        self._top_id = await self._top_state.get_child("0:Id")
        auto = await root.get_child(self._qn("VisionStateMachine/AutomaticModeStateMachine"))
        self._auto_state = await auto.get_child("0:CurrentState")
        self._auto_id = await self._auto_state.get_child("0:Id")

        linked = set()
        for path, name in METHODS.items():
            node = await root.get_child(self._qn(path))
            s.link_method(node, handlers[name])
            linked.add(node.nodeid)
        for node in await _methods_below(root):
            if node.nodeid not in linked:
                s.link_method(node, not_implemented)

        etype = nid(_TYPE_IDS["ResultReadyEventType"], ns)
        self._events = [
            await s.get_event_generator(etype, root.nodeid),
            await s.get_event_generator(etype, ObjectIds.Server),
        ]
        for gen in self._events:
            # the type's properties have no value to take a VariantType from: say it
            gen.event.data_types.update(_EVENT_FIELD_TYPES)
            share_event_fields(gen)
            gen.event.SourceNode = root.nodeid
            gen.event.SourceName = "VisionSystem"
            gen.event.Severity = 100

    async def _child(self, path: str) -> Node | None:
        assert self.root is not None
        try:
            return await self.root.get_child(self._qn(path))
        except UaStatusCodeError:
            return None

    async def mirror(self, state: VisionState) -> None:
        """Write ``state`` into CurrentState of the state machine and its sub-machine."""
        assert self._top_state and self._top_id and self._auto_state and self._auto_id
        w = self._server.write_attribute_value
        top, auto = state.top, state.automatic
        await w(self._top_state.nodeid, dv(ua.Variant(ua.LocalizedText(top, "en"))))
        await w(self._top_id.nodeid, dv(ua.Variant(self._state_ids[top])))
        auto_text = ua.LocalizedText(auto or "", "en")
        auto_id = self._state_ids[auto] if auto else ua.NodeId()
        await w(self._auto_state.nodeid, dv(ua.Variant(auto_text)))
        await w(self._auto_id.nodeid, dv(ua.Variant(auto_id, ua.VariantType.NodeId)))

    async def emit(self, record: AuditRecord, recipe: str) -> None:
        """One ResultReadyEvent for ``record`` (Message: the English explanation)."""
        fields = _ids(record, recipe)
        when = utc(record.wall_time_ns)
        for gen in self._events:
            for name, value in fields.items():
                setattr(gen.event, name, value)
            await gen.trigger(time_attr=when, message=record.explanation)


async def _methods_below(node: Node) -> list[Node]:
    out: list[Node] = []
    for child in await node.get_children():
        if await child.read_node_class() == ua.NodeClass.Method:
            out.append(child)
        else:
            out += await _methods_below(child)
    return out
