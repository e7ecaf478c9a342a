"""Retention: records older than the age limit go, and images beyond the size cap.

Rows are deleted (or their ``image_path`` cleared) and committed *before*
the files are unlinked, so a crash in between leaves an unreferenced file at
worst, never a row naming a missing image. Work is done in small
transactions, so the writer thread's commits never wait long behind it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from node.audit.settings import AuditSettings

log = structlog.get_logger("lineside.audit")

NS_PER_DAY = 86_400 * 1_000_000_000
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """What one retention pass removed and what is left.

    ``records_deleted``: rows older than ``max_age_days`` (with their reviews
    and images, counted in ``images_deleted``); ``images_pruned``: images
    removed to get under ``max_image_bytes`` (their records stay);
    ``bytes_freed``: bytes of both kinds of removed image; ``image_bytes``:
    bytes of images still referenced afterwards.
    """

    records_deleted: int
    images_deleted: int
    images_pruned: int
    bytes_freed: int
    image_bytes: int
    duration_ms: float


def _transaction(
    conn: sqlite3.Connection, statements: Sequence[tuple[str, Sequence[object]]]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            conn.execute(sql, params)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _unlink(image_dir: Path, relpaths: Sequence[str]) -> None:
    folders = set()
    for rel in relpaths:
        path = image_dir / rel
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("audit_image_unlink_failed", path=str(path), error=str(exc))
        folders.add(path.parent)
    for folder in folders:
        if folder != image_dir:
            with contextlib.suppress(OSError):  # only an empty day folder goes
                folder.rmdir()


def image_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of every image a record still names."""
    (total,) = conn.execute(
        "SELECT COALESCE(SUM(image_bytes), 0) FROM records WHERE image_path IS NOT NULL"
    ).fetchone()
    return int(total)


def apply_retention(
    conn: sqlite3.Connection,
    image_dir: Path,
    settings: AuditSettings,
    now_ns: int,
    clock: Callable[[], int] = time.monotonic_ns,
) -> RetentionReport:
    """One retention pass on ``conn`` (which nobody else uses meanwhile).

    Deletes records with ``wall_time_ns`` before ``now_ns - max_age_days`` — all but the
    newest record and the record with the newest review, whatever their age: SQLite numbers
    a row one past the highest left, so a table emptied by age (a line stopped for longer
    than ``max_age_days``) would number the next record or review from 1 again, below the
    cursors that follow them (the Sparkplug publisher's, the review announcements', the web
    feed's), which would then never see them. Then, while the kept images exceed
    ``max_image_bytes``, removes the oldest images of unreviewed records, then of reviewed
    ones. Raises
    ``sqlite3.Error`` when the database refuses (what was committed stays done).
    """
    t0 = clock()
    cutoff = now_ns - round(settings.max_age_days * NS_PER_DAY)
    records_deleted = images_deleted = images_pruned = bytes_freed = 0
    (newest,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
    reviewed = conn.execute("SELECT result_id FROM reviews ORDER BY id DESC LIMIT 1").fetchone()
    while True:
        rows = conn.execute(
            "SELECT seq, image_path, image_bytes FROM records WHERE wall_time_ns < ? "
            "AND seq != ? AND result_id IS NOT ? ORDER BY wall_time_ns LIMIT ?",
            (cutoff, newest, reviewed[0] if reviewed else None, _CHUNK),
        ).fetchall()
        if not rows:
            break
        seqs = [r[0] for r in rows]
        marks = ", ".join("?" * len(seqs))
        # reviews go with their record (ON DELETE CASCADE)
        _transaction(conn, [(f"DELETE FROM records WHERE seq IN ({marks})", seqs)])
        images = [r[1] for r in rows if r[1] is not None]
        _unlink(image_dir, images)
        records_deleted += len(rows)
        images_deleted += len(images)
        bytes_freed += sum(r[2] or 0 for r in rows if r[1] is not None)

    total = image_bytes(conn)
    for reviewed in (False, True):
        exists = "EXISTS" if reviewed else "NOT EXISTS"
        while total > settings.max_image_bytes:
            rows = conn.execute(
                "SELECT seq, image_path, image_bytes FROM records r "
                f"WHERE image_path IS NOT NULL AND {exists} "
                "(SELECT 1 FROM reviews v WHERE v.result_id = r.result_id) "
                "ORDER BY wall_time_ns, seq LIMIT ?",
                (_CHUNK,),
            ).fetchall()
            if not rows:
                break
            chosen: list[tuple[int, str, int]] = []
            for seq, rel, size in rows:
                if total <= settings.max_image_bytes:
                    break
                chosen.append((seq, rel, size or 0))
                total -= size or 0
            seqs = [c[0] for c in chosen]
            marks = ", ".join("?" * len(seqs))
            _transaction(
                conn,
                [
                    (
                        "UPDATE records SET image_path = NULL, image_pruned_ns = ? "
                        f"WHERE seq IN ({marks})",
                        [time.time_ns(), *seqs],
                    )
                ],
            )
            _unlink(image_dir, [c[1] for c in chosen])
            images_pruned += len(chosen)
            bytes_freed += sum(c[2] for c in chosen)
    report = RetentionReport(
        records_deleted=records_deleted,
        images_deleted=images_deleted,
        images_pruned=images_pruned,
        bytes_freed=bytes_freed,
        image_bytes=total,
        duration_ms=(clock() - t0) / 1e6,
    )
    if records_deleted or images_pruned:
        log.info("audit_retention_applied", **dataclasses.asdict(report))
    return report
