"""Short plain-language explanations rendered from structured facts.

``render_explanation`` is a pure function of the facts, so the same finding
always reads the same way on the HMI, in the audit store and in the logs. The
wording lives in one phrase table per language; adding German or Japanese is
adding a table (and a ``Language`` value), not touching the renderer.

Examples::

    scratch, 12 mm, upper left, near the edge          (en)
    Kratzer, 12 mm, oben links, nahe am Rand           (de)
    傷、12 mm、左上、端の近く                            (ja)
    crack, 4.2 mm, lower right (+1 more region)
    no defect found

Locations are the grid names of ``models.data.geometry.LOCATIONS`` (English
keys); a location or type without a translation is written as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from models.findings import ExplanationFacts

Language = Literal["en", "de", "ja"]
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
    locations: dict[str, str] = field(default_factory=dict)


_PHRASES: dict[Language, _Phrases] = {
    "en": _Phrases(
        no_defect="no defect found",
        near_edge="near the edge",
        more_one="(+{n} more region)",
        more_many="(+{n} more regions)",
        separator=", ",
        types={"missing_feature": "missing feature"},
    ),
    "de": _Phrases(
        no_defect="kein Fehler gefunden",
        near_edge="nahe am Rand",
        more_one="(+{n} weiterer Bereich)",
        more_many="(+{n} weitere Bereiche)",
        separator=", ",
        types={
            "scratch": "Kratzer",
            "crack": "Riss",
            "spot": "Fleck",
            "contamination": "Verschmutzung",
            "missing_feature": "fehlendes Merkmal",
            "unknown anomaly": "unbekannte Anomalie",
        },
        locations={
            "upper left": "oben links",
            "upper centre": "oben Mitte",
            "upper right": "oben rechts",
            "centre left": "Mitte links",
            "centre": "Mitte",
            "centre right": "Mitte rechts",
            "lower left": "unten links",
            "lower centre": "unten Mitte",
            "lower right": "unten rechts",
        },
    ),
    "ja": _Phrases(
        no_defect="欠陥なし",
        near_edge="端の近く",
        more_one="(他に{n}箇所)",
        more_many="(他に{n}箇所)",
        separator="、",
        types={
            "scratch": "傷",
            "crack": "割れ",
            "spot": "斑点",
            "contamination": "汚れ",
            "missing_feature": "欠落部品",
            "unknown anomaly": "不明な異常",
        },
        locations={
            "upper left": "左上",
            "upper centre": "上中央",
            "upper right": "右上",
            "centre left": "左中央",
            "centre": "中央",
            "centre right": "右中央",
            "lower left": "左下",
            "lower centre": "下中央",
            "lower right": "右下",
        },
    ),
}


def format_size_mm(size_mm: float) -> str:
    """A size for people: whole millimetres from 10 mm up, one decimal below."""
    if size_mm >= 9.95:
        return f"{size_mm:.0f} mm"
    return f"{size_mm:.1f} mm"


def type_name(defect_type: str, language: Language = "en") -> str:
    """How ``defect_type`` is written in ``language`` (``missing_feature`` -> "missing feature")."""
    return _PHRASES[language].types.get(defect_type, defect_type.replace("_", " "))


def location_name(location: str, language: Language = "en") -> str:
    """A grid location (``"upper left"``) in ``language``."""
    return _PHRASES[language].locations.get(location, location)


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
    parts = [type_name(facts.defect_type, language), format_size_mm(facts.size_mm)]
    if facts.location:
        parts.append(location_name(facts.location, language))
    if facts.near_edge:
        parts.append(p.near_edge)
    text = p.separator.join(parts)
    more = facts.region_count - 1
    if more > 0:
        text += " " + (p.more_one if more == 1 else p.more_many).format(n=more)
    return text


def render_all(facts: ExplanationFacts | None) -> dict[Language, str]:
    """The facts in every language, for HMIs that show the operator's own."""
    return {lang: render_explanation(facts, lang) for lang in LANGUAGES}
