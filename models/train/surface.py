"""Build the package ``lineside train --surface`` starts from (``models/surface``):
``make surface-model`` runs this.

The demo package knows one synthetic part family; a photographed surface (stone,
tissue, grass, wood, fabric) is a high-variance texture it has never seen, and its
anomaly map lights up on the texture's own structure. This pretrains it, once, on a
corpus of 2000 varied surfaces (``models.synth.corpus``: procedural textures and crops
of photographs bundled with scikit-image, never the bench's), with the synthetic
anomalies training pastes (DRAEM-style) as the only defects, so the encoder learns
what natural variation looks like before a line's own images fine-tune it. It runs
within a time budget (30 minutes on 2 cores); the corpus seed and the training seed
are recorded in the package's manifest like any training run's.

    python -m models.train.surface [--out models/surface] [--work state/surface-corpus]
        [--minutes 30] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import structlog

from models.synth.corpus import write_corpus
from models.train.build import train_package
from models.train.loop import TrainConfig

log = structlog.get_logger(__name__)

CORPUS_SEED = 20261207
TRAIN_SEED = 0
DEMO = Path(__file__).resolve().parents[1] / "demo"
SURFACE_CONFIG = TrainConfig(
    surface=True,
    part_threshold=0,
    holdout_fraction=0.0,  # no defects to hold out: the corpus is good images only
    val_fraction=0.05,
    steps=100_000,  # the time budget ends it
    val_every=500,
    patience=1000,  # the validation anomalies are synthetic: no early stop on them
    p_good=0.4,
    seed=TRAIN_SEED,
    data_seed=CORPUS_SEED,
)


def build_surface_start(
    out: Path,
    work: Path,
    minutes: float = 30.0,
    images: int = 2000,
    start: Path = DEMO,
    progress: bool = True,
) -> dict[str, object]:
    """Write the corpus to ``work``, train from ``start`` on it for ``minutes`` and write
    the package to ``out``; a summary dict."""
    t0 = time.monotonic()
    if work.exists():
        shutil.rmtree(work)
    write_corpus(work, CORPUS_SEED, images, progress=progress)
    corpus_min = (time.monotonic() - t0) / 60.0
    cfg = replace(
        SURFACE_CONFIG,
        init_from=str(start),
        time_limit_s=60.0 * minutes,
        progress=progress,
    )
    built = train_package(work, out, cfg)
    summary = {
        "package": str(out),
        "corpus_images": images,
        "corpus_seed": CORPUS_SEED,
        "corpus_minutes": round(corpus_min, 2),
        "total_minutes": round((time.monotonic() - t0) / 60.0, 2),
        "steps": built.fit.steps,
        **{k: round(v, 4) for k, v in built.fit.metrics.items()},
    }
    log.info("surface_start_built", **summary)
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("models/surface"))
    p.add_argument("--work", type=Path, default=Path("state/surface-corpus"))
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--images", type=int, default=2000)
    a = p.parse_args()
    print(json.dumps(build_surface_start(a.out, a.work, a.minutes, a.images), indent=2))


if __name__ == "__main__":
    main()
