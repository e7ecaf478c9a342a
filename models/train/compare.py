"""Is the new package better than the one on the line? Both scored on the same unseen images.

``compare`` runs two packages over the test images *neither* of them saw
(``models.data.holdout``), then resamples those images (a paired bootstrap:
both packages are judged on the same resampled set each time) to give each
metric's difference new − old with its 95 % interval and the share of
resamples in which the new package did better. The verdict is ``better`` when
some headline metric is better beyond its interval and none worse, ``worse``
the other way round, ``mixed`` when both happen, else ``no clear difference``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.train.evaluate import Outcomes
from models.train.metrics import auroc

Verdict = Literal["better", "worse", "mixed", "no clear difference"]

_RESAMPLES = 2000


@dataclass(frozen=True, slots=True)
class Difference:
    """new − old for one metric, its 95 % interval, and P(new better) over resamples."""

    old: float
    new: float
    delta: float
    ci95: tuple[float, float]
    p_new_better: float
    higher_is_better: bool

    @property
    def significant(self) -> Literal["better", "worse", ""]:
        """Whether the interval excludes 0, and which way that is for the new package."""
        lo, hi = self.ci95
        if lo > 0 or hi < 0:
            up = lo > 0
            return "better" if up == self.higher_is_better else "worse"
        return ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": round(self.old, 4),
            "new": round(self.new, 4),
            "new_minus_old": round(self.delta, 4),
            "ci95": [round(self.ci95[0], 4), round(self.ci95[1], 4)],
            "p_new_better": round(self.p_new_better, 3),
            "significant": self.significant or "no",
        }


def paired_differences(old: Outcomes, new: Outcomes, seed: int = 0) -> dict[str, Difference]:
    """Each headline metric's new − old on the same images (``old`` and ``new`` must come
    from the same images in the same order). Raises ``ValueError`` otherwise."""
    y = np.array(old.labels, dtype=bool)
    if list(y) != list(new.labels):
        raise ValueError("the two runs were not on the same images")
    s_old, s_new = np.array(old.scores), np.array(new.scores)
    goods, bads = np.flatnonzero(~y), np.flatnonzero(y)
    rng = np.random.default_rng(seed)
    samples = [
        np.concatenate([rng.choice(goods, goods.size), rng.choice(bads, bads.size)])
        for _ in range(_RESAMPLES)
    ]
    n = y.size
    det_old = np.zeros(n, bool)
    det_new = np.zeros(n, bool)
    det_old[bads] = np.array(old.detected, bool)
    det_new[bads] = np.array(new.detected, bool)

    def per_image(items: list[int], hits: Sequence[object]) -> npt.NDArray[np.float64]:
        v = np.full(n, np.nan)
        for i, h in zip(items, hits, strict=True):
            v[i] = float(np.mean(np.asarray(h, dtype=np.float64)))
        return v

    metrics: dict[str, tuple[Callable[[npt.NDArray[np.int64]], tuple[float, float]], bool]] = {
        "image_auroc": (
            lambda i: (auroc(s_old[i], y[i]), auroc(s_new[i], y[i])),
            True,
        ),
        "false_alarm_rate": (
            lambda i: _rates(s_old[i][~y[i]] >= 1.0, s_new[i][~y[i]] >= 1.0),
            False,
        ),
        "detection_rate": (lambda i: _rates(det_old[i][y[i]], det_new[i][y[i]]), True),
    }
    t_old, t_new = (
        per_image(old.type_items, old.type_hits),
        per_image(new.type_items, new.type_hits),
    )
    f_old, f_new = (
        per_image(old.fact_items, old.fact_hits),
        per_image(new.fact_items, new.fact_hits),
    )
    both_t = ~np.isnan(t_old) & ~np.isnan(t_new)
    both_f = ~np.isnan(f_old) & ~np.isnan(f_new)
    if both_t.any():
        metrics["type_accuracy"] = (lambda i: _means(t_old, t_new, i, both_t), True)
    if both_f.any():
        metrics["explanation_fact_accuracy"] = (lambda i: _means(f_old, f_new, i, both_f), True)
    everyone = np.arange(n)
    out: dict[str, Difference] = {}
    for name, (stat, higher) in metrics.items():
        base_old, base_new = stat(everyone)
        deltas = np.array([np.subtract(*stat(i)[::-1]) for i in samples])
        deltas = deltas[~np.isnan(deltas)]
        lo, hi = np.quantile(deltas, [0.025, 0.975]) if deltas.size else (np.nan, np.nan)
        better = deltas > 0 if higher else deltas < 0
        out[name] = Difference(
            base_old,
            base_new,
            base_new - base_old,
            (float(lo), float(hi)),
            float(better.mean()) if deltas.size else 0.0,
            higher,
        )
    return out


def verdict(diffs: dict[str, Difference]) -> Verdict:
    """``better``/``worse``/``mixed``/``no clear difference`` (see the module docstring)."""
    ways = {d.significant for d in diffs.values()} - {""}
    if ways == {"better"}:
        return "better"
    if ways == {"worse"}:
        return "worse"
    return "mixed" if ways else "no clear difference"


def _rates(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> tuple[float, float]:
    return (float(a.mean()), float(b.mean())) if a.size else (np.nan, np.nan)


def _means(
    a: npt.NDArray[np.float64],
    b: npt.NDArray[np.float64],
    idx: npt.NDArray[np.int64],
    both: npt.NDArray[np.bool_],
) -> tuple[float, float]:
    sel = idx[both[idx]]
    return (float(a[sel].mean()), float(b[sel].mean())) if sel.size else (np.nan, np.nan)


__all__ = ["Difference", "paired_differences", "verdict"]
