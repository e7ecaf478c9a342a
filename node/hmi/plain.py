"""The plain namespace: simple variables for panels that cannot read structures.

Namespace ``urn:lineside:hmi``; every node id is a string ``Lineside.<path>``
(e.g. ``ns=2;s=Lineside.LastResult.Verdict``), every BrowseName is in that
namespace. See docs/hmi.md for the full list.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.event_generator import EventGenerator
from asyncua.server.server import Server

from node.audit.record import AuditRecord
from node.hmi.machine_vision import Handler, share_event_fields, utc
from node.hmi.uahelp import ObjectIds, dv, nid
from node.state import VisionState

NAMESPACE = "urn:lineside:hmi"
V = ua.VariantType

LAST_RESULT: dict[str, tuple[V, Any]] = {
    "ResultId": (V.String, ""),
    "PartId": (V.Int64, 0),
    "Verdict": (V.String, ""),
    "DefectType": (V.String, ""),
    "Confidence": (V.Double, 0.0),
    "Explanation": (V.LocalizedText, ua.LocalizedText("", "en")),
    "ExplanationDe": (V.LocalizedText, ua.LocalizedText("", "de")),
    "ExplanationJa": (V.LocalizedText, ua.LocalizedText("", "ja")),
    "Location": (V.String, ""),
    "SizeMm": (V.Double, 0.0),
    "Timestamp": (V.DateTime, datetime(1970, 1, 1, tzinfo=UTC)),
    "Thumbnail": (V.ByteString, b""),
    "Reason": (V.String, ""),
    "Rule": (V.String, ""),
    "FailSafe": (V.Boolean, False),
    "Action": (V.String, ""),
    "LatencyMs": (V.Double, 0.0),
    "BudgetUsed": (V.Double, 0.0),
}
COUNTERS: dict[str, tuple[V, Any]] = {
    "Inspected": (V.UInt64, 0),
    "Rejected": (V.UInt64, 0),
    "FailSafe": (V.UInt64, 0),
    "BudgetMisses": (V.UInt64, 0),
}
STATS: dict[str, tuple[V, Any]] = {
    "LatencyP50Ms": (V.Double, 0.0),
    "LatencyP99Ms": (V.Double, 0.0),
    "LatencyMaxMs": (V.Double, 0.0),
    "BudgetUsedP50": (V.Double, 0.0),
    "BudgetUsedP99": (V.Double, 0.0),
    "PartsPerS": (V.Double, 0.0),
}
SHADOW: dict[str, tuple[V, Any]] = {
    "PackageSha256": (V.String, ""),
    "Judged": (V.UInt64, 0),
    "Agree": (V.UInt64, 0),
    "ActiveOnly": (V.UInt64, 0),
    "CandidateOnly": (V.UInt64, 0),
    "TypeDiffers": (V.UInt64, 0),
    "Skipped": (V.UInt64, 0),
}
"""A shadow candidate's figures (``node.shadow``); empty and 0 while none runs."""
REPEATS: dict[str, tuple[V, Any]] = {
    "Active": (V.UInt32, 0),
    "Kind": (V.String, ""),
    "Text": (V.LocalizedText, ua.LocalizedText("", "en")),
    "TextDe": (V.LocalizedText, ua.LocalizedText("", "de")),
    "TextJa": (V.LocalizedText, ua.LocalizedText("", "ja")),
}
"""Repeating defects: how many go on now, and the latest raised or cleared, in words."""
HEALTH: dict[str, tuple[V, Any]] = {
    "Camera": (V.String, "unknown"),
    "Plc": (V.String, "unknown"),
    "Model": (V.String, "unknown"),
    "Audit": (V.String, "unknown"),
    "State": (V.String, VisionState.PREOPERATIONAL.value),
    "StateDetail": (V.String, ""),
}

_ARG = ua.Argument


def _arg(name: str, vtype: V, text: str) -> ua.Argument:
    a = _ARG()
    a.Name = name
    a.DataType = nid(vtype.value)
    a.ValueRank = -1
    a.Description = ua.LocalizedText(text, "en")
    return a


REVIEW_INPUTS = [
    _arg("resultId", V.String, "ResultId of the part (LastResult.ResultId)"),
    _arg("verdict", V.String, "the operator's verdict: pass or reject"),
    _arg("defectType", V.String, "defect type, empty for none"),
    _arg("comment", V.String, "free text"),
]
REVIEW_OUTPUTS = [_arg("reviewTime", V.DateTime, "when the review was stored (UTC)")]


