"""The audit store: round trips, image sampling, reviews, retention, schema, concurrent reads."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from structlog.testing import capture_logs

from node.audit.images import file_sha256, keep_image
from node.audit.schema import DB_NAME, SCHEMA_VERSION
from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditSchemaError, AuditStore
from node.line.judge import Reason
from tests.unit.node.audit import factories as F

DAY_NS = 86_400 * 1_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AuditStore]:
    """A store with the default settings (synchronous full), every pass image kept."""
    with AuditStore(AuditSettings(sample_passes=1.0), tmp_path / "audit") as s:
        yield s


def test_reject_round_trips_with_its_image(store: AuditStore) -> None:
    """A committed reject reads back field for field, its PNG holds the pixels and their sha256."""
    rec = F.record(7, "scratch")
    pixels = F.image(7)
    store.record(rec, pixels)
    store.flush()
    got = store.get(rec.result_id)
    assert got is not None
    assert dataclasses.replace(got, image_path=None, image_sha256=None) == rec
    assert got.image_path is not None and got.image_sha256 is not None
    path = store.image_dir / got.image_path
    assert file_sha256(path) == got.image_sha256
    with Image.open(path) as im:
        assert np.array_equal(np.asarray(im), pixels)
    assert store.committed == 1 and store.dropped == 0


def test_record_from_result_renders_every_language_and_the_findings() -> None:
    """A judged defect's record carries de/ja text from the facts, regions in JSON, the recipe."""
    rec = F.record(3, "crack")
    assert rec.result_id == "run1-3" and rec.verdict == "reject" and rec.reason == "defect"
    assert rec.explanation == rec.explanations["en"] == "crack, 12 mm, upper left, near the edge"
    assert rec.explanations["de"].startswith("Riss, 12 mm, oben links")
    assert rec.explanations["ja"].startswith("割れ")
    assert (rec.location, rec.size_mm, rec.defect_type) == ("upper left", 12.0, "crack")
    findings = json.loads(rec.findings_json)
    assert findings["regions"][0]["bbox_px"] == [1, 1, 5, 5]
    assert findings["facts"]["region_count"] == 1
    assert json.loads(rec.thresholds_json)["reject_score"] == 6.0
    assert abs(rec.wall_time_ns - time.time_ns()) < 5_000_000_000


def test_fail_safe_record_states_its_reason_in_every_language() -> None:
    """A fail-safe reject has no findings: its reason reads in English, German and Japanese,
    each in its own words with the technical detail after it (not English three times)."""
    rec = F.record(4, fail_safe=Reason.FAILSAFE_FRAME_MISSING)
    assert rec.fail_safe and rec.verdict == "reject" and rec.reason == "frame_missing"
    assert rec.explanations == {
        "en": "rejected for safety: frame missing (no frame within 40 ms)",
        "de": "aus Sicherheitsgründen ausgeschleust: Bild fehlt (no frame within 40 ms)",
        "ja": "安全のため排出: 画像なし (no frame within 40 ms)",
    }
    assert rec.explanation == rec.explanations["en"] and rec.explanation_source == "fail_safe"
    assert rec.location is None and rec.size_mm is None and rec.defect_type is None
    assert json.loads(rec.findings_json) == {"detail": "no frame within 40 ms"}


def test_pass_record_has_no_defect_facts() -> None:
    """A clean pass reads 'no defect found' in its explanations and names no place or size."""
    rec = F.record(5, None)
    assert rec.verdict == "pass" and rec.explanations["en"] == "no defect found"
    assert rec.location is None and rec.size_mm is None


def test_rejects_always_keep_their_image_passes_only_the_sample(tmp_path: Path) -> None:
    """With sample_passes 0 a pass keeps no image and a reject keeps its; 0.25 keeps about that
    share of passes, the same ones every time."""
    with AuditStore(AuditSettings(sample_passes=0.0), tmp_path / "a") as s:
        s.record(F.record(1, None), F.image(1))
        s.record(F.record(2, "spot"), F.image(2))
        s.flush()
        assert s.get("run1-1").image_path is None  # type: ignore[union-attr]
        assert s.get("run1-2").image_path is not None  # type: ignore[union-attr]
    ids = [f"run9-{i}" for i in range(2000)]
    kept = [keep_image(i, False, 0.25) for i in ids]
    assert 0.22 < sum(kept) / len(ids) < 0.28
    assert kept == [keep_image(i, False, 0.25) for i in ids]


