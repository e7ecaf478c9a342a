"""What ``lineside cameras`` and ``lineside grab`` need from the drivers.

``list_cameras`` asks every backend whose library is installed; ``write_png``
saves a grabbed frame (the node opens the camera for ``grab`` exactly as it
does when it runs).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import structlog

from drivers.camera.base import DeviceInfo, Frame
from drivers.errors import CameraDriverError

if TYPE_CHECKING:  # the driver modules import nothing heavy at import time, but stay lazy
    pass

log = structlog.get_logger(__name__)

Driver = Literal["aravis", "harvesters"]


def viky_cti() -> Path | None:
    """The ``viky.cti`` test GenTL producer inside the installed ``genicam`` wheel, if any."""
    spec = importlib.util.find_spec("genicam")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "viky.cti"
    return path if path.is_file() else None


def list_cameras(
    *, aravis_addresses: Sequence[str] | None = None, cti_files: Sequence[Path] = ()
) -> list[DeviceInfo]:
    """Every camera reachable through Aravis and through harvesters; blocking.

    ``aravis_addresses``: ask only these IPv4 addresses (unicast); None lets
    Aravis broadcast a discovery on every interface. ``cti_files``: GenTL
    producers for harvesters (empty: ``GENICAM_GENTL64_PATH``). A backend whose
    library is missing, or that has no producer to ask, is skipped with a
    ``camera_backend_skipped`` log line giving the reason.
    """
    found: list[DeviceInfo] = []
    try:
        from drivers.camera import aravis

        found += aravis.discover(aravis_addresses)
    except CameraDriverError as exc:
        log.warning("camera_backend_skipped", backend="aravis", reason=str(exc))
    try:
        from drivers.camera import harvesters

        found += harvesters.discover(cti_files)
    except CameraDriverError as exc:
        log.warning("camera_backend_skipped", backend="harvesters", reason=str(exc))
    return found


def write_png(frame: Frame, path: Path) -> None:
    """Write ``frame.pixels`` as PNG (uint16 mono keeps its 16 bits). Raises ``OSError``."""
    from PIL import Image

    px = np.ascontiguousarray(frame.pixels)
    image = Image.fromarray(px)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
