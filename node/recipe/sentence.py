"""The recipe's sentence: one canonical phrasing per language, every name and number a slot.

What a quality engineer writes on a reject tag, rendered from the recipe's
decision so identical findings always read identically::

    Crack, 3.2 mm, on the sealing rim, 12 mm from its left end — over the 0 mm crack limit there.
    Spot, 0.4 mm, on the back face — within the 1 mm cosmetic limit there.
    2 defects, worst first: Crack, 3.2 mm, …; Spot, 0.4 mm, … Likely cause: gate too cold.

Zone names are the recipe's strings (``names`` per language), numbers are the
measurements and limits; nothing else varies. A clean part reads "no defect
found". Several defects: the count, then at most ``MAX_LISTED`` of them worst
first. A cause from the recipe's table for the worst finding's type and zone
is appended when there is one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from models.captions import fill
from models.explain_text import (
    LANGUAGES,
    Language,
    format_size_mm,
    location_name,
    render_explanation,
    type_name,
)
from node.recipe.rules import SCORE_RULE, TYPE_RULE, JudgedFinding, RuleDecision
from node.recipe.settings import ANY_ZONE, CauseSettings, RuleSettings, ZoneSettings

MAX_LISTED = 3
"""Findings written out in one sentence; more are counted."""
SIZE_TOLERANCE_MM = 0.05
"""How far a stated length may be from the measured one below 10 mm (its rounding)."""
_MM = re.compile(r"^([0-9]+(?:\.[0-9]+)?) mm$")
_LEAD = re.compile(r"^([0-9]+) defects, worst first: ")
log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Words:
    on_zone: str  # "{zone}"
    along: str  # "{mm}", "{end}"
    ends: Mapping[str, str]
    over_type: str  # "{limit}", "{type}"
    within_type: str
    over_cosmetic: str  # "{limit}"
    within_cosmetic: str
    cosmetic: str
    there: str
    over_count: str  # "{n}", "{limit}"
    over_score: str
    under_score: str
    always: str  # "{type}"
    several: str  # "{n}"
    more: str  # "{n}"
    cause: str  # "{cause}"
    dash: str
    list_sep: str
    sep: str
    stop: str
    decimal: str
    repeat_at_zone: str  # "{type}", "{where}", "{n}", "{m}"
    repeat_stopped: str
    where_along: str  # "{mm}", "{end}", "{zone}"
    where_zone: str  # "{zone}"
    where_point: str  # "{x}", "{y}"


_WORDS: dict[Language, _Words] = {
    "en": _Words(
        on_zone="on the {zone}",
        along="{mm} from its {end}",
        ends={"left end": "left end", "top end": "top end"},
        over_type="over the {limit} {type} limit",
        within_type="within the {limit} {type} limit",
        over_cosmetic="over the {limit} cosmetic limit",
        within_cosmetic="within the {limit} cosmetic limit",
        cosmetic="cosmetic",
        there=" there",
        over_count="{n} found, over the limit of {limit}",
        over_score="over the model's anomaly limit",
        under_score="below the model's anomaly limit",
        always="{type} is always rejected",
        several="{n} defects, worst first: ",
        more=" (+{n} more)",
        cause=" Likely cause: {cause}.",
        dash=" — ",
        list_sep="; ",
        sep=", ",
        stop=".",
        decimal=".",
        repeat_at_zone="Repeating {type} {where} on {n} of the last {m} parts.",
        repeat_stopped="Repeating {type} {where} has stopped ({n} of the last {m} parts).",
        where_along="{mm} from the {end} of the {zone}",
        where_zone="on the {zone}",
        where_point="at x {x}, y {y} on the part",
    ),
    "de": _Words(
        on_zone="im Bereich {zone}",
        along="{mm} vom {end}",
        ends={"left end": "linken Ende", "top end": "oberen Ende"},
        over_type="über der Grenze von {limit} für {type}",
        within_type="innerhalb der Grenze von {limit} für {type}",
        over_cosmetic="über der kosmetischen Grenze von {limit}",
        within_cosmetic="innerhalb der kosmetischen Grenze von {limit}",
        cosmetic="kosmetisch",
        there=" dort",
        over_count="{n} gefunden, mehr als die erlaubten {limit}",
        over_score="über der Anomaliegrenze des Modells",
        under_score="unter der Anomaliegrenze des Modells",
        always="{type} wird immer ausgeschleust",
        several="{n} Fehler, der schwerste zuerst: ",
        more=" (+{n} weitere)",
        cause=" Wahrscheinliche Ursache: {cause}.",
        dash=" — ",
        list_sep="; ",
        sep=", ",
        stop=".",
        decimal=",",
        repeat_at_zone="Wiederkehrend: {type} {where} auf {n} der letzten {m} Teile.",
        repeat_stopped="Wiederkehrend: {type} {where} hat aufgehört ({n} der letzten {m} Teile).",
        where_along="{mm} vom {end} des Bereichs {zone}",
        where_zone="im Bereich {zone}",
        where_point="bei x {x}, y {y} auf dem Teil",
    ),
    "ja": _Words(
        on_zone="{zone}",
        along="{end}から{mm}",
        ends={"left end": "左端", "top end": "上端"},
        over_type="{type}の上限 {limit} を超過",
        within_type="{type}の上限 {limit} 以内",
        over_cosmetic="外観上の許容 {limit} を超過",
        within_cosmetic="外観上の許容 {limit} 以内",
        cosmetic="外観上許容",
        there="",
        over_count="{n}件、上限{limit}件を超過",
        over_score="モデルの異常度上限を超過",
        under_score="モデルの異常度上限未満",
        always="{type}は常に排出",
        several="欠陥{n}件(重い順): ",
        more="(他に{n}件)",
        cause=" 推定原因: {cause}。",
        dash=" — ",
        list_sep="; ",
        sep="、",
        stop="。",
        decimal=".",
        repeat_at_zone="{where}で{type}が繰り返し発生(直近{m}個中{n}個)。",
        repeat_stopped="{where}の{type}の繰り返しは解消(直近{m}個中{n}個)。",
        where_along="{zone}の{end}から{mm}",
        where_zone="{zone}",
        where_point="部品上 x {x}、y {y}",
    ),
}


def _number(text: str, w: _Words) -> str:
    return text.replace(".", w.decimal) if w.decimal != "." else text


def _limit(value: float | None, unit: str, w: _Words) -> str:
    if value is None:
        return ""
    return _number(f"{value:g}{unit}", w)


class SentenceWriter:
    """Renders recipe decisions; holds the zones (for their names) and the cause table.

    ``fallbacks`` counts English sentences in the model's frame that were replaced
    because a claim disagreed with the decision, ``mismatches`` by claim.
    """

    def __init__(
        self,
        zones: Sequence[ZoneSettings],
        rules: Sequence[RuleSettings],
        causes: Sequence[CauseSettings],
    ) -> None:
        self._zones = {z.name: z for z in zones}
        self._rules = tuple(rules)
        self._causes = tuple(causes)
        self.fallbacks = 0
        self.mismatches: dict[str, int] = {}

    def cause(self, j: JudgedFinding, language: Language) -> str | None:
        """The likely cause of ``j`` from the recipe's table, ``None`` when none applies."""
        for c in self._causes:
            if c.types and j.defect_type not in c.types:
                continue
            if c.zone != ANY_ZONE and c.zone != self.zone_of(j):
                continue
            return c.text.get(language, c.text["en"])
        return None

    def zone_of(self, j: JudgedFinding) -> str | None:
        """The zone a finding is named in: the deciding rule's own zone (so the sentence
        names the place the rule speaks of), else the zone holding most of it."""
        if j.rule_index is not None:
            zone = self._rules[j.rule_index].zone
            if zone != ANY_ZONE and zone in j.placement.zones:
                return zone
        return j.placement.zone

    def finding(self, j: JudgedFinding, language: Language, frame: str = "") -> str:
        """One finding: what, how long, where, and what the rule made of it.

        ``frame`` is the model's own guarded, slotted sentence (``"crack, <size>,
        <place>"``): in English its words are used and the length and the place
        (zone, or grid place outside every zone) go into its slots; the other
        languages have their canonical phrasing, slot for slot the same.
        """
        w = _WORDS[language]
        p = j.placement
        what = type_name(j.defect_type, language)
        size = _number(format_size_mm(p.length_mm), w)
        places: list[str] = []
        zone = self.zone_of(j)
        if zone is not None:
            name = self._zones[zone].name_in(language) if zone in self._zones else zone
            places.append(w.on_zone.format(zone=name))
            along_mm, along_from = p.along(zone)
            if along_from:
                mm = _number(format_size_mm(along_mm), w)
                places.append(w.along.format(mm=mm, end=w.ends[along_from]))
        elif p.location:
            places.append(location_name(p.location, language))
        if frame and language == "en":
            head = fill(frame, size, w.sep.join(places) or "on the part")
        else:
            head = w.sep.join([what, size, *places])
        return head + w.dash + self._judgement(j, what, w)

    def _judgement(self, j: JudgedFinding, what: str, w: _Words) -> str:
        if j.rule_index is None:
            if j.rule == TYPE_RULE:
                return w.always.format(type=what)
            return w.over_score if j.rejects or j.rule != SCORE_RULE else w.under_score
        rule = self._rules[j.rule_index]
        there = "" if rule.zone == ANY_ZONE else w.there
        if j.limit == "count":
            return w.over_count.format(n=j.count, limit=int(j.limit_value or 0)) + there
        unit = " mm²" if j.limit == "area" else " mm"
        limit = _limit(j.limit_value, unit, w)
        if not limit:
            return w.cosmetic + there
        if j.cosmetic:
            return (w.over_cosmetic if j.rejects else w.within_cosmetic).format(limit=limit) + there
        return (w.over_type if j.rejects else w.within_type).format(limit=limit, type=what) + there

    def sentence(self, decision: RuleDecision, language: Language, frame: str = "") -> str:
        """The whole sentence for one part in ``language`` (``frame``: see ``finding``)."""
        w = _WORDS[language]
        if not decision.findings:
            if decision.reject:  # an anomaly the map could not place
                text = w.over_score if decision.rule == SCORE_RULE else decision.rule
                return text[:1].upper() + text[1:] + w.stop
            return render_explanation(None, language)
        shown = decision.findings[:MAX_LISTED]
        body = w.list_sep.join(self.finding(j, language, frame) for j in shown)
        text = body[:1].upper() + body[1:]
        n = len(decision.findings)
        if n > 1:
            text = w.several.format(n=n) + text
            if n > MAX_LISTED:
                text += w.more.format(n=n - MAX_LISTED)
        text += w.stop
        cited = decision.cited
        cause = self.cause(cited, language) if cited is not None else None
        if cause:
            text += w.cause.format(cause=cause)
        return text

    def repeat(
        self,
        *,
        stopped: bool,
        defect_type: str,
        zone: str | None,
        along: tuple[float, str],
        x_mm: float,
        y_mm: float,
        parts: int,
        window: int,
        language: Language,
    ) -> str:
        """The line-level sentence of a repeating defect (or of its end), e.g. "Repeating
        scratch 12 mm from the left end of the rim on 5 of the last 20 parts."."""
        w = _WORDS[language]
        what = type_name(defect_type, language)
        if zone is not None:
            name = self._zones[zone].name_in(language) if zone in self._zones else zone
            along_mm, along_from = along
            if along_from:
                where = w.where_along.format(
                    mm=_number(format_size_mm(along_mm), w),
                    end=w.ends[along_from],
                    zone=name,
                )
            else:
                where = w.where_zone.format(zone=name)
        else:
            where = w.where_point.format(
                x=_number(format_size_mm(x_mm), w), y=_number(format_size_mm(y_mm), w)
            )
        text = (w.repeat_stopped if stopped else w.repeat_at_zone).format(
            type=what, where=where, n=parts, m=window
        )
        return text[:1].upper() + text[1:]

    def sentences(self, decision: RuleDecision, frame: str = "") -> dict[Language, str]:
        """The sentence in every language (``frame``: see ``finding``).

        The English sentence written in the model's frame is checked claim by claim
        (``claims_wrong``); one that disagrees is replaced by the facts rendered
        plainly, and counted (``fallbacks``, ``mismatches``).
        """
        out = {lang: self.sentence(decision, lang, frame) for lang in LANGUAGES}
        if frame:
            wrong = self.claims_wrong(out["en"], decision)
            if wrong:
                self.fallbacks += 1
                for claim in wrong:
                    self.mismatches[claim] = self.mismatches.get(claim, 0) + 1
                log.info("recipe_sentence_replaced", text=out["en"], mismatches=wrong)
                out["en"] = self.sentence(decision, "en")
        return out

    def claims_wrong(self, text: str, decision: RuleDecision) -> tuple[str, ...]:
        """What the English ``text`` states that the decision does not: ``"count"`` (the
        number of defects), and per finding written out ``"type"``, ``"zone"``, ``"size"``
        (its length within the display's rounding, ``SIZE_TOLERANCE_MM`` below 10 mm, half a
        millimetre above) and ``"rule"`` (the limit the rule judged it on)."""
        wrong: list[str] = []
        n = len(decision.findings)
        lead = _LEAD.match(text)
        if (int(lead[1]) if lead else 1) != n:
            wrong.append("count")
        body = text[lead.end() :] if lead else text
        clauses = body.split(_WORDS["en"].list_sep)
        shown = decision.findings[:MAX_LISTED]
        if len(clauses) != len(shown):
            return (*wrong, "count")
        for clause, j in zip(clauses, shown, strict=True):
            head, _, judgement = clause.partition(_WORDS["en"].dash)
            words = head.split(", ")
            if words[0].lower() != type_name(j.defect_type, "en").lower():
                wrong.append("type")
            zone = self.zone_of(j)
            named = self._zones[zone].name_in("en") if zone in self._zones else zone
            if zone is not None and f"on the {named}" not in head:
                wrong.append("zone")
            stated = _MM.match(words[1]) if len(words) > 1 else None
            tol = SIZE_TOLERANCE_MM if j.placement.length_mm < 9.95 else 0.5
            if stated is None or abs(float(stated[1]) - j.placement.length_mm) > tol:
                wrong.append("size")
            limit = _limit(j.limit_value, "", _WORDS["en"])
            if not judgement or (limit and j.limit != "count" and f"{limit} " not in judgement):
                wrong.append("rule")
        return tuple(dict.fromkeys(wrong))
