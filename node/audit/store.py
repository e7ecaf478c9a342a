"""The audit store: every part's record committed off the event loop, nothing lost.

``record()`` only enqueues (it is called on the event loop at line rate); one
writer thread (:mod:`node.audit.writer`) takes what is queued, writes the kept
images (atomically, and fsynced at ``synchronous = "full"``) and then commits
the rows that name them in one transaction — so a committed row always has its
image — and waits out a store that cannot write, under an alarm. ``flush()``
waits for everything enqueued so far; ``close()`` writes what is still
queued. Opening moves a damaged database aside (:mod:`node.audit.recovery`).
Reads and reviews use a connection of their own
(:class:`~node.audit.reader.AuditReader`); retention runs on a thread of its
own in short transactions. One process at a time may hold a store open for
writing (a lock file says who).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from node.audit.build import record_from_result
from node.audit.images import (
    clear_tmp,
    keep_image,
    remove_orphans,
)
from node.audit.reader import AuditReader
from node.audit.record import AuditRecord, Review
from node.audit.recovery import check_integrity, corruption, move_aside
from node.audit.retention import RetentionReport, apply_retention, image_bytes
from node.audit.schema import (
    DB_NAME,
    IMAGES_DIR,
    AuditError,
    AuditSchemaError,
    connect,
    ensure_schema,
)
from node.audit.settings import AuditSettings
from node.audit.spill import Spill
from node.audit.writer import AuditWriter, Listener

__all__ = [
    "AuditError",
    "AuditSchemaError",
    "AuditSpillError",
    "AuditStore",
    "RetentionReport",
    "record_from_result",
]

log = structlog.get_logger("lineside.audit")


class AuditSpillError(AuditError):
    """The spill folder (``audit.spill_directory``) cannot be used."""


LOCK_FILE = ".lock"
FIRST_RETENTION_S = 60.0
"""Delay of the first periodic retention pass after opening (then every interval)."""


class AuditStore:
    """The audit trail of one node: records, kept images, reviews and retention.

    ``directory`` is the store's folder (created if missing); ``spill_directory`` (None:
    none) where records wait as files while the store cannot write
    (:mod:`node.audit.spill`). Raises ``AuditError`` when it cannot be opened or another
    process holds it, ``AuditSpillError`` when the spill folder cannot be used,
    ``AuditSchemaError`` for a store written by a newer lineside. Use as a
    context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        settings: AuditSettings,
        directory: Path,
        *,
        spill_directory: Path | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.image_dir = directory / IMAGES_DIR
        self._durable = settings.synchronous == "full"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock_fd = _lock(directory)
        except OSError as exc:  # read-only, no permission, not a folder: say which and why
            raise AuditError(f"{directory}: cannot write there ({_os_reason(exc)})") from exc
        self._conns: list[sqlite3.Connection] = []
        self._reader: AuditReader | None = None
        self.moved_aside: Path | None = None
        """Where a damaged database found at open was moved (a fresh one replaced it)."""
        try:
            self._open_or_fail()
            self._spill = None if spill_directory is None else _open_spill(spill_directory)
        except BaseException:
            self._release()
            raise
        self._writer = AuditWriter(settings, directory, self.image_dir, self._wconn, self._spill)
        self._closed = False
        self._retention_lock = threading.Lock()
        self._stop_retention = threading.Event()
        self._retainer = threading.Thread(
            target=self._retention_loop, name="audit-retention", daemon=True
        )
        self._writer.start()
        self._retainer.start()

    def _open_or_fail(self) -> None:
        """Open the store; a damaged database is moved aside and a fresh one created
        (:mod:`node.audit.recovery`); any other error of the folder or the database
        becomes ``AuditError``."""
        try:
            try:
                self._open()
            except (AuditError, sqlite3.DatabaseError) as exc:
                why = corruption(exc)
                if why is None:
                    raise
                self._close_connections()
                self.moved_aside = move_aside(self.directory, why)
                self._open()
        except AuditError:
            raise
        except OSError as exc:
            raise AuditError(f"{self.directory}: cannot write there ({_os_reason(exc)})") from exc
        except sqlite3.Error as exc:
            raise AuditError(f"{self.directory}: cannot open the audit database: {exc}") from exc

    def _open(self) -> None:
        db = self.directory / DB_NAME
        wal = db.with_name(DB_NAME + "-wal")
        unclean = wal.is_file() and wal.stat().st_size > 0
        self.image_dir.mkdir(exist_ok=True)
        tmp_removed = clear_tmp(self.image_dir)
        sync = self.settings.synchronous
        self._wconn = connect(db, sync, create=True)
        self._conns.append(self._wconn)
        version = ensure_schema(self._wconn, db)  # also replays a crashed writer's WAL
        check_integrity(self._wconn, db)
        self._retention_conn = connect(db, sync, create=False)
        self._conns.append(self._retention_conn)
        self._reader = AuditReader(self.directory, sync)
        (records,) = self._wconn.execute("SELECT COUNT(*) FROM records").fetchone()
        orphans = remove_orphans(self._wconn, self.image_dir) if unclean else 0
        log.info(
            "audit_store_opened",
            path=str(self.directory),
            records=int(records),
            image_bytes=image_bytes(self._wconn),
            schema_version=version,
            synchronous=sync,
            recovered=unclean,
            tmp_files_removed=tmp_removed,
            orphan_images_removed=orphans,
        )

    # ---- the event loop's side -------------------------------------------------------------

    def record(self, record: AuditRecord, image: npt.NDArray[Any] | None) -> None:
        """Queue ``record`` (and ``image``, if kept) for the writer thread; never blocks.

        The image is kept for every reject and a ``sample_passes`` share of
        passes; a kept image is copied here, so the caller may reuse its
        buffer. See :meth:`AuditWriter.record` for what happens when the store
        cannot write.
        """
        keep = image is not None and keep_image(
            record.result_id, record.verdict == "reject", self.settings.sample_passes
        )
        self._writer.record(record, np.array(image, copy=True) if keep else None)

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every record queued before this call is committed (or dropped).

        Raises ``TimeoutError`` when that takes longer than ``timeout_s`` (as it
        does while the store cannot write).
        """
        self._writer.flush(timeout_s)

    def listen(self, listener: Listener) -> None:
        """Call ``listener()`` whenever :attr:`failing` or :attr:`overflowing` changes
        (from the writer thread or the caller of :meth:`record`: quick and thread-safe)."""
        self._writer.listen(listener)

    @property
    def writer(self) -> AuditWriter:
        """The writer thread's side: counters and state while the store cannot write."""
        return self._writer

    @property
    def committed(self) -> int:
        """Records committed since this store was opened."""
        return self._writer.committed

    @property
    def dropped(self) -> int:
        """Records not stored: :attr:`unrecorded` ones plus duplicate result ids."""
        return self._writer.dropped

    @property
    def unrecorded(self) -> int:
        """Parts whose record is lost (no room, closed, refused for good); each logged."""
        return self._writer.unrecorded

    @property
    def pending(self) -> int:
        """Records waiting in memory for the writer thread (at most ``queue_max``)."""
        return self._writer.pending

    @property
    def failing(self) -> bool:
        """True from a refused write until the next successful one."""
        return self._writer.failing

    @property
    def overflowing(self) -> bool:
        """True from the first record that found no room until the store writes again."""
        return self._writer.overflowing

    @property
    def overflows(self) -> int:
        """How many times :attr:`overflowing` began."""
        return self._writer.overflows

    @property
    def spilled(self) -> int:
        """Records waiting as files in the spill folder."""
        return self._writer.spilled

    @property
    def write_failures(self) -> int:
        """Refused write attempts since the store was opened."""
        return self._writer.write_failures

    def alarms(self) -> dict[str, str]:
        """What an operator must see about the store now, by name, with a detail line:
        ``audit`` while writes fail (or a record found no room) until one succeeds,
        ``audit_moved_aside`` (for the whole run) when a damaged database was replaced."""
        alarms: dict[str, str] = {}
        alarm = self._writer.alarm()
        if alarm is not None:
            alarms["audit"] = alarm
        if self.moved_aside is not None:
            alarms["audit_moved_aside"] = (
                f"damaged audit database moved aside to {self.moved_aside}; a fresh store "
                "was opened"
            )
        return alarms

    def commit_latency_ms(self) -> dict[str, float]:
        """p50/p99/max of enqueue → commit over the last 10 000 records, in milliseconds."""
        return self._writer.commit_latency_ms()

    # ---- reads and reviews (any thread) ----------------------------------------------------

    @property
    def reader(self) -> AuditReader:
        """The store's reading connection (raises ``AuditError`` once closed)."""
        if self._reader is None:
            raise AuditError(f"{self.directory}: the audit store is closed")
        return self._reader

    def get(self, result_id: str) -> AuditRecord | None:
        """The committed record of ``result_id`` with its latest review, or None."""
        return self.reader.get(result_id)

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
        """Committed records matching every given filter, newest first.

        See :meth:`AuditReader.query`: ``wall_time_ns`` bounds are inclusive,
        ``verdict``/``defect_type`` match the original decision.
        """
        return self.reader.query(
            since_ns=since_ns,
            until_ns=until_ns,
            verdict=verdict,
            defect_type=defect_type,
            part_id=part_id,
            limit=limit,
            offset=offset,
        )

    def review(
        self, result_id: str, verdict: str, defect_type: str | None, comment: str, user: str
    ) -> Review:
        """Store an operator's review beside the original decision; every review is kept.

        Raises ``KeyError`` for an id with no committed record, ``ValueError``
        for a verdict other than ``"pass"``/``"reject"`` (or a pass naming a
        defect type, or an empty user).
        """
        review = self.reader.add_review(result_id, verdict, defect_type, comment, user)
        log.info(
            "part_reviewed",
            result_id=result_id,
            verdict=review.verdict,
            defect_type=review.defect_type,
            user=user,
        )
        return review

    def apply_retention(self, now_ns: int | None = None) -> RetentionReport:
        """Apply the age and size limits now (``now_ns``: UTC epoch ns, default the clock).

        Also run every ``retention_interval_s`` by the store's retention
        thread. Raises ``AuditError`` when the database refuses.
        """
        with self._retention_lock:
            if self._closed:
                raise AuditError(f"{self.directory}: the audit store is closed")
            try:
                return apply_retention(
                    self._retention_conn,
                    self.image_dir,
                    self.settings,
                    time.time_ns() if now_ns is None else now_ns,
                )
            except sqlite3.Error as exc:
                raise AuditError(f"{self.directory}: retention failed: {exc}") from exc

    # ---- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Write everything still queued, stop the threads and close the database.

        While the store cannot write, see :meth:`AuditWriter.close`.
        """
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        self._stop_retention.set()
        self._retainer.join()
        log.info(
            "audit_store_closed",
            path=str(self.directory),
            committed=self.committed,
            dropped=self.dropped,
            unrecorded=self.unrecorded,
        )
        self._release()

    def _release(self) -> None:
        self._close_connections()
        os.close(self._lock_fd)

    def _close_connections(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        for conn in self._conns:
            conn.close()
        self._conns.clear()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- the retention thread --------------------------------------------------------------

    def _retention_loop(self) -> None:
        wait_s = min(FIRST_RETENTION_S, self.settings.retention_interval_s)
        while not self._stop_retention.wait(wait_s):
            wait_s = self.settings.retention_interval_s
            try:
                self.apply_retention()
            except Exception as exc:  # noqa: BLE001 - the retention thread must live on
                log.error("audit_retention_failed", error=str(exc))


def _open_spill(directory: Path) -> Spill:
    try:
        return Spill(directory)
    except OSError as exc:
        raise AuditSpillError(f"{directory}: cannot write there ({_os_reason(exc)})") from exc


def _os_reason(exc: OSError) -> str:
    """The OS's words for ``exc`` without the path (the message names the folder already)."""
    return exc.strerror or str(exc)


def _lock(directory: Path) -> int:
    """Hold the store's lock file (released by the kernel even when the process is killed)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise AuditError(f"{directory}: the audit store is open in another process") from exc
    return fd
