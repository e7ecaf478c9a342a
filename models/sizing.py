"""The defect length behind the size fact: the size head and the measured region, calibrated.

Neither length alone is good enough near the size-class boundaries (2.5 and
5 mm), and each errs by defect type (on validation data of the demo model the
size head saturates near 6 mm on long scratches and reads spots long; the map's
main region misses a scratch's faint ends and grows soft spots). A package
therefore records, per defect type the type head predicts, a linear model in
log space fitted by least squares on its validation defects::

    log length = c0 + c1 * log head_mm + c2 * log region_length_mm + c3 * log region_area_mm2

and, for images without a measured region (below the image threshold), one
on the head alone (``log length = c0 + c1 * log head_mm``). Types with too few
validation defects use the coefficients fitted over all types (key ``"*"``).
Per type, the map's region length alone is kept instead of the fit where it is
within ``LENGTH_TOLERANCE`` of the truth on more validation defects.
``SizeCalibration.length_mm`` applies them; ``fit_size_calibration`` fits
them. Pure numpy: the runtimes use it on the in-cycle path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

ALL_TYPES = "*"
"""The key of the coefficients fitted over every type (used for types without their own)."""
MIN_FIT_SAMPLES = 12
"""Fewest validation defects of a type for it to get its own coefficients."""
LENGTH_TOLERANCE = (0.15, 0.5)
"""A stated length is right within 15 % or 0.5 mm of the true one, whichever is larger."""
_FLOOR_MM = 0.05
"""Lengths and areas are floored here before the logarithm (a one-pixel region is ~0.125 mm)."""


class SizeCalibration(BaseModel):
    """Per-type coefficients of the calibrated length (see the module docstring).

    ``with_region[type]`` is ``(c0, c1, c2, c3)``; ``head_only[type]`` is ``(c0, c1)``;
    both hold the ``"*"`` key. ``fitted_on`` counts the validation defects fitted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    with_region: dict[str, tuple[float, float, float, float]]
    head_only: dict[str, tuple[float, float]]
    fitted_on: int = Field(ge=0)

    @field_validator("with_region", "head_only")
    @classmethod
    def _has_default(cls, v: Mapping[str, tuple[float, ...]]) -> Mapping[str, tuple[float, ...]]:
        if ALL_TYPES not in v:
            raise ValueError(f"needs the {ALL_TYPES!r} key (coefficients over all types)")
        if not all(math.isfinite(c) for cs in v.values() for c in cs):
            raise ValueError("coefficients must be finite")
        return v

    def length_mm(
        self,
        defect_type: str,
        head_mm: float,
        region_length_mm: float | None = None,
        region_area_mm2: float | None = None,
    ) -> float:
        """The calibrated length (mm) of a defect the type head calls ``defect_type``.

        ``head_mm`` is the size head's length; the region's length and area are
        those of the main measured region, ``None`` where there is none.
        """
        h = math.log(max(head_mm, _FLOOR_MM))
        if region_length_mm is None or region_area_mm2 is None:
            c0, c1 = self.head_only.get(defect_type, self.head_only[ALL_TYPES])
            return math.exp(c0 + c1 * h)
        g = math.log(max(region_length_mm, _FLOOR_MM))
        a = math.log(max(region_area_mm2, _FLOOR_MM * _FLOOR_MM))
        c0, c1, c2, c3 = self.with_region.get(defect_type, self.with_region[ALL_TYPES])
        return math.exp(c0 + c1 * h + c2 * g + c3 * a)


@dataclass(frozen=True, slots=True)
class SizeSample:
    """One validation defect: the type head's choice, the lengths the runtime measured
    (mm; region ``None`` where it found none) and the true length from the mask (mm)."""

    predicted_type: str
    head_mm: float
    region_length_mm: float | None
    region_area_mm2: float | None
    true_mm: float


def _lstsq(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> list[float]:
    # A little ridge on the slopes (not the intercept) keeps a small type's fit sane.
    reg = 1e-3 * len(y) * np.eye(x.shape[1])
    reg[0, 0] = 0.0
    coef = np.linalg.solve(x.T @ x + reg, x.T @ y)
    return [float(c) for c in coef]


def _within(length: npt.NDArray[np.float64], truth: npt.NDArray[np.float64]) -> int:
    """How many ``length`` are within ``LENGTH_TOLERANCE`` of ``truth``."""
    rel, abs_mm = LENGTH_TOLERANCE
    return int(np.sum(np.abs(length - truth) <= np.maximum(abs_mm, rel * truth)))


def fit_size_calibration(samples: Sequence[SizeSample]) -> SizeCalibration:
    """Least-squares coefficients per predicted type from validation ``samples``.

    Raises ``ValueError`` with fewer than ``MIN_FIT_SAMPLES`` samples in all.
    """
    usable = [s for s in samples if s.true_mm > 0 and s.head_mm > 0]
    if len(usable) < MIN_FIT_SAMPLES:
        raise ValueError(
            f"size calibration needs at least {MIN_FIT_SAMPLES} validation defects with "
            f"masks, got {len(usable)}"
        )
    with_region: dict[str, tuple[float, float, float, float]] = {}
    head_only: dict[str, tuple[float, float]] = {}
    groups: dict[str, list[SizeSample]] = {ALL_TYPES: usable}
    for s in usable:
        groups.setdefault(s.predicted_type, []).append(s)
    for key, group in groups.items():
        if len(group) < MIN_FIT_SAMPLES:
            continue
        y = np.log([max(s.true_mm, _FLOOR_MM) for s in group])
        h = np.log([max(s.head_mm, _FLOOR_MM) for s in group])
        c0, c1 = _lstsq(np.stack([np.ones_like(h), h], axis=1), y)
        head_only[key] = (c0, c1)
        regional = [
            i
            for i, s in enumerate(group)
            if s.region_length_mm is not None and s.region_area_mm2 is not None
        ]
        if len(regional) < MIN_FIT_SAMPLES:
            continue
        g = np.log([max(group[i].region_length_mm or 0.0, _FLOOR_MM) for i in regional])
        a = np.log([max(group[i].region_area_mm2 or 0.0, _FLOOR_MM**2) for i in regional])
        x = np.stack([np.ones_like(g), h[regional], g, a], axis=1)
        fitted = tuple(_lstsq(x, y[regional]))
        # The least-squares fit minimises the log error; what a sentence needs is a length
        # within tolerance. Where the map's own region length is within it more often on
        # these validation defects (thin scratches, whose faint ends the head misjudges),
        # the region's length is used as it is.
        truth = np.exp(y[regional])
        region_only = (0.0, 0.0, 1.0, 0.0)
        hits = {c: _within(np.exp(x @ np.array(c)), truth) for c in (fitted, region_only)}
        best = fitted if hits[fitted] >= hits[region_only] else region_only
        r0, r1, r2, r3 = best
        with_region[key] = (r0, r1, r2, r3)
    if ALL_TYPES not in with_region:
        c0, c1 = head_only[ALL_TYPES]
        with_region[ALL_TYPES] = (c0, c1, 0.0, 0.0)
    return SizeCalibration(with_region=with_region, head_only=head_only, fitted_on=len(usable))
