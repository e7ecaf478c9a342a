"""What the audit trail keeps about one part, and what an operator's review adds.

These records are shared by the audit store (which writes and queries them),
the HMI server (which publishes them over OPC UA) and the exports. They are
plain frozen data: everything is already rendered to text and numbers, so a
reader needs nothing from the model or the node to interpret one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

VerdictText = Literal["pass", "reject"]


@dataclass(frozen=True, slots=True)
class Review:
    """An operator's second opinion on one result, stored beside the original decision."""

    result_id: str
    verdict: VerdictText
    defect_type: str | None
    comment: str
    user: str
    wall_time_ns: int


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One part's decision and everything needed to justify it later.

    ``result_id`` is unique across node restarts (``<run_id>-<part_id>``).
    Counts are unwrapped encoder counts. ``wall_time_ns`` is UTC epoch time when
    the result was published. ``reason`` is a ``node.line.judge.Reason`` value;
    ``action`` what the node did ("rejected", "passed", "not_fired");
    ``actuator_confirmed`` is None where the output gives no confirmation.
    ``explanations`` maps a language code ("en", "de", "ja") to the text;
    ``explanation`` is the published English text. ``findings_json`` and
    ``thresholds_json`` are JSON objects (regions with their facts; the recipe
    in force). ``rule`` is the recipe rule the verdict cites ("within limits" for a
    pass, empty for a fail-safe). ``image_path`` is relative to the store's image
    directory.
    """

    result_id: str
    run_id: str
    part_id: int
    origin_count: int
    trigger_count: int
    fire_count: int
    wall_time_ns: int
    verdict: VerdictText
    reason: str
    fail_safe: bool
    defect_type: str | None
    score: float | None
    explanation: str
    explanation_source: str
    explanations: Mapping[str, str]
    location: str | None
    size_mm: float | None
    findings_json: str
    action: str
    actuator_confirmed: bool | None
    latency_ms: float | None
    budget_ms: float | None
    budget_miss: bool
    model_name: str
    model_version: str
    model_sha256: str
    thresholds_json: str
    rule: str = ""
    image_path: str | None = None
    image_sha256: str | None = None
    review: Review | None = None
