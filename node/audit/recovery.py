"""A corrupt audit database is moved aside, never guessed at nor left to stop the node.

SQLite says a file is damaged with two result codes: ``SQLITE_CORRUPT`` (a page
is malformed) and ``SQLITE_NOTADB`` (the header is not SQLite's). Either, met
while the store opens or found by the integrity check at start, means the file
cannot take new records; the node must still be able to record the parts it is
about to judge. So the file (with its ``-wal`` and ``-shm``) is renamed with a
UTC timestamp — kept as evidence for whoever repairs it — and a fresh store is
created in its place. Every other database error (a locked, read-only or full
disk) leaves the file alone: nothing is moved for a fault of the disk.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import structlog

from node.audit.images import fsync_dir
from node.audit.schema import DB_NAME, AuditError

log = structlog.get_logger("lineside.audit")

SQLITE_INTERRUPT = 9
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26
CHECK_BUDGET_S = 20.0
"""The integrity check at open stops after this long (it reads the whole file, about 1.3 s
per GB measured from the page cache; a 90-day store at 50 parts/s is ~155 GB), so the node
starts well within systemd's ``TimeoutStartSec``; damage beyond what it read shows up as
refused writes (the ``audit`` alarm) and is moved aside at the next start that meets it."""
_DAMAGED = (SQLITE_CORRUPT, SQLITE_NOTADB)


class AuditCorruptError(AuditError):
    """The audit database is damaged (malformed pages, or not a database at all)."""


def corruption(exc: BaseException) -> str | None:
    """Why ``exc`` (or an error it was raised from) says the database is damaged; None if
    it says something else (locked, read-only, full, …)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, AuditCorruptError):
            return str(seen)
        # the primary result code is the low byte of the extended one
        code = getattr(seen, "sqlite_errorcode", 0)
        if isinstance(seen, sqlite3.DatabaseError) and code & 0xFF in _DAMAGED:
            return str(seen)
        seen = seen.__cause__
    return None


def check_integrity(conn: sqlite3.Connection, db: Path, budget_s: float = CHECK_BUDGET_S) -> None:
    """Run SQLite's quick check (every page's structure, not the indexes' content) for at
    most ``budget_s`` seconds (cut short: logged, not an error).

    Raises ``AuditCorruptError`` with SQLite's first complaints when it finds damage.
    """
    t0 = time.monotonic()
    conn.set_progress_handler(lambda: int(time.monotonic() - t0 > budget_s), 10_000)
    try:
        rows = [str(row[0]) for row in conn.execute("PRAGMA quick_check(5)")]
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF != SQLITE_INTERRUPT:
            raise
        log.warning("audit_integrity_check_cut_short", path=str(db), budget_s=budget_s)
        return
    finally:
        conn.set_progress_handler(None, 0)
    if rows != ["ok"]:
        raise AuditCorruptError(f"{db}: integrity check failed: {'; '.join(rows)}")


def move_aside(directory: Path, why: str) -> Path:
    """Rename the store's database (and its WAL and shared-memory files) in ``directory``
    to ``audit.sqlite3.corrupt-<UTC time>``; return that path.

    The WAL keeps its ``-wal`` suffix after the new name, so SQLite still pairs the two
    when someone opens the moved file to salvage it. Raises ``OSError``.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    db = directory / DB_NAME
    target = directory / f"{DB_NAME}.corrupt-{stamp}"
    n = 1
    while target.exists():  # two moves in one second keep both files
        n += 1
        target = directory / f"{DB_NAME}.corrupt-{stamp}-{n}"
    for suffix in ("-wal", "-shm", ""):  # the database last: a crash leaves it to retry
        src = Path(f"{db}{suffix}")
        if src.exists():
            src.rename(Path(f"{target}{suffix}"))
    fsync_dir(directory)
    log.error("audit_store_moved_aside", path=str(db), moved_to=str(target), error=why)
    return target
