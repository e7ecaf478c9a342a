"""Build the demo package that ships in ``models/demo``: ``make model`` runs this.

It renders a synthetic training set of the simulated line's parts
(``moulded_plastic``, 24 mm at 0.125 mm/px in a 256 px crop, on the belt),
trains on it within a time budget and writes the package. The whole run
(data and training) must stay under 20 minutes on a 2-core CPU; the seed of
the data is recorded so benchmarks can refuse to test on it.

    python -m models.train.demo [--out models/demo] [--work state/demo-data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import structlog

from models.data.synthset import write_synth
from models.train.build import train_package
from models.train.loop import TrainConfig

log = structlog.get_logger(__name__)

FAMILY = "moulded_plastic"
DATA_SEED = 1
TRAIN_SEED = 0
PART_SIZE_MM = 24.0
MM_PER_PX = 0.125
TOTAL_BUDGET_MIN = 20.0
TRAIN_BUDGET_MIN = 16.0
DEMO_CONFIG = TrainConfig(
    holdout_fraction=0.0,  # measured on images of other seeds (bench/model.py), never these
    steps=3400,
    batch_size=16,
    val_every=200,
    patience=5,
    type_weight=1.0,
    caption_weight=1.0,
    p_paste=0.15,
    seed=TRAIN_SEED,
    data_seed=DATA_SEED,
    part_size_mm=PART_SIZE_MM,
    mm_per_px=MM_PER_PX,
)


def build_demo(
    out: Path, work: Path, train_minutes: float = TRAIN_BUDGET_MIN, progress: bool = True
) -> dict[str, object]:
    """Render the data, train and write the package to ``out``; a summary dict."""
    t0 = time.monotonic()
    if work.exists():
        shutil.rmtree(work)
    write_synth(
        work,
        DATA_SEED,
        [FAMILY],
        n_train_good=400,
        n_test_good=120,
        n_test_per_kind=300,
        mm_per_px=MM_PER_PX,
        size_px=256,
        part_size_mm=PART_SIZE_MM,
        progress=progress,
    )
    synth_min = (time.monotonic() - t0) / 60.0
    # ~2.5 min on top of the loop: loading the images, calibration, export.
    left = min(train_minutes, TOTAL_BUDGET_MIN - synth_min - 2.5)
    cfg = replace(DEMO_CONFIG, time_limit_s=60.0 * left, progress=progress)
    built = train_package(work, out, cfg, FAMILY)
    total_min = (time.monotonic() - t0) / 60.0
    summary = {
        "package": str(out),
        "data_minutes": round(synth_min, 2),
        "total_minutes": round(total_min, 2),
        "steps": built.fit.steps,
        "metrics": built.fit.metrics,
    }
    (out / "BUILD.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info("demo_built", **{k: v for k, v in summary.items() if k != "metrics"})
    return summary


def main() -> None:
    """Command line entry: ``python -m models.train.demo``."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("models/demo"))
    parser.add_argument("--work", type=Path, default=Path("state/demo-data"))
    parser.add_argument("--train-minutes", type=float, default=TRAIN_BUDGET_MIN)
    args = parser.parse_args()
    print(json.dumps(build_demo(args.out, args.work, args.train_minutes), indent=2))


if __name__ == "__main__":
    main()
