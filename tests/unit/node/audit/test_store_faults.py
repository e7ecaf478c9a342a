"""The audit store under disk faults: refused folders, corrupt databases, failing writes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from node.audit.images import file_sha256
from node.audit.recovery import check_integrity
from node.audit.schema import DB_NAME
from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditSpillError, AuditStore
from tests.unit.node.audit import factories as F
from tests.unit.node.audit.mounts import read_only_folder

PAGE = 4096


def _store_with_records(folder: Path, n: int) -> None:
    with AuditStore(AuditSettings(), folder) as s:
        for i in range(n):
            s.record(F.record(i, "scratch" if i % 2 else None), None)


def test_a_read_only_folder_is_refused_with_the_os_reason(tmp_path: Path) -> None:
    """A folder the store cannot write is an ``AuditError`` naming it and the OS's reason,
    not a bare ``OSError`` about the lock file."""
    with read_only_folder(tmp_path / "ro") as folder, pytest.raises(AuditError) as err:
        AuditStore(AuditSettings(), folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: cannot write there (")
    assert "Read-only file system" in message or "Permission denied" in message
    assert "\n" not in message


@pytest.mark.parametrize("damage", ["pages", "header"])
def test_a_corrupt_database_is_moved_aside_and_a_fresh_store_opened(
    tmp_path: Path, damage: str
) -> None:
    """Malformed pages (found by the integrity check at open) or a header that is not
    SQLite's: the file is renamed with a timestamp, logged with both paths, and a fresh
    store opens in its place and takes records."""
    folder = tmp_path / "a"
    _store_with_records(folder, 200)
    db = folder / DB_NAME
    data = bytearray(db.read_bytes())
    assert len(data) > 4 * PAGE
    if damage == "pages":
        data[2 * PAGE : 4 * PAGE] = b"\xa5" * (2 * PAGE)
    else:
        data[:100] = b"not a database, just bytes".ljust(100, b"!")
    db.write_bytes(bytes(data))
    with capture_logs() as logs, AuditStore(AuditSettings(), folder) as store:
        moved = store.moved_aside
        assert moved is not None and moved.parent == folder
        assert moved.name.startswith(f"{DB_NAME}.corrupt-20")
        assert moved.read_bytes() == bytes(data)  # kept as it was, for whoever salvages it
        assert str(moved) in store.alarms()["audit_moved_aside"]
        assert store.query(limit=10) == []
        store.record(F.record(1), None)
        store.flush()
        assert store.get("run1-1") is not None
    event = next(e for e in logs if e["event"] == "audit_store_moved_aside")
    assert event["moved_to"] == str(moved) and event["path"] == str(db)
    assert event["log_level"] == "error" and event["error"]


def test_the_integrity_check_at_open_is_cut_short_not_failed(tmp_path: Path) -> None:
    """On a store too big to check within the budget, the check stops, says so, and the
    store opens (a start must fit systemd's start timeout)."""
    folder = tmp_path / "a"
    _store_with_records(folder, 300)
    conn = sqlite3.connect(folder / DB_NAME)
    try:
        with capture_logs() as logs:
            check_integrity(conn, folder / DB_NAME, budget_s=0.0)
            check_integrity(conn, folder / DB_NAME)  # with the real budget: complete, ok
    finally:
        conn.close()
    assert [e["event"] for e in logs] == ["audit_integrity_check_cut_short"]


def test_a_store_of_another_kind_is_refused_not_moved(tmp_path: Path) -> None:
    """A healthy SQLite file that is not an audit store is not damage: it stays where it is
    and the open is refused."""
    folder = tmp_path / "a"
    folder.mkdir()
    with sqlite3.connect(folder / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(AuditError, match="not an audit store"):
        AuditStore(AuditSettings(), folder)
    assert [p.name for p in folder.iterdir() if p.name.startswith(DB_NAME)] == [DB_NAME]


# ---- writes the database refuses ----------------------------------------------------------
# The database is made "full" with SQLite's own limit on its size (max_page_count): inserts
# then fail with SQLITE_FULL, exactly as on a full disk, and succeed again once it is lifted.


def _refuse_writes(store: AuditStore) -> None:
    (pages,) = store._wconn.execute("PRAGMA page_count").fetchone()
    store._wconn.execute(f"PRAGMA max_page_count = {pages}")


def _allow_writes(store: AuditStore) -> None:
    store._wconn.execute("PRAGMA max_page_count = 1073741823")


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _record_until_failing(store: AuditStore, first: int) -> int:
    """Record parts from ``first`` until the store says it cannot write; the next part id."""
    part = first
    while not store.failing:
        store.record(F.record(part), None)
        part += 1
        assert part < first + 200, "the database never refused"
        time.sleep(0.02)
    return part


def test_refused_writes_raise_the_alarm_and_lose_nothing_once_the_store_recovers(
    tmp_path: Path,
) -> None:
    """A full database: the alarm is raised (listeners told, detail with the error and what
    waits), records wait in memory, flush times out; once it has room the waiting records are
    committed, the alarm clears and every record is in the database."""
    told: list[tuple[bool, bool]] = []
    with capture_logs() as logs, AuditStore(AuditSettings(queue_max=500), tmp_path / "a") as s:
        s.listen(lambda: told.append((s.failing, s.overflowing)))
        for i in range(5):
            s.record(F.record(i), None)
        s.flush()
        _refuse_writes(s)
        part = _record_until_failing(s, 5)
        for i in range(part, 60):
            s.record(F.record(i), None)
        assert told == [(True, False)]
        alarm = s.alarms()["audit"]
        assert "database or disk is full" in alarm and "records waiting" in alarm
        assert s.pending > 0 and s.unrecorded == 0
        with pytest.raises(TimeoutError, match="cannot write"):
            s.flush(timeout_s=0.3)
        _allow_writes(s)
        s.flush(timeout_s=10)
        assert s.alarms() == {} and not s.failing
        assert told == [(True, False), (False, False)]
        assert s.committed == 60 and s.dropped == 0 and s.pending == 0
        assert len(s.query(limit=1000)) == 60
        assert s.write_failures >= 1
    events = [e["event"] for e in logs]
    assert "audit_write_failed" in events and "audit_write_recovered" in events


def test_records_beyond_queue_max_are_counted_and_named_never_silently_lost(
    tmp_path: Path,
) -> None:
    """With the store refusing and ``queue_max`` records waiting, each further record is
    logged by id and counted unrecorded; the bound holds; after recovery committed plus
    unrecorded is every record."""
    with capture_logs() as logs, AuditStore(AuditSettings(queue_max=10), tmp_path / "a") as s:
        _refuse_writes(s)
        part = _record_until_failing(s, 0)
        for i in range(part, part + 30):
            s.record(F.record(i), None)
        assert s.pending == 10 and s.overflowing
        lost = [e["result_id"] for e in logs if e["event"] == "audit_record_dropped"]
        assert len(lost) == s.unrecorded >= 30 - 10
        _allow_writes(s)
        s.flush(timeout_s=10)
        assert not s.overflowing and s.alarms() == {}
        assert s.committed + s.unrecorded == part + 30
        stored = {r.result_id for r in s.query(limit=1000)}
        assert len(stored) == s.committed and not stored & set(lost)


def test_close_while_the_store_refuses_counts_and_names_what_is_lost(tmp_path: Path) -> None:
    """close() keeps trying for a while, then counts every record still waiting as
    unrecorded and logs their ids; a record after close is unrecorded too."""
    s = AuditStore(AuditSettings(), tmp_path / "a")
    _refuse_writes(s)
    part = _record_until_failing(s, 0)
    with capture_logs() as logs:
        s.close()
        s.record(F.record(999), None)
    given_up = next(e for e in logs if e["event"] == "audit_records_unrecorded")
    assert given_up["count"] == s.unrecorded - 1 > 0
    assert s.committed + s.unrecorded == part + 1
    assert given_up["result_ids"][0] == f"run1-{s.committed}"


# ---- the spill folder ---------------------------------------------------------------------


def _spill_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("spill-*.json"))


def test_waiting_records_move_to_the_spill_folder_and_come_back_when_the_store_recovers(
    tmp_path: Path,
) -> None:
    """With a spill folder, records that wait while the database refuses are moved there as
    files — more than ``queue_max`` of them, none unrecorded — and imported once it has room:
    every record committed, rejects with their images, the folder empty, the alarm clear."""
    spill = tmp_path / "spill"
    settings = AuditSettings(queue_max=40, sample_passes=0.0)
    with AuditStore(settings, tmp_path / "a", spill_directory=spill) as s:
        _refuse_writes(s)
        first = part = _record_until_failing(s, 0)
        for _ in range(4):
            for i in range(part, part + 30):
                s.record(F.record(i, "crack" if i % 3 == 0 else None), F.image(i, 32))
            part += 30
            _wait(lambda: s.pending == 0)
        assert s.unrecorded == 0 and s.spilled > settings.queue_max
        assert _spill_files(spill) and "spilled" in s.alarms()["audit"]
        _allow_writes(s)
        s.flush(timeout_s=15)
        assert s.committed == part and s.spilled == 0 and s.alarms() == {}
        assert _spill_files(spill) == []
        records = s.query(limit=1000)
        assert len(records) == part
        rejects = [r for r in records if r.verdict == "reject" and r.part_id >= first]
        assert rejects and all(r.image_path for r in rejects)
        for r in rejects:
            assert file_sha256(s.image_dir / str(r.image_path)) == r.image_sha256


def test_records_spilled_at_close_are_imported_at_the_next_start(tmp_path: Path) -> None:
    """close() while the database refuses puts what waits in the spill folder at once and
    loses nothing; the next store on that folder imports every record."""
    spill = tmp_path / "spill"
    s = AuditStore(AuditSettings(), tmp_path / "a", spill_directory=spill)
    _refuse_writes(s)
    part = _record_until_failing(s, 0)
    for i in range(part, part + 25):
        s.record(F.record(i), None)
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 2.0  # spilled, not waited on
    assert s.unrecorded == 0 and s.committed + s.spilled == part + 25
    with AuditStore(AuditSettings(), tmp_path / "a", spill_directory=spill) as again:
        _wait(lambda: again.spilled == 0)
        assert len(again.query(limit=1000)) == part + 25
    assert _spill_files(spill) == []


def test_an_unreadable_spill_file_is_set_aside_and_counted(tmp_path: Path) -> None:
    """A spill file that cannot be read is renamed ``.unreadable`` (kept), logged, and its
    records (the name says how many) counted unrecorded; the store goes on."""
    spill = tmp_path / "spill"
    spill.mkdir()
    bad = spill / "spill-00000000000000000001-1-000001-n3.json"
    bad.write_text("{ not json")
    with (
        capture_logs() as logs,
        AuditStore(AuditSettings(), tmp_path / "a", spill_directory=spill) as s,
    ):
        _wait(lambda: s.spilled == 0)
        assert s.unrecorded == 3
        s.record(F.record(1), None)
        s.flush()
    assert not bad.exists() and bad.with_name(bad.name + ".unreadable").is_file()
    assert any(e["event"] == "audit_spill_unreadable" for e in logs)


def test_a_spill_folder_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    """A read-only spill folder is an ``AuditSpillError`` naming it and the OS's reason."""
    with read_only_folder(tmp_path / "ro") as folder, pytest.raises(AuditSpillError) as err:
        AuditStore(AuditSettings(), tmp_path / "a", spill_directory=folder / "spill")
    assert str(err.value).startswith(f"{folder / 'spill'}: cannot write there (")
