"""The recipe's plant vocabulary as configuration: named zones, rules over them, likely causes.

A quality engineer writes an inspection spec as "any crack on the sealing rim
rejects; scratches up to 2 mm on the back face are cosmetic". These settings
say exactly that, in part millimetres (x to the right, y down, from the part's
upper-left corner as the camera sees it)::

    [[inspection.recipe.zones]]
    name = "sealing rim"
    names = { de = "Dichtrand", ja = "シールリム" }
    rects_mm = [[0, 0, 24, 2.5], [0, 21.5, 24, 24]]

    [[inspection.recipe.rules]]
    zone = "sealing rim"
    types = ["crack"]
    action = "reject"            # any crack there (no limit given: 0 mm)

    [[inspection.recipe.rules]]
    zone = "back face"
    types = ["scratch"]
    action = "accept"            # cosmetic ...
    max_length_mm = 2.0          # ... up to 2 mm

    [[inspection.recipe.causes]]
    types = ["crack"]
    zone = "sealing rim"
    text = { en = "gate too cold", de = "Anschnitt zu kalt", ja = "ゲート温度不足" }

A zone is rectangles (``rect_mm``/``rects_mm``, their union) or one polygon
(``polygon_mm``), or the pixels of one colour in ``zone_image`` (a PNG a
quality engineer paints, stretched over the part's bounding box). Findings no
rule covers are judged by the model's score rule (``reject_score``,
``min_region_area_mm2``, ``reject_types``), the catch-all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ANY_ZONE = "*"
"""A rule's ``zone`` that matches a finding anywhere on the part (the default)."""

LanguageCode = Literal["en", "de", "ja"]

_Number = Annotated[float, Field(allow_inf_nan=False)]
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ZoneSettings(_Strict):
    """``[[inspection.recipe.zones]]``: one named place on the part.

    ``names`` gives the name in other languages (the name itself is used where
    one is missing); exactly one of ``rect_mm``, ``rects_mm``, ``polygon_mm``,
    ``colour`` (a colour of the recipe's ``zone_image``, ``"#rrggbb"``).
    """

    name: Annotated[str, Field(min_length=1, max_length=64)]
    names: dict[LanguageCode, Annotated[str, Field(min_length=1, max_length=64)]] = {}
    rect_mm: tuple[_Number, _Number, _Number, _Number] | None = None
    rects_mm: tuple[tuple[_Number, _Number, _Number, _Number], ...] | None = None
    polygon_mm: tuple[tuple[_Number, _Number], ...] | None = None
    colour: str | None = None

    @field_validator("rect_mm")
    @classmethod
    def _rect(cls, v: tuple[float, float, float, float] | None) -> object:
        if v is not None:
            _check_rect(v)
        return v

    @field_validator("rects_mm")
    @classmethod
    def _rects(cls, v: tuple[tuple[float, float, float, float], ...] | None) -> object:
        if v is not None:
            if not v:
                raise ValueError("needs at least one [x0, y0, x1, y1]")
            for r in v:
                _check_rect(r)
        return v

    @field_validator("polygon_mm")
    @classmethod
    def _polygon(cls, v: tuple[tuple[float, float], ...] | None) -> object:
        if v is not None and len(v) < 3:
            raise ValueError(f"a polygon needs at least 3 [x, y] points, got {len(v)}")
        return v

    @field_validator("colour")
    @classmethod
    def _colour(cls, v: str | None) -> str | None:
        if v is not None and not _COLOUR.match(v):
            raise ValueError(f"must be '#rrggbb', got {v!r}")
        return v.lower() if v is not None else None

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneSettings:
        given = [
            k
            for k in ("rect_mm", "rects_mm", "polygon_mm", "colour")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                f"zone {self.name!r} needs exactly one of rect_mm, rects_mm, polygon_mm, colour"
                + (f" (has {', '.join(given)})" if given else "")
            )
        return self

    def name_in(self, language: str) -> str:
        """The zone's name in ``language`` (its own name where none is given)."""
        for lang, text in self.names.items():
            if lang == language:
                return text
        return self.name


def _check_rect(r: tuple[float, float, float, float]) -> None:
    x0, y0, x1, y1 = r
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"[x0, y0, x1, y1] needs x1 > x0 and y1 > y0, got {list(r)}")


