"""The audit store under disk faults: refused folders, corrupt databases, failing writes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from node.audit.schema import DB_NAME
from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditStore
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
