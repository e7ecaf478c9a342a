"""Any GenICam camera through its vendor's GenTL producer (``.cti``), via harvesters.

One acquisition thread owns the ``Harvester`` and its ``ImageAcquirer``: it
loads the producers (``cti_files``, else every ``*.cti`` on
``GENICAM_GENTL64_PATH``), opens the device chosen by serial, user-defined
name or index, sets ``buffer_count``, applies the configured features, arms
the trigger and fetches buffers with a bounded timeout.

Trigger modes (``trigger``):

- ``software`` (or ``auto`` when the device has ``TriggerSoftware``): one
  trigger at a time, as in the Aravis driver — ``TriggerSoftware`` is executed
  for the oldest request and the next buffer until its deadline is its frame;
  a request that waited longer than ``max_trigger_delay_ms`` is not sent and
  gets a MISSING frame.
- ``free_run`` (or ``auto`` when the device has no trigger features, as the
  ``viky.cti`` test producer): the camera streams at its own rate and each
  trigger takes the first frame that *arrives* after it. The exposure of that
  frame may have started up to one frame period before the trigger, so the
  part may be off-centre by up to ``speed x (1/fps + transfer time)``; raise
  the frame rate to shrink it. The driver logs ``camera_free_running`` once.

harvesters discards incomplete buffers itself and only signals them; an
incomplete buffer while a part waits gives that part an INCOMPLETE frame
without pixels. Device timestamps and the ``chunk_features`` values are
copied into the frame when the producer provides them.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import structlog

from drivers.camera.acquisition import AcquisitionThread
from drivers.camera.base import DeviceInfo, Frame, FrameStatus
from drivers.camera.features import FeatureInfo, FeatureKind, FeatureValue, apply_features
from drivers.camera.ledger import CameraStats, PendingTrigger
from drivers.camera.pixelformats import decode
from drivers.camera.settings import HarvestersSettings
from drivers.errors import CameraBackendUnavailable, CameraDriverError, DriverError

log = structlog.get_logger(__name__)

_INTERFACE = {
    2: FeatureKind.INTEGER,
    3: FeatureKind.BOOLEAN,
    4: FeatureKind.COMMAND,
    5: FeatureKind.FLOAT,
    6: FeatureKind.STRING,
    9: FeatureKind.ENUMERATION,
}
"""GenApi ``EInterfaceType`` codes → kinds (intfIInteger=2 … intfIEnumeration=9)."""


def _harvesters() -> tuple[Any, Any, Any]:
    """Import harvesters and GenApi. Raises ``CameraBackendUnavailable``."""
    try:
        # via importlib: genicam ships no type information (harvesters is in mypy's ignore list)
        genapi = importlib.import_module("genicam.genapi")
        gentl = importlib.import_module("genicam.gentl")
        from harvesters import core
    except ImportError as exc:
        raise CameraBackendUnavailable(
            f"the harvesters driver needs the harvesters and genicam packages: {exc}"
        ) from exc
    return core, genapi, gentl


class _GenApiNodes:
    """``NodeMapAccess`` over a ``genicam.genapi.NodeMap``."""

    def __init__(self, genapi: Any, node_map: Any) -> None:
        self._genapi = genapi
        self._nm = node_map

    def describe(self, name: str) -> FeatureInfo | None:
        ga, nm = self._genapi, self._nm
        if not nm.has_node(name):
            return None
        node = nm.get_node(name)
        if not ga.is_implemented(node) or not ga.is_available(node):
            return None
        kind = _INTERFACE.get(int(node.node.principal_interface_type), FeatureKind.OTHER)
        readable, writable = bool(ga.is_readable(node)), bool(ga.is_writable(node))
        if kind is FeatureKind.INTEGER and readable:
            return FeatureInfo(name, kind, readable, writable, node.min, node.max, int(node.inc))
        if kind is FeatureKind.FLOAT and readable:
            return FeatureInfo(name, kind, readable, writable, node.min, node.max)
        if kind is FeatureKind.ENUMERATION:
            return FeatureInfo(name, kind, readable, writable, entries=tuple(node.symbolics))
        return FeatureInfo(name, kind, readable, writable)

    def write(self, info: FeatureInfo, value: FeatureValue) -> None:
        self._nm.get_node(info.name).value = value


def _device_label(s: HarvestersSettings) -> str:
    if s.serial is not None:
        return f"serial {s.serial}"
    if s.user_defined_name is not None:
        return f"user name {s.user_defined_name}"
    return f"device #{s.index or 0}"


class HarvestersCamera:
    """A GenICam camera through a GenTL producer; an async context manager.

    Satisfies the ``Camera`` protocol. ``free_running`` tells whether frames
    are associated by arrival time. Entering raises
    ``CameraBackendUnavailable`` without harvesters, ``CameraDriverError``
    when no producer or no matching device is found or opening times out, and
    ``FeatureError`` for features the device lacks or refuses.
    """

    def __init__(self, settings: HarvestersSettings) -> None:
        self.settings = settings
        self._s = settings
        self.name = _device_label(settings)
        self.free_running = False
        self._acq = AcquisitionThread(
            self.name,
            f"harvesters-{self.name}",
            timeout_ms=settings.timeout_ms,
            queue_size=settings.queue_size,
            open_timeout_s=settings.open_timeout_s,
            max_trigger_delay_ms=settings.max_trigger_delay_ms,
        )
        self._mods: tuple[Any, Any, Any] = (None, None, None)
        self._h: Any = None
        self._ia: Any = None
        self._incomplete = 0  # bumped by harvesters' INCOMPLETE_BUFFER callback

    # -- Camera protocol --------------------------------------------------------
    async def __aenter__(self) -> HarvestersCamera:
        self._mods = _harvesters()
        await self._acq.open(self._open, self._serve, self._close)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._acq.close()

    async def trigger(self, part_id: int, encoder_count: int) -> None:
        """Request one frame for ``part_id``; never blocks on the device.

        Raises ``CameraDriverError`` if the camera is not open.
        """
        self.trigger_now(part_id, encoder_count)

    def trigger_now(self, part_id: int, encoder_count: int) -> None:
        """``trigger`` from any thread: the ledger is locked, the request a queue put."""
        p = self._acq.add(part_id, encoder_count)
        if not self.free_running:
            self._acq.requests.put(p)

    def frames(self) -> AsyncIterator[Frame]:
        """Frames in trigger order, each tied to its ``part_id``."""
        return self._acq.frames()

    @property
    def dropped(self) -> int:
        """Frames dropped because the hand-off queue was full."""
        return self._acq.dropped

    def stats(self) -> CameraStats:
        """Counters since open."""
        return self._acq.stats(reconnects=0, connected=self._ia is not None)

    # -- acquisition thread ---------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._acq.stop.is_set():
                if self.free_running:
                    self._serve_free_run()
                else:
                    self._serve_next_request()
        except Exception as exc:  # the thread's one supervisor: report and stop
            log.exception("camera_thread_failed", camera=self.name, error=str(exc))
        finally:
            self._close()

    def _open(self) -> None:
        core, genapi, gentl = self._mods
        s = self._s
        ctis = s.resolved_cti_files()
        if not ctis:
            raise CameraDriverError(
                "no GenTL producer: set camera.harvesters.cti_files or GENICAM_GENTL64_PATH"
            )
        missing = [str(p) for p in ctis if not Path(p).is_file()]
        if missing:
            raise CameraDriverError(f"GenTL producer not found: {', '.join(missing)}")
        self._h = h = core.Harvester()
        try:
            for cti in ctis:
                h.add_file(str(cti))
            h.update()
            found = [_info_field(d, "serial_number", gentl) for d in h.device_info_list]
            if s.serial is not None:
                key: Any = {"serial_number": s.serial}
            elif s.user_defined_name is not None:
                key = {"user_defined_name": s.user_defined_name}
            else:
                key = s.index or 0
            try:
                self._ia = ia = h.create(key)
            except (ValueError, IndexError) as exc:
                raise CameraDriverError(
                    f"no GenTL device with {self.name}; serials found: {found or 'none'}"
                ) from exc
            ia.num_buffers = s.buffer_count
            nodes = _GenApiNodes(genapi, ia.remote_device.node_map)
            vendor_errors = (genapi.GenericException, gentl.GenericException)
            apply_features(nodes, s.features, self.name, vendor_errors)
            self._arm_trigger(nodes, vendor_errors)
            ia.add_callback(
                core.ImageAcquirer.Events.INCOMPLETE_BUFFER, self._incomplete_callback()
            )
            ia.start()
        except (genapi.GenericException, gentl.GenericException) as exc:
            raise CameraDriverError(f"{self.name}: {exc}") from exc
        info = ia.device.module
        log.info(
            "camera_opened",
            camera=self.name,
            backend="harvesters",
            vendor=info.vendor,
            model=info.model,
            serial=info.serial_number,
            trigger="free_run" if self.free_running else "software",
            buffer_count=s.buffer_count,
        )

    def _incomplete_callback(self) -> Any:
        """A harvesters ``Callback`` (it must subclass it) counting INCOMPLETE_BUFFER events."""

        def emit(_callback: object, context: object = None) -> None:
            self._incomplete += 1  # runs on the acquisition thread, inside try_fetch

        return type("IncompleteBufferCounter", (self._mods[0].Callback,), {"emit": emit})()

    def _arm_trigger(
        self, nodes: _GenApiNodes, vendor_errors: tuple[type[BaseException], ...]
    ) -> None:
        has_sw = (
            nodes.describe("TriggerSoftware") is not None
            and nodes.describe("TriggerMode") is not None
        )
        mode = self._s.trigger
        if mode == "software" and not has_sw:
            raise CameraDriverError(
                f"{self.name}: TriggerSoftware/TriggerMode: the device has no such feature; "
                'use trigger = "free_run" (or "auto")'
            )
        if mode == "free_run" or not has_sw:
            self.free_running = True
            if nodes.describe("TriggerMode") is not None:
                apply_features(nodes, {"TriggerMode": "Off"}, self.name, vendor_errors)
            log.warning(
                "camera_free_running",
                camera=self.name,
                reason="device has no software trigger" if not has_sw else "configured",
                association="each trigger takes the first frame arriving after it",
            )
            return
        trig: dict[str, FeatureValue] = {}
        if nodes.describe("TriggerSelector") is not None:
            trig["TriggerSelector"] = "FrameStart"
        trig |= {"TriggerMode": "On", "TriggerSource": "Software"}
        apply_features(nodes, trig, self.name, vendor_errors)

    def _fetch(self, timeout_s: float) -> Any:
        """One raw GenTL buffer, or None on timeout; the caller must requeue it."""
        return self._ia.try_fetch(timeout=max(timeout_s, 0.001), is_raw=True)

    def _serve_next_request(self) -> None:
        p = self._acq.next_request(self._s.fetch_timeout_ms / 1000)
        if p is None:
            return
        while (stale := self._fetch(0.001)) is not None:
            self._acq.ledger.count_stale()
            stale.parent.queue_buffer(stale)
        seen = self._incomplete
        _, genapi, gentl = self._mods
        try:
            self._ia.remote_device.node_map.TriggerSoftware.execute()
        except (genapi.GenericException, gentl.GenericException) as exc:
            self._acq.ledger.resolve_missing(p, f"software trigger failed: {exc}")
            return
        while not p.done:
            left_s = (p.deadline_ns - time.monotonic_ns()) / 1e9
            if left_s <= 0:
                self._acq.ledger.resolve_missing(
                    p, f"no frame within timeout_ms={self._s.timeout_ms:g}"
                )
                return
            buf = self._fetch(min(left_s, self._s.fetch_timeout_ms / 1000))
            if buf is not None:
                self._deliver(p, buf)
            elif self._incomplete != seen:
                self._resolve_incomplete(p)

    def _serve_free_run(self) -> None:
        seen = self._incomplete
        buf = self._fetch(self._s.fetch_timeout_ms / 1000)
        arrived = time.monotonic_ns()
        if buf is None:
            if self._incomplete != seen and (p := self._acq.ledger.oldest_pending(arrived, 0)):
                self._resolve_incomplete(p)
            return
        p = self._acq.ledger.oldest_pending(arrived, 0)
        if p is None:
            self._acq.ledger.count_unmatched()  # free-run frames nobody asked for: expected
            buf.parent.queue_buffer(buf)
            return
        self._deliver(p, buf)

    def _resolve_incomplete(self, p: PendingTrigger) -> None:
        detail = "GenTL producer delivered an incomplete buffer (harvesters discards its data)"
        if self._acq.ledger.resolve(p, FrameStatus.INCOMPLETE, detail=detail):
            log.warning("frame_incomplete", camera=self.name, part_id=p.part_id, detail=detail)

    def _deliver(self, p: PendingTrigger, buf: Any) -> None:
        """Decode ``buf`` into ``p``'s frame and give the buffer back to the producer."""
        _, genapi, gentl = self._mods
        errors = (genapi.GenericException, gentl.GenericException)
        try:
            width, height, fmt = buf.width, buf.height, buf.pixel_format
            raw = np.frombuffer(buf.raw_buffer, dtype=np.uint8)[buf.image_offset :]
            status, detail = FrameStatus.COMPLETE, ""
            pixels, out_fmt = decode(raw, int(fmt), width, height)
        except (DriverError, *errors) as exc:
            status, detail = FrameStatus.ERROR, f"cannot decode buffer: {exc}"
            pixels, out_fmt = np.zeros((0, 0), np.uint8), ""
        stamp = _optional(lambda: int(buf.timestamp_ns), errors)
        frame_id = _optional(lambda: int(buf.frame_id), errors)
        chunks = self._read_chunks(errors) if self._s.chunk_features else None
        buf.parent.queue_buffer(buf)
        self._acq.ledger.resolve(
            p,
            status,
            pixels,
            out_fmt,
            detail,
            device_frame_id=frame_id,
            device_timestamp_ns=stamp,
            chunks=chunks,
        )
        if status is not FrameStatus.COMPLETE:
            log.warning("frame_error", camera=self.name, part_id=p.part_id, detail=detail)

    def _read_chunks(
        self, errors: tuple[type[BaseException], ...]
    ) -> dict[str, bool | int | float | str]:
        nm = self._ia.remote_device.node_map
        out: dict[str, bool | int | float | str] = {}
        for name in self._s.chunk_features:
            try:
                out[name] = nm.get_node(name).value
            except errors as exc:
                log.debug("chunk_unreadable", camera=self.name, chunk=name, error=str(exc))
        return out

    def _close(self) -> None:
        ia, h = self._ia, self._h
        self._ia = self._h = None
        _, genapi, gentl = self._mods
        try:
            if ia is not None:
                ia.stop()
                ia.destroy()
                log.info("camera_closed", camera=self.name)
            if h is not None:
                h.reset()
        except (genapi.GenericException, gentl.GenericException) as exc:
            log.warning("camera_close_failed", camera=self.name, error=str(exc))


