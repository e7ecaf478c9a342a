"""``lineside audit export`` and ``lineside audit dataset``.

Both read the store with a connection of their own, so they can run while
the node writes it. The store is ``--store DIR``, or the ``[audit]`` section
of ``--config`` (its ``directory`` resolved against ``node.state_dir``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from node.audit.export import ExportFormat, export_dataset, write_records
from node.audit.reader import AuditReader
from node.config import DEFAULT_CONFIG, load_config

PROGRESS_FROM = 5000
"""Show a progress bar (on a terminal) from this many records on."""

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_when(text: str, now_ns: int | None = None) -> int:
    """A point in time as UTC epoch ns.

    Accepts ISO 8601 dates and date-times (``2025-03-14``, ``2025-03-14T06:30``,
    with ``Z`` or an offset; without one it is the machine's local time) or a
    time before now (``90s``, ``15m``, ``2h``, ``7d``, ``1w``). Raises
    ``argparse.ArgumentTypeError`` for anything else.
    """
    now = time.time_ns() if now_ns is None else now_ns
    m = _RELATIVE.match(text)
    if m:
        return now - round(float(m.group(1)) * _UNIT_S[m.group(2)] * 1e9)
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not an ISO date/time (2025-03-14, 2025-03-14T06:30Z) or a time ago (2h, 7d)"
        ) from None
    if t.tzinfo is None:
        t = t.astimezone()  # naive: the machine's local time, as on the line's clocks
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def add_parsers(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``audit export`` and ``audit dataset``; each sets ``func(args) -> exit code``."""
    audit = subparsers.add_parser(
        "audit", help="export the audit trail, build a data set from reviews"
    )
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--since", type=parse_when, help="from (ISO date/time, or 2h, 7d ago)")
        p.add_argument("--until", type=parse_when, help="up to, inclusive (same forms)")
        p.add_argument(
            "--config", type=Path, default=DEFAULT_CONFIG, help="node config naming the store"
        )
        p.add_argument("--store", type=Path, help="the store's folder (instead of --config)")

    exp = sub.add_parser("export", help="write records as CSV or JSON lines")
    common(exp)
    exp.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    exp.add_argument("--out", type=Path, help="file to write (default: standard output)")
    exp.set_defaults(func=cmd_export)

    ds = sub.add_parser(
        "dataset", help="copy reviewed images into an MVTec AD folder for retraining"
    )
    common(ds)
    ds.add_argument("--out", type=Path, required=True, help="data set folder (category root)")
    ds.set_defaults(func=cmd_dataset)


def _open_reader(args: argparse.Namespace) -> AuditReader:
    directory: Path = (
        args.store if args.store is not None else load_config(args.config).audit_directory
    )
    return AuditReader(directory, "normal")


@contextlib.contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[], None] | None]:
    if total < PROGRESS_FROM or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda: bar.advance(task)


def cmd_export(args: argparse.Namespace) -> int:
    """``audit export``: records in the time range, oldest first. Exit 0."""
    fmt: ExportFormat = args.format
    with _open_reader(args) as reader:
        total = reader.count(since_ns=args.since, until_ns=args.until)
        records = reader.iter_records(since_ns=args.since, until_ns=args.until)
        with _progress(total, "exporting") as tick:
            if args.out is None:
                n = write_records(records, sys.stdout, fmt, tick)
                sys.stdout.flush()
            else:
                n = _write_file(args.out, lambda f: write_records(records, f, fmt, tick))
    if args.out is not None:
        print(f"wrote {n} records to {args.out}", file=sys.stderr)
    return 0


def _write_file(path: Path, write: Callable[[TextIO], int]) -> int:
    """Write via a temporary file, so an interrupted export leaves no partial file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            n = write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def cmd_dataset(args: argparse.Namespace) -> int:
    """``audit dataset``: reviewed images into ``--out`` (MVTec AD layout). Exit 0."""
    with _open_reader(args) as reader:
        total = reader.count(since_ns=args.since, until_ns=args.until, reviewed_only=True)
        with _progress(total, "copying reviewed images") as tick:
            report = export_dataset(
                reader, args.out, since_ns=args.since, until_ns=args.until, on_record=tick
            )
    for folder, n in report.images.items():
        print(f"{n:6d}  {args.out / folder}")
    print(
        f"{report.total} reviewed images written to {args.out}"
        f" ({report.captions} captions in its captions file)"
    )
    if report.skipped_no_image or report.skipped_bad_hash:
        print(
            f"skipped: {report.skipped_no_image} without an image on disk, "
            f"{report.skipped_bad_hash} whose image no longer matches its sha256",
            file=sys.stderr,
        )
    if not report.images.get("train/good"):
        print(
            "note: no reviewed good parts; read_mvtec needs train/good images, "
            "so merge this into a data set that has them",
            file=sys.stderr,
        )
    return 0
