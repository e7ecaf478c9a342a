"""Records the store cannot write wait as durable files in a second folder.

While the audit store refuses writes (a full or failing disk), its writer moves
the records waiting in memory to ``audit.spill_directory`` — ideally on another
disk — so that memory (``audit.queue_max``) is not what bounds an outage, and
a restart of the node loses nothing that waited. Each batch is one JSON file
(the record's fields, the kept image as PNG in base64), written to a temporary
name, fsynced and renamed, then its folder fsynced: a file either exists whole
or not at all. The store imports the files oldest first as soon as it writes
again (and when it opens), each in one transaction, and deletes a file only
after its records are committed; a file imported twice (a crash between the
commit and the delete) adds nothing, since result ids are unique.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from node.audit.images import fsync_dir
from node.audit.record import AuditRecord

log = structlog.get_logger("lineside.audit")

SPILL_VERSION = 1
PREFIX = "spill-"
SUFFIX = ".json"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True, slots=True)
class SpilledRecord:
    """One record as it was spilled: the record and its kept image, already a PNG."""

    record: AuditRecord
    png: bytes | None


class Spill:
    """The spill folder of one store. Not thread-safe: the store's writer thread owns it.

    Creating it creates ``directory`` and removes half-written files a killed writer
    left. Raises ``OSError`` when the folder cannot be used.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob(f"*{TMP_SUFFIX}"):
            leftover.unlink()
        self._seq = 0

    def files(self) -> list[Path]:
        """The spill files waiting, oldest first."""
        return sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}"))

    def write(self, records: list[SpilledRecord]) -> Path:
        """Write ``records`` to a new spill file, durably; its path. Raises ``OSError``."""
        self._seq += 1
        stamp = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}"
        name = f"{PREFIX}{stamp}-n{len(records)}{SUFFIX}"
        target = self.directory / name
        tmp = target.with_name(name + TMP_SUFFIX)
        data = json.dumps(
            {"version": SPILL_VERSION, "records": [_to_json(r) for r in records]}
        ).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
            fsync_dir(self.directory)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return target

    @staticmethod
    def count(path: Path) -> int:
        """How many records a spill file holds (its name says, so it need not be read)."""
        try:
            return int(path.name.removesuffix(SUFFIX).rsplit("-n", 1)[1])
        except (IndexError, ValueError):
            return 0

    def read(self, path: Path) -> list[SpilledRecord]:
        """The records of one spill file. Raises ``OSError``, or ``ValueError`` for a file
        that is not a spill file this version reads."""
        try:
            doc = json.loads(path.read_bytes())
            if doc.get("version") != SPILL_VERSION:
                raise ValueError(f"spill version {doc.get('version')!r}, not {SPILL_VERSION}")
            return [_from_json(r) for r in doc["records"]]
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable spill file: {exc!r}") from exc

    def remove(self, path: Path) -> None:
        """Delete an imported spill file (its records are committed). Raises ``OSError``."""
        path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def set_aside(self, path: Path, why: str) -> Path:
        """Rename a spill file that cannot be read to ``<name>.unreadable``, kept for whoever
        repairs it; its new path."""
        target = path.with_name(path.name + ".unreadable")
        path.rename(target)
        log.error("audit_spill_unreadable", path=str(path), moved_to=str(target), error=why)
        return target


def _to_json(item: SpilledRecord) -> dict[str, Any]:
    fields = dataclasses.asdict(item.record)
    fields["explanations"] = dict(item.record.explanations)
    fields["review"] = None
    return {
        "record": fields,
        "png": None if item.png is None else base64.b64encode(item.png).decode("ascii"),
    }


def _from_json(doc: dict[str, Any]) -> SpilledRecord:
    fields = dict(doc["record"])
    fields["review"] = None
    png = doc.get("png")
    return SpilledRecord(AuditRecord(**fields), None if png is None else base64.b64decode(png))