def _optional(get: Any, errors: tuple[type[BaseException], ...]) -> int | None:
    try:
        return int(get())
    except errors:
        return None


def _info_field(info: Any, name: str, gentl: Any) -> str:
    """A GenTL device-info field as text; "" where the producer does not report it."""
    try:
        value = getattr(info, name)
    except gentl.GenericException:
        return ""
    return "" if value is None else str(value)


def discover(cti_files: Sequence[Path] = ()) -> list[DeviceInfo]:
    """Devices the GenTL producers can see; blocking.

    ``cti_files`` empty: every ``*.cti`` on ``GENICAM_GENTL64_PATH``. Raises
    ``CameraBackendUnavailable`` without harvesters and ``CameraDriverError``
    when there is no producer to ask.
    """
    core, _, gentl = _harvesters()
    ctis = HarvestersSettings(cti_files=tuple(cti_files)).resolved_cti_files()
    if not ctis:
        raise CameraDriverError("no GenTL producer: pass .cti files or set GENICAM_GENTL64_PATH")
    h = core.Harvester()
    try:
        for cti in ctis:
            h.add_file(str(cti))
        h.update()
        found = []
        for d in h.device_info_list:
            f = {
                k: _info_field(d, k, gentl)
                for k in ("vendor", "model", "serial_number", "id_", "user_defined_name")
            }
            found.append(
                DeviceInfo(
                    "harvesters",
                    f["vendor"],
                    f["model"],
                    f["serial_number"],
                    f["id_"],
                    f["user_defined_name"],
                )
            )
        return found
    finally:
        h.reset()
