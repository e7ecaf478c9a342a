"""What a lineside edge node publishes: its metrics, their names and types.

The node (NBIRTH) carries ``bdSeq``, ``Node Control/Rebirth`` and who it is; the device —
the inspection station, ``north.device_id`` — carries every part's result (DDATA, one per
part), the running counters, the node's state and the model and recipe that judge. Names
use ``/`` as folders, as Sparkplug hosts show them. docs/north.md has the table;
:data:`DEVICE_METRICS` is its source of truth (a test checks the two agree).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass

from node.audit.record import AuditRecord
from node.north.sparkplug import (
    BD_SEQ,
    REBIRTH,
    RESEND_FROM,
    RESEND_UNTIL,
    DataType,
    Metric,
    Value,
)

LANGUAGES = ("en", "de", "ja")

PART_ID = "Result/Part ID"
RESULT_ID = "Result/Result ID"
RECORD_SEQ = "Result/Record Seq"
NEWEST_SEQ = "Result/Newest Seq"
TIME = "Result/Time"
VERDICT = "Result/Verdict"
REASON = "Result/Reason"
FAIL_SAFE = "Result/Fail Safe"
DEFECT_TYPE = "Result/Defect Type"
SENTENCE = "Result/Sentence/"
"""Followed by a language code: ``Result/Sentence/en``, ``/de``, ``/ja``."""
RULE = "Result/Rule"
SCORE = "Result/Score"
LATENCY_MS = "Result/Latency ms"
BUDGET_MS = "Result/Budget ms"
BUDGET_USED = "Result/Budget Used"
BUDGET_MISS = "Result/Budget Miss"
ACTION = "Result/Action"
RESULT_MODEL_SHA256 = "Result/Model SHA256"
INSPECTED = "Counters/Inspected"
REJECTED = "Counters/Rejected"
FAIL_SAFES = "Counters/Fail Safe"
BUDGET_MISSES = "Counters/Budget Misses"
SKIPPED = "Counters/North Skipped"
STATE = "Node/State"
STATE_DETAIL = "Node/State Detail"
MODEL_NAME = "Model/Name"
MODEL_VERSION = "Model/Version"
MODEL_SHA256 = "Model/SHA256"
RECIPE_NAME = "Recipe/Name"
RECIPE_SHA256 = "Recipe/SHA256"
NODE_NAME = "Properties/Node Name"
SOFTWARE = "Properties/Software"
DEPLOY = "Model Control/Deploy"
PROMOTE = "Model Control/Promote"
COMMAND_ID = "Command/ID"
COMMAND_KIND = "Command/Kind"
COMMAND_STATUS = "Command/Status"
COMMAND_REASON = "Command/Reason"
COMMAND_SHA256 = "Command/Package SHA256"
SHADOW_SHA256 = "Shadow/Package SHA256"
SHADOW_JUDGED = "Shadow/Judged"
SHADOW_AGREE = "Shadow/Agree"
SHADOW_ACTIVE_ONLY = "Shadow/Active Only"
SHADOW_CANDIDATE_ONLY = "Shadow/Candidate Only"
SHADOW_TYPE_DIFFERS = "Shadow/Type Differs"
SHADOW_SKIPPED = "Shadow/Skipped"
SHADOW_ERRORS = "Shadow/Errors"
COLLECT_URL = "Properties/Collect URL"
REVIEW_SEQ = "Review/Seq"
REVIEW_RESULT_ID = "Review/Result ID"
REVIEW_VERDICT = "Review/Verdict"
REVIEW_DEFECT_TYPE = "Review/Defect Type"
REVIEW_LABEL = "Review/Label"
REVIEW_USER = "Review/User"
REVIEW_TIME = "Review/Time"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One published metric: its name, datatype, and what it says."""

    name: str
    datatype: DataType
    meaning: str