def test_close_writes_everything_still_queued(tmp_path: Path) -> None:
    """Records queued when close() runs are committed before it returns, and a reopen logs them."""
    settings = AuditSettings(sample_passes=1.0)
    with AuditStore(settings, tmp_path / "a") as s:
        for i in range(60):
            s.record(F.record(i, "spot" if i % 3 == 0 else None), F.image(i, 32))
    with capture_logs() as logs, AuditStore(settings, tmp_path / "a") as s:
        assert len(s.query(limit=1000)) == 60
        assert all(r.image_path for r in s.query(limit=1000))
    opened = [e for e in logs if e["event"] == "audit_store_opened"]
    assert opened and opened[0]["records"] == 60 and opened[0]["recovered"] is False


def test_store_refuses_a_newer_schema(tmp_path: Path) -> None:
    """A store written by a newer lineside is refused with an error naming both versions."""
    AuditStore(AuditSettings(), tmp_path / "a").close()
    with sqlite3.connect(tmp_path / "a" / DB_NAME) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(
        AuditSchemaError, match=rf"version {SCHEMA_VERSION + 1} is newer.*\({SCHEMA_VERSION}\)"
    ):
        AuditStore(AuditSettings(), tmp_path / "a")


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_records(tmp_path: Path) -> None:
    """A store written before verdicts cited rules opens: its records read back with an empty
    rule, new records keep theirs, and the schema says version 2."""
    with AuditStore(AuditSettings(), tmp_path / "a") as s:
        s.record(F.record(1, "scratch"), None)
        s.flush()
    db = tmp_path / "a" / DB_NAME
    with sqlite3.connect(db) as conn:  # back to the version-1 layout
        conn.execute("ALTER TABLE records DROP COLUMN rule")
        conn.execute("DELETE FROM schema_version")
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.close()
    with AuditStore(AuditSettings(), tmp_path / "a") as s:
        old = s.get("run1-1")
        assert old is not None and old.rule == ""
        s.record(F.record(2, "crack"), None)
        s.flush()
        new = s.get("run1-2")
        assert new is not None and new.rule == "model score"
    with sqlite3.connect(db) as conn:
        (version,) = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    conn.close()
    assert version == SCHEMA_VERSION == 2


def test_store_refuses_a_database_that_is_not_one(tmp_path: Path) -> None:
    """A SQLite file of something else is not mistaken for an audit store."""
    (tmp_path / "a").mkdir()
    with sqlite3.connect(tmp_path / "a" / DB_NAME) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(AuditSchemaError, match="not an audit store"):
        AuditStore(AuditSettings(), tmp_path / "a")


def test_a_second_writer_is_refused(store: AuditStore) -> None:
    """Only one store may write a folder at a time; the second gets a clear error."""
    with pytest.raises(AuditError, match="open in another process"):
        AuditStore(AuditSettings(), store.directory)


def test_query_filters_newest_first_with_inclusive_bounds(store: AuditStore) -> None:
    """query() filters by time (inclusive), verdict, type and part id, newest first, paged."""
    t0 = time.time_ns()
    for i in range(10):
        kind = ("scratch", "crack", None)[i % 3]
        store.record(F.record(i, kind, wall_time_ns=t0 + i * 1000), None)
    store.flush()
    assert [r.part_id for r in store.query()] == list(range(9, -1, -1))
    assert [r.part_id for r in store.query(since_ns=t0 + 3000, until_ns=t0 + 5000)] == [5, 4, 3]
    assert [r.part_id for r in store.query(verdict="pass")] == [8, 5, 2]
    assert [r.part_id for r in store.query(defect_type="crack")] == [7, 4, 1]
    assert [r.part_id for r in store.query(part_id=6)] == [6]
    assert [r.part_id for r in store.query(limit=3, offset=2)] == [7, 6, 5]
    with pytest.raises(ValueError, match="verdict"):
        store.query(verdict="maybe")


