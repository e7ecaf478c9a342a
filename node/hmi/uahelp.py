"""Typed shorthands for asyncua's constructors (its stubs want its own int/str subclasses),
and a prompt stop for an asyncua server."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

from asyncua import ua
from asyncua.server.server import Server
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

__all__ = ["ObjectIds", "StatusCodes", "dv", "nid", "status", "stop_server"]


def nid(identifier: int | str, ns: int = 0) -> ua.NodeId:
    """A numeric or string NodeId in namespace ``ns``."""
    ident: Any = ua.String(identifier) if isinstance(identifier, str) else ua.Int32(identifier)
    return ua.NodeId(ident, ua.Int16(ns))


def status(code: int) -> ua.StatusCode:
    """A StatusCode from a ``StatusCodes`` value."""
    return ua.StatusCode(ua.UInt32(code))


def dv(variant: ua.Variant, ts: datetime | None = None) -> ua.DataValue:
    """A DataValue with source and server timestamps ``ts`` (None: the server's)."""
    t = cast(ua.DateTime | None, ts)
    return ua.DataValue(variant, SourceTimestamp=t, ServerTimestamp=t)


async def stop_server(server: Server) -> None:
    """Stop ``server`` without waiting out its clock.

    ``Server.stop`` ends the task that writes ``ServerStatus.CurrentTime`` once a second
    by raising a flag and awaiting the task, so every stop waited out the rest of that
    task's one-second sleep (up to 1 s added to each node stop and PLC server restart).
    The clock is cancelled here first; the stop then takes what closing its sessions
    and sockets takes.
    """
    iserver = server.iserver
    clock, iserver.time_task = iserver.time_task, None
    if clock is not None:
        clock.cancel()
        await asyncio.wait([clock])  # its own cancellation is not ours to raise
    await server.stop()