RESULT_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(PART_ID, DataType.UINT64, "the part's id in its run of the node"),
    MetricInfo(RESULT_ID, DataType.STRING, "unique across restarts: <run id>-<part id>"),
    MetricInfo(RECORD_SEQ, DataType.UINT64, "the result's place in the audit store (gap-free)"),
    MetricInfo(TIME, DataType.DATETIME, "when the result was published (UTC)"),
    MetricInfo(VERDICT, DataType.STRING, "pass or reject"),
    MetricInfo(REASON, DataType.STRING, "why: the judge's reason, or the fail-safe's"),
    MetricInfo(FAIL_SAFE, DataType.BOOLEAN, "rejected because it could not be judged"),
    MetricInfo(DEFECT_TYPE, DataType.STRING, "scratch, crack, ...; null for none"),
    *(
        MetricInfo(SENTENCE + lang, DataType.STRING, f"the explanation in {lang}")
        for lang in LANGUAGES
    ),
    MetricInfo(RULE, DataType.STRING, "the recipe rule the verdict cites"),
    MetricInfo(SCORE, DataType.DOUBLE, "the model's anomaly score; null without one"),
    MetricInfo(LATENCY_MS, DataType.DOUBLE, "camera trigger to verdict, ms"),
    MetricInfo(BUDGET_MS, DataType.DOUBLE, "the part's cycle budget, ms"),
    MetricInfo(BUDGET_USED, DataType.DOUBLE, "latency / budget (1.0: all of it)"),
    MetricInfo(BUDGET_MISS, DataType.BOOLEAN, "no verdict by the deadline"),
    MetricInfo(ACTION, DataType.STRING, "passed, rejected or not_fired"),
    MetricInfo(RESULT_MODEL_SHA256, DataType.STRING, "the model that judged this part"),
)
"""The metrics of one part's result (each DDATA carries them all, and the counters)."""

COUNTER_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(INSPECTED, DataType.UINT64, "results forwarded since the edge node started"),
    MetricInfo(REJECTED, DataType.UINT64, "of those, rejects"),
    MetricInfo(FAIL_SAFES, DataType.UINT64, "of those, fail-safe rejects"),
    MetricInfo(BUDGET_MISSES, DataType.UINT64, "of those, parts with no verdict by the deadline"),
    MetricInfo(SKIPPED, DataType.UINT64, "results never forwarded: the backlog overflowed"),
)

PROGRESS_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(
        NEWEST_SEQ,
        DataType.UINT64,
        "the newest result sent; alone in a DDATA once the line goes quiet",
    ),
)
"""How far the node has sent: a host that lacks the results up to it asks for them."""

STATUS_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(STATE, DataType.STRING, "the OPC 40100 state: Continuous, Error, ..."),
    MetricInfo(STATE_DETAIL, DataType.STRING, "why the node is in its state"),
    MetricInfo(MODEL_NAME, DataType.STRING, "the runtime and model package judging"),
    MetricInfo(MODEL_VERSION, DataType.STRING, "the package's creation time"),
    MetricInfo(MODEL_SHA256, DataType.STRING, "SHA-256 of the package's manifest"),
    MetricInfo(RECIPE_NAME, DataType.STRING, "inspection.recipe.name"),
    MetricInfo(RECIPE_SHA256, DataType.STRING, "SHA-256 of the recipe in force"),
)

COMMAND_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(COMMAND_ID, DataType.STRING, "the id of the last fleet command answered"),
    MetricInfo(COMMAND_KIND, DataType.STRING, "deploy or promote"),
    MetricInfo(COMMAND_STATUS, DataType.STRING, "received, accepted, refused or promoted"),
    MetricInfo(COMMAND_REASON, DataType.STRING, "why, in one line"),
    MetricInfo(COMMAND_SHA256, DataType.STRING, "the package the command names"),
)
"""The node's answer to a fleet command (``node.north.commands``)."""

SHADOW_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(SHADOW_SHA256, DataType.STRING, "the shadow candidate running; null for none"),
    MetricInfo(SHADOW_JUDGED, DataType.UINT64, "parts it judged beside the active model"),
    MetricInfo(SHADOW_AGREE, DataType.UINT64, "of those, the same pass/reject"),
    MetricInfo(SHADOW_ACTIVE_ONLY, DataType.UINT64, "rejected by the active model only"),
    MetricInfo(SHADOW_CANDIDATE_ONLY, DataType.UINT64, "rejected by the candidate only"),
    MetricInfo(SHADOW_TYPE_DIFFERS, DataType.UINT64, "rejected by both, other defect types"),
    MetricInfo(SHADOW_SKIPPED, DataType.UINT64, "parts offered while its queue was full"),
    MetricInfo(SHADOW_ERRORS, DataType.UINT64, "parts it could not judge"),
)
"""The shadow candidate's figures since it started (``node.shadow.ShadowCounts``)."""

