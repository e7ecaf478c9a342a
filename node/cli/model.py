"""``lineside synth | train | eval | explain | model ...``: the defect model's commands.

Thin argument parsing over ``models.cli``; each prints its JSON result on
stdout. Bad input (a missing data set or image, a bad value) exits 2; a
corrupt or mismatched model package exits 5, like the node.

``lineside model`` holds the package's integrity commands: ``rehash`` adopts
a manifest's present content (``models.package.rehash_manifest``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node.errors import ModelError

_RUNTIMES = ("onnxruntime", "tensorrt", "torch")


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the four model commands; each sets ``func(args) -> exit code``."""
    s = subparsers.add_parser("synth", help="write a synthetic data set in the MVTec AD layout")
    s.add_argument("--out", type=Path, required=True, help="folder to write")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--families", nargs="+", help="part families (default: all)")
    s.add_argument("--train-good", type=int, default=300, help="good training images per family")
    s.add_argument("--test-good", type=int, default=100, help="good test images per family")
    s.add_argument("--test-per-kind", type=int, default=100, help="test images per defect type")
    s.set_defaults(func=_cmd_synth)

    t = subparsers.add_parser("train", help="train a model package from a data set")
    t.add_argument("dataset", type=Path, help="MVTec-layout folder (or one category of it)")
    t.add_argument("--out", type=Path, required=True, help="package folder to write")
    t.add_argument("--category", help="category inside DATASET (default: the only one)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--minutes", type=float, help="stop training after this long")
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--mm-per-px", type=float, default=0.125, help="scale of the images")
    t.set_defaults(func=_cmd_train)

    e = subparsers.add_parser("eval", help="evaluate a package: JSON on stdout, PNG report")
    e.add_argument("package", type=Path)
    e.add_argument("dataset", type=Path)
    e.add_argument("--category")
    e.add_argument("--json", type=Path, dest="out_json", help="also write the JSON here")
    e.add_argument("--report", type=Path, help="PNG report: ROC, confusion, examples")
    e.add_argument("--runtime", choices=_RUNTIMES, default="onnxruntime")
    e.add_argument("--threads", type=int, default=1)
    e.set_defaults(func=_cmd_eval)

    x = subparsers.add_parser("explain", help="inspect one image and explain what is wrong")
    x.add_argument("package", type=Path)
    x.add_argument("image", type=Path)
    x.add_argument("--runtime", choices=_RUNTIMES, default="onnxruntime")
    x.add_argument("--threads", type=int, default=1)
    x.set_defaults(func=_cmd_explain)

    m = subparsers.add_parser("model", help="model package integrity: digest, keys, signatures")
    msub = m.add_subparsers(dest="model_command", required=True)
    r = msub.add_parser(
        "rehash", help="adopt a package manifest's present content: write its package_sha256"
    )
    r.add_argument("package", type=Path)
    r.set_defaults(func=_cmd_rehash)


def _run(work: Callable[[], Any]) -> int:
    """Run ``work``, print its result as JSON; map bad input to exit 2, a bad package to 5."""
    from models.package import PackageError

    try:
        result = work()
    except PackageError as exc:
        raise ModelError(str(exc)) from exc
    except (FileNotFoundError, NotADirectoryError, ValueError) as exc:
        print(f"lineside: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from models import cli

    kw: dict[str, Any] = {
        "n_train_good": args.train_good,
        "n_test_good": args.test_good,
        "n_test_per_kind": args.test_per_kind,
    }
    if args.families:
        kw["families"] = tuple(args.families)
    return _run(lambda: cli.synth(args.out, args.seed, **kw))


def _cmd_train(args: argparse.Namespace) -> int:
    from models import cli

    return _run(
        lambda: cli.train(
            args.dataset,
            args.out,
            category=args.category,
            seed=args.seed,
            steps=args.steps,
            time_limit_min=args.minutes,
            threads=args.threads,
            mm_per_px=args.mm_per_px,
            progress=sys.stderr.isatty(),
        )
    )


def _cmd_eval(args: argparse.Namespace) -> int:
    from models import cli

    return _run(
        lambda: cli.evaluate(
            args.package,
            args.dataset,
            args.out_json,
            args.report,
            category=args.category,
            runtime=args.runtime,
            threads=args.threads,
            progress=sys.stderr.isatty(),
        )
    )


def _cmd_explain(args: argparse.Namespace) -> int:
    from models import cli

    return _run(
        lambda: cli.explain(args.package, args.image, runtime=args.runtime, threads=args.threads)
    )


def _cmd_rehash(args: argparse.Namespace) -> int:
    from models.package import rehash_manifest

    def work() -> dict[str, str]:
        digest = rehash_manifest(args.package)
        return {"package": str(args.package), "package_sha256": digest}

    return _run(work)
