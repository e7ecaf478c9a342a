"""What the node publishes per part, the sinks that receive it, and running stats."""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from node.line.judge import Verdict
from node.line.repeat_notices import RepeatNotice

Action = Literal["rejected", "passed", "not_fired"]


@dataclass(frozen=True, slots=True)
class PartResult:
    """One part's complete result, published once its action is taken.

    ``latency_ms`` runs from the camera trigger to the verdict (None when no
    verdict came in time); ``budget_ms`` is the physical time from trigger to
    the part's fire point at the belt speed measured at trigger time;
    ``budget_miss`` is True when the verdict was not there by the deadline;
    ``image`` is the inspected crop (or the frame where no part was found),
    None when no frame came.
    """

    part_id: int
    origin_count: int
    trigger_count: int
    fire_count: int
    verdict: Verdict
    action: Action
    latency_ms: float | None
    budget_ms: float | None
    budget_miss: bool
    t_ns: int
    image: npt.NDArray[np.uint8] | None = None
    origin_raw_count: int | None = None
    """``origin_count`` as the encoder's own (wrapping) counter reads it, through any resync
    since: what a PLC's shift register or a ground truth would compare with."""
    repeats: tuple[RepeatNotice, ...] = ()
    """Repeating defects raised or cleared with this part (``node.line.repeat_notices``)."""
    sentence_ms: float | None = None
    """From the camera trigger to the model's sentence, written after the verdict (None when
    the part needed none or none came before its result was published)."""

    @property
    def budget_used(self) -> float | None:
        """Fraction of the budget the verdict took (1.0 = exactly at the deadline)."""
        if self.latency_ms is None or not self.budget_ms:
            return None
        return self.latency_ms / self.budget_ms


class ResultSink(Protocol):
    """Receives every part result; ``publish`` is sync and must be quick."""

    def publish(self, result: PartResult) -> None:
        """Take one result."""
        ...


@dataclass
class Stats:
    """Running counters and recent latency percentiles, as shown in the live status."""

    window: int = 2000
    started_ns: int = field(default_factory=time.monotonic_ns)
    inspected: int = 0
    rejected: int = 0
    passed: int = 0
    fail_safe: int = 0
    budget_misses: int = 0
    defects_by_type: collections.Counter[str] = field(default_factory=collections.Counter)
    fail_safe_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    _latency: collections.deque[float] = field(default_factory=collections.deque)
    _budget: collections.deque[float] = field(default_factory=collections.deque)
    _sentence: collections.deque[float] = field(default_factory=collections.deque)
    _done_t: collections.deque[int] = field(default_factory=collections.deque)
    refresh_s: float = 0.5
    """How old the percentiles in ``snapshot`` may be: they are computed at most this often
    (the HMI shows them beside every result; at 100 parts/s once a part would cost the loop
    more than the part's own judgement)."""
    _cached: tuple[int, dict[str, object]] | None = None

    def publish(self, result: PartResult) -> None:
        """Count one result."""
        v = result.verdict
        self.inspected += 1
        if result.action == "rejected":
            self.rejected += 1
        elif result.action == "passed":
            self.passed += 1
        if v.fail_safe:
            self.fail_safe += 1
            self.fail_safe_by_reason[v.reason.value] += 1
        elif v.reject and v.defect_type:
            self.defects_by_type[v.defect_type] += 1
        if result.budget_miss:
            self.budget_misses += 1
        for dq, val in (
            (self._latency, result.latency_ms),
            (self._budget, result.budget_used),
            (self._sentence, result.sentence_ms),
        ):
            if val is not None:
                dq.append(val)
                if len(dq) > self.window:
                    dq.popleft()
        self._done_t.append(result.t_ns)
        while self._done_t and result.t_ns - self._done_t[0] > 5_000_000_000:
            self._done_t.popleft()

    def parts_per_s(self) -> float:
        """Throughput over the last five seconds."""
        if len(self._done_t) < 2:
            return 0.0
        span = (self._done_t[-1] - self._done_t[0]) / 1e9
        return (len(self._done_t) - 1) / span if span > 0 else 0.0

    def latency_ms(self) -> dict[str, float]:
        """p50/p99/max of trigger→verdict latency over the recent window."""
        return percentiles(self._latency)

    def budget_used(self) -> dict[str, float]:
        """p50/p99/max of the fraction of budget used over the recent window."""
        return percentiles(self._budget)

    def snapshot(self, fresh: bool = False) -> dict[str, object]:
        """All stats as a plain mapping (for logs and the status line): the counters as
        they are, the percentiles and the rate as of at most ``refresh_s`` ago (``fresh``:
        now)."""
        now = time.monotonic_ns()
        if fresh or self._cached is None or now - self._cached[0] >= self.refresh_s * 1e9:
            self._cached = (
                now,
                {
                    "parts_per_s": round(self.parts_per_s(), 2),
                    "latency_ms": self.latency_ms(),
                    "budget_used": self.budget_used(),
                    "sentence_ms": percentiles(self._sentence),
                },
            )
        cached = self._cached[1]
        return {
            "parts_per_s": cached["parts_per_s"],
            "inspected": self.inspected,
            "rejected": self.rejected,
            "fail_safe": self.fail_safe,
            "budget_misses": self.budget_misses,
            "latency_ms": cached["latency_ms"],
            "budget_used": cached["budget_used"],
            "sentence_ms": cached["sentence_ms"],
            "defects_by_type": dict(self.defects_by_type),
            "fail_safe_by_reason": dict(self.fail_safe_by_reason),
        }


def percentiles(values: Iterable[float]) -> dict[str, float]:
    """``{"p50", "p99", "max"}`` of ``values`` rounded to 3 decimals; zeros when empty."""
    values = list(values)
    if not values:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0}
    a = np.asarray(values, dtype=np.float64)
    p50, p99 = np.percentile(a, [50, 99])
    return {
        "p50": round(float(p50), 3),
        "p99": round(float(p99), 3),
        "max": round(float(a.max()), 3),
    }