REVIEW_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(REVIEW_SEQ, DataType.UINT64, "the review's place among the store's reviews"),
    MetricInfo(REVIEW_RESULT_ID, DataType.STRING, "the result reviewed (its Result ID)"),
    MetricInfo(REVIEW_VERDICT, DataType.STRING, "the reviewer's verdict: pass or reject"),
    MetricInfo(REVIEW_DEFECT_TYPE, DataType.STRING, "the reviewer's defect type; null for none"),
    MetricInfo(REVIEW_LABEL, DataType.STRING, "its data set folder: train/good, test/<type>"),
    MetricInfo(REVIEW_USER, DataType.STRING, "who reviewed"),
    MetricInfo(REVIEW_TIME, DataType.DATETIME, "when the review was stored (UTC)"),
)
"""One operator review, announced so a host can fetch the image (node.north.reviews)."""

DEVICE_METRICS = (
    RESULT_METRICS
    + COUNTER_METRICS
    + STATUS_METRICS
    + PROGRESS_METRICS
    + COMMAND_METRICS
    + SHADOW_METRICS
    + REVIEW_METRICS
)
"""Every device metric, as DBIRTH announces them."""

NODE_METRICS: tuple[MetricInfo, ...] = (
    MetricInfo(BD_SEQ, DataType.INT64, "this MQTT session's birth/death number (0..255)"),
    MetricInfo(REBIRTH, DataType.BOOLEAN, "write true in an NCMD: the node births again"),
    MetricInfo(
        RESEND_FROM,
        DataType.UINT64,
        "write a Result/Record Seq in an NCMD: the node sends the results from there again",
    ),
    MetricInfo(
        RESEND_UNTIL,
        DataType.UINT64,
        "beside Resend From: the last result to send again (0: up to the newest sent)",
    ),
    MetricInfo(NODE_NAME, DataType.STRING, "node.name"),
    MetricInfo(SOFTWARE, DataType.STRING, "lineside and its version"),
    MetricInfo(DEPLOY, DataType.STRING, "a host writes a signed package reference in an NCMD"),
    MetricInfo(PROMOTE, DataType.STRING, "a host writes a signed promotion in an NCMD"),
    MetricInfo(COLLECT_URL, DataType.STRING, "where reviewed images are fetched; null: nowhere"),
)

_TYPES = {m.name: m.datatype for m in (*DEVICE_METRICS, *NODE_METRICS)}


def metric(name: str, value: Value, timestamp_ms: int, *, historical: bool = False) -> Metric:
    """The metric ``name`` (one of this module's) with its datatype."""
    return Metric(name, _TYPES[name], value, timestamp_ms, is_historical=historical)


