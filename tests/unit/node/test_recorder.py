"""The recorder builds records off the loop, in order, and counts what waits: nothing dropped."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from structlog.testing import capture_logs

from node.audit.record import AuditRecord
from node.config import DEFAULT_CONFIG, load_config
from node.recorder import ModelIdentity, Recorder
from tests.unit.node.audit.factories import part_result


class HeldSink:
    """A record sink held shut until ``release`` (fault injection: a stalled consumer)."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.part_ids: list[int] = []

    def publish(
        self, record: AuditRecord, thumbnail_png: bytes | None, stats: Mapping[str, object]
    ) -> None:
        self.open.wait(10)
        self.part_ids.append(record.part_id)


def test_a_stalled_worker_is_counted_and_logged_and_loses_nothing() -> None:
    """250 results while the worker is held: all wait and are counted, the backlog is logged
    once at 200, and once released every record reaches the sink, in order."""
    sink = HeldSink()
    identity = ModelIdentity("demo", "1", "ab" * 32)
    recorder = Recorder(load_config(DEFAULT_CONFIG), identity, store=None, sinks=[sink])
    with ThreadPoolExecutor(max_workers=1) as worker, capture_logs() as logs:
        recorder.executor = worker
        for pid in range(250):
            recorder.publish(part_result(pid, "scratch" if pid % 7 == 0 else None))
        assert recorder.backlog["waiting"] >= 249 and recorder.backlog["max"] == 250
        sink.open.set()
    assert sink.part_ids == list(range(250))
    assert recorder.backlog == {"waiting": 0, "max": 250} and recorder.failures == 0
    warned = [e for e in logs if e["event"] == "record_backlog"]
    assert len(warned) == 1 and warned[0]["waiting"] == 200
