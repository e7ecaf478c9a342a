"""Short plain-language explanations rendered from structured facts.

``render_explanation`` is a pure function of the facts, so the same finding
always reads the same way on the HMI, in the audit store and in the logs. The
wording lives in one phrase table per language; adding German or Japanese is
adding a table (and a ``Language`` value), not touching the renderer.

Examples (English)::

    scratch, 12 mm, upper left, near the edge
    missing feature, 3.5 mm, centre
    crack, 4.2 mm, lower right (+1 more region)
    no defect found
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from models.findings import ExplanationFacts

Language = Literal["en"]
LANGUAGES: tuple[Language, ...] = get_args(Language)
"""The languages explanations can be rendered in."""

NO_DEFECT_TYPE = "none"
"""The ``defect_type`` a backend reports for a part it found nothing on."""


@dataclass(frozen=True, slots=True)
class _Phrases:
    no_defect: str
    near_edge: str
    more_one: str  # "{n}" is replaced by the count of further regions
    more_many: str
    separator: str
    types: dict[str, str]


_PHRASES: dict[Language, _Phrases] = {
    "en": _Phrases(
        no_defect="no defect found",
        near_edge="near the edge",
        more_one="(+{n} more region)",
        more_many="(+{n} more regions)",
        separator=", ",
        types={"missing_feature": "missing feature"},
    ),
}


def format_size_mm(size_mm: float) -> str:
    """A size for people: whole millimetres from 10 mm up, one decimal below."""
    if size_mm >= 9.95:
        return f"{size_mm:.0f} mm"
    return f"{size_mm:.1f} mm"


def render_explanation(facts: ExplanationFacts | None, language: Language = "en") -> str:
    """Render ``facts`` as one short sentence, e.g. ``"scratch, 12 mm, upper left, near the edge"``.

    ``None`` or facts with ``region_count == 0`` read as a pass ("no defect
    found"). The size is the defect's length in millimetres. Raises
    ``ValueError`` for a language without a phrase table.
    """
    if language not in _PHRASES:
        raise ValueError(f"no explanation phrases for language {language!r}; have {LANGUAGES}")
    p = _PHRASES[language]
    if facts is None or facts.region_count <= 0:
        return p.no_defect
    kind = p.types.get(facts.defect_type, facts.defect_type.replace("_", " "))
    parts = [kind, format_size_mm(facts.size_mm)]
    if facts.location:
        parts.append(facts.location)
    if facts.near_edge:
        parts.append(p.near_edge)
    text = p.separator.join(parts)
    more = facts.region_count - 1
    if more > 0:
        text += " " + (p.more_one if more == 1 else p.more_many).format(n=more)
    return text