@dataclass
class Counters:
    """Running counts of the results an edge node forwarded (and skipped)."""

    inspected: int = 0
    rejected: int = 0
    fail_safe: int = 0
    budget_misses: int = 0
    skipped: int = 0

    def count(self, record: AuditRecord) -> None:
        """Add one forwarded result."""
        self.inspected += 1
        self.rejected += record.verdict == "reject"
        self.fail_safe += record.fail_safe
        self.budget_misses += record.budget_miss

    def metrics(self, timestamp_ms: int) -> list[Metric]:
        """The counters as metrics."""
        values = (self.inspected, self.rejected, self.fail_safe, self.budget_misses, self.skipped)
        return [
            metric(m.name, v, timestamp_ms) for m, v in zip(COUNTER_METRICS, values, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Identity:
    """What judges: the model and the recipe, as the births announce them."""

    model_name: str
    model_version: str
    model_sha256: str
    recipe_name: str
    recipe_sha256: str


def recipe_sha256(recipe_json: str) -> str:
    """The hash of a recipe's canonical JSON."""
    return hashlib.sha256(recipe_json.encode("utf-8")).hexdigest()


def result_metrics(seq: int, record: AuditRecord, *, historical: bool = False) -> list[Metric]:
    """One result's metrics; ``seq`` is its audit store insertion number. ``historical``:
    sent late (it waited for the broker), so hosts do not take it as the live value."""
    t = record.wall_time_ns // 1_000_000
    used = (
        record.latency_ms / record.budget_ms
        if record.latency_ms is not None and record.budget_ms
        else None
    )
    values: list[tuple[str, Value]] = [
        (PART_ID, record.part_id),
        (RESULT_ID, record.result_id),
        (RECORD_SEQ, seq),
        (TIME, t),
        (VERDICT, record.verdict),
        (REASON, record.reason),
        (FAIL_SAFE, record.fail_safe),
        (DEFECT_TYPE, record.defect_type),
        *(
            (
                SENTENCE + lang,
                record.explanations.get(lang) or (record.explanation if lang == "en" else None),
            )
            for lang in LANGUAGES
        ),
        (RULE, record.rule),
        (SCORE, record.score),
        (LATENCY_MS, record.latency_ms),
        (BUDGET_MS, record.budget_ms),
        (BUDGET_USED, None if used is None else round(used, 4)),
        (BUDGET_MISS, record.budget_miss),
        (ACTION, record.action),
        (RESULT_MODEL_SHA256, record.model_sha256),
    ]
    return [metric(name, v, t, historical=historical) for name, v in values]


def null_result_metrics(timestamp_ms: int) -> list[Metric]:
    """The result metrics with no value: a birth before the first result."""
    return [metric(m.name, None, timestamp_ms) for m in RESULT_METRICS]


def status_metrics(state: str, detail: str, identity: Identity, timestamp_ms: int) -> list[Metric]:
    """The node's state and what judges."""
    values: Iterable[tuple[str, Value]] = (
        (STATE, state),
        (STATE_DETAIL, detail),
        (MODEL_NAME, identity.model_name),
        (MODEL_VERSION, identity.model_version),
        (MODEL_SHA256, identity.model_sha256),
        (RECIPE_NAME, identity.recipe_name),
        (RECIPE_SHA256, identity.recipe_sha256),
    )
    return [metric(name, v, timestamp_ms) for name, v in values]


def software() -> str:
    """``lineside <version>`` (just ``lineside`` where it is not installed as a package)."""
    try:
        return f"lineside {importlib.metadata.version('lineside')}"
    except importlib.metadata.PackageNotFoundError:
        return "lineside"


def node_metrics(
    bd_seq: int, node_name: str, timestamp_ms: int, *, collect_url: str | None = None
) -> list[Metric]:
    """The NBIRTH's metrics: this session's bdSeq, the rebirth control, who the node is,
    and where its reviewed images are fetched (``north.collect_url``)."""
    return [
        metric(BD_SEQ, bd_seq, timestamp_ms),
        metric(REBIRTH, False, timestamp_ms),
        metric(RESEND_FROM, 0, timestamp_ms),
        metric(RESEND_UNTIL, 0, timestamp_ms),
        metric(NODE_NAME, node_name, timestamp_ms),
        metric(SOFTWARE, software(), timestamp_ms),
        metric(DEPLOY, None, timestamp_ms),
        metric(PROMOTE, None, timestamp_ms),
        metric(COLLECT_URL, collect_url, timestamp_ms),
    ]


def command_metrics(answer: dict[str, Value] | None, timestamp_ms: int) -> list[Metric]:
    """A fleet command's answer (keys: the ``COMMAND_METRICS`` names); nulls for none."""
    got = answer or {}
    return [metric(m.name, got.get(m.name), timestamp_ms) for m in COMMAND_METRICS]


def shadow_metrics(
    sha256: str | None, counts: dict[str, int] | None, timestamp_ms: int
) -> list[Metric]:
    """The shadow candidate's figures (``counts``: ``ShadowCounts`` as a dict); nulls
    when none runs."""
    got = counts or {}
    keys = ("judged", "agree", "active_only", "candidate_only", "type_differs", "skipped")
    values: list[Value] = [sha256, *(got.get(k) for k in (*keys, "errors"))]
    return [metric(m.name, v, timestamp_ms) for m, v in zip(SHADOW_METRICS, values, strict=True)]
