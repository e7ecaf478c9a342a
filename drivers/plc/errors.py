"""Errors raised by the PLC drivers (Modbus TCP, OPC UA).

``drivers`` imports nothing of ours, so these are plain exceptions; the node
maps them to ``node.errors.PlcError`` at the driver boundary. Vendor exceptions
(pymodbus ``ModbusException``, asyncua ``UaError``, ``OSError``) are wrapped
into these with ``raise ... from``.
"""

from __future__ import annotations


class PlcDriverError(Exception):
    """Base for every error a PLC driver raises on purpose."""


class PlcLinkError(PlcDriverError):
    """The link to the PLC is down, or a request did not complete within its timeout."""


class PlcConnectError(PlcLinkError):
    """A connection attempt failed; ``reason`` is the short cause the link records as its
    last error."""

    def __init__(self, message: str, reason: str) -> None:
        self.reason = reason
        super().__init__(message)


class PlcHandshakeTimeout(PlcLinkError):
    """The PLC did not acknowledge a result (ResultValid/Ack) within the handshake timeout."""


class PlcWriteRefused(PlcDriverError):
    """The PLC answered a write with an error (Modbus exception response, OPC UA bad status).

    ``signal`` names the I/O map entry (or group) that was written.
    """

    def __init__(self, signal: str, detail: str) -> None:
        self.signal = signal
        self.detail = detail
        super().__init__(f"PLC refused write of {signal}: {detail}")


class PlcReadbackMismatch(PlcWriteRefused):
    """Write read-back verification found other values than were written."""


class PlcConfigError(PlcDriverError):
    """The I/O map does not match the PLC (unknown node, wrong data type, bad address)."""
