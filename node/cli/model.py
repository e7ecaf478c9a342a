"""``lineside synth | train | eval | explain | model ...``: the defect model's commands.

Thin argument parsing over ``models.cli``; each prints its JSON result on
stdout. Bad input (a missing data set or image, a bad value) exits 2; a
corrupt or mismatched model package exits 5, like the node.

``lineside model`` holds the package's integrity commands: ``verify`` checks a
package and prints its digest (what ``inspection.model.sha256`` pins) and who
signed it; ``keygen`` writes an ed25519 key pair; ``sign`` signs a package's
digest (``models.signing``); ``rehash`` adopts a manifest's present content
(``models.package.rehash_manifest``). A bad key file is bad input (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from models.runtime import RUNTIMES
from node.errors import ConfigError, ModelError

_RUNTIMES = RUNTIMES


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
    t.add_argument(
        "--holdout",
        type=float,
        default=0.3,
        help="share of the good test images and of each defect type set aside, never "
        "trained on, for eval (default 0.3)",
    )
    t.add_argument(
        "--holdout-list",
        type=Path,
        help="file listing the images to set aside instead (paths relative to the category)",
    )
    t.add_argument(
        "--from",
        type=Path,
        dest="init_from",
        metavar="PACKAGE",
        help="start from this package's weights (fine-tune it on DATASET, e.g. the reviewed "
        "images of lineside audit dataset); default: the package shipped with lineside, "
        "when its input size is the images' size",
    )
    t.add_argument(
        "--max-false-alarm",
        type=float,
        default=0.01,
        metavar="SHARE",
        help="the operating threshold calls at most this share of the held-out good images "
        "defective (default 0.01; checking 1%% needs about 100 of them)",
    )
    t.add_argument(
        "--part-threshold",
        type=int,
        metavar="GRAY",
        help="pixels brighter than this belong to the part, the rest is belt (default 60; "
        "0 with --surface)",
    )
    t.add_argument(
        "--surface",
        action="store_true",
        help="the images are crops of a material that fills the frame with no up or down "
        "(a web, a sheet, a board): the part is the whole image and good images are also "
        "trained mirrored and turned",
    )
    t.add_argument(
        "--in-place",
        nargs="+",
        metavar="TYPE",
        help="defect types that belong to a place on the part (a missing screw): training "
        "copies other labelled defects onto other good images at random places, these only "
        "at their own place (default: missing_feature)",
    )
    t.add_argument(
        "--scratch",
        action="store_true",
        help="start from random weights instead of a package",
    )
    t.add_argument(
        "--cv",
        type=int,
        metavar="K",
        help="k-fold figures for a small data set: train K packages under --out, each "
        "scored on the fold of test images it never saw, pooled into OUT/cv.json",
    )
    t.set_defaults(func=_cmd_train)

    e = subparsers.add_parser(
        "eval",
        help="evaluate a package on the test images it never saw: JSON on stdout, PNG report",
    )
    e.add_argument("package", type=Path)
    e.add_argument("dataset", type=Path)
    e.add_argument("--category")
    e.add_argument("--json", type=Path, dest="out_json", help="also write the JSON here")
    e.add_argument("--report", type=Path, help="PNG report: ROC, confusion, examples")
    e.add_argument("--runtime", choices=_RUNTIMES, default="onnxruntime")
    e.add_argument("--threads", type=int, default=1)
    e.add_argument(
        "--compare",
        type=Path,
        metavar="OLD",
        help="score OLD beside PACKAGE on the images neither saw; say whether PACKAGE is better",
    )
    e.set_defaults(func=_cmd_eval)

    x = subparsers.add_parser("explain", help="inspect one image and explain what is wrong")
    x.add_argument("package", type=Path)
    x.add_argument("image", type=Path)
    x.add_argument("--runtime", choices=_RUNTIMES, default="onnxruntime")
    x.add_argument("--threads", type=int, default=1)
    x.add_argument(
        "--config",
        type=Path,
        help="judge by this node config's recipe: verdict, cited rule, zones and the sentence",
    )
    x.set_defaults(func=_cmd_explain)

    m = subparsers.add_parser("model", help="model package integrity: digest, keys, signatures")
    msub = m.add_subparsers(dest="model_command", required=True)
    r = msub.add_parser(
        "rehash", help="adopt a package manifest's present content: write its package_sha256"
    )
    r.add_argument("package", type=Path)
    r.set_defaults(func=_cmd_rehash)

    v = msub.add_parser("verify", help="verify a package; print its digest and signature")
    v.add_argument("package", type=Path)
    v.add_argument(
        "--key",
        type=Path,
        action="append",
        default=[],
        help="trusted public key file (repeatable); a package signed by another is refused",
    )
    v.set_defaults(func=_cmd_verify)

    k = msub.add_parser("keygen", help="write an ed25519 key pair: PREFIX.key (0600), PREFIX.pub")
    k.add_argument("prefix", type=Path, help="path prefix of the two key files")
    k.set_defaults(func=_cmd_keygen)

    g = msub.add_parser("sign", help="sign a package's digest (writes PACKAGE/signature.json)")
    g.add_argument("package", type=Path)
    g.add_argument("--key", type=Path, required=True, help="private key file (from keygen)")
    g.set_defaults(func=_cmd_sign)


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
    print(json.dumps(result, indent=2, default=str, ensure_ascii=False))
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
            holdout_fraction=args.holdout,
            holdout_list=args.holdout_list,
            cv=args.cv,
            init_from=_start(args),
            max_false_alarm=args.max_false_alarm,
            part_threshold=_part_threshold(args),
            surface=args.surface,
            in_place=args.in_place,
            progress=sys.stderr.isatty(),
        )
    )


def _part_threshold(args: argparse.Namespace) -> int:
    """``--part-threshold``, else 0 for a ``--surface`` and 60 for parts on a belt."""
    if args.part_threshold is not None:
        return int(args.part_threshold)
    return 0 if args.surface else 60


def _start(args: argparse.Namespace) -> Path | None:
    """The package ``train`` starts from: ``--from``, none with ``--scratch``, else the
    shipped one when it fits the images."""
    from models import cli

    if args.init_from is not None and args.scratch:
        raise ValueError("--from and --scratch exclude each other")
    if args.init_from is not None or args.scratch:
        return args.init_from  # type: ignore[no-any-return]
    return cli.shipped_start(args.dataset, args.category)


def _cmd_eval(args: argparse.Namespace) -> int:
    from models import cli

    if args.compare is not None:
        return _run(
            lambda: cli.compare(
                args.compare,
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

    if args.config is None:
        return _run(
            lambda: cli.explain(
                args.package, args.image, runtime=args.runtime, threads=args.threads
            )
        )
    from node.config import load_config
    from node.line.judge import Judge

    try:  # a bad config is the user's to fix: one line per problem, exit 2
        cfg = load_config(args.config)
        judge = Judge(cfg.inspection.recipe, cfg.inspection.mm_per_px)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"lineside: {problem}", file=sys.stderr)
        return 2

    def work() -> dict[str, Any]:
        f = cli.inspect_image(args.package, args.image, runtime=args.runtime, threads=args.threads)
        out = cli.describe(f, args.image)
        v = judge.judge(0, f)
        sentences = dict(v.recipe.sentences) if v.recipe is not None else {}
        placed = v.recipe.decision.findings if v.recipe is not None else ()
        return out | {
            "recipe": cfg.inspection.recipe.name,
            "verdict": "reject" if v.reject else "pass",
            "rule": v.rule,
            "sentences": sentences or {"en": v.explanation},
            "judged": [
                {
                    "defect_type": j.defect_type,
                    "zones": list(j.placement.zones),
                    "x_mm": round(j.placement.x_mm, 2),
                    "y_mm": round(j.placement.y_mm, 2),
                    "length_mm": round(j.placement.length_mm, 2),
                    "area_mm2": round(j.placement.area_mm2, 2),
                    "rule": j.rule,
                    "rejects": j.rejects,
                }
                for j in placed
            ],
        }

    return _run(work)


def _cmd_rehash(args: argparse.Namespace) -> int:
    from models.package import rehash_manifest

    def work() -> dict[str, str]:
        digest = rehash_manifest(args.package)
        return {"package": str(args.package), "package_sha256": digest}

    return _run(work)


def _cmd_verify(args: argparse.Namespace) -> int:
    from models.package import PackageError, load_package
    from models.signing import load_public_key, verify_signature

    def work() -> dict[str, str]:
        trusted = [(p, load_public_key(p)) for p in args.key]
        pkg = load_package(args.package)
        check = verify_signature(pkg, trusted)
        if check.state == "invalid" or (check.state == "untrusted" and trusted):
            raise PackageError(f"{pkg.root}: refused: {check.detail}")
        return {
            "package": str(pkg.root),
            "package_sha256": pkg.sha256,
            "signature": check.state,
            "detail": check.detail,
            "key_id": check.key_id or "",
        }

    return _run(work)


def _cmd_keygen(args: argparse.Namespace) -> int:
    from models.signing import generate_keypair, key_id, load_public_key

    def work() -> dict[str, str]:
        private, public = generate_keypair(args.prefix)
        return {
            "private_key": str(private),
            "public_key": str(public),
            "key_id": key_id(load_public_key(public)),
        }

    return _run(work)


def _cmd_sign(args: argparse.Namespace) -> int:
    from models.package import load_package
    from models.signing import sign_package, verify_signature

    def work() -> dict[str, str]:
        path = sign_package(args.package, args.key)
        pkg = load_package(args.package)
        check = verify_signature(pkg)
        return {
            "package": str(pkg.root),
            "package_sha256": pkg.sha256,
            "signature": str(path),
            "key_id": check.key_id or "",
        }

    return _run(work)
