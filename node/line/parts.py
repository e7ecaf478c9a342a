"""The parts in flight: from tracking to their published result, each with one verdict.

A part enters the book when the tracker creates it and leaves it when its result
is published. Its verdict is set once (:meth:`InFlightPart.decide`): whichever
stage decides first — a fail-safe on the way, the judge, or the deadline — wins,
and every later word on the part is logged and ignored.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from node.line.judge import Verdict
from node.line.results import Action, PartResult
from node.line.tracker import TrackedPart


@dataclass(slots=True)
class InFlightPart:
    """One tracked part on its way from the origin line to its result.

    Times are ``time.monotonic_ns()``: ``trigger_t_ns`` when the camera was
    asked for it, ``deadline_t_ns`` when the belt was predicted to reach its
    decision point (at trigger time), ``verdict_t_ns`` when its verdict came,
    ``sentence_t_ns`` when the model's sentence followed it (None: none came before
    the result was published, or the part needed none).
    """

    part: TrackedPart
    trigger_t_ns: int | None = None
    deadline_t_ns: int | None = None
    frame_seen: bool = False
    verdict: Verdict | None = None
    verdict_t_ns: int | None = None
    budget_miss: bool = False
    image: npt.NDArray[np.uint8] | None = None
    sentence_t_ns: int | None = None

    @property
    def part_id(self) -> int:
        """The tracker's id of this part."""
        return self.part.part_id

    def decide(self, verdict: Verdict) -> bool:
        """Record the verdict unless one is already there; True when this one counts."""
        if self.verdict is not None:
            return False
        self.verdict = verdict
        self.verdict_t_ns = time.monotonic_ns()
        return True

    def explain(self, verdict: Verdict) -> None:
        """Take ``verdict``, the same decision in the words of the model's sentence."""
        assert self.verdict is not None and verdict.reject == self.verdict.reject
        assert verdict.reason is self.verdict.reason and verdict.rule == self.verdict.rule
        self.verdict = verdict
        self.sentence_t_ns = time.monotonic_ns()

    def result(self, action: Action, t_ns: int, origin_raw_count: int | None = None) -> PartResult:
        """The published result once ``action`` is taken (at ``t_ns``).

        Latency runs from the trigger to the verdict (None when the verdict missed the
        deadline or no trigger was sent), the sentence's from the trigger to the model's
        sentence; the budget from the trigger to the deadline.
        """
        assert self.verdict is not None, "a part is published only once it has a verdict"
        latency = budget = sentence = None
        if self.trigger_t_ns is not None:
            if self.sentence_t_ns is not None:
                sentence = (self.sentence_t_ns - self.trigger_t_ns) / 1e6
            if self.verdict_t_ns is not None and not self.budget_miss:
                latency = (self.verdict_t_ns - self.trigger_t_ns) / 1e6
            if self.deadline_t_ns is not None:
                budget = (self.deadline_t_ns - self.trigger_t_ns) / 1e6
        p = self.part
        return PartResult(
            part_id=p.part_id,
            origin_count=p.origin_count,
            trigger_count=p.trigger_count,
            fire_count=p.fire_count,
            verdict=self.verdict,
            action=action,
            latency_ms=latency,
            budget_ms=budget,
            budget_miss=self.budget_miss,
            t_ns=t_ns,
            image=self.image,
            origin_raw_count=origin_raw_count,
            sentence_ms=sentence,
        )


class PartBook:
    """Every part tracked and not yet published, by ``part_id``."""

    def __init__(self) -> None:
        self._parts: dict[int, InFlightPart] = {}

    def add(self, part: TrackedPart) -> InFlightPart:
        """Start following ``part``."""
        st = InFlightPart(part)
        self._parts[part.part_id] = st
        return st

    def get(self, part_id: int) -> InFlightPart | None:
        """The part if it is in flight (not yet published), else None."""
        return self._parts.get(part_id)

    def undecided(self, part_id: int) -> InFlightPart | None:
        """The part if it is in flight and still waits for its verdict, else None."""
        st = self._parts.get(part_id)
        return st if st is not None and st.verdict is None else None

    def remove(self, part_id: int) -> None:
        """Stop following ``part_id`` (its result is published)."""
        self._parts.pop(part_id, None)

    def ids(self) -> list[int]:
        """The part ids in flight, in order."""
        return sorted(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def __iter__(self) -> Iterator[InFlightPart]:
        return iter(list(self._parts.values()))
