"""The edge node's outbox: which committed results went north, which the broker has, and
the cursor on disk that a restart resumes from.

Results are handed to the MQTT client in store order; each is followed by its message id
until the broker acknowledges it, and the cursor moves only past an unbroken run of
acknowledged results, so a crash or a lost session sends again at most what was in
flight (``rewind``). More than ``north.max_backlog`` results waiting: the oldest are
skipped, counted (``Counters/North Skipped``, the node's status) and logged. The cursor
file is written once ``_SAVE_EVERY_S`` or ``_SAVE_EVERY_RESULTS`` have passed, and at
the end.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import structlog

from node.audit.reader import AuditReader
from node.audit.record import AuditRecord
from node.north import metrics as M
from node.north.cursor import Cursor

log = structlog.get_logger(__name__)

_SAVE_EVERY_S = 0.2
_SAVE_EVERY_RESULTS = 20
"""The cursor is written once this much time or this many results have passed (and at the
end): a crash re-sends at most what was acknowledged since."""
_QUIET_S = 1.0
_SAY_AGAIN_S = 10.0
"""Nothing sent for ``_QUIET_S``: the newest seq is said on its own, then every
``_SAY_AGAIN_S`` while it stays quiet."""


class Outbox:
    """Results handed to the client and acknowledged, and the cursor; the publisher
    thread's own (no locking)."""

    def __init__(self, state_file: Path) -> None:
        self.state_file = state_file
        self.cursor = Cursor()
        self.counters = M.Counters()
        self.sent = 0
        """The last record handed to the client."""
        self.forwarded = 0
        self.skipped_here = 0
        """Results skipped since the start (the backlog overflowed)."""
        self.last: tuple[int, AuditRecord] | None = None
        """The newest result sent (for the births)."""
        self.dirty = False
        """The cursor changed since it was last written."""
        self._inflight: deque[tuple[int, int]] = deque()  # (mid, record seq), in send order
        self._acked: set[int] = set()  # message ids of results in flight the broker has
        self._counted = 0  # last record in the counters (one sent again is not counted again)
        self._saved_at = 0.0
        self._saved_seq = 0
        self._sent_at = 0.0  # when (monotonic) a result last went out
        self._newest_said = (0, 0.0)  # the newest seq said on its own, and when

    @property
    def in_flight(self) -> int:
        """Results handed to the client and not yet acknowledged."""
        return len(self._inflight)

    def start(self, reader: AuditReader) -> None:
        """Resume from the cursor on disk (first start: from the newest result committed;
        a cursor ahead of the store: a new store, all of it new)."""
        last = reader.last_seq()
        cursor = Cursor.load(self.state_file)
        if cursor is None:  # first start: results from now on
            cursor = Cursor(seq=last)
        elif cursor.seq > last:
            log.warning("north_cursor_ahead_of_store", cursor=cursor.seq, last=last)
            cursor.seq = 0  # a new store: everything in it is new
        self.cursor = cursor
        self.counters.skipped = cursor.skipped
        self.sent = self._counted = cursor.seq
        if cursor.seq > 0:
            found = reader.after(cursor.seq - 1, 1)
            self.last = found[0] if found and found[0][0] == cursor.seq else None
        log.info("north_resuming", cursor=cursor.seq, waiting=last - cursor.seq)

    def count(self, seq: int, record: AuditRecord) -> None:
        """Count ``record`` in the counters, once (a result sent again is not)."""
        if seq > self._counted:
            self.counters.count(record)
            self._counted = seq

    def handed(self, mid: int, seq: int, published: bool, *, again: bool = False) -> None:
        """Result ``seq`` went to the client as message ``mid`` (``published``: QoS 0 is
        done once written); ``again``: sent again on request, not the next in order."""
        self._inflight.append((mid, seq))
        if published:
            self._acked.add(mid)
        if not again:
            self.sent = seq
        self._sent_at = time.monotonic()

    def newest_to_say(self) -> int | None:
        """The newest result sent, to be said on its own now — once nothing has been sent
        for ``_QUIET_S``, and again every ``_SAY_AGAIN_S`` while quiet — else None: the last
        results before a stop, dropped on their way to a host, leave no later one behind
        them to show the hole."""
        now = time.monotonic()
        said, at = self._newest_said
        if not self.sent or now - self._sent_at < _QUIET_S:
            return None
        if said == self.sent and now - at < _SAY_AGAIN_S:
            return None
        self._newest_said = (self.sent, now)
        return self.sent

    def follows(self, mid: int) -> bool:
        """Whether ``mid`` is a result in flight; if so it is acknowledged now."""
        if not any(m == mid for m, _ in self._inflight):
            return False
        self._acked.add(mid)
        return True

    def advance(self) -> None:
        """Move the cursor past every result acknowledged, in order."""
        while self._inflight and self._inflight[0][0] in self._acked:
            mid, seq = self._inflight.popleft()
            self._acked.discard(mid)
            self.cursor.seq = max(self.cursor.seq, seq)
            self.forwarded += 1
            self.dirty = True

    def rewind(self) -> None:
        """The session is gone: what was in flight is sent again from the cursor."""
        self._inflight.clear()
        self._acked.clear()
        self.sent = self.cursor.seq

    def skip_overflow(self, last: int, limit: int) -> None:
        """More than ``limit`` results after the cursor (and none in flight): skip the
        oldest, counted and logged."""
        if last - self.cursor.seq <= limit or self._inflight:
            return
        skip = last - limit - self.cursor.seq
        self.cursor.seq = self.sent = last - limit
        self._counted = max(self._counted, self.sent)
        self.counters.skipped += skip
        self.skipped_here += skip
        self.cursor.skipped = self.counters.skipped
        self.dirty = True
        log.error(
            "north_backlog_skipped",
            skipped=skip,
            total=self.counters.skipped,
            max_backlog=limit,
            resume_at=self.cursor.seq,
        )

    def save(self, *, force: bool) -> str | None:
        """Write the cursor if it changed and is due (``force``: now); the error, or None."""
        now = time.monotonic()
        due = (
            force
            or now - self._saved_at >= _SAVE_EVERY_S
            or self.cursor.seq - self._saved_seq >= _SAVE_EVERY_RESULTS
        )
        if not self.dirty or not due:
            return None
        error = None
        try:
            self.cursor.save(self.state_file)
        except OSError as exc:
            error = f"north.state_file: {exc}"
            log.error("north_cursor_not_saved", path=str(self.state_file), error=str(exc))
        self._saved_at = now
        self._saved_seq = self.cursor.seq
        self.dirty = False
        return error
