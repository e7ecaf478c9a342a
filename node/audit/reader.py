"""Reading the audit store, and adding reviews, on a connection of its own.

:class:`AuditReader` is what the store uses for ``get``/``query``/``review``
from other threads than its writer (the OPC UA server's, the CLI's); in WAL
mode its reads never wait for the writer nor block it. The CLI opens one on
a store that a running node is writing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, get_args

from node.audit.record import AuditRecord, Review, VerdictText
from node.audit.schema import (
    DB_NAME,
    IMAGES_DIR,
    REVIEW_COLUMNS,
    SELECT_COLUMNS,
    AuditError,
    connect,
    ensure_schema,
    latest_reviews,
    review_from_row,
    row_to_record,
)
from node.audit.settings import Synchronous

VERDICTS: tuple[str, ...] = get_args(VerdictText)
_PAGE = 500
_REVIEWED = " AND EXISTS (SELECT 1 FROM reviews v WHERE v.result_id = r.result_id)"


def check_verdict(verdict: str) -> VerdictText:
    """``verdict`` if it is ``"pass"`` or ``"reject"``; raises ``ValueError`` otherwise."""
    if verdict == "pass":
        return "pass"
    if verdict == "reject":
        return "reject"
    raise ValueError(f"verdict must be one of {VERDICTS}, not {verdict!r}")


class AuditReader:
    """Queries and reviews on one connection, guarded by a lock (safe from any thread).

    ``directory`` is the store's folder. With ``create=False`` a missing store
    is an ``AuditError``; a store with a newer schema is an ``AuditSchemaError``.
    ``read_only`` readers (``lineside web``) cannot write at all, reviews included.
    """

    def __init__(
        self,
        directory: Path,
        synchronous: Synchronous = "full",
        *,
        create: bool = False,
        read_only: bool = False,
    ) -> None:
        self.directory = directory
        self.image_dir = directory / IMAGES_DIR
        self.read_only = read_only
        db = directory / DB_NAME
        self._conn = connect(db, synchronous, create=create and not read_only, read_only=read_only)
        try:
            self.schema_version = ensure_schema(self._conn, db, read_only=read_only)
        except BaseException:
            self._conn.close()
            raise
        self._lock = threading.Lock()
        self._closed = False

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self) -> AuditReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _select(self, where: str, params: list[Any], tail: str) -> list[tuple[int, AuditRecord]]:
        """``(seq, record)`` pairs; ``seq`` is the row's insertion order (for paging)."""
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            rows = self._conn.execute(
                f"SELECT {SELECT_COLUMNS}, r.seq FROM records r {where} {tail}", params
            ).fetchall()
            reviews = latest_reviews(self._conn, (row[0] for row in rows))
        return [(row[-1], row_to_record(row[:-1], reviews.get(row[0]))) for row in rows]

    def get(self, result_id: str) -> AuditRecord | None:
        """The record of ``result_id`` with its latest review, or None if there is none."""
        found = self._select("WHERE r.result_id = ?", [result_id], "")
        return found[0][1] if found else None

    def query(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        verdict: str | None = None,
        defect_type: str | None = None,
        part_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Records matching every given filter, newest first (by ``wall_time_ns``).

        Time bounds are inclusive UTC epoch ns. ``verdict`` and ``defect_type``
        match the node's original decision, not a review. Raises ``ValueError``
        for a bad verdict or a negative limit/offset.
        """
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("r.wall_time_ns >= ?", since_ns),
            ("r.wall_time_ns <= ?", until_ns),
            ("r.verdict = ?", None if verdict is None else check_verdict(verdict)),
            ("r.defect_type = ?", defect_type),
            ("r.part_id = ?", part_id),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        params += [limit, offset]
        tail = "ORDER BY r.wall_time_ns DESC, r.seq DESC LIMIT ? OFFSET ?"
        return [rec for _, rec in self._select(where, params, tail)]

    def count(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        reviewed_only: bool = False,
    ) -> int:
        """How many records lie in the (inclusive) time range (with a review, if asked)."""
        with self._lock:
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM records r WHERE r.wall_time_ns >= ? AND r.wall_time_ns <= ?"
                + (_REVIEWED if reviewed_only else ""),
                (_lo(since_ns), _hi(until_ns)),
            ).fetchone()
        return int(n)

    def iter_records(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        reviewed_only: bool = False,
    ) -> Iterator[AuditRecord]:
        """Records in the (inclusive) time range, oldest first, fetched a page at a time.

        Each page is its own read, so a long export does not pin one snapshot
        of a store the node keeps writing; records committed meanwhile at a
        later time than the last page are included.
        """
        reviewed = _REVIEWED if reviewed_only else ""
        where = "WHERE r.wall_time_ns >= ? AND r.wall_time_ns <= ?" + reviewed
        params: list[Any] = [_lo(since_ns), _hi(until_ns)]
        while True:
            page = self._select(where, params, f"ORDER BY r.wall_time_ns, r.seq LIMIT {_PAGE}")
            for _, rec in page:
                yield rec
            if len(page) < _PAGE:
                return
            seq, rec = page[-1]
            where = "WHERE (r.wall_time_ns, r.seq) > (?, ?) AND r.wall_time_ns <= ?" + reviewed
            params = [rec.wall_time_ns, seq, _hi(until_ns)]

    def last_seq(self) -> int:
        """The insertion number of the newest record (0 for an empty store)."""
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            (n,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()
        return int(n)

    def after(self, seq: int, limit: int = 100) -> list[tuple[int, AuditRecord]]:
        """``(seq, record)`` of up to ``limit`` records committed after insertion number
        ``seq``, oldest first: what a follower has not seen yet."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return self._select("WHERE r.seq > ?", [seq, limit], "ORDER BY r.seq LIMIT ?")

    def awaiting_review(self, limit: int = 100, offset: int = 0) -> list[AuditRecord]:
        """Records with a kept image and no review yet, newest first: the rejects and the
        sampled passes an operator should look at."""
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must be >= 0")
        where = (
            "WHERE r.image_path IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM reviews v WHERE v.result_id = r.result_id)"
        )
        tail = "ORDER BY r.seq DESC LIMIT ? OFFSET ?"
        return [rec for _, rec in self._select(where, [limit, offset], tail)]

    def count_awaiting_review(self) -> int:
        """How many records :meth:`awaiting_review` would list in all."""
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            (n,) = self._conn.execute(
                "SELECT COUNT(*) FROM records r WHERE r.image_path IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM reviews v WHERE v.result_id = r.result_id)"
            ).fetchone()
        return int(n)

    def reviews(self, result_id: str) -> list[Review]:
        """Every review of ``result_id``, oldest first (the latest is the one in force)."""
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            rows = self._conn.execute(
                f"SELECT {REVIEW_COLUMNS} FROM reviews WHERE result_id = ? ORDER BY id",
                (result_id,),
            ).fetchall()
        return [review_from_row(row) for row in rows]

    def reviews_after(self, seq: int, limit: int = 100) -> list[tuple[int, Review]]:
        """``(review seq, review)`` of up to ``limit`` reviews stored after review number
        ``seq``, oldest first: what a follower of the reviews (the Sparkplug edge node,
        ``lineside web``'s collect path) has not seen yet. A review's seq is its row id."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            rows = self._conn.execute(
                f"SELECT id, {REVIEW_COLUMNS} FROM reviews WHERE id > ? ORDER BY id LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [(int(row[0]), review_from_row(row[1:])) for row in rows]

    def last_review_seq(self) -> int:
        """The seq of the newest review (0 when there is none)."""
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            (n,) = self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM reviews").fetchone()
        return int(n)

    def add_review(
        self, result_id: str, verdict: str, defect_type: str | None, comment: str, user: str
    ) -> Review:
        """Store an operator's review of ``result_id`` beside the original decision.

        A pass carries no defect type. Raises ``KeyError`` for an unknown id,
        ``ValueError`` for a bad verdict, a pass with a defect type, or an empty user.
        """
        v = check_verdict(verdict)
        if v == "pass" and defect_type:
            raise ValueError("a review that passes the part cannot name a defect type")
        if not user.strip():
            raise ValueError("a review needs the user who made it")
        review = Review(result_id, v, defect_type or None, comment, user, time.time_ns())
        with self._lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            # IMMEDIATE takes the write lock up front, so the busy timeout applies instead of
            # failing when the writer thread committed after this connection's last read.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                known = self._conn.execute(
                    "SELECT 1 FROM records WHERE result_id = ?", (result_id,)
                ).fetchone()
                if known is None:
                    raise KeyError(result_id)
                self._conn.execute(
                    "INSERT INTO reviews (result_id, verdict, defect_type, comment, user, "
                    "wall_time_ns) VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        review.result_id,
                        review.verdict,
                        review.defect_type,
                        review.comment,
                        review.user,
                        review.wall_time_ns,
                    ),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return review

    def image_file(self, record: AuditRecord) -> Path | None:
        """The absolute path of a record's image, or None when it has none (any more)."""
        return None if record.image_path is None else self.image_dir / record.image_path


def _lo(since_ns: int | None) -> int:
    return -(2**63) + 1 if since_ns is None else since_ns


def _hi(until_ns: int | None) -> int:
    return 2**63 - 1 if until_ns is None else until_ns
