"""The sink that turns each published part into its audit record and its HMI update.

Every part result becomes one :class:`node.audit.record.AuditRecord` (with the
model's identity and the recipe in force), queued to the audit store — whose
writer thread does the disk work — and handed to the HMI server, whose own
task does the OPC UA writes. ``publish`` runs on the event loop; with an
``executor`` (the node gives it a worker thread of its own) it only takes the
running statistics there and leaves building the record (its JSON, the image
copy, the thumbnail) and queuing it to that worker, in order, so the loop is
back to the line's timing at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from models.backend import Backend
from node.audit.images import keep_image
from node.audit.record import AuditRecord
from node.audit.store import AuditStore, record_from_result
from node.config import Config
from node.hmi.thumbnail import thumbnail_png
from node.line.results import PartResult

log = structlog.get_logger(__name__)

BACKLOG_WARN = 200
"""Results waiting to be recorded past which the recorder's backlog is logged: at 100 parts/s
two seconds behind, when a record takes well under a millisecond to build."""


class RecordSink(Protocol):
    """Anything that takes finished audit records (the HMI server)."""

    def publish(
        self, record: AuditRecord, thumbnail_png: bytes | None, stats: Mapping[str, object]
    ) -> None:
        """Take one record; quick and non-blocking."""
        ...


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which model judged the parts: name, version and a hash of what was loaded."""

    name: str
    version: str
    sha256: str


def model_identity(backend: Backend, cfg: Config) -> ModelIdentity:
    """The identity of ``backend``: a model package's manifest, or the classical template file."""
    package = getattr(backend, "package", None)
    if package is not None:
        manifest_path = Path(package.root) / "manifest.json"
        return ModelIdentity(
            name=f"{backend.name}:{Path(package.root).name}",
            version=str(package.manifest.created_utc),
            sha256=_sha256(manifest_path),
        )
    template = cfg.inspection.classical.template
    return ModelIdentity(name=backend.name, version="template", sha256=_sha256(template))


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def new_run_id() -> str:
    """An id for this run of the node, unique across restarts (UTC time, pid, random)."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{stamp}-{os.getpid()}-{os.urandom(2).hex()}"


class Recorder:
    """A ``ResultSink``: audit record per part to ``store``, and to each of ``sinks``.

    ``stats`` gives the running statistics published beside each record;
    ``thumbnail_px`` is the HMI thumbnail size (0: none).
    """

    def __init__(
        self,
        cfg: Config,
        identity: ModelIdentity,
        *,
        store: AuditStore | None,
        sinks: list[RecordSink] | None = None,
        stats: Callable[[], Mapping[str, object]] | None = None,
        thumbnail_px: int = 0,
        run_id: str | None = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self._identity = identity
        self._thresholds: dict[str, Any] = cfg.inspection.recipe.model_dump(mode="json")
        self._thresholds["backend"] = cfg.inspection.backend
        self._heat_threshold = (
            cfg.inspection.recipe.pixel_threshold if cfg.inspection.backend == "classical" else 1.0
        )
        self._store = store
        self._sinks = sinks or []
        self._stats = stats
        self._thumb_px = thumbnail_px
        self._lock = threading.Lock()
        self._waiting = 0
        self._waiting_max = 0

    def add_sink(self, sink: RecordSink, thumbnail_px: int = 0) -> None:
        """Also hand every record to ``sink`` (e.g. the HMI server once it is up), with a
        thumbnail of ``thumbnail_px`` (0: none)."""
        self._sinks.append(sink)
        self._thumb_px = max(self._thumb_px, thumbnail_px)

    executor: Executor | None = None
    """Where records are built and handed on (None: in ``publish`` itself)."""
    failures = 0
    """Results whose record could not be built or handed on (each logged)."""
    backlog_warn = BACKLOG_WARN
    """Results waiting for ``executor`` past which the backlog is logged (once per rise)."""

    @property
    def backlog(self) -> dict[str, int]:
        """Results waiting for the worker now, and the most there have been."""
        return {"waiting": self._waiting, "max": self._waiting_max}

    def publish(self, result: PartResult) -> None:
        """Build the record, queue it to the store and hand it to every record sink (on
        ``executor`` when there is one; the statistics are taken now, on the caller's
        thread, where they are kept). Nothing is dropped: a worker that falls behind is
        counted (``backlog``) and logged past ``backlog_warn``."""
        stats = self._stats() if self._stats is not None else {}
        if self.executor is None:
            self._publish(result, stats)
            return
        with self._lock:
            self._waiting += 1
            waiting = self._waiting
            self._waiting_max = max(self._waiting_max, waiting)
        if waiting == self.backlog_warn:
            log.warning("record_backlog", waiting=waiting, part_id=result.part_id)
        self.executor.submit(self._publish_logged, result, stats)

    def _publish_logged(self, result: PartResult, stats: Mapping[str, object]) -> None:
        try:
            self._publish(result, stats)
        except Exception:  # a worker's exception would otherwise vanish unseen
            self.failures += 1
            log.exception("record_publish_failed", part_id=result.part_id)
        finally:
            with self._lock:
                self._waiting -= 1

    def _keeps_image(self, result: PartResult) -> bool:
        """Whether the store will keep this part's image (so its anomaly map is worth keeping)."""
        if self._store is None or result.image is None:
            return False
        return keep_image(
            f"{self.run_id}-{result.part_id}",
            result.verdict.reject,
            self._store.settings.sample_passes,
        )

    def _publish(self, result: PartResult, stats: Mapping[str, object]) -> None:
        record = record_from_result(
            result,
            run_id=self.run_id,
            model_name=self._identity.name,
            model_version=self._identity.version,
            model_sha256=self._identity.sha256,
            thresholds=self._thresholds,
            actuator_confirmed=_confirmed(result),
            heat_threshold=self._heat_threshold if self._keeps_image(result) else None,
        )
        if self._store is not None:
            self._store.record(record, result.image)
        if self._sinks:
            thumb = None
            if self._thumb_px and result.image is not None:
                thumb = thumbnail_png(result.image, self._thumb_px)
            for sink in self._sinks:
                sink.publish(record, thumb, stats)


def _confirmed(result: PartResult) -> bool | None:
    """Did the actuator act? Only a failed pulse or handshake is known for sure."""
    if result.action == "not_fired":
        return False
    return None
