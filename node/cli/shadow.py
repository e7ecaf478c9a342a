"""``lineside shadow report | promote``: what a shadow candidate did, and making it active.

``report CONFIG`` reads what the node recorded for the configured candidate
(``[inspection.shadow]``; see ``node.shadow``) and prints the disagreement report as JSON;
``--png`` draws the disagreeing parts with both verdicts.

``promote CONFIG --user NAME --reason TEXT`` is the one command that changes which model
judges: it verifies the candidate again, refuses one that judged fewer than
``--min-parts`` parts beside the active model (unless ``--force``), rewrites the config so
that the candidate is ``[inspection.model]`` (pinned by its digest) and no shadow is left,
keeps the old config beside it (where the config cannot be written — the shipped unit's
``/etc/lineside`` — the change goes to ``<node.state_dir>/models.toml``, see
``node.selection``), and appends who, when, why, from what to what and the
shadow figures to ``<node.state_dir>/model-history.jsonl``. The node loads it when it is
restarted. Bad input exits 2 with one line; a candidate that fails verification exits 5.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from node.config_rewrite import prepare
from node.errors import ConfigError, ModelError

HISTORY = "model-history.jsonl"


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``lineside shadow``; each subcommand sets ``func(args) -> exit code``."""
    p = subparsers.add_parser("shadow", help="a shadow candidate's report, and promoting it")
    sub = p.add_subparsers(dest="shadow_command", required=True)
    r = sub.add_parser("report", help="the disagreement report of the configured candidate")
    r.add_argument("config", type=Path)
    r.add_argument("--examples", type=int, default=12, help="disagreements listed (default 12)")
    r.add_argument("--png", type=Path, help="also draw the disagreeing parts into this PNG")
    r.set_defaults(func=_cmd_report)
    m = sub.add_parser("promote", help="make the candidate the active model (audited)")
    m.add_argument("config", type=Path)
    m.add_argument("--user", required=True, help="who promotes it (recorded)")
    m.add_argument("--reason", required=True, help="why (recorded)")
    m.add_argument(
        "--min-parts",
        type=int,
        default=500,
        help="parts the candidate must have judged beside the active model (default 500)",
    )
    m.add_argument("--force", action="store_true", help="promote with fewer parts judged")
    m.set_defaults(func=_cmd_promote)


def _fail(message: str) -> int:
    print(f"lineside: {message}", file=sys.stderr)
    return 2


def _load(path: Path) -> Any:
    from node.config import load_config

    return load_config(path)


def _append(history: Path, entry: dict[str, Any]) -> None:
    history.parent.mkdir(parents=True, exist_ok=True)
    with open(history, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _candidate_dir(cfg: Any, sha256: str) -> Path:
    from node.shadow import shadow_dir

    return shadow_dir(cfg.node.state_dir, sha256)


def _cmd_report(args: argparse.Namespace) -> int:
    from node.shadow import plot_report, read_report
    from node.wiring import check_model_package

    try:
        cfg = _load(args.config)
    except ConfigError as exc:
        return _fail(f"{args.config}: {'; '.join(exc.problems)}")
    if cfg.inspection.shadow.package is None:
        return _fail(f"{args.config}: inspection.shadow.package: not set: there is no candidate")
    if args.examples < 0:
        return _fail("--examples: must be 0 or more")
    check = check_model_package(cfg, shadow=True)
    if check.package is None:
        raise ModelError("; ".join(check.problems))
    try:
        report = read_report(_candidate_dir(cfg, check.package.sha256), args.examples)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    if args.png is not None:
        report["png"] = str(plot_report(report, args.png))
    print(json.dumps(report, indent=2))
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    try:
        result = promote(
            args.config,
            user=args.user,
            reason=args.reason,
            min_parts=args.min_parts,
            force=args.force,
        )
    except ValueError as exc:
        return _fail(str(exc))
    print(json.dumps(result, indent=2))
    return 0


def promote(
    config: Path,
    *,
    user: str,
    reason: str,
    min_parts: int = 500,
    force: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Make the configured shadow candidate the active model; see the module docstring.
    ``extra`` is added to the history entry (a fleet promotion: its command).

    Returns what was done. Raises ``ValueError`` (one line, the key or flag named) for bad
    input or a candidate without enough evidence, ``ModelError`` for a candidate that
    fails verification.
    """

    from node.config import load_config
    from node.shadow import read_report
    from node.wiring import check_model_package

    if not user.strip() or not reason.strip():
        raise ValueError("--user and --reason: must not be empty (they are the audit trail)")
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        raise ValueError(f"{config}: {'; '.join(exc.problems)}") from exc
    shadow = cfg.inspection.shadow
    if shadow.package is None:
        raise ValueError(f"{config}: inspection.shadow.package: not set: nothing to promote")
    check = check_model_package(cfg, shadow=True)
    if check.problems or check.package is None:
        raise ModelError("; ".join(check.problems))
    candidate = check.package
    active = check_model_package(cfg).package
    try:
        report = read_report(_candidate_dir(cfg, candidate.sha256), examples=0)
    except FileNotFoundError as exc:
        raise ValueError(f"inspection.shadow: {exc}") from exc
    if report["judged"] < min_parts and not force:
        raise ValueError(
            f"inspection.shadow: the candidate judged {report['judged']} parts beside the active "
            f"model, fewer than --min-parts {min_parts} (run it longer, or --force)"
        )
    change = {
        "model": {"package": str(shadow.package), "sha256": candidate.sha256},
        "shadow": {"package": "", "sha256": ""},
    }
    try:
        rewrite = prepare(config, change, "promote")
    except OSError as exc:
        raise ValueError(f"{config}: cannot read: {exc.strerror or exc}") from exc
    if rewrite is None:
        raise ValueError(f"{config}: inspection.shadow: the candidate is the active model already")
    entry = {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "user": user,
        "reason": reason,
        "config": str(config),
        "backup": None if rewrite.backup is None else str(rewrite.backup),
        "kept": rewrite.describe(),
        "from": {
            "package": str(cfg.inspection.model.package),
            "sha256": None if active is None else active.sha256,
        },
        "to": {"package": str(shadow.package), "sha256": candidate.sha256},
        "forced": bool(force and report["judged"] < min_parts),
        "shadow": {k: report[k] for k in ("judged", "agreement", "agreement_ci95")}
        | {k: report[k] for k in ("active_only", "candidate_only", "type_differs")},
        **(extra or {}),
    }
    history = cfg.node.state_dir / HISTORY
    try:
        _append(history, entry)  # on record before it takes effect
        rewrite.commit()
    except OSError as exc:
        rewrite.discard()
        with contextlib.suppress(OSError):
            _append(history, {"time": entry["time"], "user": user, "not_in_effect": str(exc)})
        raise ValueError(f"{config}: the promotion could not be kept: {exc}") from exc
    return {
        **entry,
        "history": str(history),
        "next": "restart the node to load it (systemctl restart lineside)",
    }
