"""Holdout figures with few labels: 0, 5 and 20 labelled images per defect type.

For each family (default: three the demo package was not trained on) a training
folder is rendered with ``--seed`` and cut down to N labelled images per type;
a package is trained on it (``--minutes`` each, no holdout needed; starting from
the shipped package, trained on ``moulded_plastic`` only, as ``lineside train`` does,
or from random weights with ``--scratch``) and scored
by ``lineside eval`` on a test set rendered with ``--test-seed`` — images no
package ever saw (eval's ``excluded_trained_images`` must say 0). Prints one
JSON object (rows per family and label count, with 95 % intervals) and writes
it with a markdown table to ``--out``.

    .venv/bin/python bench/holdout.py [--families textile printed_board cast_aluminium]
        [--labels 0 5 20] [--minutes 7] [--scratch] [--out state/holdout-bench]
        [--rescore]

``--rescore`` scores the packages a run left under ``--out`` again on its test images,
for a change to what happens after the graphs (no retraining).

It trains len(families) × len(labels) packages: about 70 minutes with the defaults.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from _packages import save_report, started_from, train_and_score

from models import cli
from models.data.synthset import write_synth
from models.package import ModelPackage, load_package
from models.synth import FAMILY_NAMES

_GOOD_TRAIN = 200
_GOOD_TEST = 40
_TEST_PER_KIND = 40


def _cut(source: Path, dest: Path, per_type: int) -> None:
    """Copy ``source`` keeping ``per_type`` labelled images (and masks) of each type."""
    shutil.copytree(source, dest)
    for folder in sorted((dest / "test").iterdir()):
        if folder.name == "good":
            continue
        for k, image in enumerate(sorted(folder.iterdir())):
            if k >= per_type:
                image.unlink()
                mask = dest / "ground_truth" / folder.name / f"{image.stem}_mask.png"
                mask.unlink(missing_ok=True)
        if per_type == 0:
            folder.rmdir()
            shutil.rmtree(dest / "ground_truth" / folder.name, ignore_errors=True)


def _row(
    family: str, labels: int, package: ModelPackage, minutes: float, out: dict[str, Any]
) -> dict[str, Any]:
    m, ci = out["metrics"], out["ci95"]

    def figure(name: str) -> dict[str, Any]:
        value = m.get(name)
        return {"value": None if value != value else round(value, 4), "ci95": ci.get(name)}

    return {
        "family": family,
        "labels_per_type": labels,
        "types_learned": [t for t in package.manifest.types if t != "unknown anomaly"],
        "train_minutes": round(minutes, 2),
        "test_images": out["test_images"],
        "excluded_trained_images": out["excluded_trained_images"]["count"],
        **{
            name: figure(name)
            for name in (
                "image_auroc",
                "pixel_auroc",
                "type_accuracy",
                "unknown_type_rate",
                "explanation_fact_accuracy",
                "explanation_all_facts_accuracy",
                "false_alarm_rate",
                "detection_rate",
            )
        },
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    def cell(f: dict[str, Any]) -> str:
        if f["value"] is None:
            return "—"
        lo_hi = f["ci95"]
        return f"{f['value']:.2f}" + (f" ({lo_hi[0]:.2f}–{lo_hi[1]:.2f})" if lo_hi else "")

    head = (
        "| family | labels/type | image AUROC | type acc. | unknown→unknown | fact acc. "
        "| false alarms | min |\n|---|---|---|---|---|---|---|---|\n"
    )
    return head + "".join(
        f"| {r['family']} | {r['labels_per_type']} | {cell(r['image_auroc'])} "
        f"| {cell(r['type_accuracy'])} | {cell(r['unknown_type_rate'])} "
        f"| {cell(r['explanation_fact_accuracy'])} | {cell(r['false_alarm_rate'])} "
        f"| {r['train_minutes']} |\n"
        for r in rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["textile", "printed_board", "cast_aluminium"])
    p.add_argument("--labels", nargs="+", type=int, default=[0, 5, 20])
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=7101)
    p.add_argument("--test-seed", type=int, default=7202)
    p.add_argument("--scratch", action="store_true", help="train from random weights")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score the packages an earlier run left under --out again, without training",
    )
    p.add_argument("--out", type=Path, default=Path("state") / "holdout-bench")
    args = p.parse_args()
    unknown = [f for f in args.families if f not in FAMILY_NAMES]
    if unknown or args.seed == args.test_seed or min(args.labels) < 0 or args.minutes <= 0:
        why = (
            f"--families: unknown {unknown} (known: {', '.join(FAMILY_NAMES)})"
            if unknown
            else "--seed and --test-seed must differ; --labels >= 0; --minutes > 0"
        )
        print(why, file=sys.stderr)
        sys.exit(2)
    work = args.out / "work"
    t0 = time.monotonic()
    if args.rescore:
        rows = _rescore(work, args.families, args.labels)
    else:
        shutil.rmtree(work, ignore_errors=True)
        rows = _train_and_score(work, args)
    report = {
        "bench": "holdout",
        "seed": args.seed,
        "test_seed": args.test_seed,
        "minutes_per_package": args.minutes,
        "started_from": started_from(args.scratch),
        "rescored": args.rescore,
        "total_minutes": round((time.monotonic() - t0) / 60, 1),
        "rows": rows,
    }
    save_report(args.out, "holdout", report, _markdown(rows))


def _rescore(work: Path, families: list[str], labels: list[int]) -> list[dict[str, Any]]:
    """The rows of packages an earlier run left in ``work``, scored again on its test
    images (after a change to what happens after the graphs, no retraining needed)."""
    rows: list[dict[str, Any]] = []
    for family in families:
        for n in labels:
            root = work / "pkg" / f"{family}-{n}"
            if not (root / "manifest.json").is_file():
                print(
                    f"--rescore: no package at {root} (run without --rescore first)",
                    file=sys.stderr,
                )
                sys.exit(2)
            package = load_package(root)
            out = cli.evaluate(root, work / "test" / family, progress=False)
            minutes = float(package.manifest.training.get("minutes", 0.0))
            rows.append(_row(family, n, package, minutes, out))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def _train_and_score(work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    most = max(args.labels)
    rows: list[dict[str, Any]] = []
    for family in args.families:
        write_synth(
            work / "train",
            args.seed,
            [family],
            n_train_good=_GOOD_TRAIN,
            n_test_good=_GOOD_TEST,
            n_test_per_kind=max(most, 1),
            progress=False,
        )
        write_synth(
            work / "test",
            args.test_seed,
            [family],
            n_train_good=1,
            n_test_good=_GOOD_TEST,
            n_test_per_kind=_TEST_PER_KIND,
            progress=False,
        )
        for labels in args.labels:
            folder = work / f"{family}-{labels}"
            _cut(work / "train" / family, folder, labels)
            built, out = train_and_score(
                folder,
                work / "test" / family,
                work / "pkg" / f"{family}-{labels}",
                args.minutes,
                args.scratch,
            )
            rows.append(_row(family, labels, built.package, built.fit.minutes, out))
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


if __name__ == "__main__":
    main()
