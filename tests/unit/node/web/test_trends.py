"""Trends of the audit store: counts and percentiles per bucket, read-only reads, CSV, PNG."""

from __future__ import annotations

import csv
import dataclasses
import io
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from matplotlib import font_manager
from PIL import Image
from structlog.testing import capture_logs

from node.audit.record import AuditRecord
from node.audit.schema import DB_NAME
from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditStore
from node.line.judge import Reason
from node.sim.hmi import sample_record
from node.web import trends as T
from node.web.trends import Trends, read_trends, trends_csv, trends_png

S = 1_000_000_000
HOUR_NS = 3600 * S
T0 = 1_796_000_400 * S
"""A UTC hour boundary (2026-11-30T01:00:00Z)."""
TYPES = ("scratch", "dent", "crack")
REASONS = (Reason.FAILSAFE_DEADLINE, Reason.FAILSAFE_FRAME_MISSING, Reason.FAILSAFE_MODEL)


def part(
    part_id: int,
    t_ns: int,
    *,
    defect_type: str | None = None,
    fail_safe: str | None = None,
    latency_ms: float | None = 12.5,
    budget_ms: float | None = 150.0,
    budget_miss: bool = False,
) -> AuditRecord:
    """A pass, a judged reject of ``defect_type`` or a fail-safe reject for ``fail_safe``."""
    rec = sample_record(part_id, reject=defect_type is not None or fail_safe is not None)
    if fail_safe is not None:
        rec = dataclasses.replace(rec, reason=fail_safe, fail_safe=True, defect_type=None)
    elif defect_type is not None:
        rec = dataclasses.replace(rec, defect_type=defect_type)
    return dataclasses.replace(
        rec,
        wall_time_ns=t_ns,
        latency_ms=latency_ms,
        budget_ms=budget_ms,
        budget_miss=budget_miss,
    )


def write(directory: Path, records: list[AuditRecord]) -> None:
    """Commit ``records`` through the node's own store, then close it."""
    with AuditStore(AuditSettings(synchronous="normal"), directory) as store:
        for rec in records:
            store.record(rec, None)
        store.flush()


def shift(seed: int = 7, n: int = 600) -> list[AuditRecord]:
    """``n`` parts over three hours from ``T0``: passes, judged and fail-safe rejects,
    budget misses, fail-safes without a latency, parts without a budget, and parts exactly
    on and just before the hour boundaries."""
    rng = np.random.default_rng(seed)
    spread = sorted(int(v) for v in T0 + rng.integers(0, 3 * HOUR_NS, n - 4))
    times = [T0, T0 + HOUR_NS - 1, T0 + HOUR_NS, T0 + 2 * HOUR_NS, *spread]
    out = []
    for i, t in enumerate(times):
        k = rng.random()
        latency = float(rng.gamma(4.0, 5.0))
        budget = None if i % 37 == 0 else float(rng.choice([80.0, 150.0]))
        if k < 0.15:
            out.append(part(i, t, defect_type=TYPES[i % 3], latency_ms=latency, budget_ms=budget))
        elif k < 0.25:
            reason = REASONS[i % 3]
            out.append(
                part(
                    i,
                    t,
                    fail_safe=reason,
                    latency_ms=None if reason is Reason.FAILSAFE_FRAME_MISSING else latency,
                    budget_ms=budget,
                    budget_miss=reason is Reason.FAILSAFE_DEADLINE,
                )
            )
        else:
            out.append(part(i, t, latency_ms=latency, budget_ms=budget, budget_miss=latency > 40))
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[AuditRecord]]:
    """A store holding one ``shift()``, written once for the tests that only read it."""
    directory = tmp_path_factory.mktemp("trends") / "audit"
    records = shift()
    write(directory, records)
    return directory, records


@pytest.fixture(scope="module")
def trends(written: tuple[Path, list[AuditRecord]]) -> Trends:
    """The hourly trends of ``written`` over its three hours."""
    return read_trends(written[0], since_ns=T0, until_ns=T0 + 3 * HOUR_NS)


def bucket_of(t_ns: int) -> int:
    """The hourly bucket from ``T0`` a time falls in."""
    return (t_ns - T0) // HOUR_NS