def repeat_notices(record: AuditRecord) -> list[dict[str, object]]:
    """The repeating defects raised or cleared with ``record`` (from its findings_json)."""
    try:
        notices = json.loads(record.findings_json).get("repeats") or []
    except (ValueError, AttributeError):
        return []
    return [n for n in notices if isinstance(n, dict)]


def _f(x: object) -> float:
    return float(x) if isinstance(x, int | float) else 0.0


_COUNTER_KEYS = {
    "inspected": "Inspected",
    "rejected": "Rejected",
    "fail_safe": "FailSafe",
    "budget_misses": "BudgetMisses",
}
_SHADOW_KEYS = {
    "judged": "Judged",
    "agree": "Agree",
    "active_only": "ActiveOnly",
    "candidate_only": "CandidateOnly",
    "type_differs": "TypeDiffers",
    "skipped": "Skipped",
}


def _counts(source: Mapping[str, object], group: str, names: Mapping[str, str]) -> dict[str, int]:
    """``{"<group>.<Name>": n}`` for each of ``names``' keys that ``source`` holds as an int."""
    return {
        f"{group}.{name}": value
        for key, name in names.items()
        if isinstance(value := source.get(key), int)
    }


class PlainNamespace:
    """Builds the ``Lineside`` object tree and writes its values."""

    def __init__(self, server: Server, idx: int) -> None:
        self._server = server
        self._idx = idx
        self.root: Node | None = None
        self._ids: dict[str, ua.NodeId] = {}
        self._types: dict[str, V] = {}
        self._values: dict[str, Any] = {}
        self._folders: dict[str, Node] = {}
        self._event: EventGenerator | None = None
        self._repeating: set[int] = set()

    def nodeid(self, path: str) -> ua.NodeId:
        """Node id of ``path`` like ``LastResult.Verdict``."""
        return nid(f"Lineside.{path}", self._idx)

    async def build(self, review: Handler) -> None:
        """Create the tree; ``review`` handles ``Lineside.ReviewResult``."""
        idx = self._idx
        root = self.root = await self._server.nodes.objects.add_object(
            nid("Lineside", idx), ua.QualifiedName("Lineside", idx)
        )
        for group, spec in (
            ("LastResult", LAST_RESULT),
            ("Counters", COUNTERS),
            ("Stats", STATS),
            ("Health", HEALTH),
            ("Shadow", SHADOW),
            ("Repeats", REPEATS),
        ):
            obj = await root.add_object(self.nodeid(group), ua.QualifiedName(group, idx))
            self._folders[group] = obj
            for name, (vtype, default) in spec.items():
                await self._add(obj, f"{group}.{name}", name, vtype, default)
        for group in ("ByDefectType", "FailSafeByReason"):
            self._folders[group] = await self._folders["Counters"].add_object(
                self.nodeid(f"Counters.{group}"), ua.QualifiedName(group, idx)
            )
        await root.add_method(
            self.nodeid("ReviewResult"),
            ua.QualifiedName("ReviewResult", idx),
            review,
            REVIEW_INPUTS,
            REVIEW_OUTPUTS,
        )
        self._event = await self._server.get_event_generator(ObjectIds.BaseEventType, root.nodeid)
        self._event.event.Severity = 100
        share_event_fields(self._event)

    async def _add(self, parent: Node, path: str, name: str, vtype: V, value: Any) -> None:
        node = await parent.add_variable(
            self.nodeid(path), ua.QualifiedName(name, self._idx), ua.Variant(value, vtype)
        )
        self._ids[path] = node.nodeid
        self._types[path] = vtype
        self._values[path] = value

    async def _write(self, values: Mapping[str, Any], ts: datetime) -> None:
        for path, value in values.items():
            if path not in self._ids:
                continue
            if self._values.get(path) == value and not path.startswith("LastResult."):
                continue  # counters and stats: publish changes only
            self._values[path] = value
            value_dv = dv(ua.Variant(value, self._types[path]), ts)
            await self._server.write_attribute_value(self._ids[path], value_dv)

    async def _ensure_counter(self, group: str, name: str) -> str:
        path = f"Counters.{group}.{name}"
        if path not in self._ids:
            await self._add(self._folders[group], path, name, V.UInt64, 0)
        return path

    async def write_result(
        self,
        record: AuditRecord,
        thumbnail_png: bytes | None,
        stats: Mapping[str, object],
    ) -> None:
        """Publish one part: LastResult, then Counters and Stats from ``stats``.

        ``stats`` is ``node.line.results.Stats.snapshot()``; missing keys leave values as they are.
        """
        ts = utc(record.wall_time_ns)
        ex = record.explanations
        lr = {
            "ResultId": record.result_id,
            "PartId": record.part_id,
            "Verdict": record.verdict,
            "DefectType": record.defect_type or "",
            "Confidence": record.score if record.score is not None else 0.0,
            "Explanation": ua.LocalizedText(ex.get("en", record.explanation), "en"),
            "ExplanationDe": ua.LocalizedText(ex.get("de", ""), "de"),
            "ExplanationJa": ua.LocalizedText(ex.get("ja", ""), "ja"),
            "Location": record.location or "",
            "SizeMm": record.size_mm if record.size_mm is not None else 0.0,
            "Timestamp": ts,
            "Thumbnail": thumbnail_png or b"",
            "Reason": record.reason,
            "Rule": record.rule,
            "FailSafe": record.fail_safe,
            "Action": record.action,
            "LatencyMs": record.latency_ms or 0.0,
            "BudgetUsed": (record.latency_ms or 0.0) / record.budget_ms
            if record.budget_ms
            else 0.0,
        }
        values: dict[str, Any] = {f"LastResult.{k}": v for k, v in lr.items()}
        values |= _counts(stats, "Counters", _COUNTER_KEYS)
        for key, group in (
            ("defects_by_type", "ByDefectType"),
            ("fail_safe_by_reason", "FailSafeByReason"),
        ):
            by = stats.get(key)
            if isinstance(by, Mapping):
                for name, n in by.items():
                    values[await self._ensure_counter(group, str(name))] = int(n)
        lat, bud = stats.get("latency_ms"), stats.get("budget_used")
        if isinstance(lat, Mapping):
            values["Stats.LatencyP50Ms"] = _f(lat.get("p50"))
            values["Stats.LatencyP99Ms"] = _f(lat.get("p99"))
            values["Stats.LatencyMaxMs"] = _f(lat.get("max"))
        if isinstance(bud, Mapping):
            values["Stats.BudgetUsedP50"] = _f(bud.get("p50"))
            values["Stats.BudgetUsedP99"] = _f(bud.get("p99"))
        if "parts_per_s" in stats:
            values["Stats.PartsPerS"] = _f(stats["parts_per_s"])
        shadow = stats.get("shadow")
        if isinstance(shadow, Mapping):
            values["Shadow.PackageSha256"] = str(shadow.get("package_sha256", ""))
            values |= _counts(shadow, "Shadow", _SHADOW_KEYS)
        await self._write(values, ts)

    async def emit(self, record: AuditRecord) -> None:
        """A BaseEventType event from ``Lineside``: Message is the English explanation,
        SourceName ``Lineside``; for clients that do not know OPC 40100."""
        assert self._event is not None
        await self._event.trigger(time_attr=utc(record.wall_time_ns), message=record.explanation)

    async def emit_repeats(self, record: AuditRecord) -> None:
        """For each repeating defect raised or cleared with ``record``: Repeats.* and an
        event from ``Lineside`` whose Message is the English sentence (Severity 700 raised,
        300 cleared)."""
        assert self._event is not None
        for n in repeat_notices(record):
            key, kind = n.get("key"), str(n.get("kind", ""))
            texts = n.get("texts") if isinstance(n.get("texts"), dict) else {}
            assert isinstance(texts, dict)
            if isinstance(key, int):
                (self._repeating.add if kind == "raised" else self._repeating.discard)(key)
            ts = utc(record.wall_time_ns)
            await self._write(
                {
                    "Repeats.Active": len(self._repeating),
                    "Repeats.Kind": kind,
                    "Repeats.Text": ua.LocalizedText(str(texts.get("en", "")), "en"),
                    "Repeats.TextDe": ua.LocalizedText(str(texts.get("de", "")), "de"),
                    "Repeats.TextJa": ua.LocalizedText(str(texts.get("ja", "")), "ja"),
                },
                ts,
            )
            self._event.event.Severity = 700 if kind == "raised" else 300
            try:
                await self._event.trigger(time_attr=ts, message=str(texts.get("en", "")))
            finally:
                self._event.event.Severity = 100

    async def write_health(self, values: Mapping[str, str]) -> None:
        """Health.<Camera|Plc|Model|State|StateDetail>."""
        await self._write({f"Health.{k}": v for k, v in values.items()}, datetime.now(UTC))
