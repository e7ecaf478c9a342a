"""What the model benches share: train a package from a folder, score it on another, save."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from models import cli
from models.train.build import BuildResult, train_package
from models.train.loop import TrainConfig


def train_and_score(
    train_dir: Path, test_dir: Path, package_dir: Path, minutes: float, scratch: bool, **knobs: Any
) -> tuple[BuildResult, dict[str, Any]]:
    """A package trained on all of ``train_dir`` (no holdout: ``test_dir`` is the test set)
    for ``minutes``, from the shipped package unless ``scratch``, with ``knobs`` set on
    ``TrainConfig``; and ``lineside eval``'s result on ``test_dir``."""
    start = None if scratch else cli.shipped_start(train_dir)
    cfg = replace(
        TrainConfig(),
        init_from=None if start is None else str(start),
        holdout_fraction=0.0,
        time_limit_s=60.0 * minutes,
        progress=sys.stderr.isatty(),
        **knobs,
    )
    built = train_package(train_dir, package_dir, cfg)
    return built, cli.evaluate(built.package.root, test_dir, progress=False)


def started_from(scratch: bool) -> str:
    """What the packages started from, for the report."""
    return "random weights" if scratch else str(cli.SHIPPED_PACKAGE)


def save_report(out: Path, stem: str, report: dict[str, Any], markdown: str) -> None:
    """``out/<stem>.json`` and ``out/<stem>.md``; the JSON also on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(json.dumps(report, indent=2))
