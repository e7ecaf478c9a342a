"""Exports of the audit trail: records as CSV or JSON lines, reviews as a training set.

CSV has one flat row per record (explanations one column per language, the
latest review in ``review_*`` columns, findings and thresholds as JSON text).
JSON lines keep the record's shape: ``explanations`` and ``review`` as
objects, ``findings`` and ``thresholds`` decoded. Both add ``wall_time_utc``
(ISO 8601). The data set export writes reviewed images in the MVTec AD
layout that ``models.data.mvtec.read_mvtec`` reads, with the review's verdict
as the label.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

import structlog

from models.captions import canonical
from models.data.mvtec import CAPTIONS_FILE, GOOD
from models.explain_text import LANGUAGES
from models.findings import UNKNOWN_TYPE
from node.audit.images import file_sha256, file_stem, safe_name
from node.audit.reader import AuditReader
from node.audit.record import AuditRecord, Review

log = structlog.get_logger("lineside.audit")

ExportFormat = Literal["csv", "jsonl"]

_REVIEW_FIELDS = tuple(f.name for f in dataclasses.fields(Review) if f.name != "result_id")
_RECORD_FIELDS = tuple(
    f.name for f in dataclasses.fields(AuditRecord) if f.name not in ("explanations", "review")
)
CSV_COLUMNS: tuple[str, ...] = (
    *_RECORD_FIELDS[: _RECORD_FIELDS.index("wall_time_ns") + 1],
    "wall_time_utc",
    *_RECORD_FIELDS[_RECORD_FIELDS.index("wall_time_ns") + 1 :],
    *(f"explanation_{lang}" for lang in LANGUAGES),
    *(f"review_{name}" for name in _REVIEW_FIELDS),
)
"""The CSV header, in order."""


def utc_iso(wall_time_ns: int) -> str:
    """``wall_time_ns`` (UTC epoch ns) as ISO 8601 with microseconds and ``Z``."""
    t = dt.datetime.fromtimestamp(wall_time_ns / 1e9, tz=dt.UTC)
    return t.isoformat(timespec="microseconds").replace("+00:00", "Z")


def csv_row(rec: AuditRecord) -> dict[str, object]:
    """``rec`` as one CSV row keyed by :data:`CSV_COLUMNS`."""
    row: dict[str, object] = {name: getattr(rec, name) for name in _RECORD_FIELDS}
    row["wall_time_utc"] = utc_iso(rec.wall_time_ns)
    for lang in LANGUAGES:
        row[f"explanation_{lang}"] = rec.explanations.get(lang, "")
    for name in _REVIEW_FIELDS:
        row[f"review_{name}"] = None if rec.review is None else getattr(rec.review, name)
    return row


def json_object(rec: AuditRecord) -> dict[str, Any]:
    """``rec`` as one JSON object (findings and thresholds decoded, review nested)."""
    obj: dict[str, Any] = {}
    for f in dataclasses.fields(AuditRecord):
        value = getattr(rec, f.name)
        if f.name == "findings_json":
            obj["findings"] = json.loads(value)
        elif f.name == "thresholds_json":
            obj["thresholds"] = json.loads(value)
        elif f.name == "explanations":
            obj[f.name] = dict(value)
        elif f.name == "review":
            obj[f.name] = None if value is None else dataclasses.asdict(value)
        else:
            obj[f.name] = value
        if f.name == "wall_time_ns":
            obj["wall_time_utc"] = utc_iso(rec.wall_time_ns)
    return obj


def write_records(
    records: Iterable[AuditRecord],
    out: TextIO,
    fmt: ExportFormat,
    on_record: Callable[[], None] | None = None,
) -> int:
    """Write ``records`` to ``out`` as CSV (with header) or JSON lines; returns how many."""
    n = 0
    writer: csv.DictWriter[str] | None = None
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
        writer.writeheader()
    for rec in records:
        if writer is not None:
            writer.writerow(csv_row(rec))
        else:
            out.write(json.dumps(json_object(rec), ensure_ascii=False) + "\n")
        n += 1
        if on_record is not None:
            on_record()
    return n


@dataclass(frozen=True, slots=True)
class DatasetReport:
    """What a data set export wrote: images per folder (``train/good``, ``test/<type>``),
    captions written, and reviewed records skipped for a missing or altered image."""

    images: dict[str, int]
    captions: int
    skipped_no_image: int
    skipped_bad_hash: int

    @property
    def total(self) -> int:
        """Images written."""
        return sum(self.images.values())


def label_of(rec: AuditRecord, review: Review) -> str:
    """The data set folder of a reviewed record: the review's verdict wins.

    A pass is ``train/good``; a reject is ``test/<type>`` with the review's
    type, else the node's (unless it was a fail-safe reject, which names no
    type), else ``unknown anomaly`` — made safe as a folder name.
    """
    if review.verdict == "pass":
        return f"train/{GOOD}"
    kind = review.defect_type or (None if rec.fail_safe else rec.defect_type) or UNKNOWN_TYPE
    folder = safe_name(kind)
    return f"test/{folder if folder != GOOD else 'good_'}"


def caption_of(rec: AuditRecord, review: Review) -> str | None:
    """A training caption for a reviewed reject: the canonical slotted caption of the
    review's type (``models.captions.canonical``; the length and place are filled from the
    measured facts when a package speaks); None for a pass, a fail-safe or no type."""
    if review.verdict != "reject" or rec.fail_safe:
        return None
    kind = review.defect_type or rec.defect_type
    if not kind:
        return None
    return canonical(kind)


def export_dataset(
    reader: AuditReader,
    out: Path,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    on_record: Callable[[], None] | None = None,
) -> DatasetReport:
    """Copy every reviewed record's image into ``out`` in the MVTec AD layout.

    Files are named after the result id; a copy of the same image under
    another label (from an earlier export, before the review changed) is
    removed. ``captions.jsonl`` is merged: its other entries are kept. Images
    whose bytes no longer match the recorded sha256 are skipped and logged.
    Raises ``OSError`` when ``out`` cannot be written.
    """
    (out / "train" / GOOD).mkdir(parents=True, exist_ok=True)
    captions = _read_captions(out / CAPTIONS_FILE)
    counts: Counter[str] = Counter()
    no_image = bad_hash = 0
    for rec in reader.iter_records(since_ns=since_ns, until_ns=until_ns, reviewed_only=True):
        if on_record is not None:
            on_record()
        review = rec.review
        src = reader.image_file(rec)
        if review is None or src is None or not src.is_file():
            no_image += 1
            continue
        if file_sha256(src) != rec.image_sha256:
            bad_hash += 1
            log.warning("audit_image_hash_mismatch", result_id=rec.result_id, path=str(src))
            continue
        label = label_of(rec, review)
        name = f"{file_stem(rec.result_id)}.png"
        for other in (*out.glob(f"train/*/{name}"), *out.glob(f"test/*/{name}")):
            if other.parent != out / label:
                other.unlink()
                captions.pop(other.relative_to(out).as_posix(), None)
        target = out / label / name
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, target)
        counts[label] += 1
        caption = caption_of(rec, review)
        rel = f"{label}/{name}"
        if caption is None:
            captions.pop(rel, None)
        else:
            captions[rel] = caption
    written = _write_captions(out / CAPTIONS_FILE, captions)
    return DatasetReport(dict(sorted(counts.items())), written, no_image, bad_hash)


def _read_captions(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            out[str(obj["image"])] = str(obj["text"])
    return out


def _write_captions(path: Path, captions: dict[str, str]) -> int:
    if not captions:
        path.unlink(missing_ok=True)
        return 0
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for image, text in sorted(captions.items()):
            f.write(json.dumps({"image": image, "text": text}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(captions)
