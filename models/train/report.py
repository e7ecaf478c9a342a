"""The PNG evaluation report: ROC curves, per-type confusion, examples with heatmap and sentence."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a display

import matplotlib.pyplot as plt
import numpy as np

from models.train.evaluate import Evaluation


def write_report(ev: Evaluation, out_png: str | Path, title: str = "") -> Path:
    """Draw ``ev`` into ``out_png``; its path. Raises ``OSError`` if it cannot be written."""
    n_ex = max(1, len(ev.examples))
    fig = plt.figure(figsize=(4.0 * max(3, n_ex), 8.5), dpi=80)
    grid = fig.add_gridspec(2, max(3, n_ex))
    ax = fig.add_subplot(grid[0, 0])
    m = ev.metrics
    ax.plot(*ev.image_roc, label=f"image AUROC {m['image_auroc']:.3f}")
    ax.plot(*ev.pixel_roc, label=f"pixel AUROC {m['pixel_auroc']:.3f}")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", fontsize=8)

    ax = fig.add_subplot(grid[0, 1])
    true_types = sorted(ev.confusion)
    pred_types = sorted({p for row in ev.confusion.values() for p in row} | set(true_types))
    mat = np.array(
        [[ev.confusion[t].get(p, 0) for p in pred_types] for t in true_types], dtype=float
    )
    norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(mat):
        if v:
            ax.text(c, r, f"{int(v)}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(pred_types)), pred_types, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(true_types)), true_types, fontsize=7)
    ax.set(
        title=f"type head (accuracy {m['type_accuracy']:.3f})", xlabel="predicted", ylabel="true"
    )

    ax = fig.add_subplot(grid[0, 2])
    ax.axis("off")
    lines = [f"{k}: {v:.4g}" for k, v in sorted(m.items())]
    ax.text(0, 1, "\n".join(lines), va="top", family="monospace", fontsize=8)
    ax.set_title(title or "metrics")

    for i, ex in enumerate(ev.examples):
        ax = fig.add_subplot(grid[1, i])
        ax.imshow(ex.image, cmap="gray", vmin=0, vmax=255)
        ax.imshow(np.ma.masked_less(ex.prob, 0.05), cmap="jet", alpha=0.45, vmin=0, vmax=1)
        if ex.mask.any():
            ax.contour(ex.mask, levels=[0.5], colors="white", linewidths=0.6)
        ax.set_title(ex.true_type, fontsize=9)
        ax.set_xlabel("\n".join(textwrap.wrap(f"[{ex.source}] {ex.text}", 40)), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def write_compare_report(comparison: dict[str, Any], out_png: str | Path) -> Path:
    """Draw a ``models.cli.compare`` result: each metric old beside new, with the 95 %
    interval of the difference and the verdict. Raises ``OSError`` if it cannot be written."""
    rows = comparison["metrics"]
    names = list(rows)
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2.2), dpi=80)
    ypos = np.arange(len(names))
    ax = axes[0]
    ax.barh(ypos + 0.2, [rows[n]["old"] for n in names], 0.4, label="old", color="0.6")
    ax.barh(ypos - 0.2, [rows[n]["new"] for n in names], 0.4, label="new", color="tab:blue")
    ax.set_yticks(ypos, [n.replace("_", " ") for n in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("on the same unseen images")
    ax = axes[1]
    for y, n in enumerate(names):
        r = rows[n]
        lo, hi = r["ci95"]
        colour = {"better": "tab:green", "worse": "tab:red"}.get(r["significant"], "0.4")
        ax.plot([lo, hi], [y, y], color=colour, lw=3)
        ax.plot([r["new_minus_old"]], [y], "o", color=colour)
        ax.text(hi, y, f"  P(new better) {r['p_new_better']:.2f}", va="center", fontsize=8)
    ax.axvline(0, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(ypos, [""] * len(names))
    ax.invert_yaxis()
    ax.set_title("new − old, 95 % interval")
    fig.suptitle(
        f"verdict: {comparison['verdict']} ({comparison['test_images']} images neither saw)",
        fontsize=11,
    )
    fig.tight_layout()
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
