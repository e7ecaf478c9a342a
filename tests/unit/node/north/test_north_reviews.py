"""Operator reviews announced by the edge node: one DDATA each, in order, from a cursor that
moves only past what the broker acknowledged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from node.audit.reader import AuditReader
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.config import parse_config
from node.errors import ConfigError
from node.north import metrics as M
from node.north import reviews as R
from node.north.cursor import Cursor
from node.north.reviews import ReviewAnnouncer
from node.north.settings import NorthSettings
from node.north.sparkplug import Metric, Payload, decode, encode
from tests.unit.node.audit import factories as F

LINE = {
    "counts_per_mm": 4.0,
    "part_pitch_mm": 32.0,
    "part_length_mm": 24.0,
    "camera_position_mm": 100.0,
    "reject_position_mm": 400.0,
}


class Sent:
    """What the announcer handed to the client: each message's metrics and its info."""

    def __init__(self) -> None:
        self.messages: list[tuple[mqtt.MQTTMessageInfo, dict[str, object]]] = []

    def __call__(self, metrics: list[Metric]) -> mqtt.MQTTMessageInfo:
        info = mqtt.MQTTMessageInfo(len(self.messages) + 1)
        # through the codec, as a host would read it
        values = decode(encode(Payload(tuple(metrics), 0, 0))).values()
        self.messages.append((info, values))
        return info


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    with AuditStore(AuditSettings(sample_passes=1.0), tmp_path / "audit") as s:
        for part, kind in ((1, "scratch"), (2, None), (3, "crack")):
            s.record(F.record(part, kind), F.image(part))
        s.flush()
        yield s


def _pump(announcer: ReviewAnnouncer, reader: AuditReader, sent: Sent) -> bool:
    announcer._next_check = 0.0  # the store is asked at most every 0.25 s
    return announcer.pump(reader, sent)


def test_each_review_is_announced_once_with_its_label_and_the_cursor_follows_acks(
    store: AuditStore,
) -> None:
    """A first start announces the reviews made from then on (not the older one), each
    with its seq, result, verdict, label and user; the cursor moves only past messages
    the broker acknowledged, in order."""
    store.review("run1-1", "reject", None, "", "olga")  # before the edge node started
    cursor = Cursor()
    announcer, sent = ReviewAnnouncer(), Sent()
    with AuditReader(store.directory, read_only=True) as reader:
        announcer.start(reader, cursor)
        assert cursor.review_seq == 1
        store.review("run1-2", "pass", None, "", "olga")
        store.review("run1-3", "reject", "dent", "not a crack", "emil")
        assert _pump(announcer, reader, sent) is False  # sent, not yet acknowledged
        got = [
            (v[M.REVIEW_SEQ], v[M.REVIEW_RESULT_ID], v[M.REVIEW_LABEL], v[M.REVIEW_USER])
            for _, v in sent.messages
        ]
        assert got == [(2, "run1-2", "train/good", "olga"), (3, "run1-3", "test/dent", "emil")]
        assert sent.messages[1][1][M.REVIEW_DEFECT_TYPE] == "dent"
        assert sent.messages[0][1][M.REVIEW_DEFECT_TYPE] is None
        second, first = sent.messages[1][0], sent.messages[0][0]
        assert announcer.acked(second.mid) is False and cursor.review_seq == 1
        assert announcer.acked(first.mid) is True and cursor.review_seq == 3
        assert _pump(announcer, reader, sent) is False and len(sent.messages) == 2
        assert announcer.snapshot() == {"review_cursor": 3, "reviews_announced": 2}
        birth = {m.name: m.value for m in announcer.birth_metrics(0)}
        assert set(birth) == {m.name for m in M.REVIEW_METRICS}
        assert birth[M.REVIEW_SEQ] == 3 and birth[M.REVIEW_RESULT_ID] == "run1-3"


def test_a_lost_session_and_a_restart_neither_repeat_nor_skip(
    store: AuditStore, tmp_path: Path
) -> None:
    """What was in flight when the session dropped is announced again; a restart from the
    saved cursor announces only what came after it."""
    path = tmp_path / "cursor.json"
    cursor = Cursor()
    sent = Sent()
    with AuditReader(store.directory, read_only=True) as reader:
        announcer = ReviewAnnouncer()
        announcer.start(reader, cursor)
        store.review("run1-1", "reject", None, "", "olga")
        _pump(announcer, reader, sent)
        announcer.acked(sent.messages[-1][0].mid)
        store.review("run1-2", "pass", None, "", "olga")
        _pump(announcer, reader, sent)
        announcer.drop()  # the broker went away before acknowledging review 2
        _pump(announcer, reader, sent)
        assert [v[M.REVIEW_SEQ] for _, v in sent.messages] == [1, 2, 2]
        announcer.acked(sent.messages[-1][0].mid)
        cursor.save(path)
        store.review("run1-3", "reject", "dent", "", "emil")

        again, sent_again = ReviewAnnouncer(), Sent()
        loaded = Cursor.load(path)
        assert loaded is not None and loaded.review_seq == 2
        again.start(reader, loaded)
        _pump(again, reader, sent_again)
        assert [v[M.REVIEW_SEQ] for _, v in sent_again.messages] == [3]


def test_a_cursor_from_before_reviews_were_announced_starts_at_the_newest(
    store: AuditStore, tmp_path: Path
) -> None:
    """A cursor file written before reviews were announced has no review_seq: the reviews
    already stored are not replayed; a cursor beyond the store (a new store) starts over."""
    store.review("run1-1", "reject", None, "", "olga")
    path = tmp_path / "old.json"
    path.write_text('{"seq": 3, "bd_seq": 4, "skipped": 0}', encoding="utf-8")
    old = Cursor.load(path)
    assert old is not None and old.review_seq == -1
    with AuditReader(store.directory, read_only=True) as reader:
        ReviewAnnouncer().start(reader, old)
        assert old.review_seq == 1
        ahead = Cursor(review_seq=9)
        announcer, sent = ReviewAnnouncer(), Sent()
        announcer.start(reader, ahead)
        _pump(announcer, reader, sent)
        assert ahead.review_seq == 0 and [v[M.REVIEW_SEQ] for _, v in sent.messages] == [1]


def test_the_birth_says_where_reviewed_images_are_fetched() -> None:
    """north.collect_url goes into the NBIRTH as Properties/Collect URL (null when unset);
    one that is not an http(s) URL is refused by its key."""
    values = {m.name: m.value for m in M.node_metrics(0, "n", 0, collect_url="https://a:1/c")}
    assert values[M.COLLECT_URL] == "https://a:1/c"
    assert {m.name: m.value for m in M.node_metrics(0, "n", 0)}[M.COLLECT_URL] is None
    assert NorthSettings(collect_url="http://line-3:8080/collect/").collect_url == (
        "http://line-3:8080/collect"
    )
    for bad in ("ftp://x/collect", "line-3:8080", "https://x/c?token=1"):
        with pytest.raises(ValueError, match="collect_url"):
            NorthSettings(collect_url=bad)
    with pytest.raises(ConfigError, match=r"north\.collect_url: must be an http"):
        parse_config({"line": LINE, "north": {"collect_url": "ftp://x"}})
    assert R.null_review_metrics(0, 5)[0].value == 5
