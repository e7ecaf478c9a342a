"""The audit store's writer: one thread commits what the event loop queues, and waits out
a store that cannot write without losing a record silently.

``record()`` (on the event loop) appends to an in-memory queue bounded by
``audit.queue_max`` and returns. The writer thread reads the front of the queue
(up to ``MAX_BATCH`` records), writes the kept images (atomically, fsynced at
``synchronous = "full"``) and commits the rows that name them in one
transaction, then takes them off the queue — so a batch the disk refuses simply
stays queued. It is tried again with back-off for as long as it takes, the
alarm raised meanwhile (:meth:`AuditWriter.alarm`, listeners told); with a spill
folder (:mod:`node.audit.spill`) what waits moves there as files and comes back
first once the store writes. A record that finds no room is counted
(``unrecorded``) and logged by id — never dropped unseen. ``docs/audit.md``
tells the whole story.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy.typing as npt
import structlog

from node.audit.images import StoredImage, encode_png, fsync_dir, image_relpath, write_atomic
from node.audit.record import AuditRecord
from node.audit.recovery import corruption
from node.audit.schema import INSERT_SQL, record_to_row
from node.audit.settings import AuditSettings
from node.audit.spill import Spill, SpilledRecord
from node.line.results import percentiles

log = structlog.get_logger("lineside.audit")

MAX_BATCH = 256
"""Records committed in one transaction at most (a burst is split into several)."""
RETRY_FIRST_S = 0.1
RETRY_MAX_S = 5.0
"""Back-off between attempts while the store refuses writes: doubles from the first to the max."""
CLOSE_RETRY_S = 3.0
"""How long close() keeps trying to write what is still waiting before it gives up on it."""
SPILL_SLICE_S = 0.5
"""While the store refuses writes, the writer moves what waits in memory to the spill folder
at least this often (between its attempts)."""


@dataclass(slots=True)
class _Item:
    record: AuditRecord
    image: npt.NDArray[Any] | None
    enqueued_ns: int
    png: bytes | None = None
    """The kept image already encoded (a record read back from a spill file)."""


Listener = Callable[[], None]

_TRANSIENT = (OSError, sqlite3.OperationalError)
"""What the disk says (full, read-only, I/O error, locked): wait and write again."""


def _store_refused(exc: BaseException) -> bool:
    """The disk, or a database damaged since it was opened: no record can be written, so
    records wait (and the alarm tells the operator) rather than being dropped one by one."""
    return isinstance(exc, _TRANSIENT) or corruption(exc) is not None


class AuditWriter:
    """The writer thread of one store and the queue in front of it.

    ``conn`` is the store's writing connection (used by this thread only), ``image_dir``
    where kept images go, ``spill`` the spill folder or None. :meth:`start` starts the
    thread; :meth:`close` writes what waits (see there) and stops it.
    """

    def __init__(
        self,
        settings: AuditSettings,
        directory: Path,
        image_dir: Path,
        conn: sqlite3.Connection,
        spill: Spill | None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.image_dir = image_dir
        self._wconn = conn
        self._durable = settings.synchronous == "full"
        self._spill = spill
        self._spill_files = collections.deque([] if spill is None else spill.files())
        self._own_spills: set[Path] = set()
        # Records wait in _items (oldest first) until committed; the writer reads the front
        # and is the only one to remove from it, so a failed batch simply stays queued.
        self._items: collections.deque[_Item] = collections.deque()
        self._cv = threading.Condition()
        self._hurry = threading.Event()
        self._listeners: list[Listener] = []
        self._closed = False
        self._accepted = 0
        self._resolved = 0
        self._committed = 0
        self._dropped = 0
        self._unrecorded = 0
        self._write_failures = 0
        self._failing_since: float | None = None
        self._error = ""
        self._overflow = False
        self._overflows = 0
        self._spilled = sum(Spill.count(f) for f in self._spill_files)
        self._latency_ns: collections.deque[int] = collections.deque(maxlen=10_000)
        self._thread = threading.Thread(target=self._write_loop, name="audit-writer", daemon=True)

    def start(self) -> None:
        """Start the writer thread."""
        self._thread.start()

    def close(self) -> None:
        """Refuse new records, write what waits and stop the thread.

        While the store cannot write, what waits goes to the spill folder at once; without
        one the writer keeps trying for ``CLOSE_RETRY_S``, then counts what is left in
        :attr:`unrecorded` and logs every id.
        """
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify_all()
        self._hurry.set()
        if self._thread.is_alive():
            self._thread.join()

    # ---- the event loop's side -------------------------------------------------------------

    def record(self, record: AuditRecord, image: npt.NDArray[Any] | None) -> None:
        """Queue ``record`` with ``image`` (a copy the writer owns, or None); never blocks.

        Records wait in memory while the store cannot write, up to ``queue_max``;
        one that finds no room (or the writer closed) is not recorded: counted in
        :attr:`unrecorded` (and :attr:`dropped`), logged with its id, and
        :attr:`overflowing` is set until the store writes again.
        """
        item = _Item(record, image, time.monotonic_ns())
        with self._cv:
            if not self._closed and len(self._items) < self.settings.queue_max:
                self._items.append(item)
                self._accepted += 1
                self._cv.notify_all()
                return
            why = "store closed" if self._closed else "queue full"
            self._dropped += 1
            self._unrecorded += 1
            newly_full = not self._closed and not self._overflow
            if newly_full:
                self._overflow = True
                self._overflows += 1
            unrecorded = self._unrecorded
        log.error(
            "audit_record_dropped",
            result_id=record.result_id,
            why=why,
            unrecorded=unrecorded,
            queue_max=self.settings.queue_max,
        )
        if newly_full:
            self._tell()

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait until every record queued before this call is committed (or dropped).

        Raises ``TimeoutError`` when that takes longer than ``timeout_s`` (as it
        does while the store cannot write).
        """
        with self._cv:
            target = self._accepted
            if not self._cv.wait_for(
                lambda: self._resolved >= target or self._closed, timeout=timeout_s
            ):
                raise TimeoutError(
                    f"audit records not committed within {timeout_s} s"
                    + (f" (the store cannot write: {self._error})" if self._error else "")
                )

    def listen(self, listener: Listener) -> None:
        """Call ``listener()`` whenever :attr:`failing` or :attr:`overflowing` changes.

        It is called from the writer thread or from the caller of :meth:`record`;
        it must be quick and thread-safe (e.g. ``loop.call_soon_threadsafe``).
        """
        self._listeners.append(listener)

    @property
    def committed(self) -> int:
        """Records committed since the store was opened."""
        return self._committed

    @property
    def dropped(self) -> int:
        """Records not stored: :attr:`unrecorded` ones plus duplicate result ids."""
        return self._dropped

    @property
    def unrecorded(self) -> int:
        """Parts whose record is lost: no room left while the store could not write, the
        store closed, or a record the database refused for good. Each is logged by id."""
        return self._unrecorded

    @property
    def pending(self) -> int:
        """Records waiting in memory for the writer thread (at most ``queue_max``)."""
        return len(self._items)

    @property
    def failing(self) -> bool:
        """True from a refused write until the next successful one."""
        return self._failing_since is not None

    @property
    def overflowing(self) -> bool:
        """True from the first record that found no room until the store writes again."""
        return self._overflow

    @property
    def spilled(self) -> int:
        """Records waiting as files in the spill folder (this run's and earlier ones')."""
        return self._spilled

    @property
    def overflows(self) -> int:
        """How many times :attr:`overflowing` began (a listener that comes late still sees
        that records went unrecorded even if the store has written again since)."""
        return self._overflows

    @property
    def write_failures(self) -> int:
        """Refused write attempts since the store was opened."""
        return self._write_failures

    def alarm(self) -> str | None:
        """The alarm line while writes fail (or a record found no room) until one succeeds."""
        if self._failing_since is not None:
            for_s = time.monotonic() - self._failing_since
            return (
                f"audit store cannot write {self.directory} for {for_s:.0f} s ({self._error}); "
                f"{len(self._items)} of {self.settings.queue_max} records waiting, "
                + (f"{self._spilled} spilled, " if self._spill is not None else "")
                + f"{self._unrecorded} parts unrecorded"
            )
        if self._overflow:
            return (
                f"audit writer behind: {self.settings.queue_max} records waiting, "
                f"{self._unrecorded} parts unrecorded"
            )
        return None

    def commit_latency_ms(self) -> dict[str, float]:
        """p50/p99/max of enqueue → commit over the last 10 000 records, in milliseconds."""
        return percentiles(ns / 1e6 for ns in list(self._latency_ns))

    # ---- the writer thread -----------------------------------------------------------------

    def _write_loop(self) -> None:
        delay_s = 0.0
        closing_since: float | None = None
        while True:
            with self._cv:
                self._cv.wait_for(lambda: bool(self._items or self._spill_files) or self._closed)
                if self._closed and closing_since is None:
                    closing_since = time.monotonic()
                if not self._items and not self._spill_files:
                    return
                batch = list(itertools.islice(self._items, MAX_BATCH))
            # spilled records are older than any in memory: they go in first
            error = self._import(self._spill_files[0]) if self._spill_files else self._commit(batch)
            if error is None:
                delay_s = 0.0
                if self._failing_since is not None or self._overflow:
                    self._recovered()
                continue
            self._failed(error)
            self._spill_waiting()
            if closing_since is not None:
                if not self._items:  # all of it is in spill files: the next start imports them
                    log.warning("audit_left_spilled", records=self._spilled, error=str(error))
                    return
                if time.monotonic() - closing_since > CLOSE_RETRY_S:
                    self._give_up(error)
                    return
                delay_s = RETRY_FIRST_S
            else:
                delay_s = min(RETRY_MAX_S, max(RETRY_FIRST_S, 2 * delay_s))
            self._back_off(delay_s)

    def _back_off(self, delay_s: float) -> None:
        """Wait ``delay_s`` (close() cuts it short), spilling what arrives meanwhile."""
        until = time.monotonic() + delay_s
        while (left := until - time.monotonic()) > 0:
            if self._hurry.wait(min(left, SPILL_SLICE_S)):
                return
            self._spill_waiting()

    def _spill_waiting(self) -> None:
        """Move every record waiting in memory to spill files (when there is a spill folder)."""
        spill = self._spill
        if spill is None:
            return
        while True:
            with self._cv:
                batch = list(itertools.islice(self._items, MAX_BATCH))
            if not batch:
                return
            try:
                path = spill.write([SpilledRecord(i.record, _png_of(i)) for i in batch])
            except OSError as exc:
                log.error("audit_spill_failed", path=str(spill.directory), error=str(exc))
                return
            with self._cv:
                for _ in batch:
                    self._items.popleft()
                self._spilled += len(batch)
                self._spill_files.append(path)
                self._own_spills.add(path)
                self._cv.notify_all()
            log.warning("audit_records_spilled", path=str(path), records=len(batch))

    def _import(self, path: Path) -> BaseException | None:
        """Commit one spill file's records and delete it; the error when the disk refused."""
        assert self._spill is not None
        count = Spill.count(path)
        try:
            spilled = self._spill.read(path)
        except (OSError, ValueError) as exc:
            self._unimportable(path, count, exc)
            return None
        items = [_Item(s.record, None, 0, s.png) for s in spilled]
        try:
            self._write_once(items, replay=True)
            self._spill.remove(path)
        except Exception as exc:  # noqa: BLE001 - the writer's supervisor: wait, or set aside
            self._rollback()
            if _store_refused(exc):
                return exc
            self._unimportable(path, count, exc)
            return None
        self._imported(path, count)
        log.info("audit_spill_imported", path=str(path), records=len(items))
        return None

    def _imported(self, path: Path, count: int, *, lost: bool = False) -> None:
        with self._cv:
            self._spill_files.popleft()
            self._spilled -= count
            if lost:
                self._unrecorded += count
                self._dropped += count
            if path in self._own_spills:
                self._own_spills.discard(path)
                self._resolved += count
            self._cv.notify_all()

    def _unimportable(self, path: Path, count: int, exc: BaseException) -> None:
        """A spill file that cannot be read or stored: renamed aside (its records count as
        unrecorded: they are not in the store, though the file keeps them)."""
        assert self._spill is not None
        try:
            self._spill.set_aside(path, repr(exc))
        except OSError as err:
            log.error("audit_spill_unreadable", path=str(path), error=repr(exc), rename=str(err))
        self._imported(path, count, lost=True)

    def _commit(self, batch: list[_Item]) -> BaseException | None:
        """Commit ``batch`` (the front of the queue) and take it off the queue.

        Returns the error when the disk refused (the batch stays queued). A record the
        database refuses for any other reason is isolated: the batch is written one by
        one and only that record is dropped (counted, logged).
        """
        try:
            self._write_once(batch)
        except Exception as exc:  # noqa: BLE001 - the writer's supervisor: wait, or isolate
            self._rollback()
            if _store_refused(exc):
                return exc
            if len(batch) > 1:
                for item in batch:
                    error = self._commit([item])
                    if error is not None:
                        return error
                return None
            rec = batch[0].record
            log.error("audit_record_refused", result_id=rec.result_id, error=repr(exc))
            with self._cv:
                self._dropped += 1
                self._unrecorded += 1
        self._resolve(len(batch))
        return None

    def _resolve(self, n: int) -> None:
        with self._cv:
            for _ in range(n):
                self._items.popleft()
            self._resolved += n
            self._cv.notify_all()

    def _rollback(self) -> None:
        if self._wconn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._wconn.execute("ROLLBACK")

    def _failed(self, error: BaseException) -> None:
        with self._cv:
            self._write_failures += 1
            self._error = f"{type(error).__name__}: {error}"
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
        log.error(
            "audit_write_failed",
            path=str(self.directory),
            error=self._error,
            waiting=len(self._items),
            failures=self._write_failures,
        )
        if first:
            self._tell()

    def _recovered(self) -> None:
        with self._cv:
            since = self._failing_since
            self._failing_since = None
            self._error = ""
            self._overflow = False
        failed_for_s = 0.0 if since is None else time.monotonic() - since
        log.warning(
            "audit_write_recovered",
            path=str(self.directory),
            failed_for_s=round(failed_for_s, 1),
            waiting=len(self._items),
            unrecorded=self._unrecorded,
        )
        self._tell()

    def _give_up(self, error: BaseException) -> None:
        """close(): the store still refuses; what waits is lost — count it and name it."""
        with self._cv:
            lost = list(self._items)
            self._items.clear()
            self._dropped += len(lost)
            self._unrecorded += len(lost)
            self._resolved += len(lost)
            self._cv.notify_all()
        log.error(
            "audit_records_unrecorded",
            count=len(lost),
            result_ids=[i.record.result_id for i in lost],
            error=repr(error),
        )

    def _tell(self) -> None:
        for listener in self._listeners:
            listener()

    def _write_once(self, items: list[_Item], *, replay: bool = False) -> None:
        """Write the images, then commit the rows naming them in one transaction.

        A result id already stored is a duplicate, counted and logged — except when
        ``replay``-ing a spill file, which may have been imported before a crash.
        """
        ids = [i.record.result_id for i in items]
        marks = ", ".join("?" * len(ids))
        seen = {
            row[0]
            for row in self._wconn.execute(
                f"SELECT result_id FROM records WHERE result_id IN ({marks})", ids
            )
        }
        rows: list[tuple[Any, ...]] = []
        stored: list[StoredImage] = []
        written: list[_Item] = []
        duplicates: list[str] = []
        for item in items:
            rec = item.record
            if rec.result_id in seen:
                duplicates.append(rec.result_id)
                continue
            seen.add(rec.result_id)
            has_image = item.image is not None or item.png is not None
            image = self._store_image(item) if has_image else None
            if image is not None:
                stored.append(image)
            rec = dataclasses.replace(
                rec,
                image_path=None if image is None else image.relpath,
                image_sha256=None if image is None else image.sha256,
                review=None,
            )
            rows.append(record_to_row(rec, None if image is None else image.size_bytes))
            written.append(item)
        if self._durable and stored:
            for folder in {(self.image_dir / s.relpath).parent for s in stored}:
                fsync_dir(folder)
            if any(s.new_folder for s in stored):
                fsync_dir(self.image_dir)
        self._wconn.execute("BEGIN IMMEDIATE")
        self._wconn.executemany(INSERT_SQL, rows)
        self._wconn.execute("COMMIT")
        now = time.monotonic_ns()
        with self._cv:
            self._committed += len(rows)
            if not replay:
                self._dropped += len(duplicates)
        self._latency_ns.extend(now - i.enqueued_ns for i in written if i.enqueued_ns)
        for result_id in duplicates:
            if replay:
                log.info("audit_spilled_already_stored", result_id=result_id)
            else:
                log.error("audit_duplicate_result", result_id=result_id, dropped=self._dropped)

    def _store_image(self, item: _Item) -> StoredImage | None:
        rec = item.record
        data = _png_of(item)
        if data is None:
            return None
        rel = image_relpath(rec.result_id, rec.wall_time_ns)
        return write_atomic(self.image_dir, rel, data, durable=self._durable)


def _png_of(item: _Item) -> bytes | None:
    """The item's kept image as PNG; None when it has none or it cannot be one (logged: the
    record matters more than its picture, and is stored without it)."""
    if item.png is not None or item.image is None:
        return item.png
    try:
        item.png = encode_png(item.image)
    except ValueError as exc:
        log.error("audit_image_unstorable", result_id=item.record.result_id, error=str(exc))
        item.image = None
        return None
    item.image = None  # encoded once, whatever the number of attempts
    return item.png