class RuleSettings(_Strict):
    """``[[inspection.recipe.rules]]``: what findings of some types in one zone may be.

    A rule covers findings of ``types`` (empty: every type) touching ``zone``
    (``"*"``: anywhere). ``action = "reject"``: a covered finding rejects the part
    unless it is within the limits given (none given: any covered finding
    rejects). ``action = "accept"``: covered findings are cosmetic, up to the
    limits given (none: any size). ``max_length_mm`` and ``max_area_mm2`` bound
    each finding, ``max_count`` how many covered findings one part may have.
    ``name`` is what a verdict cites (default: made from the rule).
    """

    name: Annotated[str, Field(max_length=96)] = ""
    zone: str = ANY_ZONE
    types: tuple[str, ...] = ()
    action: Literal["reject", "accept"]
    max_length_mm: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_area_mm2: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    max_count: Annotated[int, Field(ge=0, le=1000)] | None = None

    @property
    def title(self) -> str:
        """The name a verdict cites: ``name``, else e.g. ``"crack on sealing rim: reject"``."""
        if self.name:
            return self.name
        what = "/".join(self.types) if self.types else "any defect"
        where = "anywhere" if self.zone == ANY_ZONE else f"on {self.zone}"
        return f"{what} {where}: {self.action}"

    @property
    def length_limit_mm(self) -> float:
        """The length a covered finding may have: the limit given, else 0 (reject) or inf."""
        if self.max_length_mm is not None:
            return self.max_length_mm
        return 0.0 if self.action == "reject" and not self._any_limit else math.inf

    @property
    def _any_limit(self) -> bool:
        return (
            self.max_length_mm is not None
            or self.max_area_mm2 is not None
            or self.max_count is not None
        )


class CauseSettings(_Strict):
    """``[[inspection.recipe.causes]]``: the likely cause of ``types`` (empty: any) in
    ``zone`` (``"*"``: anywhere), in each language (``en`` needed; the others fall back
    to it)."""

    types: tuple[str, ...] = ()
    zone: str = ANY_ZONE
    text: dict[LanguageCode, Annotated[str, Field(min_length=1, max_length=160)]]

    @field_validator("text")
    @classmethod
    def _english(cls, v: dict[str, str]) -> dict[str, str]:
        if "en" not in v:
            raise ValueError("needs at least the English text (en = ...)")
        return v


class RepeatsSettings(_Strict):
    """``[inspection.recipe.repeats]``: when the same defect coming back at one place is
    announced: one type on ``min_parts`` of the last ``window_parts`` parts within
    ``distance_mm`` of one place (``node.line.repeats``); ``enabled = false`` turns it off."""

    enabled: bool = True
    window_parts: Annotated[int, Field(ge=1, le=10_000)] = 20
    min_parts: Annotated[int, Field(ge=1, le=10_000)] = 5
    distance_mm: Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False)] = 2.0

    @model_validator(mode="after")
    def _fits(self) -> RepeatsSettings:
        if self.min_parts > self.window_parts:
            raise ValueError(
                f"min_parts ({self.min_parts}) must not exceed window_parts ({self.window_parts})"
            )
        return self


def recipe_problems(recipe: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Rules between the recipe's tables, on the raw ``[inspection.recipe]`` mapping:
    ``[(key path under the recipe, problem)]`` (empty when sound).

    Works on unvalidated values (what is not a table or a string is skipped; its own
    error is reported by validation), so these problems come out beside the others.
    """

    def table(name: str) -> list[Mapping[str, Any]]:
        items = recipe.get(name, ())
        if not isinstance(items, list | tuple):
            return []
        return [x if isinstance(x, Mapping) else {} for x in items]

    zones, rules, causes = table("zones"), table("rules"), table("causes")
    problems: list[tuple[str, str]] = []
    names = [z.get("name") for z in zones]
    for i, name in enumerate(names):
        if name == ANY_ZONE:
            problems.append((f"zones.{i}.name", f"{ANY_ZONE!r} means anywhere; pick another name"))
        elif isinstance(name, str) and name in names[:i]:
            problems.append((f"zones.{i}.name", f"{name!r} is used twice"))
    known = {n for n in names if isinstance(n, str)} | {ANY_ZONE}
    listed = ", ".join(n for n in names if isinstance(n, str)) or "none"
    for kind, items in (("rules", rules), ("causes", causes)):
        for i, item in enumerate(items):
            zone = item.get("zone", ANY_ZONE)
            if isinstance(zone, str) and zone not in known:
                problems.append((f"{kind}.{i}.zone", f"no zone named {zone!r} (zones: {listed})"))
    colours = [str(z.get("colour")).lower() if z.get("colour") else None for z in zones]
    image = recipe.get("zone_image")
    for i, colour in enumerate(colours):
        if colour is None:
            continue
        if image is None:
            problems.append((f"zones.{i}.colour", "needs inspection.recipe.zone_image"))
        elif colour in colours[:i]:
            problems.append((f"zones.{i}.colour", f"{colour} names two zones"))
    if image is not None and not any(colours):
        problems.append(("zone_image", "no zone names one of its colours (colour = '#rrggbb')"))
    return problems
