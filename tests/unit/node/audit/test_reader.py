"""The audit reader's follower queries and its read-only mode."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.audit.reader import AuditReader
from node.audit.schema import AuditError, AuditSchemaError, connect
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from tests.unit.node.audit import factories as F


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    """A store keeping rejects' images and no passes'."""
    with AuditStore(AuditSettings(sample_passes=0.0), tmp_path / "audit") as s:
        yield s


def _fill(store: AuditStore, n: int) -> None:
    for pid in range(n):
        kind = "scratch" if pid % 3 == 0 else None
        store.record(F.record(pid, kind), F.image(pid))
    store.flush()


def test_after_lists_what_follows_a_seq_in_order(store: AuditStore) -> None:
    """after(seq) returns the records committed after it, oldest first, limited; last_seq
    is the newest; a reader polling with the last seq it saw misses nothing."""
    _fill(store, 10)
    with AuditReader(store.directory, read_only=True) as r:
        assert r.last_seq() == 10
        first = r.after(0, 4)
        assert [rec.part_id for _, rec in first] == [0, 1, 2, 3]
        rest = r.after(first[-1][0], 100)
        assert [rec.part_id for _, rec in rest] == list(range(4, 10))
        assert r.after(r.last_seq()) == []


def test_awaiting_review_lists_kept_unreviewed_records_newest_first(
    store: AuditStore,
) -> None:
    """Only records with a kept image and no review await review; a review takes one out."""
    _fill(store, 10)
    with (
        AuditReader(store.directory) as writer_side,
        AuditReader(store.directory, read_only=True) as r,
    ):
        assert [x.part_id for x in r.awaiting_review()] == [9, 6, 3, 0]
        assert r.count_awaiting_review() == 4
        writer_side.add_review("run1-6", "reject", "scratch", "ok", "olga")
        writer_side.add_review("run1-6", "pass", None, "second look", "emil")
        assert [x.part_id for x in r.awaiting_review(limit=2)] == [9, 3]
        assert r.count_awaiting_review() == 3
        assert [(v.user, v.verdict) for v in r.reviews("run1-6")] == [
            ("olga", "reject"),
            ("emil", "pass"),
        ]
        assert r.reviews("run1-9") == []


def test_a_read_only_reader_cannot_write(store: AuditStore) -> None:
    """A read-only reader reads while the store writes, and any write through it fails
    (a review must go through the node)."""
    _fill(store, 3)
    with AuditReader(store.directory, read_only=True) as r:
        assert r.get("run1-0") is not None
        store.record(F.record(3, "crack"), F.image(3))
        store.flush()
        assert r.last_seq() == 4
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            r.add_review("run1-0", "pass", None, "", "olga")
    with AuditReader(store.directory) as again:
        assert again.reviews("run1-0") == []


def test_read_only_refuses_a_missing_empty_or_old_store(tmp_path: Path) -> None:
    """Read-only opens neither create a store nor upgrade one: a missing file, an empty
    database and a version-1 store are refused with the reason."""
    with pytest.raises(AuditError, match="no audit store"):
        AuditReader(tmp_path / "none", read_only=True)
    (tmp_path / "empty").mkdir()
    sqlite3.connect(tmp_path / "empty" / "audit.sqlite3").close()
    with pytest.raises(AuditSchemaError, match="empty"):
        AuditReader(tmp_path / "empty", read_only=True)
    with AuditStore(AuditSettings(), tmp_path / "old"):
        pass
    conn = connect(tmp_path / "old" / "audit.sqlite3", "normal", create=False)
    conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    with pytest.raises(AuditSchemaError, match="older"):
        AuditReader(tmp_path / "old", read_only=True)
