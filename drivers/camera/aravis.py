"""GigE Vision cameras through Aravis 0.8 (PyGObject), triggered per part.

One acquisition thread owns every Aravis call. It opens the camera (by IP
address, Aravis device id or serial), applies the configured features,
arms the trigger (``TriggerSelector=FrameStart``, ``TriggerMode=On``,
``TriggerSource=Software`` or the configured line), creates the stream with
its buffer pool and packet-resend settings, and starts acquisition.

Software trigger: triggers are served one at a time. The thread sends
``TriggerSoftware`` for the oldest request and waits for a buffer until that
part's deadline; a buffer whose first packet reached the host before the
trigger was sent is stale (a late frame of an earlier, expired trigger) and is
requeued, never attached. A request that waited longer than
``max_trigger_delay_ms`` for the camera is not sent at all: the part has moved
on, so it gets a MISSING frame rather than a picture of the wrong place.

Line trigger: the camera is triggered by wire; ``trigger()`` only announces
the part, and each arriving frame goes to the oldest announced part that was
announced no later than ``line_window_ms`` after the frame arrived.

Buffer status maps to frame status: SUCCESS → COMPLETE; SIZE_MISMATCH → ERROR;
any other (missing packets, frame timeout, aborted) → INCOMPLETE with the
Aravis status in ``detail``. No frame by the deadline → MISSING.

Losing the control channel (Aravis' heartbeat emits ``control-lost``, or a
command times out) drops the connection; parts triggered meanwhile get
MISSING frames at once, and the thread reopens the camera with exponential
backoff (``reconnect_backoff_s`` doubling up to ``reconnect_backoff_max_s``),
re-applying features and trigger set-up. Aravis bounds each control command
(GVCP) itself: 5 tries of 500 ms, so about 2.5 s, not configurable in 0.8.26.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import structlog

from drivers.camera.acquisition import AcquisitionThread
from drivers.camera.base import DeviceInfo, Frame, FrameStatus
from drivers.camera.features import FeatureInfo, FeatureKind, FeatureValue, apply_features
from drivers.camera.ledger import NO_PIXELS, CameraStats, PendingTrigger
from drivers.camera.pixelformats import decode
from drivers.camera.settings import AravisSettings
from drivers.errors import CameraBackendUnavailable, CameraDriverError, DriverError

log = structlog.get_logger(__name__)

_POLL_S = 0.05  # how often an idle acquisition thread looks at stop and connection state


def _gi() -> tuple[Any, Any]:
    """Import Aravis and GLib through PyGObject. Raises ``CameraBackendUnavailable``."""
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis, GLib
    except (ImportError, ValueError) as exc:
        raise CameraBackendUnavailable(
            "the Aravis driver needs PyGObject (pip: pygobject<3.51) and the Aravis 0.8 "
            f"typelib (Debian: gir1.2-aravis-0.8): {exc}"
        ) from exc
    return Aravis, GLib


class _AravisNodes:
    """``NodeMapAccess`` over an ``ArvDevice``."""

    def __init__(self, aravis: Any, device: Any) -> None:
        self._arv = aravis
        self._dev = device

    def describe(self, name: str) -> FeatureInfo | None:
        arv, dev = self._arv, self._dev
        node = dev.get_feature(name)
        if node is None or not node.is_implemented() or not node.is_available():
            return None
        mode = node.get_actual_access_mode()
        readable = mode in (arv.GcAccessMode.RO, arv.GcAccessMode.RW)
        writable = mode in (arv.GcAccessMode.WO, arv.GcAccessMode.RW)
        if isinstance(node, arv.GcEnumeration):
            entries = tuple(dev.dup_available_enumeration_feature_values_as_strings(name) or ())
            return FeatureInfo(name, FeatureKind.ENUMERATION, readable, writable, entries=entries)
        if isinstance(node, arv.GcCommand):
            return FeatureInfo(name, FeatureKind.COMMAND, False, writable)
        if isinstance(node, arv.GcBoolean):
            return FeatureInfo(name, FeatureKind.BOOLEAN, readable, writable)
        if isinstance(node, arv.GcInteger):
            lo, hi = dev.get_integer_feature_bounds(name)
            inc = dev.get_integer_feature_increment(name)
            return FeatureInfo(name, FeatureKind.INTEGER, readable, writable, lo, hi, int(inc))
        if isinstance(node, arv.GcFloat):
            lo, hi = dev.get_float_feature_bounds(name)
            return FeatureInfo(name, FeatureKind.FLOAT, readable, writable, lo, hi)
        if isinstance(node, arv.GcString):
            return FeatureInfo(name, FeatureKind.STRING, readable, writable)
        return FeatureInfo(name, FeatureKind.OTHER, readable, writable)

    def write(self, info: FeatureInfo, value: FeatureValue) -> None:
        dev, name = self._dev, info.name
        if info.kind is FeatureKind.INTEGER:
            dev.set_integer_feature_value(name, int(value))
        elif info.kind is FeatureKind.FLOAT:
            dev.set_float_feature_value(name, float(value))
        elif info.kind is FeatureKind.BOOLEAN:
            dev.set_boolean_feature_value(name, bool(value))
        else:
            dev.set_string_feature_value(name, str(value))


class AravisCamera:
    """A GigE Vision camera driven through Aravis; an async context manager.

    Satisfies the ``Camera`` protocol. ``stats()`` reports counters and the
    connection state. Entering raises ``CameraBackendUnavailable`` without
    PyGObject/Aravis, ``FeatureError`` for features the device lacks or
    refuses, and ``CameraDriverError`` when the camera cannot be opened within
    ``open_timeout_s``.
    """

    def __init__(self, settings: AravisSettings) -> None:
        self.settings = settings
        self._s = settings
        self.name = settings.address or settings.device_id or f"serial {settings.serial}"
        self._acq = AcquisitionThread(
            self.name,
            f"aravis-{self.name}",
            timeout_ms=settings.timeout_ms,
            queue_size=settings.queue_size,
            open_timeout_s=settings.open_timeout_s,
            max_trigger_delay_ms=settings.max_trigger_delay_ms,
        )
        self._lost = threading.Event()
        self._arv: Any = None
        self._glib: Any = None
        self._cam: Any = None
        self._stream: Any = None
        self._geometry = (0, 0, 0)  # width_px, height_px, pixel format code of the open camera
        self._generation = 0
        self._reconnects = 0
        self._lost_at = 0.0
        self._next_attempt = 0.0
        self._backoff_s = settings.reconnect_backoff_s

    # -- Camera protocol --------------------------------------------------------
    async def __aenter__(self) -> AravisCamera:
        self._arv, self._glib = _gi()
        await self._acq.open(self._connect, self._serve, self._close)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._acq.close()

    async def trigger(self, part_id: int, encoder_count: int) -> None:
        """Request one frame for ``part_id``; never blocks on the device.

        The frame, or a MISSING frame, arrives on ``frames()`` in trigger order.
        Raises ``CameraDriverError`` if the camera is not open.
        """
        self.trigger_now(part_id, encoder_count)

    def trigger_now(self, part_id: int, encoder_count: int) -> None:
        """``trigger`` from any thread: the ledger is locked, the request a queue put."""
        p = self._acq.add(part_id, encoder_count)
        if self._s.trigger == "software":
            self._acq.requests.put(p)
        elif not self.connected:
            self._acq.ledger.resolve_missing(p, "camera disconnected; reconnecting")

    def frames(self) -> AsyncIterator[Frame]:
        """Frames in trigger order, each tied to its ``part_id``."""
        return self._acq.frames()

    @property
    def dropped(self) -> int:
        """Frames dropped because the hand-off queue was full."""
        return self._acq.dropped

    @property
    def connected(self) -> bool:
        """True while the control channel is up."""
        return self._cam is not None and not self._lost.is_set()

    def stats(self) -> CameraStats:
        """Counters since open, with reconnects and the connection state."""
        return self._acq.stats(reconnects=self._reconnects, connected=self.connected)

    # -- acquisition thread ---------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._acq.stop.is_set():
                if self._lost.is_set() and self._cam is not None:
                    self._drop("control channel lost (heartbeat)")
                if self._cam is None:
                    self._while_disconnected()
                elif self._s.trigger == "software":
                    self._serve_next_request()
                else:
                    self._serve_line_frames()
        except Exception as exc:  # the thread's one supervisor: report, fail parts, stop
            log.exception("camera_thread_failed", camera=self.name, error=str(exc))
            self._cam = None
        finally:
            self._close()

    def _connect(self) -> None:
        arv, glib = self._arv, self._glib
        s = self._s
        try:
            cam = arv.Camera.new(self._device_name())
            dev = cam.get_device()
            self._generation += 1
            dev.connect("control-lost", self._on_control_lost, self._generation)
            nodes = _AravisNodes(arv, dev)
            apply_features(nodes, s.features, self.name, (glib.Error,))
            trig: dict[str, FeatureValue] = {}
            if dev.get_feature("TriggerSelector") is not None:
                trig["TriggerSelector"] = "FrameStart"
            trig["TriggerMode"] = "On"
            trig["TriggerSource"] = "Software" if s.trigger == "software" else s.trigger_line
            apply_features(nodes, trig, self.name, (glib.Error,))
            if s.trigger == "software" and not cam.is_software_trigger_supported():
                raise CameraDriverError(
                    f"{self.name}: TriggerSoftware: the device has no such feature"
                )
            cam.set_acquisition_mode(arv.AcquisitionMode.CONTINUOUS)
            if s.packet_size is not None:
                cam.gv_set_packet_size(s.packet_size)
            stream = cam.create_stream(None, None)
            resend = (
                arv.GvStreamPacketResend.ALWAYS
                if s.packet_resend
                else arv.GvStreamPacketResend.NEVER
            )
            stream.set_property("packet-resend", resend)
            stream.set_property("packet-timeout", int(s.packet_timeout_ms * 1000))
            stream.set_property("initial-packet-timeout", int(s.initial_packet_timeout_ms * 1000))
            stream.set_property("frame-retention", int(s.frame_retention_ms * 1000))
            payload = cam.get_payload()
            for _ in range(s.buffer_count):
                stream.push_buffer(arv.Buffer.new_allocate(payload))
            _x, _y, width, height = cam.get_region()
            self._geometry = (width, height, int(cam.get_pixel_format()))
            cam.start_acquisition()
        except glib.Error as exc:
            raise CameraDriverError(f"{self.name}: {exc.message}") from exc
        self._cam, self._stream = cam, stream
        self._lost.clear()
        log.info(
            "camera_opened",
            camera=self.name,
            backend="aravis",
            model=cam.get_model_name(),
            serial=cam.get_device_serial_number(),
            trigger=s.trigger,
            width_px=width,
            height_px=height,
            pixel_format=cam.get_pixel_format_as_string(),
        )

    def _device_name(self) -> str:
        s = self._s
        if s.address is not None:
            return s.address
        if s.device_id is not None:
            return s.device_id
        arv = self._arv
        arv.update_device_list()
        found = [arv.get_device_serial_nbr(i) for i in range(arv.get_n_devices())]
        if s.serial not in found:
            raise CameraDriverError(
                f"no GigE Vision camera with serial {s.serial!r}; found {found or 'none'}"
            )
        return str(arv.get_device_id(found.index(s.serial)))

    def _on_control_lost(self, _device: Any, generation: int) -> None:
        # runs on Aravis' heartbeat thread: only flag it; the acquisition thread acts
        if generation == self._generation:
            self._lost.set()

    def _drop(self, reason: str) -> None:
        log.error("camera_connection_lost", camera=self.name, reason=reason)
        self._cam = self._stream = None  # no goodbye commands: the device is not answering
        self._lost_at = self._next_attempt = time.monotonic()
        self._backoff_s = self._s.reconnect_backoff_s
        self._acq.ledger.fail_all(f"camera connection lost: {reason}")

    def _while_disconnected(self) -> None:
        wait = self._next_attempt - time.monotonic()
        if wait > 0:
            try:
                p = self._acq.requests.get(timeout=min(wait, _POLL_S))
            except queue.Empty:
                return
            if p is not None:
                self._acq.ledger.resolve_missing(p, "camera disconnected; reconnecting")
            return
        try:
            self._connect()
        except DriverError as exc:
            self._next_attempt = time.monotonic() + self._backoff_s
            log.warning(
                "camera_reconnect_failed",
                camera=self.name,
                error=str(exc),
                retry_in_s=self._backoff_s,
            )
            self._backoff_s = min(self._backoff_s * 2, self._s.reconnect_backoff_max_s)
            return
        self._reconnects += 1
        log.info(
            "camera_reconnected",
            camera=self.name,
            outage_s=round(time.monotonic() - self._lost_at, 3),
            reconnects=self._reconnects,
        )

    def _serve_next_request(self) -> None:
        p = self._acq.next_request(_POLL_S)
        if p is None:
            return
        self._requeue_waiting_buffers()
        sent_us = time.time_ns() // 1000  # Aravis stamps buffers with the host's real-time clock
        try:
            self._cam.software_trigger()
        except self._glib.Error as exc:
            self._acq.ledger.resolve_missing(p, f"software trigger failed: {exc.message}")
            self._drop(f"software trigger failed: {exc.message}")
            return
        while not p.done:
            left_us = (p.deadline_ns - time.monotonic_ns()) // 1000
            buf = self._stream.timeout_pop_buffer(left_us) if left_us > 0 else None
            if buf is None:
                self._acq.ledger.resolve_missing(
                    p, f"no frame within timeout_ms={self._s.timeout_ms:g}"
                )
                return
            if buf.get_system_timestamp() // 1000 < sent_us:
                self._acq.ledger.count_stale()
                log.warning(
                    "frame_stale_discarded",
                    camera=self.name,
                    part_id=p.part_id,
                    device_frame_id=buf.get_frame_id(),
                )
            else:
                self._deliver(p, buf)
            self._stream.push_buffer(buf)

    def _requeue_waiting_buffers(self) -> None:
        while (buf := self._stream.try_pop_buffer()) is not None:
            self._acq.ledger.count_stale()
            log.warning(
                "frame_stale_discarded", camera=self.name, device_frame_id=buf.get_frame_id()
            )
            self._stream.push_buffer(buf)

    def _serve_line_frames(self) -> None:
        buf = self._stream.timeout_pop_buffer(int(_POLL_S * 1e6))
        if buf is None:
            return
        p = self._acq.ledger.oldest_pending(time.monotonic_ns(), int(self._s.line_window_ms * 1e6))
        if p is None:
            self._acq.ledger.count_unmatched()
            log.warning("frame_unmatched", camera=self.name, device_frame_id=buf.get_frame_id())
        else:
            self._deliver(p, buf)
        self._stream.push_buffer(buf)

    def _deliver(self, p: PendingTrigger, buf: Any) -> None:
        arv = self._arv
        st = buf.get_status()
        width, height, fmt = self._geometry
        if st == arv.BufferStatus.SUCCESS:
            status, detail = FrameStatus.COMPLETE, ""
            width, height = buf.get_image_width(), buf.get_image_height()
            fmt = buf.get_image_pixel_format() or fmt
        elif st == arv.BufferStatus.SIZE_MISMATCH:
            status, detail = FrameStatus.ERROR, "buffer too small for the payload (size mismatch)"
        else:
            status, detail = FrameStatus.INCOMPLETE, f"aravis buffer status {st.value_nick}"
        pixels, out_fmt = NO_PIXELS, ""
        if status is not FrameStatus.ERROR:
            try:
                pixels, out_fmt = decode(buf.get_data(), fmt, width, height)
            except DriverError as exc:  # a damaged buffer may carry no data at all
                if status is FrameStatus.COMPLETE:
                    status, detail = FrameStatus.ERROR, str(exc)
                else:
                    detail = f"{detail}; no usable pixels: {exc}"
        chunks = self._read_chunks(buf) if self._s.chunk_features else None
        self._acq.ledger.resolve(
            p,
            status,
            pixels,
            out_fmt,
            detail,
            device_frame_id=buf.get_frame_id(),
            device_timestamp_ns=buf.get_timestamp() or None,
            chunks=chunks,
        )
        if status is not FrameStatus.COMPLETE:
            log.warning("frame_" + status.value, camera=self.name, part_id=p.part_id, detail=detail)

    def _read_chunks(self, buf: Any) -> dict[str, bool | int | float | str]:
        out: dict[str, bool | int | float | str] = {}
        if not buf.has_chunks():
            return out
        parser = self._cam.create_chunk_parser()
        for name in self._s.chunk_features:
            try:
                out[name] = parser.get_integer_value(buf, name)
            except self._glib.Error:
                try:
                    out[name] = parser.get_float_value(buf, name)
                except self._glib.Error as exc:
                    log.debug("chunk_unreadable", camera=self.name, chunk=name, error=exc.message)
        return out

    def _close(self) -> None:
        cam = self._cam
        self._cam = self._stream = None
        if cam is None:
            return
        try:
            cam.stop_acquisition()
        except self._glib.Error as exc:
            log.warning("camera_stop_failed", camera=self.name, error=exc.message)
        log.info("camera_closed", camera=self.name)


def discover(addresses: Sequence[str] | None = None) -> list[DeviceInfo]:
    """GigE Vision cameras Aravis can reach; blocking (seconds).

    With ``addresses``, each IPv4 address is asked directly (unicast, no
    broadcast) and unreachable ones are skipped; without, Aravis broadcasts a
    discovery on every network interface. Raises ``CameraBackendUnavailable``
    without PyGObject/Aravis.
    """
    arv, glib = _gi()
    found: list[DeviceInfo] = []
    if addresses is None:
        arv.update_device_list()
        for i in range(arv.get_n_devices()):
            if arv.get_device_protocol(i) != "GigEVision":
                continue
            found.append(
                DeviceInfo(
                    "aravis",
                    arv.get_device_vendor(i) or "",
                    arv.get_device_model(i) or "",
                    arv.get_device_serial_nbr(i) or "",
                    arv.get_device_address(i) or "",
                )
            )
        return found
    for address in addresses:
        try:
            cam = arv.Camera.new(address)
        except glib.Error as exc:
            log.info("camera_not_found", backend="aravis", address=address, error=exc.message)
            continue
        user = ""
        dev = cam.get_device()
        if dev.get_feature("DeviceUserID") is not None:
            user = dev.get_string_feature_value("DeviceUserID") or ""
        found.append(
            DeviceInfo(
                "aravis",
                cam.get_vendor_name() or "",
                cam.get_model_name() or "",
                cam.get_device_serial_number() or "",
                address,
                user,
            )
        )
    return found
