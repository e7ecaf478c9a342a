"""Typed shorthands for asyncua's constructors (its stubs want its own int/str subclasses)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from asyncua import ua
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes

__all__ = ["ObjectIds", "StatusCodes", "dv", "nid", "status"]


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