def test_reviews_are_kept_as_history_beside_the_decision(store: AuditStore) -> None:
    """Every review is stored; get() shows the latest and the node's decision is unchanged."""
    store.record(F.record(1, "scratch"), F.image(1))
    store.flush()
    first = store.review("run1-1", "pass", None, "dust on the lens", "anna")
    latest = store.review("run1-1", "reject", "crack", "looked again: a crack", "ben")
    got = store.get("run1-1")
    assert got is not None and got.review == latest and first.verdict == "pass"
    assert got.verdict == "reject" and got.defect_type == "scratch"
    with sqlite3.connect(store.directory / DB_NAME) as conn:
        assert conn.execute("SELECT COUNT(*) FROM reviews").fetchone() == (2,)
    conn.close()


def test_review_rejects_unknown_ids_and_bad_verdicts(store: AuditStore) -> None:
    """An unknown id is a KeyError; a verdict not pass/reject, or a typed pass, a ValueError."""
    store.record(F.record(1, "scratch"), None)
    store.flush()
    with pytest.raises(KeyError):
        store.review("run1-999", "pass", None, "", "anna")
    with pytest.raises(ValueError, match="verdict"):
        store.review("run1-1", "good", None, "", "anna")
    with pytest.raises(ValueError, match="defect type"):
        store.review("run1-1", "pass", "scratch", "", "anna")
    assert store.get("run1-1").review is None  # type: ignore[union-attr]


def test_retention_by_age_deletes_records_reviews_and_images(store: AuditStore) -> None:
    """Records older than max_age_days go with their reviews and image files; newer ones stay."""
    now = time.time_ns()
    store.record(F.record(1, "scratch", wall_time_ns=now - 91 * DAY_NS), F.image(1))
    store.record(F.record(2, "scratch", wall_time_ns=now - 89 * DAY_NS), F.image(2))
    store.flush()
    store.review("run1-1", "reject", None, "", "anna")
    store.review("run1-2", "reject", None, "", "anna")
    old = store.image_dir / store.get("run1-1").image_path  # type: ignore[union-attr, operator]
    assert old.is_file()
    report = store.apply_retention(now)
    assert (report.records_deleted, report.images_deleted, report.images_pruned) == (1, 1, 0)
    assert store.get("run1-1") is None and not old.exists() and not old.parent.exists()
    assert store.get("run1-2") is not None
    with sqlite3.connect(store.directory / DB_NAME) as conn:
        assert conn.execute("SELECT result_id FROM reviews").fetchall() == [("run1-2",)]
    conn.close()


def _newest(store: AuditStore, where: str) -> tuple[int, int]:
    """The seq of the record ``where`` picks, and the newest review's id."""
    with sqlite3.connect(store.directory / DB_NAME) as conn:
        (seq,) = conn.execute(f"SELECT seq FROM records WHERE {where}").fetchone()
        (review,) = conn.execute("SELECT MAX(id) FROM reviews").fetchone()
    conn.close()
    return int(seq), int(review)


def test_retention_never_lets_record_or_review_numbers_start_over(store: AuditStore) -> None:
    """Every record older than max_age_days (a line stopped for months): retention keeps the
    newest record and the one with the newest review, so the next record and review are
    numbered past every earlier one — the cursors that follow them (Sparkplug, review
    announcements, the web feed) see them — and deletes the rest."""
    now = time.time_ns()
    for part in range(1, 5):
        store.record(F.record(part, "scratch", wall_time_ns=now - (100 - part) * DAY_NS), None)
    store.flush()
    store.review("run1-2", "reject", None, "", "anna")
    seq_before, review_before = _newest(store, "part_id = 4")
    report = store.apply_retention(now)
    assert report.records_deleted == 2
    assert {r.part_id for r in store.query()} == {2, 4}
    store.record(F.record(5, "scratch", wall_time_ns=now), None)
    store.flush()
    store.review("run1-5", "pass", None, "", "anna")
    seq, review = _newest(store, "part_id = 5")
    assert seq > seq_before and review > review_before


