"""Settings of the GenICam camera drivers, embedded in the node's config.

``node/config.py`` mounts :class:`HarvestersSettings` as ``[camera.harvesters]``
and :class:`AravisSettings` as ``[camera.aravis]``. Times are milliseconds or
seconds as the field name says. ``features`` is an ordered table of GenICam
feature names to values, applied in that order after the device is opened;
trigger features are owned by ``trigger`` and may not appear there.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FeatureValue = bool | int | float | str

TRIGGER_FEATURES = frozenset(
    {"TriggerMode", "TriggerSource", "TriggerSelector", "TriggerSoftware", "AcquisitionMode"}
)
"""Features the driver sets itself from ``trigger``; configuring them too would fight it."""

PositiveMs = Annotated[float, Field(gt=0, le=600_000)]
QueueSize = Annotated[int, Field(ge=1, le=1024)]
BufferCount = Annotated[int, Field(ge=2, le=256)]


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    features: dict[str, FeatureValue] = Field(default_factory=dict)
    timeout_ms: PositiveMs = 500.0
    """How long after ``trigger()`` a frame may take before the part gets a MISSING frame."""
    max_trigger_delay_ms: PositiveMs = 50.0
    """How late a queued software trigger may still be sent (the camera was busy with the
    previous one); later, the part has moved on and gets a MISSING frame instead."""
    queue_size: QueueSize = 16
    """Frames waiting for the node; when full, the newest frame is dropped and counted."""
    buffer_count: BufferCount = 8
    chunk_features: tuple[str, ...] = ()
    """Chunk features (e.g. ``ChunkExposureTime``) read from each buffer into ``Frame.chunks``."""
    open_timeout_s: Annotated[float, Field(gt=0, le=600)] = 20.0

    @field_validator("features")
    @classmethod
    def _no_trigger_features(cls, v: dict[str, FeatureValue]) -> dict[str, FeatureValue]:
        clash = sorted(TRIGGER_FEATURES & v.keys())
        if clash:
            raise ValueError(
                f"{', '.join(clash)} set by the driver from `trigger`; remove from features"
            )
        return v


class HarvestersSettings(_Settings):
    """``[camera.harvesters]``: any GenICam camera through a GenTL producer (``.cti``).

    The device is chosen by at most one of ``serial``, ``user_defined_name`` or
    ``index`` (none: the first device). ``trigger = "auto"`` uses the software
    trigger when the device has ``TriggerSoftware`` and free-runs otherwise,
    associating frames with parts by arrival time.
    """

    cti_files: tuple[Path, ...] = ()
    """GenTL producers; empty: every ``*.cti`` in the ``GENICAM_GENTL64_PATH`` folders."""
    serial: str | None = None
    user_defined_name: str | None = None
    index: Annotated[int, Field(ge=0)] | None = None
    trigger: Literal["auto", "software", "free_run"] = "auto"
    fetch_timeout_ms: PositiveMs = 50.0
    """How long one blocking fetch waits; bounds how quickly the thread sees stop requests."""

    @model_validator(mode="after")
    def _one_selector(self) -> HarvestersSettings:
        chosen = [
            k for k in ("serial", "user_defined_name", "index") if getattr(self, k) is not None
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"choose the device by one of serial, user_defined_name, index; got {chosen}"
            )
        return self

    def resolved_cti_files(self, environ: dict[str, str] | None = None) -> tuple[Path, ...]:
        """The producers to load: ``cti_files``, else each ``*.cti`` on ``GENICAM_GENTL64_PATH``."""
        if self.cti_files:
            return self.cti_files
        env = os.environ if environ is None else environ
        found: list[Path] = []
        for folder in filter(None, env.get("GENICAM_GENTL64_PATH", "").split(os.pathsep)):
            p = Path(folder)
            if p.is_file() and p.suffix == ".cti":
                found.append(p)
            elif p.is_dir():
                found.extend(sorted(p.glob("*.cti")))
        return tuple(found)


class AravisSettings(_Settings):
    """``[camera.aravis]``: a GigE Vision camera spoken to natively by Aravis 0.8.

    Exactly one of ``address`` (IPv4, opened directly with no broadcast),
    ``device_id`` (Aravis id such as ``Basler-21234567``) or ``serial`` (both
    found by discovery) selects the camera.

    ``trigger = "software"`` sends ``TriggerSoftware`` per part; ``"line"`` arms
    ``TriggerSource = trigger_line`` and pairs each announced part with the next
    frame that arrives no earlier than ``line_window_ms`` before the announcement.
    Stream timing (``packet_timeout_ms``, ``frame_retention_ms``) maps to the
    Aravis GvStream properties of the same name; ``packet_size`` to
    ``GevSCPSPacketSize`` (None: Aravis negotiates it).
    """

    address: str | None = None
    device_id: str | None = None
    serial: str | None = None
    trigger: Literal["software", "line"] = "software"
    trigger_line: str = "Line0"
    line_window_ms: Annotated[float, Field(ge=0, le=10_000)] = 20.0
    packet_resend: bool = True
    packet_timeout_ms: Annotated[float, Field(gt=0, le=10_000)] = 20.0
    initial_packet_timeout_ms: Annotated[float, Field(ge=0, le=10_000)] = 1.0
    frame_retention_ms: Annotated[float, Field(gt=0, le=10_000)] = 100.0
    packet_size: Annotated[int, Field(ge=576, le=16_000)] | None = None
    reconnect_backoff_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_backoff_max_s: Annotated[float, Field(gt=0, le=600)] = 10.0

    @model_validator(mode="after")
    def _one_selector(self) -> AravisSettings:
        chosen = [k for k in ("address", "device_id", "serial") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "choose the camera by exactly one of address, device_id, serial; "
                f"got {chosen or 'none'}"
            )
        if self.reconnect_backoff_max_s < self.reconnect_backoff_s:
            raise ValueError("reconnect_backoff_max_s is smaller than reconnect_backoff_s")
        return self
