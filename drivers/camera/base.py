"""The Camera contract and the Frame that crosses it."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


class FrameStatus(enum.Enum):
    """What the acquisition layer knows about a frame's integrity."""

    COMPLETE = "complete"
    INCOMPLETE = "incomplete"  # packets lost; pixels may be partly garbage
    MISSING = "missing"  # the trigger produced no frame at all
    ERROR = "error"  # the driver failed while acquiring


@dataclass(frozen=True, slots=True)
class Frame:
    """One acquired image, tied to the part whose trigger produced it.

    ``t_ns`` is ``time.monotonic_ns()`` when the frame reached the driver;
    ``pixels`` is ``(H, W)`` or ``(H, W, 3)``; ``pixel_format`` is the GenICam
    name of the format the pixels are now in (after conversion). A MISSING
    frame carries an empty ``(0, 0)`` array.

    The optional tail is filled by GenICam drivers when the device provides it:
    ``device_frame_id`` (GigE Vision block id / GenTL frame id),
    ``device_timestamp_ns`` (the device's own clock, in ns; not comparable
    with ``t_ns`` unless the camera is PTP-synchronized) and ``chunks``
    (chunk feature name → value).
    """

    part_id: int
    encoder_count: int
    t_ns: int
    pixels: npt.NDArray[np.uint8] | npt.NDArray[np.uint16]
    pixel_format: str
    status: FrameStatus
    detail: str = ""
    device_frame_id: int | None = None
    device_timestamp_ns: int | None = None
    chunks: Mapping[str, bool | int | float | str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """One camera a backend can reach, as listed by ``lineside cameras``.

    ``backend`` is the driver name (``"aravis"``, ``"harvesters"``);
    ``address`` is what that backend opens it by (IPv4 for GigE Vision, the
    GenTL device id for harvesters); fields the device does not report are "".
    """

    backend: str
    vendor: str
    model: str
    serial: str
    address: str
    user_name: str = ""


class Camera(Protocol):
    """A triggerable camera.

    ``trigger`` asks for one frame for ``part_id``; the frame (or an explicit
    MISSING frame) later appears on ``frames()`` in trigger order.
    Raises ``CameraError`` (node/errors) when the device cannot be reached.
    """

    async def trigger(self, part_id: int, encoder_count: int) -> None:
        """Request one frame for ``part_id`` seen at ``encoder_count``."""
        ...

    def frames(self) -> AsyncIterator[Frame]:
        """Frames in trigger order, each tied to its ``part_id``."""
        ...

    @property
    def dropped(self) -> int:
        """Frames dropped by the bounded hand-off queue since open."""
        ...


@runtime_checkable
class TimedTriggerCamera(Camera, Protocol):
    """A camera whose trigger may be sent from any thread: the node then times it on a
    timing thread of its own, to the fraction of a millisecond, instead of the event loop."""

    def trigger_now(self, part_id: int, encoder_count: int) -> None:
        """``trigger``, callable from any thread; returns at once, never blocks."""
        ...
