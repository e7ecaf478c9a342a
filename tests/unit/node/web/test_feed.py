"""The web feed: new records from the store to each live page, bounded, never behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.audit.reader import AuditReader
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.web.feed import Feed, TooManyViewers
from tests.unit.node.audit import factories as F


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(AuditSettings(sample_passes=0.0), tmp_path / "audit") as s:
        yield s


def _write(store: AuditStore, ids: range) -> None:
    for pid in ids:
        store.record(F.record(pid, "scratch" if pid % 4 == 0 else None), None)
    store.flush()


async def _settle(feed: Feed, seen: int) -> None:
    for _ in range(200):
        if feed.seen >= seen:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the feed saw {feed.seen} of {seen}")


async def test_a_published_result_reaches_every_viewer_once(store: AuditStore) -> None:
    """After the node's word, each viewer gets the new records once, oldest first; a
    rejects-only viewer gets only the rejects; the page's recent lists hold the newest."""
    _write(store, range(5))
    with AuditReader(store.directory, read_only=True) as reader:
        feed = Feed(reader, cards=3, viewer_queue=50, max_viewers=5)
        await feed.prime()
        assert [r.part_id for r in feed.recent] == [2, 3, 4]
        every, rejects = feed.subscribe(), feed.subscribe(rejects_only=True)
        task = asyncio.create_task(feed.run())
        try:
            _write(store, range(5, 13))
            feed.wake("run1-12")
            await _settle(feed, 13)
            await asyncio.wait_for(every.changed.wait(), 2)
            cards, status_due = every.take()
            assert [r.part_id for r in cards] == [10, 11, 12]  # the newest `cards` of a batch
            assert status_due  # a new page gets the node's status first
            got, _ = rejects.take()
            assert [r.part_id for r in got] == [8, 12]
            assert every.take() == ([], False)
            assert [r.part_id for r in feed.recent_rejects] == [0, 4, 8, 12][-3:]
        finally:
            task.cancel()


async def test_a_result_published_before_its_commit_is_looked_for_again(
    store: AuditStore,
) -> None:
    """The node publishes to its HMI before the audit commit lands: a wake for a record not
    committed yet finds it once it is (within the feed's retries)."""
    with AuditReader(store.directory, read_only=True) as reader:
        feed = Feed(reader, cards=5, viewer_queue=50, max_viewers=5)
        viewer = feed.subscribe()
        task = asyncio.create_task(feed.run())
        try:
            feed.wake("run1-0")
            await asyncio.sleep(0.2)
            assert feed.seen == 0
            _write(store, range(1))
            await _settle(feed, 1)
            cards, _ = viewer.take()
            assert [r.result_id for r in cards] == ["run1-0"]
        finally:
            task.cancel()


async def test_a_slow_viewer_drops_its_oldest_and_is_counted(store: AuditStore) -> None:
    """A page that does not read holds at most viewer_queue records; the rest are dropped
    (oldest first) and counted, and another viewer is not affected."""
    with AuditReader(store.directory, read_only=True) as reader:
        feed = Feed(reader, cards=10, viewer_queue=8, max_viewers=5)
        slow, fast = feed.subscribe(), feed.subscribe()
        task = asyncio.create_task(feed.run())
        try:
            for batch in (range(0, 6), range(6, 12)):
                _write(store, batch)
                feed.wake(f"run1-{batch[-1]}")
                await _settle(feed, batch[-1] + 1)
                cards, _ = fast.take()
                assert [r.part_id for r in cards] == list(batch)
            kept, _ = slow.take()
            assert [r.part_id for r in kept] == list(range(4, 12))
            assert slow.dropped == 4 and feed.dropped == 4 and fast.dropped == 0
        finally:
            task.cancel()


async def test_viewers_are_limited_and_leave(store: AuditStore) -> None:
    """One viewer past max_viewers is refused; one that leaves frees its place."""
    with AuditReader(store.directory, read_only=True) as reader:
        feed = Feed(reader, cards=3, viewer_queue=10, max_viewers=2)
        a = feed.subscribe()
        feed.subscribe()
        with pytest.raises(TooManyViewers):
            feed.subscribe()
        feed.unsubscribe(a)
        assert feed.viewers == 1
        feed.subscribe()
