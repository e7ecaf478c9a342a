"""The recipe's sentence: one canonical phrasing per language, names and numbers from the facts."""

from __future__ import annotations

from dataclasses import replace

from models.findings import Explanation
from node.config import RecipeSection
from node.line.judge import Judge
from node.recipe.settings import CauseSettings, RuleSettings, ZoneSettings
from tests.unit.node.recipe.factories import MM_PER_PX, findings, region

ZONES = (
    ZoneSettings(
        name="sealing rim",
        names={"de": "Dichtrand", "ja": "シールリム"},
        rects_mm=((0, 0, 24, 3), (0, 21, 24, 24)),
    ),
    ZoneSettings(name="back face", names={"de": "Rückseite"}, rect_mm=(0, 3, 24, 21)),
)
RULES = (
    RuleSettings(zone="sealing rim", types=("crack",), action="reject"),
    RuleSettings(zone="back face", types=("spot", "crack"), action="accept", max_length_mm=1.0),
)
CAUSES = (
    CauseSettings(
        types=("crack",),
        zone="sealing rim",
        text={"en": "gate too cold", "de": "Anschnitt zu kalt", "ja": "ゲート温度不足"},
    ),
)
JUDGE = Judge(RecipeSection(reject_score=1.0, zones=ZONES, rules=RULES, causes=CAUSES), MM_PER_PX)


def test_a_rejected_finding_names_type_length_zone_place_limit_and_cause() -> None:
    """A 3 mm crack on the rim reads with its millimetres, the zone, its place along it,
    the limit it broke, and the recipe's likely cause, in English, German and Japanese."""
    v = JUDGE.judge(1, findings("crack", region(10, 1, 13, 1.5)))
    assert v.recipe is not None
    s = v.recipe.sentences
    assert s["en"] == (
        "Crack, 3.0 mm, on the sealing rim, 12 mm from its left end — over the 0 mm crack "
        "limit there. Likely cause: gate too cold."
    )
    assert s["de"] == (
        "Riss, 3,0 mm, im Bereich Dichtrand, 12 mm vom linken Ende — über der Grenze von 0 mm "
        "für Riss dort. Wahrscheinliche Ursache: Anschnitt zu kalt."
    )
    assert s["ja"] == (
        "割れ、3.0 mm、シールリム、左端から12 mm — 割れの上限 0 mm を超過。"
        " 推定原因: ゲート温度不足。"
    )
    assert v.explanation == s["en"]


def test_an_accepted_cosmetic_finding_says_it_is_within_the_limit() -> None:
    """A 0.5 mm spot on the back face reads as within its 1 mm cosmetic limit."""
    v = JUDGE.judge(2, findings("spot", region(6, 10, 6.5, 10.5)))
    assert not v.reject and v.recipe is not None
    assert v.recipe.sentences["en"] == (
        "Spot, 0.5 mm, on the back face, 6.2 mm from its left end — within the 1 mm cosmetic "
        "limit there."
    )
    assert "Rückseite" in v.recipe.sentences["de"]


def test_several_defects_give_the_count_and_the_worst_first() -> None:
    """A cosmetic spot and a rejected rim crack: '2 defects, worst first:' then the crack."""
    v = JUDGE.judge(3, findings("crack", region(6, 10, 6.5, 10.2), region(10, 1, 12, 1.5)))
    assert v.recipe is not None
    en = v.recipe.sentences["en"]
    assert en.startswith("2 defects, worst first: Crack, 2.0 mm, on the sealing rim")
    assert "; crack, 0.5 mm, on the back face" in en
    assert en.index("over the 0 mm") < en.index("within the 1 mm")


def test_identical_findings_give_identical_sentences() -> None:
    """The same finding judged twice (other part ids) reads the same, word for word."""
    a = JUDGE.judge(4, findings("crack", region(10, 1, 13, 1.5))).recipe
    b = JUDGE.judge(5, findings("crack", region(10, 1, 13, 1.5))).recipe
    assert a is not None and b is not None
    assert a.sentences == b.sentences


