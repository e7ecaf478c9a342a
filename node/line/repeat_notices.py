"""Repeating defects announced: the watch fed from verdicts, its changes put into words.

``RepeatNotices.observe`` takes every decided part's verdict (a fail-safe or a
clean part too: each moves the window), turns the recipe's placements into
sightings for ``node.line.repeats.RepeatWatch`` and returns a ``RepeatNotice``
for each alarm raised or cleared, with its line-level sentence in every
language ("Repeating scratch 12 mm from the left end of the rim on 5 of the
last 20 parts."). The node attaches the notices to the part's result, so they
reach the log, the audit record, the HMI event and the live status with it.
Cosmetic findings count: a tool that keeps marking the same place is worth
hearing about before its marks grow past the limit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from models.explain_text import LANGUAGES, Language
from node.line.judge import Verdict
from node.line.repeats import RepeatAlarm, RepeatSettings, RepeatWatch, Sighting
from node.recipe.recipe import Recipe
from node.recipe.settings import RepeatsSettings

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RepeatNotice:
    """An alarm raised or cleared on one part: where (part millimetres, zone), on how many
    of the last ``window`` parts, and the sentence per language."""

    kind: Literal["raised", "cleared"]
    key: int
    defect_type: str
    zone: str | None
    x_mm: float
    y_mm: float
    parts: int
    window: int
    first_part_id: int
    last_part_id: int
    texts: Mapping[Language, str]


class RepeatNotices:
    """The node's repeat watch over one recipe's placements (``enabled = false``: silent)."""

    def __init__(self, settings: RepeatsSettings, recipe: Recipe) -> None:
        self.enabled = settings.enabled
        self._recipe = recipe
        self._watch = RepeatWatch(
            RepeatSettings(settings.window_parts, settings.min_parts, settings.distance_mm)
        )
        self._last_part = -1
        self.raised = 0

    def observe(self, verdict: Verdict) -> tuple[RepeatNotice, ...]:
        """The notices this part brings (most parts: none)."""
        if not self.enabled or verdict.part_id <= self._last_part:
            return ()
        self._last_part = verdict.part_id
        sightings: list[Sighting] = []
        outcome = verdict.recipe
        if not verdict.fail_safe and outcome is not None and verdict.findings is not None:
            dtype = verdict.findings.defect_type
            for p in outcome.placements:
                sightings.append(Sighting(dtype, p.x_mm, p.y_mm, p.zone))
        notices = []
        for change in self._watch.observe(verdict.part_id, sightings):
            if change.kind == "updated":
                continue
            notice = self._notice(change.kind, change.alarm)
            notices.append(notice)
            if change.kind == "raised":
                self.raised += 1
                log.warning("repeating_defect", key=notice.key, text=notice.texts["en"])
            else:
                log.info("repeating_defect_cleared", key=notice.key, text=notice.texts["en"])
        return tuple(notices)

    def _texts(self, a: RepeatAlarm, stopped: bool) -> dict[Language, str]:
        along = self._recipe.zones.along_point(a.zone, a.x_mm, a.y_mm) if a.zone else (0.0, "")
        return {
            lang: self._recipe.writer.repeat(
                stopped=stopped,
                defect_type=a.defect_type,
                zone=a.zone,
                along=along,
                x_mm=a.x_mm,
                y_mm=a.y_mm,
                parts=a.parts,
                window=a.window,
                language=lang,
            )
            for lang in LANGUAGES
        }

    def _notice(self, kind: Literal["raised", "cleared"], a: RepeatAlarm) -> RepeatNotice:
        return RepeatNotice(
            kind,
            a.key,
            a.defect_type,
            a.zone,
            round(a.x_mm, 2),
            round(a.y_mm, 2),
            a.parts,
            a.window,
            a.first_part_id,
            a.last_part_id,
            self._texts(a, stopped=kind == "cleared"),
        )

    def active(self) -> list[dict[str, object]]:
        """The repeats going on now, for the live status (English sentence, where, count)."""
        return [
            {
                "key": a.key,
                "defect_type": a.defect_type,
                "zone": a.zone,
                "x_mm": round(a.x_mm, 1),
                "y_mm": round(a.y_mm, 1),
                "parts": a.parts,
                "window": a.window,
                "text": self._texts(a, stopped=False)["en"],
            }
            for a in self._watch.active
        ]