def test_counts_per_bucket_equal_what_was_written(
    written: tuple[Path, list[AuditRecord]], trends: Trends
) -> None:
    """Parts, rejects, budget misses, rejects by type and fail-safes by reason per hour equal
    the written records', a part exactly on an hour boundary counting in the later hour."""
    _, records = written
    assert trends.bucket_start_s == [T0 // S + 3600 * i for i in range(3)]
    assert trends.total_parts == len(records)
    parts = Counter(bucket_of(r.wall_time_ns) for r in records)
    rejects = Counter(bucket_of(r.wall_time_ns) for r in records if r.verdict == "reject")
    misses = Counter(bucket_of(r.wall_time_ns) for r in records if r.budget_miss)
    by_type = Counter(
        (r.defect_type, bucket_of(r.wall_time_ns))
        for r in records
        if r.verdict == "reject" and not r.fail_safe
    )
    by_reason = Counter((r.reason, bucket_of(r.wall_time_ns)) for r in records if r.fail_safe)
    assert trends.parts == [parts[b] for b in range(3)]
    assert trends.rejects == [rejects[b] for b in range(3)]
    assert trends.budget_misses == [misses[b] for b in range(3)]
    assert trends.rejects_by_type == {k: [by_type[k, b] for b in range(3)] for k in sorted(TYPES)}
    assert trends.fail_safes_by_reason == {
        k: [by_reason[k, b] for b in range(3)] for k in sorted(REASONS)
    }
    # the boundary parts: T0 + 1 h - 1 ns is the first hour's last, T0 + 1 h the second's first
    first_hour = read_trends(written[0], since_ns=T0 + HOUR_NS - 1, until_ns=T0 + HOUR_NS)
    second_hour = read_trends(written[0], since_ns=T0 + HOUR_NS, until_ns=T0 + HOUR_NS + 1)
    assert first_hour.parts == [1] and first_hour.bucket_start_s == [T0 // S]
    assert second_hour.parts == [1] and second_hour.bucket_start_s == [T0 // S + 3600]


def test_period_clips_the_first_and_last_bucket(written: tuple[Path, list[AuditRecord]]) -> None:
    """A period starting and ending mid-hour counts only the parts inside it, in buckets that
    still start on the UTC hour; 15-minute buckets align to the quarter hour."""
    directory, records = written
    since, until = T0 + HOUR_NS // 2, T0 + 2 * HOUR_NS + HOUR_NS // 4
    t = read_trends(directory, since_ns=since, until_ns=until)
    inside = Counter(bucket_of(r.wall_time_ns) for r in records if since <= r.wall_time_ns < until)
    assert t.bucket_start_s == [T0 // S + 3600 * i for i in range(3)]
    assert t.parts == [inside[b] for b in range(3)]
    quarter = read_trends(directory, since_ns=since, until_ns=until, bucket_s=900)
    assert quarter.bucket_start_s[0] == T0 // S + 1800 and len(quarter.bucket_start_s) == 7
    assert sum(quarter.parts) == sum(t.parts)


def test_percentiles_match_numpy_on_the_same_values(
    written: tuple[Path, list[AuditRecord]], trends: Trends
) -> None:
    """Latency and budget-used p50/p99 per bucket equal numpy's over the parts with a latency
    (and a budget), fail-safes without a latency and parts without a budget left out."""
    _, records = written
    for b in range(3):
        mine = [r for r in records if bucket_of(r.wall_time_ns) == b and r.latency_ms is not None]
        latency = np.array([r.latency_ms for r in mine])
        used = np.array([r.latency_ms / r.budget_ms for r in mine if r.budget_ms])  # type: ignore[operator]
        assert trends.latency_count[b] == len(mine)
        assert trends.latency_p50_ms[b] == pytest.approx(np.percentile(latency, 50), rel=1e-12)
        assert trends.latency_p99_ms[b] == pytest.approx(np.percentile(latency, 99), rel=1e-12)
        assert trends.budget_used_p50[b] == pytest.approx(np.percentile(used, 50), rel=1e-12)
        assert trends.budget_used_p99[b] == pytest.approx(np.percentile(used, 99), rel=1e-12)


def test_a_busy_bucket_samples_every_kth_part(
    written: tuple[Path, list[AuditRecord]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``MAX_LATENCIES_PER_BUCKET`` parts a bucket's percentiles come from every k-th
    part by seq (the smallest k within the cap); its counts stay exact."""
    directory, records = written
    monkeypatch.setattr(T, "MAX_LATENCIES_PER_BUCKET", 50)
    t = read_trends(directory, since_ns=T0, until_ns=T0 + HOUR_NS)
    exact = read_trends(directory, since_ns=T0, until_ns=T0 + 3 * HOUR_NS)
    k = -(-t.parts[0] // 50)
    # seq is the insertion order, 1-based: record i has seq i + 1
    kept = [
        r.latency_ms
        for seq, r in enumerate(records, 1)
        if bucket_of(r.wall_time_ns) == 0 and r.latency_ms is not None and seq % k == 0
    ]
    assert k > 1 and t.latency_count == [len(kept)] and len(kept) <= 50
    assert t.latency_p99_ms[0] == pytest.approx(np.percentile(kept, 99), rel=1e-12)
    assert t.parts[0] == exact.parts[0] and t.rejects[0] == exact.rejects[0]


def test_empty_buckets_and_an_empty_period(written: tuple[Path, list[AuditRecord]]) -> None:
    """A bucket without parts has zero counts and no percentiles; a period without parts
    reads as all zeros, never an error."""
    directory, _ = written
    t = read_trends(directory, since_ns=T0 - 2 * HOUR_NS, until_ns=T0 + HOUR_NS)
    assert t.parts[:2] == [0, 0] and t.parts[2] > 0
    assert t.latency_p50_ms[:2] == [None, None] and t.budget_used_p99[:2] == [None, None]
    assert all(v[:2] == [0, 0] for v in t.rejects_by_type.values())
    empty = read_trends(directory, since_ns=T0 - 5 * HOUR_NS, until_ns=T0 - HOUR_NS)
    assert empty.total_parts == 0 and empty.rejects_by_type == {} == empty.fail_safes_by_reason


def test_bad_requests_raise(tmp_path: Path, written: tuple[Path, list[AuditRecord]]) -> None:
    """An empty period, a zero bucket or too many buckets is a ValueError; a folder without a
    store an AuditError."""
    directory, _ = written
    with pytest.raises(ValueError, match="until_ns"):
        read_trends(directory, since_ns=T0, until_ns=T0)
    with pytest.raises(ValueError, match="bucket_s"):
        read_trends(directory, since_ns=T0, until_ns=T0 + S, bucket_s=0)
    with pytest.raises(ValueError, match="buckets"):
        read_trends(directory, since_ns=T0, until_ns=T0 + 30 * 86_400 * S, bucket_s=60)
    with pytest.raises(AuditError, match="no audit store"):
        read_trends(tmp_path, since_ns=T0, until_ns=T0 + S)


def test_reading_writes_nothing(tmp_path: Path) -> None:
    """A read leaves the database file as it was: same size, same modification time."""
    directory = tmp_path / "audit"
    write(directory, shift(n=50))
    db = directory / DB_NAME
    before = db.stat()
    t = read_trends(directory, since_ns=T0, until_ns=T0 + 3 * HOUR_NS)
    after = db.stat()
    assert t.total_parts == 50
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_a_store_the_node_keeps_writing_reads_without_error(tmp_path: Path) -> None:
    """While the node's store commits parts, reads succeed and never count down; afterwards
    they count every committed part."""
    directory = tmp_path / "audit"
    records = shift(seed=3, n=400)
    stop = threading.Event()
    with AuditStore(AuditSettings(synchronous="normal"), directory) as store:

        def produce() -> None:
            for rec in records:
                if stop.is_set():
                    return
                store.record(rec, None)
                if rec.part_id % 20 == 0:
                    store.flush()

        writer = threading.Thread(target=produce)
        writer.start()
        seen: list[int] = []
        try:
            while writer.is_alive() or not seen:
                seen.append(
                    read_trends(directory, since_ns=T0, until_ns=T0 + 3 * HOUR_NS).total_parts
                )
        finally:
            stop.set()
            writer.join()
        store.flush()
        final = read_trends(directory, since_ns=T0, until_ns=T0 + 3 * HOUR_NS)
    assert seen == sorted(seen), seen
    assert final.total_parts == len(records)


def test_csv_reads_back_to_the_same_numbers(trends: Trends) -> None:
    """The CSV has a stable, sorted header and parses back to the trends' numbers, an empty
    cell where a percentile is missing."""
    rows = list(csv.reader(io.StringIO(trends_csv(trends))))
    assert rows[0] == [
        "bucket_start_utc",
        "parts",
        "rejects",
        "rejects_crack",
        "rejects_dent",
        "rejects_scratch",
        "fail_safe_deadline_missed",
        "fail_safe_frame_missing",
        "fail_safe_model_error",
        "budget_misses",
        "latency_p50_ms",
        "latency_p99_ms",
        "budget_used_p50",
        "budget_used_p99",
    ]
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [r["bucket_start_utc"] for r in body] == [
        "2026-11-30T01:00:00Z",
        "2026-11-30T02:00:00Z",
        "2026-11-30T03:00:00Z",
    ]
    for i, r in enumerate(body):
        assert int(r["parts"]) == trends.parts[i] and int(r["rejects"]) == trends.rejects[i]
        assert int(r["budget_misses"]) == trends.budget_misses[i]
        for k, counts in trends.rejects_by_type.items():
            assert int(r[f"rejects_{k}"]) == counts[i]
        for k, counts in trends.fail_safes_by_reason.items():
            assert int(r[f"fail_safe_{k}"]) == counts[i]
        assert float(r["latency_p99_ms"]) == trends.latency_p99_ms[i]
        assert float(r["budget_used_p50"]) == trends.budget_used_p50[i]
    gap = dataclasses.replace(trends, latency_p50_ms=[None, 1.5, None])
    again = list(csv.DictReader(io.StringIO(trends_csv(gap))))
    assert [r["latency_p50_ms"] for r in again] == ["", "1.5", ""]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's signature and IHDR chunk; fails on anything else."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="module")
def empty() -> Trends:
    """Trends of a period without parts (three empty hours)."""
    zeros = [0, 0, 0]
    return Trends(
        since_ns=T0,
        until_ns=T0 + 3 * HOUR_NS,
        bucket_s=3600,
        bucket_start_s=[T0 // S + 3600 * i for i in range(3)],
        parts=zeros,
        rejects=zeros,
        rejects_by_type={},
        fail_safes_by_reason={},
        budget_misses=zeros,
        latency_p50_ms=[None] * 3,
        latency_p99_ms=[None] * 3,
        budget_used_p50=[None] * 3,
        budget_used_p99=[None] * 3,
        latency_count=zeros,
    )


@pytest.mark.parametrize("lang", ["en", "de", "ja", "fr"])
@pytest.mark.parametrize("which", ["shift", "empty"])
def test_png_is_a_1000_by_800_image_in_every_language(
    lang: str, which: str, trends: Trends, empty: Trends
) -> None:
    """A shift and an empty period both draw as a valid 1000x800 PNG in en, de, ja and an
    unknown language, without a warning (missing glyphs would warn, and warnings fail)."""
    data = trends_png(trends if which == "shift" else empty, lang)
    assert png_size(data) == (1000, 800)
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    assert 2_000 < len(data) < 500_000


def test_png_of_a_shift_differs_from_an_empty_one(trends: Trends, empty: Trends) -> None:
    """The empty figure is its own picture (the note), not the panels drawn without data."""
    with (
        Image.open(io.BytesIO(trends_png(empty))) as e,
        Image.open(io.BytesIO(trends_png(trends))) as s,
    ):
        blank = np.asarray(e.convert("L")) < 128
        drawn = np.asarray(s.convert("L")) < 128
    assert blank.mean() < 0.01 < drawn.mean()


def test_japanese_without_a_cjk_font_falls_back_to_english_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, empty: Trends
) -> None:
    """With no installed font that has the Japanese glyphs, ja draws the English labels and
    logs ``trends_font_missing`` once; de keeps its own labels in the default font."""
    monkeypatch.setattr(font_manager.fontManager, "ttflist", [])
    T._font_for.cache_clear()
    try:
        with capture_logs() as logs:
            assert T._language("ja") == (T._TEXT["en"], ["DejaVu Sans"])
            trends_png(empty, "ja")
        assert T._language("de") == (T._TEXT["de"], ["DejaVu Sans"])
    finally:
        T._font_for.cache_clear()
    assert [e for e in logs if e["event"] == "trends_font_missing"] == [
        {"event": "trends_font_missing", "lang": "ja", "fallback": "en", "log_level": "debug"}
    ]


@pytest.fixture(autouse=True)
def _no_pyplot_figures() -> Iterator[None]:
    """Every test leaves pyplot without figures: the module never uses its global state."""
    yield
    import sys

    if "matplotlib.pyplot" in sys.modules:
        assert not sys.modules["matplotlib.pyplot"].get_fignums()
