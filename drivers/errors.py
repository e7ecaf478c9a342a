"""Errors raised by the hardware drivers.

``drivers`` imports nothing of ours, so it cannot raise ``node.errors`` types;
the node catches these at the driver boundary and raises its own
(``CameraDriverError`` → ``node.errors.CameraError``). Vendor exceptions
(``GLib.Error``, GenICam exceptions) are wrapped into these with ``raise ... from``.
"""

from __future__ import annotations


class DriverError(Exception):
    """Base for every error a driver raises on purpose."""


class CameraDriverError(DriverError):
    """A camera could not be found, opened, configured or read."""


class CameraBackendUnavailable(CameraDriverError):
    """The vendor library a camera driver needs (PyGObject/Aravis, harvesters) is not installed."""


class FeatureError(CameraDriverError):
    """One or more GenICam features could not be applied.

    ``problems`` lists one line per feature, each starting with the feature name.
    """

    def __init__(self, device: str, problems: list[str]) -> None:
        self.device = device
        self.problems = list(problems)
        super().__init__(
            f"{device}: cannot apply camera features:\n" + "\n".join(f"  {p}" for p in problems)
        )


class PixelFormatError(CameraDriverError):
    """A payload cannot be decoded: unknown pixel format, bad size, or too few bytes."""
