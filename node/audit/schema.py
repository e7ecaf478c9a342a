"""The audit database: its schema, its version, and rows to and from records.

One SQLite file (``audit.sqlite3``) in WAL mode. ``records`` holds one row per
part and is append-only apart from retention (which deletes old rows and
clears ``image_path`` of pruned images); ``reviews`` holds every operator
review, the latest per result being the one shown. ``schema_version`` names
the layout; a store written by a newer lineside is refused, never guessed at.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, cast

from node.audit.record import AuditRecord, Review, VerdictText
from node.audit.settings import Synchronous
from node.errors import LinesideError

SCHEMA_VERSION = 2
"""The layout this code writes and reads. 2 added ``records.rule`` (the recipe rule a
verdict cites); a version-1 store is upgraded in place when opened."""

DB_NAME = "audit.sqlite3"
IMAGES_DIR = "images"
BUSY_TIMEOUT_S = 5.0


class AuditError(LinesideError):
    """The audit store cannot be opened or used."""


class AuditSchemaError(AuditError):
    """The store's schema is not one this version of lineside can read."""


_DDL = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied_ns INTEGER NOT NULL
);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    result_id TEXT NOT NULL UNIQUE,
    run_id TEXT NOT NULL,
    part_id INTEGER NOT NULL,
    origin_count INTEGER NOT NULL,
    trigger_count INTEGER NOT NULL,
    fire_count INTEGER NOT NULL,
    wall_time_ns INTEGER NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'reject')),
    reason TEXT NOT NULL,
    fail_safe INTEGER NOT NULL,
    defect_type TEXT,
    score REAL,
    explanation TEXT NOT NULL,
    explanation_source TEXT NOT NULL,
    explanations_json TEXT NOT NULL,
    location TEXT,
    size_mm REAL,
    findings_json TEXT NOT NULL,
    action TEXT NOT NULL,
    actuator_confirmed INTEGER,
    latency_ms REAL,
    budget_ms REAL,
    budget_miss INTEGER NOT NULL,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    thresholds_json TEXT NOT NULL,
    image_path TEXT,
    image_sha256 TEXT,
    image_bytes INTEGER,
    image_pruned_ns INTEGER,
    rule TEXT NOT NULL DEFAULT ''
);
CREATE INDEX records_time ON records (wall_time_ns);
CREATE INDEX records_part ON records (part_id);
CREATE INDEX records_images ON records (wall_time_ns) WHERE image_path IS NOT NULL;
CREATE TABLE reviews (
    id INTEGER PRIMARY KEY,
    result_id TEXT NOT NULL REFERENCES records (result_id) ON DELETE CASCADE,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'reject')),
    defect_type TEXT,
    comment TEXT NOT NULL,
    user TEXT NOT NULL,
    wall_time_ns INTEGER NOT NULL
);
CREATE INDEX reviews_result ON reviews (result_id, id);
"""

_FIELDS: tuple[str, ...] = (
    "result_id",
    "run_id",
    "part_id",
    "origin_count",
    "trigger_count",
    "fire_count",
    "wall_time_ns",
    "verdict",
    "reason",
    "fail_safe",
    "defect_type",
    "score",
    "explanation",
    "explanation_source",
    "explanations_json",
    "location",
    "size_mm",
    "findings_json",
    "action",
    "actuator_confirmed",
    "latency_ms",
    "budget_ms",
    "budget_miss",
    "model_name",
    "model_version",
    "model_sha256",
    "thresholds_json",
    "rule",
    "image_path",
    "image_sha256",
    "image_bytes",
)
INSERT_SQL = (
    f"INSERT INTO records ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))}) "
    "ON CONFLICT (result_id) DO NOTHING"
)
SELECT_COLUMNS = ", ".join(f"r.{f}" for f in _FIELDS[:-1])
"""The columns :func:`row_to_record` reads, in its order (``r`` is ``records``)."""


def connect(
    db: Path, synchronous: Synchronous, *, create: bool, read_only: bool = False
) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, the given sync level.

    Usable from any thread, one at a time: each caller guards its connection.
    Without ``create`` a missing file is an error rather than a new empty store.
    ``read_only`` opens it for reading only (SQLite refuses every write on it): a WAL
    reader of a store another process writes. Raises ``AuditError`` when the file cannot
    be opened as a database.
    """
    if (read_only or not create) and not db.is_file():
        raise AuditError(f"{db}: no audit store there")
    mode = "ro" if read_only else ("rwc" if create else "rw")
    try:
        conn = sqlite3.connect(
            f"{db.resolve().as_uri()}?mode={mode}",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise AuditError(f"{db}: cannot open the audit database: {exc}") from exc
    if read_only:
        return conn  # the writer chose WAL; a reader cannot change the journal
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise AuditError(f"{db}: cannot open the audit database: {exc}") from exc
    return conn


def ensure_schema(conn: sqlite3.Connection, db: Path, *, read_only: bool = False) -> int:
    """Create the schema in an empty database, or check an existing one's version.

    Returns the version. Raises ``AuditSchemaError`` for a newer schema or a
    database that is not an audit store; with ``read_only`` also for an empty or an
    older one (a reader upgrades nothing: the node does, when it opens the store).
    """
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables and read_only:
        raise AuditSchemaError(f"{db}: an empty database, not an audit store yet")
    if not tables:
        # executescript would commit on its own; run the statements in our transaction.
        _stamp(conn, [st for st in _DDL.split(";") if st.strip()])
        return SCHEMA_VERSION
    if "schema_version" not in tables:
        raise AuditSchemaError(f"{db}: not an audit store (no schema_version table)")
    (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    if version is None:
        raise AuditSchemaError(f"{db}: schema_version is empty")
    if version > SCHEMA_VERSION:
        raise AuditSchemaError(
            f"{db}: audit schema version {version} is newer than this lineside reads "
            f"({SCHEMA_VERSION}); upgrade lineside or point it at another store"
        )
    if version < SCHEMA_VERSION and read_only:
        raise AuditSchemaError(
            f"{db}: audit schema version {version} is older than this lineside reads "
            f"({SCHEMA_VERSION}); start the node once to upgrade it"
        )
    if version < SCHEMA_VERSION:
        _upgrade(conn, db, int(version))
    return SCHEMA_VERSION


def _stamp(conn: sqlite3.Connection, statements: Sequence[str]) -> None:
    """Run ``statements`` and record ``SCHEMA_VERSION``, in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in statements:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO schema_version (version, applied_ns) VALUES (?, ?)",
            (SCHEMA_VERSION, time.time_ns()),
        )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _upgrade(conn: sqlite3.Connection, db: Path, version: int) -> None:
    """Bring a store of ``version`` to ``SCHEMA_VERSION`` in one transaction."""
    statements = []
    if version < 2:
        statements.append("ALTER TABLE records ADD COLUMN rule TEXT NOT NULL DEFAULT ''")
    try:
        _stamp(conn, statements)
    except sqlite3.Error as exc:
        raise AuditSchemaError(
            f"{db}: cannot upgrade the audit schema from version {version} to "
            f"{SCHEMA_VERSION}: {exc}"
        ) from exc


def record_to_row(rec: AuditRecord, image_bytes: int | None) -> tuple[Any, ...]:
    """The ``records`` row for ``rec``, in ``INSERT_SQL``'s column order."""
    return (
        rec.result_id,
        rec.run_id,
        rec.part_id,
        rec.origin_count,
        rec.trigger_count,
        rec.fire_count,
        rec.wall_time_ns,
        rec.verdict,
        rec.reason,
        int(rec.fail_safe),
        rec.defect_type,
        rec.score,
        rec.explanation,
        rec.explanation_source,
        json.dumps(dict(rec.explanations), ensure_ascii=False, sort_keys=True),
        rec.location,
        rec.size_mm,
        rec.findings_json,
        rec.action,
        None if rec.actuator_confirmed is None else int(rec.actuator_confirmed),
        rec.latency_ms,
        rec.budget_ms,
        int(rec.budget_miss),
        rec.model_name,
        rec.model_version,
        rec.model_sha256,
        rec.thresholds_json,
        rec.rule,
        rec.image_path,
        rec.image_sha256,
        image_bytes,
    )


def row_to_record(row: Sequence[Any], review: Review | None) -> AuditRecord:
    """An ``AuditRecord`` from a row selected with ``SELECT_COLUMNS``."""
    (
        result_id,
        run_id,
        part_id,
        origin_count,
        trigger_count,
        fire_count,
        wall_time_ns,
        verdict,
        reason,
        fail_safe,
        defect_type,
        score,
        explanation,
        explanation_source,
        explanations_json,
        location,
        size_mm,
        findings_json,
        action,
        actuator_confirmed,
        latency_ms,
        budget_ms,
        budget_miss,
        model_name,
        model_version,
        model_sha256,
        thresholds_json,
        rule,
        image_path,
        image_sha256,
    ) = row
    return AuditRecord(
        result_id=result_id,
        run_id=run_id,
        part_id=part_id,
        origin_count=origin_count,
        trigger_count=trigger_count,
        fire_count=fire_count,
        wall_time_ns=wall_time_ns,
        verdict=cast(VerdictText, verdict),
        reason=reason,
        fail_safe=bool(fail_safe),
        defect_type=defect_type,
        score=score,
        explanation=explanation,
        explanation_source=explanation_source,
        explanations=json.loads(explanations_json),
        location=location,
        size_mm=size_mm,
        findings_json=findings_json,
        action=action,
        actuator_confirmed=None if actuator_confirmed is None else bool(actuator_confirmed),
        latency_ms=latency_ms,
        budget_ms=budget_ms,
        budget_miss=bool(budget_miss),
        model_name=model_name,
        model_version=model_version,
        model_sha256=model_sha256,
        thresholds_json=thresholds_json,
        rule=rule,
        image_path=image_path,
        image_sha256=image_sha256,
        review=review,
    )


REVIEW_COLUMNS = "result_id, verdict, defect_type, comment, user, wall_time_ns"


def latest_reviews(conn: sqlite3.Connection, result_ids: Iterable[str]) -> dict[str, Review]:
    """The latest review of each of ``result_ids`` that has one."""
    ids = list(result_ids)
    out: dict[str, Review] = {}
    # SQLite allows 32766 host parameters; stay far below it.
    for i in range(0, len(ids), 500):
        chunk = ids[i : i + 500]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE id IN "
            f"(SELECT MAX(id) FROM reviews WHERE result_id IN ({marks}) GROUP BY result_id)",
            chunk,
        )
        for row in rows:
            out[row[0]] = review_from_row(row)
    return out


def review_from_row(row: Sequence[Any]) -> Review:
    """A ``Review`` from a row selected with ``REVIEW_COLUMNS``."""
    result_id, verdict, defect_type, comment, user, wall_time_ns = row
    return Review(result_id, cast(VerdictText, verdict), defect_type, comment, user, wall_time_ns)