def test_every_number_in_the_sentence_is_a_measurement_or_a_limit() -> None:
    """The sentence's numbers are the finding's length, its place along the zone and the
    rule's limit, nothing else."""
    import re

    v = JUDGE.judge(6, findings("crack", region(4, 22, 8.5, 22.5)))
    assert v.recipe is not None
    p = v.recipe.placements[0]
    numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", v.recipe.sentences["en"])]
    assert numbers == [round(p.length_mm, 1), round(p.along_mm, 1), 0.0]


def test_a_clean_part_reads_no_defect_found() -> None:
    """No finding: the usual pass sentence in each language."""
    v = JUDGE.judge(7, findings("none", score=0.5))
    assert v.recipe is not None
    assert v.recipe.sentences == {
        "en": "no defect found",
        "de": "kein Fehler gefunden",
        "ja": "欠陥なし",
    }


def test_the_sentence_names_the_zone_of_the_rule_that_fired() -> None:
    """A crack lying mostly on the back face but reaching the rim is rejected by the rim's
    rule, and the sentence places it on the rim, with the rim's cause."""
    v = JUDGE.judge(8, findings("crack", region(6, 1.5, 6.5, 5)))
    assert v.recipe is not None
    assert v.recipe.placements[0].zones == ("back face", "sealing rim")
    assert v.rule == "crack on sealing rim: reject"
    en = v.recipe.sentences["en"]
    assert en.startswith("Crack, 3.5 mm, on the sealing rim, 6.2 mm from its left end — over")
    assert en.endswith("Likely cause: gate too cold.")


def test_the_models_slotted_sentence_is_the_english_frame() -> None:
    """A kept slotted sentence from the model is the English frame: the slots take the measured
    length and the zone; a frame whose words claim another type is replaced by the facts
    rendered plainly and counted; a sentence the guard replaced is not a frame at all."""
    base = findings("crack", region(10, 1, 13, 1.5))
    plain = JUDGE.judge(10, base).recipe
    assert plain is not None
    writer = JUDGE.rules.writer
    kept = replace(
        base, explanation=Explanation("crack, 3.0 mm", None, "model", "crack, <size>, <place>")
    )
    v = JUDGE.judge(9, kept)
    assert v.recipe is not None and v.recipe.sentences == plain.sentences
    assert writer.fallbacks == 0
    other = replace(base, explanation=Explanation("x", None, "model", "fissure, <size>, <place>"))
    r = JUDGE.judge(11, other).recipe
    assert r is not None and r.sentences["en"] == plain.sentences["en"]
    assert writer.fallbacks == 1 and writer.mismatches == {"type": 1}
    refused = replace(base, explanation=Explanation("x", None, "facts", "fissure, <size>, <place>"))
    r = JUDGE.judge(12, refused).recipe
    assert r is not None and r.sentences["en"] == plain.sentences["en"]
    assert writer.fallbacks == 1  # not a frame: nothing to check


def test_every_claim_of_a_sentence_is_checked_against_the_decision() -> None:
    """The checker names each wrong claim: the count, a finding's type, zone, length (beyond
    its display rounding) and the limit of the rule that judged it."""
    v = JUDGE.judge(13, findings("crack", region(6, 10, 6.5, 10.2), region(10, 1, 12, 1.5)))
    assert v.recipe is not None
    writer, decision = JUDGE.rules.writer, v.recipe.decision
    right = v.recipe.sentences["en"]
    assert writer.claims_wrong(right, decision) == ()
    cases = {
        "count": right.replace("2 defects", "3 defects"),
        "type": right.replace("Crack, 2.0 mm", "Scratch, 2.0 mm"),
        "zone": right.replace("on the sealing rim", "on the back face"),
        "size": right.replace("2.0 mm", "2.4 mm", 1),
        "rule": right.replace("over the 0 mm crack limit", "over the 5 mm crack limit"),
    }
    for claim, text in cases.items():
        assert text != right
        assert writer.claims_wrong(text, decision) == (claim,), claim
