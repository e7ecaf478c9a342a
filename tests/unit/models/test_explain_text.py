"""Explanation text: a short sentence grounded in the facts, one phrase table per language."""

from __future__ import annotations

import pytest

from models.explain_text import LANGUAGES, format_size_mm, render_explanation
from models.findings import UNKNOWN_TYPE, ExplanationFacts


def test_names_type_size_and_location() -> None:
    """A finding reads as type, size in mm, place on the part and the edge note."""
    facts = ExplanationFacts("scratch", "upper left", 12.0, True, 1)
    assert render_explanation(facts) == "scratch, 12 mm, upper left, near the edge"


def test_omits_what_is_not_there() -> None:
    """No edge note away from the edge, no location when none is known."""
    assert (
        render_explanation(ExplanationFacts("crack", "centre", 4.2, False, 1))
        == "crack, 4.2 mm, centre"
    )
    assert render_explanation(ExplanationFacts("spot", "", 1.0, False, 1)) == "spot, 1.0 mm"


def test_type_names_read_as_words() -> None:
    """Underscored kinds are written as words; the unknown type is said as it is."""
    assert render_explanation(
        ExplanationFacts("missing_feature", "centre", 7.0, False, 1)
    ).startswith("missing feature, 7.0 mm")
    assert render_explanation(
        ExplanationFacts(UNKNOWN_TYPE, "lower right", 2.5, False, 1)
    ).startswith("unknown anomaly, 2.5 mm, lower right")


def test_counts_further_regions() -> None:
    """More than one region adds how many more, singular and plural."""
    one_more = render_explanation(ExplanationFacts("spot", "centre", 2.0, False, 2))
    three_more = render_explanation(ExplanationFacts("spot", "centre", 2.0, False, 4))
    assert one_more.endswith("(+1 more region)") and three_more.endswith("(+3 more regions)")


def test_a_pass_reads_no_defect_found() -> None:
    """No facts, or facts with no region, read as a pass."""
    assert render_explanation(None) == "no defect found"
    assert render_explanation(ExplanationFacts("none", "", 0.0, False, 0)) == "no defect found"


@pytest.mark.parametrize(
    ("size", "text"), [(12.4, "12 mm"), (9.96, "10 mm"), (3.46, "3.5 mm"), (0.6, "0.6 mm")]
)
def test_sizes_are_rounded_for_people(size: float, text: str) -> None:
    """Whole millimetres from 10 mm up, one decimal below."""
    assert format_size_mm(size) == text


def test_unknown_language_is_refused() -> None:
    """Asking for a language without a phrase table raises ValueError."""
    assert "en" in LANGUAGES
    with pytest.raises(ValueError, match="language"):
        render_explanation(None, language="xx")  # type: ignore[arg-type]
