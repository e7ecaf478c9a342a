"""New results from the audit store to every live page, a batch at a time.

The follower (``node.web.follow``) says a result was published; the feed reads
what the store committed since it last looked (the node publishes a result to its
HMI before the audit writer's commit lands, so a missing one is looked for again a
few times) and hands each live page a batch: the newest ``web.cards`` at most, so a
page never falls behind a fast line. A page that reads slowly holds at most
``web.viewer_queue`` updates; older ones are dropped and counted, never the node's.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from node.audit.reader import AuditReader
from node.audit.record import AuditRecord

log = structlog.get_logger(__name__)

_READ_BATCH = 500
_RETRY_S = 0.05
_RETRIES = 40
_KEEPALIVE_S = 15.0


class TooManyViewers(Exception):
    """``web.max_viewers`` live pages follow already."""


@dataclass(eq=False)
class Viewer:
    """One live page: the records it has not been sent yet, and whether the node's status
    changed since it was last sent."""

    rejects_only: bool
    cards: collections.deque[AuditRecord]
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    status_due: bool = True
    dropped: int = 0

    def take(self) -> tuple[list[AuditRecord], bool]:
        """The records waiting (oldest first) and whether a status is due; clears both."""
        cards = list(self.cards)
        self.cards.clear()
        due, self.status_due = self.status_due, False
        self.changed.clear()
        return cards, due

    async def wait(self) -> bool:
        """Wait for something to send; False after ``_KEEPALIVE_S`` of nothing."""
        try:
            await asyncio.wait_for(self.changed.wait(), _KEEPALIVE_S)
        except TimeoutError:
            return False
        return True


class Feed:
    """Reads new records after the follower's word and hands them to the viewers."""

    def __init__(
        self,
        reader: AuditReader,
        *,
        cards: int,
        viewer_queue: int,
        max_viewers: int,
        on_records: Callable[[list[AuditRecord]], None] | None = None,
    ) -> None:
        self._reader = reader
        self._cards = cards
        self._queue = viewer_queue
        self._max = max_viewers
        self._viewers: set[Viewer] = set()
        self._wake = asyncio.Event()
        self._wanted = ""
        self._seq = 0
        self._on_records = on_records
        self.recent: collections.deque[AuditRecord] = collections.deque(maxlen=cards)
        self.recent_rejects: collections.deque[AuditRecord] = collections.deque(maxlen=cards)
        self.dropped = 0
        """Updates dropped for slow viewers, in all."""
        self.seen = 0
        """Records read from the store since start."""

    @property
    def viewers(self) -> int:
        """Live pages following now."""
        return len(self._viewers)

    def snapshot(self) -> dict[str, Any]:
        """The feed's own figures for ``/status``."""
        return {
            "viewers": len(self._viewers),
            "dropped": self.dropped,
            "seen": self.seen,
            "seq": self._seq,
        }

    async def prime(self) -> None:
        """Fill :attr:`recent` with the newest records already in the store."""
        last = await asyncio.to_thread(self._reader.last_seq)
        start = max(0, last - 20 * self._cards)
        rows = await asyncio.to_thread(self._reader.after, start, 20 * self._cards)
        self._take_rows(rows)

    def wake(self, result_id: str) -> None:
        """The node published ``result_id``: read the store (called on the event loop)."""
        self._wanted = result_id
        self._wake.set()

    def status_changed(self) -> None:
        """The node's state or counters changed: every viewer gets a status update."""
        for v in self._viewers:
            v.status_due = True
            v.changed.set()

    def subscribe(self, *, rejects_only: bool = False) -> Viewer:
        """A new live page. Raises ``TooManyViewers`` past ``web.max_viewers``."""
        if len(self._viewers) >= self._max:
            raise TooManyViewers(f"{self._max} live pages follow already")
        v = Viewer(rejects_only, collections.deque(maxlen=self._queue))
        self._viewers.add(v)
        return v

    def unsubscribe(self, viewer: Viewer) -> None:
        """The page went away."""
        self._viewers.discard(viewer)

    async def run(self) -> None:
        """Read and hand on, for ever (run as a task; returns only when cancelled)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            for _ in range(_RETRIES):
                rows = await asyncio.to_thread(self._reader.after, self._seq, _READ_BATCH)
                found = self._take_rows(rows)
                if len(rows) == _READ_BATCH:
                    continue  # more than one batch behind: read on at once
                if not self._wanted or self._wanted in found:
                    break
                await asyncio.sleep(_RETRY_S)  # published, not committed yet
            else:
                log.debug("web_result_not_in_store", result_id=self._wanted)

    def _take_rows(self, rows: list[tuple[int, AuditRecord]]) -> set[str]:
        if not rows:
            return set()
        self._seq = rows[-1][0]
        records = [r for _, r in rows]
        self.seen += len(records)
        for rec in records:
            self.recent.append(rec)
            if rec.verdict == "reject":
                self.recent_rejects.append(rec)
        newest = records[-self._cards :]
        rejects = [r for r in records if r.verdict == "reject"][-self._cards :]
        for v in self._viewers:
            batch = rejects if v.rejects_only else newest
            if not batch:
                continue
            over = len(v.cards) + len(batch) - self._queue
            if over > 0:
                v.dropped += over
                self.dropped += over
            v.cards.extend(batch)
            v.changed.set()
        if self._on_records is not None:
            self._on_records(records)
        return {r.result_id for r in records}
