"""Audit store benchmark: what each synchronous level costs at line rate and flat out.

Prints one JSON object::

    {"setup": {...},
     "record_from_result_us": {p50, p99, max},
     "levels": {"normal": {"paced": {...}, "sustained": {...}}, "full": {...}}}

``paced`` feeds ``record()`` at ``--rate`` parts/s (as the node's event loop
does) for ``--seconds`` and reports the ``record()`` call time (µs, what the
event loop pays) and enqueue → commit latency (ms, what "confirmed" waits
for). ``sustained`` enqueues ``--burst`` records as fast as it can and
reports records/s until all are committed. A ``--reject-share`` of parts are
rejects with a 256×256 uint8 image; passes keep theirs at the default
1 % sample. Quote ratios between levels, not absolute times: the disk and
the machine are shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from hil.sample_results import RECIPE, sample_findings, sample_result
from node.audit.record import AuditRecord
from node.audit.settings import AuditSettings, Synchronous
from node.audit.store import AuditStore, record_from_result
from node.line.results import PartResult, percentiles


def _result(part_id: int, reject: bool) -> PartResult:
    return sample_result(part_id, sample_findings(reject))


def _records(n: int, reject_share: float, run_id: str) -> tuple[list[AuditRecord], list[float]]:
    """``n`` records (every ``1/reject_share``-th a reject) and the µs each took to build."""
    every = max(1, round(1 / reject_share)) if reject_share > 0 else n + 1
    out, build_us = [], []
    thresholds = RECIPE.model_dump()
    for i in range(n):
        result = _result(i, i % every == 0)
        t0 = time.perf_counter_ns()
        rec = record_from_result(
            result,
            run_id=run_id,
            model_name="classical",
            model_version="bench",
            model_sha256="0" * 64,
            thresholds=thresholds,
            actuator_confirmed=True,
        )
        build_us.append((time.perf_counter_ns() - t0) / 1e3)
        out.append(rec)
    return out, build_us


def paced(directory: Path, sync: Synchronous, records: list[AuditRecord], rate: float) -> Any:
    """Feed ``records`` at ``rate`` per second; record() call time and commit latency."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (256, 256), dtype=np.uint8)
    call_us: list[float] = []
    with AuditStore(AuditSettings(synchronous=sync), directory) as store:
        start = time.monotonic()
        for i, rec in enumerate(records):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            t0 = time.perf_counter_ns()
            store.record(rec, image)
            call_us.append((time.perf_counter_ns() - t0) / 1e3)
        store.flush(timeout_s=60)
        return {
            "rate_per_s": rate,
            "records": len(records),
            "record_call_us": percentiles(call_us),
            "commit_latency_ms": store.commit_latency_ms(),
            "dropped": store.dropped,
        }


def sustained(directory: Path, sync: Synchronous, records: list[AuditRecord]) -> Any:
    """Enqueue ``records`` flat out; records/s until the last one is committed."""
    image = np.random.default_rng(1).integers(0, 256, (256, 256), dtype=np.uint8)
    with AuditStore(AuditSettings(synchronous=sync, queue_max=len(records) + 1), directory) as s:
        t0 = time.perf_counter()
        for rec in records:
            s.record(rec, image)
        s.flush(timeout_s=300)
        dt = time.perf_counter() - t0
        images = sum(1 for r in s.query(limit=len(records)) if r.image_path is not None)
        return {
            "records": len(records),
            "images": images,
            "seconds": round(dt, 3),
            "records_per_s": round(len(records) / dt, 1),
            "dropped": s.dropped,
        }


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run both measurements for each level; return the JSON-ready report."""
    base = Path(tempfile.mkdtemp(prefix="bench-audit-", dir=args.dir))
    n_paced = round(args.rate * args.seconds)
    report: dict[str, Any] = {
        "setup": {
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "burst": args.burst,
            "reject_share": args.reject_share,
            "image_px": [256, 256],
            "dir": str(base),
        },
        "levels": {},
    }
    try:
        build_all: list[float] = []
        for sync in args.levels:
            recs, build_us = _records(n_paced, args.reject_share, f"paced-{sync}")
            build_all += build_us
            burst, _ = _records(args.burst, args.reject_share, f"burst-{sync}")
            report["levels"][sync] = {
                "paced": paced(base / f"paced-{sync}", sync, recs, args.rate),
                "sustained": sustained(base / f"burst-{sync}", sync, burst),
            }
        report["record_from_result_us"] = percentiles(build_all)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return report


def _quiet(_: object, method: str, event: Any) -> Any:
    if method in ("debug", "info"):
        raise structlog.DropEvent
    return event


if __name__ == "__main__":
    structlog.configure(
        processors=[_quiet, structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=50.0, help="parts per second (paced run)")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the paced run")
    ap.add_argument("--burst", type=int, default=3000, help="records in the sustained run")
    ap.add_argument("--reject-share", type=float, default=0.1, help="share of parts rejected")
    ap.add_argument("--levels", nargs="+", default=["normal", "full"], choices=["normal", "full"])
    ap.add_argument("--dir", type=Path, default=None, help="where the stores go (default: tmp)")
    json.dump(main(ap.parse_args()), sys.stdout, indent=1)
    print()