def test_retention_by_size_prunes_oldest_unreviewed_images_first(tmp_path: Path) -> None:
    """Over max_image_bytes the oldest unreviewed images go first; records and reviewed stay."""
    now = time.time_ns()
    with AuditStore(AuditSettings(max_image_bytes=10**9), tmp_path / "a") as s:
        for i in range(5):
            s.record(F.record(i, "spot", wall_time_ns=now - (10 - i) * 1000), F.image(i))
        s.flush()
        s.review("run1-0", "reject", None, "", "anna")
        sizes = {r.part_id: (s.image_dir / r.image_path).stat().st_size for r in s.query()}  # type: ignore[operator]
    # room for the three newest images only
    cap = sizes[2] + sizes[3] + sizes[4]
    with AuditStore(AuditSettings(max_image_bytes=cap), tmp_path / "a") as s:
        report = s.apply_retention(now)
        kept = {r.part_id for r in s.query() if r.image_path is not None}
        assert report.images_pruned == 2 and report.records_deleted == 0
        assert kept == {0, 3, 4}  # 0 is reviewed: 1 and 2, the oldest unreviewed, went
        assert report.image_bytes <= cap and len(s.query()) == 5
        pruned = s.get("run1-1")
        assert pruned is not None and pruned.image_sha256 is not None  # evidence stays


def test_duplicate_result_ids_are_dropped_and_counted(store: AuditStore) -> None:
    """A second record with the same id neither replaces the first nor its image; it is counted."""
    store.record(F.record(1, "scratch"), F.image(1))
    store.flush()
    first = store.get("run1-1")
    store.record(F.record(1, "crack"), F.image(99))
    store.flush()
    got = store.get("run1-1")
    assert got == first and got is not None and got.defect_type == "scratch"
    assert file_sha256(store.image_dir / got.image_path) == got.image_sha256  # type: ignore[operator]
    assert store.dropped == 1 and store.committed == 1


def test_a_record_after_close_is_counted_as_dropped(tmp_path: Path) -> None:
    """Nothing is silently lost: a record that arrives after close() is counted and logged."""
    s = AuditStore(AuditSettings(), tmp_path / "a")
    s.close()
    with capture_logs() as logs:
        s.record(F.record(1), None)
    assert s.dropped == 1 and logs[0]["event"] == "audit_record_dropped"


def test_an_unstorable_image_still_stores_the_record(store: AuditStore) -> None:
    """An image that cannot be a PNG (float) is logged; the record itself is committed."""
    with capture_logs() as logs:
        store.record(F.record(1), np.zeros((8, 8), np.float64))
        store.flush()
    got = store.get("run1-1")
    assert got is not None and got.image_path is None
    assert any(e["event"] == "audit_image_unstorable" for e in logs)


def test_leftover_temporary_images_are_removed_on_open(tmp_path: Path) -> None:
    """A half-written image left by a killed writer is removed when the store opens."""
    AuditStore(AuditSettings(), tmp_path / "a").close()
    leftover = tmp_path / "a" / "images" / ".tmp" / "run1-1.png.123.tmp"
    leftover.write_bytes(b"\x89PNG half")
    AuditStore(AuditSettings(), tmp_path / "a").close()
    assert not leftover.exists()


def test_reads_and_reviews_run_while_the_writer_writes(tmp_path: Path) -> None:
    """Another thread's get/query/review never fail nor see a record before its image exists."""
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()
    with AuditStore(AuditSettings(synchronous="normal"), tmp_path / "a") as s:

        def reader() -> None:
            try:
                while not stop.is_set():
                    recs = s.query(limit=20)
                    seen.append(len(s.query(limit=10_000)))
                    for r in recs:
                        assert r.image_path is not None
                        assert (s.image_dir / r.image_path).is_file()
                        if r.part_id % 10 == 0 and r.review is None:
                            s.review(r.result_id, "pass", None, "ok", "carl")
            except BaseException as exc:  # noqa: BLE001 - handed to the test thread to fail it
                errors.append(exc)

        t = threading.Thread(target=reader)
        t.start()
        for i in range(300):
            s.record(F.record(i, "scratch"), F.image(i, 32))
            if i % 50 == 0:
                time.sleep(0.01)
        s.flush()
        stop.set()
        t.join()
        assert not errors, errors
        assert s.committed == 300 and len(seen) > 1 and seen == sorted(seen)
