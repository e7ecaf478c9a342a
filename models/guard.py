"""The grounding guard: a model sentence is published only if its facts agree with the heads.

The explanation decoder writes free text from a controlled vocabulary; the
structured heads (defect type, and the anomaly map's main region measured
for place and size) are what the verdict rests on. The guard parses the
sentence's type, location and size class back (``models.captions.parse``)
and compares them with the heads:

- the type must be the type head's;
- the location must be the region's grid cell, or a neighbouring cell when
  the region's centroid lies within ``location_tolerance`` (fraction of the
  part) of the line between them: a place on a grid line is either;
- the size class must be the defect length's (the length the runtime publishes
  where it gives one: the size head's, combined with the main region by the
  package's size calibration, see ``models.sizing``; else the region's), or the
  neighbouring class when that length is within ``size_tolerance`` (relative)
  of the boundary.

A sentence that omits a fact fails on it too. A slotted package's sentence
(``"crack, <size>, <place>"``, see ``models.captions``) states only its type:
it must be that type's canonical caption exactly, and is published with the
facts' length and place in its slots. On any mismatch the published
explanation is rendered from the structured facts instead
(``models.explain_text``) and the mismatch is counted; ``stats`` reports the
counts (``fallback_rate`` is what the bench publishes).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from models.captions import SLOTS, fill, is_canonical, parse, tokenize
from models.data.geometry import ALL_LOCATIONS, SIZE_CLASSES, PartGeometry, SizeClass, size_class
from models.explain_text import Language, format_size_mm, render_explanation
from models.findings import Explanation, ExplanationFacts, Region

log = structlog.get_logger(__name__)

DEFAULT_LOCATION_TOLERANCE = 0.03
DEFAULT_SIZE_TOLERANCE = 0.15


def is_slotted(sentence: str) -> bool:
    """True for a sentence of a slotted package (it has ``<size>`` or ``<place>``)."""
    return any(t in SLOTS for t in tokenize(sentence))


def filled(sentence: str, facts: ExplanationFacts) -> str:
    """A slotted ``sentence`` with the facts' length and grid place (and "near the edge")
    in its slots: ``"crack, <size>, <place>"`` -> ``"crack, 3.2 mm, upper left"``."""
    place = facts.location or "on the part"
    if facts.near_edge:
        place += ", near the edge"
    return fill(sentence, format_size_mm(facts.size_mm), place)


@dataclass(frozen=True, slots=True)
class Grounding:
    """What the heads say: the facts, and which locations and size classes agree with them."""

    facts: ExplanationFacts
    locations: frozenset[str]
    sizes: frozenset[SizeClass]


def grounding_for(
    facts: ExplanationFacts,
    region: Region | None,
    part: PartGeometry | None,
    location_tolerance: float = DEFAULT_LOCATION_TOLERANCE,
    size_tolerance: float = DEFAULT_SIZE_TOLERANCE,
    length_mm: float | None = None,
) -> Grounding:
    """The grounding of ``facts`` measured on ``region`` of ``part``.

    ``length_mm`` is the defect's length the size class is checked against
    (the runtime's calibrated length); ``None`` uses the region's measured length. Without a
    region (an anomalous score but no region above the pixel threshold) only
    the type can be checked: every location and size agrees.
    """
    if region is None or part is None:
        return Grounding(facts, frozenset(ALL_LOCATIONS), frozenset(SIZE_CLASSES))
    cx, cy = region.centroid_px
    x0, y0, x1, y1 = part.bbox_px
    dx, dy = location_tolerance * (x1 - x0), location_tolerance * (y1 - y0)
    locations = frozenset(
        part.location(cx + sx * dx, cy + sy * dy) for sx in (-1, 0, 1) for sy in (-1, 0, 1)
    )
    length = region.length_mm if length_mm is None else length_mm
    sizes = frozenset(
        size_class(length * f) for f in (1.0 - size_tolerance, 1.0, 1.0 + size_tolerance)
    )
    return Grounding(facts, locations, sizes)


@dataclass(frozen=True, slots=True)
class GuardStats:
    """Counts since the guard was made: sentences checked, fallbacks, mismatches per fact."""

    checked: int
    fallbacks: int
    mismatches: dict[str, int]

    @property
    def fallback_rate(self) -> float:
        """Fallbacks per checked sentence (0 when none was checked)."""
        return self.fallbacks / self.checked if self.checked else 0.0


class GroundingGuard:
    """Checks model sentences against the heads; thread-safe counters.

    ``types`` are the type names the model knows (to recognise them in text).
    """

    def __init__(self, types: Sequence[str]) -> None:
        self.types = tuple(types)
        self._lock = threading.Lock()
        self._checked = 0
        self._fallbacks = 0
        self._mismatches: dict[str, int] = {"type": 0, "location": 0, "size": 0, "form": 0}

    def check(self, sentence: str, grounding: Grounding) -> tuple[str, ...]:
        """The facts (``"type"``, ``"location"``, ``"size"``) on which ``sentence`` disagrees.

        A slotted sentence states only its type itself (the length and the place
        are the facts', filled into its slots): it must name the head's type
        (``"type"``) and be exactly the canonical caption of the type it names, each slot once
        and no number, place or size of its own (``"form"``).
        """
        stated = parse(sentence, self.types)
        out: list[str] = []
        if is_slotted(sentence):
            if stated.defect_type != grounding.facts.defect_type:
                out.append("type")
            said = stated.defect_type
            if said is None or not is_canonical(sentence, said):
                out.append("form")
            return tuple(out)
        if stated.defect_type != grounding.facts.defect_type:
            out.append("type")
        if stated.location is None or stated.location not in grounding.locations:
            out.append("location")
        if stated.size is None or stated.size not in grounding.sizes:
            out.append("size")
        return tuple(out)

    def ground(self, sentence: str, grounding: Grounding, language: Language = "en") -> Explanation:
        """The explanation to publish: the model's sentence if it agrees, else the facts'."""
        mismatches = self.check(sentence, grounding)
        with self._lock:
            self._checked += 1
            if mismatches:
                self._fallbacks += 1
                for m in mismatches:
                    self._mismatches[m] += 1
        if not mismatches:
            text = sentence
            if is_slotted(sentence):  # the model's words, the facts' numbers and place
                en = filled(sentence, grounding.facts)
                text = en if language == "en" else render_explanation(grounding.facts, language)
            return Explanation(text, grounding.facts, "model", model_text=sentence)
        log.debug("explanation_replaced", model_text=sentence, mismatches=mismatches)
        text = render_explanation(grounding.facts, language)
        return Explanation(
            text, grounding.facts, "facts", model_text=sentence, mismatches=mismatches
        )

    def stats(self) -> GuardStats:
        """A snapshot of the counters."""
        with self._lock:
            return GuardStats(self._checked, self._fallbacks, dict(self._mismatches))
