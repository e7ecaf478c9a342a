"""Captions parse back to their facts; the guard replaces sentences that contradict the heads."""

from __future__ import annotations

import numpy as np
import pytest

from models.captions import Vocabulary, canonical, compose, fill, parse
from models.data.geometry import PartGeometry
from models.explain_text import render_explanation
from models.findings import ExplanationFacts, Region
from models.guard import GroundingGuard, grounding_for

TYPES = ("contamination", "crack", "missing_feature", "scratch", "spot", "unknown anomaly")


def _part() -> PartGeometry:
    image = np.zeros((256, 256), dtype=np.uint8)
    image[32:224, 32:224] = 170
    return PartGeometry.of(image, 0.125, 60)


def _region(cx: float, cy: float, length_mm: float) -> Region:
    return Region((0, 0, 1, 1), (cx, cy), 10, 1.0, length_mm, 0.5, "", False, 0.0, 0.9)


@pytest.mark.parametrize("seed", range(12))
def test_every_phrasing_parses_back_to_its_facts(seed: int) -> None:
    """Each composed caption, whatever its phrasing, states exactly its type, place and size."""
    rng = np.random.default_rng(seed)
    kind = TYPES[seed % len(TYPES)]
    text = compose(kind, "upper centre", "medium", rng)
    facts = parse(text, TYPES)
    assert (facts.defect_type, facts.location, facts.size) == (kind, "upper centre", "medium")
    vocab = Vocabulary.build(TYPES)
    assert vocab.decode(vocab.encode(text, 16)[1:]) == text


def test_guard_keeps_an_agreeing_sentence() -> None:
    """A sentence stating the heads' type, place and size is published as the model's."""
    part = _part()
    facts = ExplanationFacts("scratch", "upper left", 6.0, False, 1)
    g = grounding_for(facts, _region(60, 60, 6.0), part)
    guard = GroundingGuard(TYPES)
    e = guard.ground("there is a large scratch in the upper left", g)
    assert e.source == "model" and e.text == "there is a large scratch in the upper left"
    assert guard.stats().fallbacks == 0


def test_guard_catches_a_contradicting_sentence() -> None:
    """A sentence naming another type and place is replaced by the facts and counted."""
    part = _part()
    facts = ExplanationFacts("scratch", "upper left", 6.0, False, 1)
    g = grounding_for(facts, _region(60, 60, 6.0), part)
    guard = GroundingGuard(TYPES)
    e = guard.ground("small crack in the lower right", g)
    assert e.source == "facts"
    assert e.text == render_explanation(facts)
    assert e.model_text == "small crack in the lower right"
    assert set(e.mismatches) == {"type", "location", "size"}
    stats = guard.stats()
    assert (stats.checked, stats.fallbacks, stats.fallback_rate) == (1, 1, 1.0)


def test_guard_tolerates_a_place_on_a_grid_line() -> None:
    """A region centred on the line between two cells may be called either; far cells may not."""
    part = _part()
    on_line = 32 + 192 / 3  # between upper left and upper centre
    facts = ExplanationFacts("spot", "upper centre", 1.5, False, 1)
    g = grounding_for(facts, _region(on_line + 1, 60, 1.5), part)
    guard = GroundingGuard(TYPES)
    assert guard.check("small spot in the upper left", g) == ()
    assert guard.check("small spot in the upper right", g) == ("location",)


def test_a_sentence_that_omits_or_repeats_a_fact_fails_on_it() -> None:
    """A missing size, or two different places, does not count as agreeing."""
    part = _part()
    facts = ExplanationFacts("spot", "centre", 1.5, False, 1)
    g = grounding_for(facts, _region(128, 128, 1.5), part)
    guard = GroundingGuard(TYPES)
    assert guard.check("spot in the centre", g) == ("size",)
    assert guard.check("small spot in the centre and the upper left", g) == ("location",)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("en", "crack, 4.2 mm, lower right, near the edge"),
        ("de", "Riss, 4.2 mm, unten rechts, nahe am Rand"),
        ("ja", "割れ、4.2 mm、右下、端の近く"),
    ],
)
def test_facts_render_in_three_languages(language: str, text: str) -> None:
    """The structured facts read in English, German and Japanese."""
    facts = ExplanationFacts("crack", "lower right", 4.2, True, 1)
    assert render_explanation(facts, language) == text  # type: ignore[arg-type]


def test_a_canonical_caption_round_trips_and_parses_its_filled_form() -> None:
    """The slotted caption survives the vocabulary; filled with the facts it states their
    type, place and the size class of the measured length."""
    vocab = Vocabulary.build(TYPES)
    text = canonical("missing_feature")
    assert text == "missing feature, <size>, <place>"
    assert vocab.decode(vocab.encode(text, 16)[1:]) == text
    got = parse(fill(text, "6.5 mm", "lower left"), TYPES)
    assert (got.defect_type, got.location, got.size) == ("missing_feature", "lower left", "large")


@pytest.mark.parametrize(
    ("sentence", "mismatches"),
    [
        ("scratch, <size>, <place>", ()),
        ("crack, <size>, <place>", ("type",)),
        ("scratch, 4 mm, <place>", ("form",)),  # a number of its own
        ("scratch, <size>, upper left", ("form",)),  # a place of its own
        ("scratch, <size>", ("form",)),  # a slot left out
        ("scratch, <size>, <place>, <place>", ("form",)),
    ],
)
def test_the_guard_lets_a_slotted_sentence_state_only_its_type(
    sentence: str, mismatches: tuple[str, ...]
) -> None:
    """A slotted sentence must name the head's type and be its canonical caption exactly:
    no number, place or size of its own, each slot once."""
    facts = ExplanationFacts("scratch", "upper left", 6.0, True, 1)
    g = grounding_for(facts, _region(60, 60, 6.0), _part())
    assert GroundingGuard(TYPES).check(sentence, g) == mismatches


def test_a_kept_slotted_sentence_is_published_with_the_facts_in_its_slots() -> None:
    """The model's words with the measured length and place: the same text the facts render,
    so a finding reads identically whether the model's sentence was kept or replaced."""
    facts = ExplanationFacts("scratch", "upper left", 6.0, True, 1)
    g = grounding_for(facts, _region(60, 60, 6.0), _part())
    guard = GroundingGuard(TYPES)
    kept = guard.ground("scratch, <size>, <place>", g)
    assert kept.source == "model" and kept.model_text == "scratch, <size>, <place>"
    assert kept.text == "scratch, 6.0 mm, upper left, near the edge" == render_explanation(facts)
    replaced = guard.ground("crack, <size>, <place>", g)
    assert replaced.source == "facts" and replaced.text == kept.text
    assert guard.stats().mismatches["type"] == 1
    de = guard.ground("scratch, <size>, <place>", g, "de")
    assert de.text == render_explanation(facts, "de")
