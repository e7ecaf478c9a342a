"""Ranking metrics without extra dependencies: AUROC exact for image scores, binned for pixels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata


def auroc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count half). Raises ``ValueError`` without both classes."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs positive and negative samples")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(
    scores: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """False and true positive rates over every threshold, from (0, 0) to (1, 1)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    order = np.argsort(-s, kind="stable")
    tp = np.concatenate([[0], np.cumsum(y[order])])
    fp = np.concatenate([[0], np.cumsum(~y[order])])
    return fp / max(1, int((~y).sum())), tp / max(1, int(y.sum()))


class PixelAuroc:
    """Streaming pixel AUROC over probabilities in 0..1, binned into ``bins`` levels."""

    def __init__(self, bins: int = 4096) -> None:
        self.bins = bins
        self.pos = np.zeros(bins, dtype=np.int64)
        self.neg = np.zeros(bins, dtype=np.int64)

    def add(self, prob: npt.NDArray[np.floating], mask: npt.NDArray[np.bool_]) -> None:
        """Count one map (values clipped to 0..1) against its mask."""
        idx = np.clip(
            (np.asarray(prob, dtype=np.float64) * (self.bins - 1)).astype(np.int64),
            0,
            self.bins - 1,
        )
        self.pos += np.bincount(idx[mask], minlength=self.bins)
        self.neg += np.bincount(idx[~mask], minlength=self.bins)

    def value(self) -> float:
        """The AUROC of everything added. Raises ``ValueError`` without both classes."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            raise ValueError("pixel AUROC needs anomalous and normal pixels")
        # Pairs where the positive is in a higher bin, plus half of the ties.
        neg_below = np.cumsum(self.neg) - self.neg
        wins = float((self.pos * neg_below).sum() + 0.5 * (self.pos * self.neg).sum())
        return wins / (n_pos * n_neg)

    def curve(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """False and true positive rates from the highest bin down."""
        tp = np.concatenate([[0], np.cumsum(self.pos[::-1])]) / max(1, int(self.pos.sum()))
        fp = np.concatenate([[0], np.cumsum(self.neg[::-1])]) / max(1, int(self.neg.sum()))
        return fp, tp


def best_threshold(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """The threshold maximising TPR - FPR (Youden), midway between neighbouring scores."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    tpr = np.cumsum(yy) / max(1, int(yy.sum()))
    fpr = np.cumsum(~yy) / max(1, int((~yy).sum()))
    j = tpr - fpr
    # Only cut between distinct scores.
    distinct = np.append(ss[:-1] > ss[1:], True)
    j = np.where(distinct, j, -np.inf)
    k = int(np.argmax(j))
    lower = ss[k + 1] if k + 1 < ss.size else ss[k] - 1e-3
    return float((ss[k] + lower) / 2.0)


def false_alarm_threshold(scores: npt.ArrayLike, labels: npt.ArrayLike, max_rate: float) -> float:
    """The lowest threshold that at most ``max_rate`` of the good (``labels`` false)
    ``scores`` reach, cut midway between neighbouring scores of either kind (just above
    the highest score when nothing is above it). Raises ``ValueError`` without goods."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    goods = np.sort(s[~y])[::-1]
    if goods.size == 0:
        raise ValueError("no good scores to set a false-alarm threshold on")
    allowed = int(np.floor(max_rate * goods.size + 1e-9))
    if allowed >= goods.size:
        return float(goods[-1])
    below = goods[allowed]
    higher = s[s > below]
    above = float(higher.min()) if higher.size else below + 1e-3
    return float((below + above) / 2.0)


def bootstrap_ci(
    statistic: Callable[[npt.NDArray[np.int64]], float],
    groups: Sequence[int],
    *,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of ``statistic(indices)`` over items resampled with
    replacement, each group of ``groups`` (item counts, items numbered group after group)
    resampled on its own so every resample keeps the groups' sizes (an AUROC keeps both
    classes). None when there are fewer than two items in all."""
    sizes = [int(g) for g in groups]
    if sum(sizes) < 2:
        return None
    rng = np.random.default_rng(seed)
    starts = np.cumsum([0, *sizes[:-1]])
    values = np.empty(resamples)
    for r in range(resamples):
        idx = np.concatenate(
            [s + rng.integers(0, n, n) for s, n in zip(starts, sizes, strict=True) if n]
        )
        values[r] = statistic(idx)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(values, [tail, 1.0 - tail])
    return float(lo), float(hi)
