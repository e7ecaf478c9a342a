"""Operator reviews, announced on the bus: what a fleet host needs to collect the image.

When a review lands in the node's audit store (from the HMI or the web view), the edge
node publishes one DDATA with the ``Review/...`` metrics: its seq among the store's
reviews, the result it is about, the reviewer's verdict and defect type, the data set
folder it puts the image in (``node.audit.export.label_of``) and who made it. The images
themselves never travel on the bus: the NBIRTH's ``Properties/Collect URL`` says where a
host fetches them (``lineside web``'s collect path, ``node.web.collect``).

Like the results, the reviews are followed from a cursor in the edge node's cursor file
(``review_seq``): it moves only past announcements the broker acknowledged (at
``north.qos`` 1), so a restart neither repeats nor skips one. A first start (or a cursor
from before reviews were announced) announces the reviews from then on; older ones are
still fetched by a host, which reads the collect path from its own cursor.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
import structlog

from node.audit.export import label_of
from node.audit.reader import AuditReader
from node.audit.record import Review
from node.north import metrics as M
from node.north.cursor import Cursor
from node.north.sparkplug import Metric

log = structlog.get_logger(__name__)

WINDOW = 16
"""Announcements published and not yet acknowledged at most."""
CHECK_EVERY_S = 0.25
"""How often the store is asked for new reviews (they come at a person's pace)."""

Publish = Callable[[list[Metric]], mqtt.MQTTMessageInfo]


def review_metrics(
    seq: int, review: Review, label: str | None, *, historical: bool = False
) -> list[Metric]:
    """The announcement of review ``seq`` (``label``: its data set folder, None when its
    record is gone)."""
    t = review.wall_time_ns // 1_000_000
    values: list[tuple[str, Any]] = [
        (M.REVIEW_SEQ, seq),
        (M.REVIEW_RESULT_ID, review.result_id),
        (M.REVIEW_VERDICT, review.verdict),
        (M.REVIEW_DEFECT_TYPE, review.defect_type),
        (M.REVIEW_LABEL, label),
        (M.REVIEW_USER, review.user),
        (M.REVIEW_TIME, t),
    ]
    return [M.metric(name, v, t, historical=historical) for name, v in values]


def null_review_metrics(timestamp_ms: int, seq: int = 0) -> list[Metric]:
    """A birth's review metrics before any review was announced (``seq``: the cursor)."""
    return [M.metric(M.REVIEW_SEQ, seq, timestamp_ms)] + [
        M.metric(m.name, None, timestamp_ms) for m in M.REVIEW_METRICS if m.name != M.REVIEW_SEQ
    ]


class ReviewAnnouncer:
    """Follows the store's reviews for one edge node; used on the publisher's thread only.

    It shares the publisher's :class:`Cursor` (its ``review_seq``); the publisher saves it.
    """

    def __init__(self) -> None:
        self._cursor = Cursor()
        self._sent = 0  # last review handed to the client
        self._inflight: deque[tuple[int, int]] = deque()  # (mid, review seq), in send order
        self._acked: set[int] = set()
        self._last: list[Metric] | None = None  # the newest announcement, for births
        self._next_check = 0.0
        self.announced = 0

    def start(self, reader: AuditReader, cursor: Cursor) -> None:
        """Take up ``cursor`` (the publisher's, just loaded): a first start begins at the
        newest review; a cursor beyond the store (a new store) at its beginning."""
        last = reader.last_review_seq()
        if cursor.review_seq < 0:
            cursor.review_seq = last
        elif cursor.review_seq > last:
            log.warning("north_review_cursor_ahead_of_store", cursor=cursor.review_seq, last=last)
            cursor.review_seq = 0
        self._cursor = cursor
        self._sent = cursor.review_seq
        found = reader.reviews_after(cursor.review_seq - 1, 1) if cursor.review_seq > 0 else []
        if found and found[0][0] == cursor.review_seq:
            self._last = self._announcement(reader, *found[0])

    def birth_metrics(self, timestamp_ms: int) -> list[Metric]:
        """The DBIRTH's review metrics: the newest announcement, or nulls."""
        if self._last is not None:
            return list(self._last)
        return null_review_metrics(timestamp_ms, self._cursor.review_seq)

    def pump(self, reader: AuditReader, publish: Publish) -> bool:
        """Announce reviews stored since the last one sent, as far as the window allows
        (the store is asked at most every :data:`CHECK_EVERY_S`); True when the cursor
        moved (a QoS 0 message is done once written)."""
        now = time.monotonic()
        room = WINDOW - len(self._inflight)
        if room <= 0 or now < self._next_check:
            return False
        self._next_check = now + CHECK_EVERY_S
        for seq, review in reader.reviews_after(self._sent, room):
            metrics = self._announcement(reader, seq, review)
            info = publish(metrics)
            self._inflight.append((info.mid, seq))
            if info.is_published():  # QoS 0 is done once written, maybe within publish()
                self._acked.add(info.mid)
            self._sent = seq
            self._last = metrics
            log.info("north_review_announced", review_seq=seq, result_id=review.result_id)
        return self._advance()

    def acked(self, mid: int) -> bool:
        """The broker acknowledged message ``mid``; True when that moved the cursor."""
        if not any(m == mid for m, _ in self._inflight):
            return False
        self._acked.add(mid)
        return self._advance()

    def _advance(self) -> bool:
        moved = False
        while self._inflight and self._inflight[0][0] in self._acked:
            m, seq = self._inflight.popleft()
            self._acked.discard(m)
            self._cursor.review_seq = seq
            self.announced += 1
            moved = True
        return moved

    def drop(self) -> None:
        """The session is gone: what was in flight is announced again from the cursor."""
        self._inflight.clear()
        self._acked.clear()
        self._sent = self._cursor.review_seq
        self._next_check = 0.0

    def snapshot(self) -> dict[str, int]:
        """For the node's status."""
        return {"review_cursor": self._cursor.review_seq, "reviews_announced": self.announced}

    @staticmethod
    def _announcement(reader: AuditReader, seq: int, review: Review) -> list[Metric]:
        record = reader.get(review.result_id)
        label = None if record is None else label_of(record, review)
        return review_metrics(seq, review, label)
