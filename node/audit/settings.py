"""Settings of the audit store, mounted by the node's config as ``[audit]``.

Sizes are bytes, ages days, intervals seconds, as the field names say.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

OnFailure = Literal["stop", "continue"]
"""What the node does when the store cannot write and ``queue_max`` records wait."""

Synchronous = Literal["normal", "full"]
"""SQLite's ``PRAGMA synchronous`` level for the store (always in WAL mode)."""


class AuditSettings(BaseModel):
    """``[audit]``: where the audit trail lives, what it keeps and for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    """Write an audit record for every part. Off only for experiments: rule 5 wants it on."""

    directory: Path = Path("audit")
    """The store's folder (database ``audit.sqlite3`` and ``images/``). A relative path is
    resolved by the caller against the node's ``state_dir``."""

    sample_passes: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Fraction of passed parts whose image is kept (0..1). Rejects' images are always kept.
    The choice is a deterministic function of the result id, so it is reproducible."""

    max_age_days: Annotated[float, Field(gt=0)] = 90.0
    """Records (with their reviews and images) older than this are deleted."""

    max_image_bytes: Annotated[int, Field(ge=0)] = 2_000_000_000
    """Cap on the bytes of kept images. Over it, the oldest images of unreviewed records are
    removed first (their records stay, with ``image_path`` cleared); reviewed ones only after."""

    synchronous: Synchronous = "full"
    """Durability of a commit. In WAL mode ``normal`` survives a crash of the node's process but
    may lose the last commits on a power cut (the WAL is fsynced only at checkpoints);
    ``full`` fsyncs the WAL at every commit (and the image files and their folder before the
    row that names them), so a power cut loses nothing committed. Default ``full``: the design
    promises that no committed record is lost, and ``bench/audit.py`` measured its cost at
    1–2 ms more commit latency per part (p50), paid by the writer thread and not the event
    loop, with throughput still over ten times 50 parts/s (numbers in ``docs/audit.md``)."""

    retention_interval_s: Annotated[float, Field(gt=0)] = 600.0
    """How often the store's retention thread applies the age and size limits (the first pass
    runs a minute after opening, or after this interval if it is shorter)."""

    queue_max: Annotated[int, Field(ge=1)] = 2000
    """Records waiting in memory at most — for the writer thread, or for the store to accept
    writes again (it retries with back-off and raises the ``audit`` alarm meanwhile). A
    record beyond it is not recorded: counted (``unrecorded_parts``), logged by id
    (``audit_record_dropped``), never blocking the event loop; then ``on_failure``
    applies. 2000 records are 40 s of production at 50 parts/s."""

    spill_directory: Path | None = None
    """A second folder — best on another disk — where records that wait while the store
    cannot write are moved as durable files, so an outage is bounded by that disk rather than
    by ``queue_max``; they are imported into the store as soon as it writes again (or at the
    next start). None: records wait in memory only. A relative path is resolved by the caller
    against the node's ``state_dir``."""

    on_failure: OnFailure = "stop"
    """When ``queue_max`` records wait and another finds no room: ``"stop"`` raises the
    ``audit`` fault (Error, PLC Ready dropped, heartbeat stopped, every part a fail-safe
    reject ``audit_unavailable`` until the store writes again) — no part passes without a
    record; ``"continue"`` keeps judging and acting on parts, the alarm raised and every
    part not recorded counted and shown (``unrecorded_parts``)."""
