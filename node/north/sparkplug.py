"""Sparkplug B 3.0 on the wire: topic names, payload encoding, sequence numbers.

Independent of lineside's results: an edge node builds :class:`Payload` values and
encodes them; a host application parses topics with :func:`parse_topic` and payloads with
:func:`decode`. The protobuf schema is ``sparkplug_b.proto`` beside this module.

Sequence numbers, per the specification: every message an edge node publishes in one
MQTT session carries ``seq``, 0 in the NBIRTH and one more in each later message,
wrapping 255 → 0 (:class:`SeqCounter`); NDEATH carries none. ``bdSeq`` (birth/death
sequence) ties an NBIRTH to the NDEATH the broker holds as the session's will: both carry
the same value as the Int64 metric ``bdSeq``, and the next session uses the next value
(:func:`next_bd_seq`).
"""

from __future__ import annotations

import enum
import json
import math
import struct
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from node.north import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
"""The first topic level of every Sparkplug B message."""

BD_SEQ = "bdSeq"
"""The metric in NBIRTH and NDEATH that ties a birth to its death."""

REBIRTH = "Node Control/Rebirth"
"""The NBIRTH metric a host writes true in an NCMD to ask for new births."""

RESEND_FROM = "Node Control/Resend From"
"""lineside's NBIRTH metric a host writes in an NCMD with the ``Result/Record Seq`` of the
first result it lacks: the node sends the results from there again (flagged historical),
as far as ``north.max_backlog`` reaches back."""

RESEND_UNTIL = "Node Control/Resend Until"
"""Written beside :data:`RESEND_FROM`: the last result to send again (0 or absent: up to
the newest sent)."""

SEQ_MODULUS = 256


class DataType(enum.IntEnum):
    """Sparkplug B metric datatypes (the numbers of ``DataType`` in the schema)."""

    UNKNOWN = 0
    INT8 = 1
    INT16 = 2
    INT32 = 3
    INT64 = 4
    UINT8 = 5
    UINT16 = 6
    UINT32 = 7
    UINT64 = 8
    FLOAT = 9
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12
    DATETIME = 13
    TEXT = 14
    UUID = 15
    DATASET = 16
    BYTES = 17
    FILE = 18
    TEMPLATE = 19


class MessageType(enum.StrEnum):
    """The message types of the topic's third level (``STATE`` is the host's own)."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


DEVICE_TYPES = frozenset(
    {MessageType.DBIRTH, MessageType.DDEATH, MessageType.DDATA, MessageType.DCMD}
)
"""Message types about a device: their topic ends in the device id."""

_BITS = {
    DataType.INT8: 8,
    DataType.INT16: 16,
    DataType.INT32: 32,
    DataType.INT64: 64,
    DataType.UINT8: 8,
    DataType.UINT16: 16,
    DataType.UINT32: 32,
    DataType.UINT64: 64,
    DataType.DATETIME: 64,
}
_SIGNED = frozenset({DataType.INT8, DataType.INT16, DataType.INT32, DataType.INT64})
_TEXT = frozenset({DataType.STRING, DataType.TEXT, DataType.UUID})
_BINARY = frozenset({DataType.BYTES, DataType.FILE})

Value = int | float | bool | str | bytes | None
"""A metric's value in Python; None is a null value (``is_null``)."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed Sparkplug topic. ``device_id`` is set for the device message types;
    for ``STATE`` only ``edge_node_id`` is, holding the host application's id."""

    group_id: str
    message_type: MessageType
    edge_node_id: str
    device_id: str | None = None

    def __str__(self) -> str:
        if self.message_type is MessageType.STATE:
            return f"{NAMESPACE}/STATE/{self.edge_node_id}"
        tail = f"/{self.device_id}" if self.device_id is not None else ""
        return f"{NAMESPACE}/{self.group_id}/{self.message_type}/{self.edge_node_id}{tail}"


def topic(
    group_id: str, message_type: MessageType, edge_node_id: str, device_id: str | None = None
) -> str:
    """The topic of one message: ``spBv1.0/<group>/<type>/<edge node>[/<device>]``.

    Raises ``ValueError`` when a device type lacks its device id or a node type has one.
    """
    if (message_type in DEVICE_TYPES) != (device_id is not None):
        raise ValueError(f"{message_type} {'needs' if device_id is None else 'takes no'} device id")
    return str(Topic(group_id, message_type, edge_node_id, device_id))


def parse_topic(text: str) -> Topic:
    """The parts of a Sparkplug B topic. Raises ``ValueError`` for anything else."""
    levels = text.split("/")
    if len(levels) < 3 or levels[0] != NAMESPACE:
        raise ValueError(f"not a Sparkplug B topic: {text!r}")
    if levels[1] == "STATE" and len(levels) == 3 and levels[2]:
        return Topic("", MessageType.STATE, levels[2])
    if len(levels) not in (4, 5) or not all(levels):
        raise ValueError(f"not a Sparkplug B topic: {text!r}")
    try:
        kind = MessageType(levels[2])
    except ValueError:
        raise ValueError(f"unknown Sparkplug message type {levels[2]!r} in {text!r}") from None
    device = levels[4] if len(levels) == 5 else None
    if kind is MessageType.STATE or (kind in DEVICE_TYPES) != (device is not None):
        raise ValueError(f"{kind} does not fit topic {text!r}")
    return Topic(levels[1], kind, levels[3], device)


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric: ``value`` None is sent as null. ``timestamp_ms`` is UTC epoch ms.

    Scalars, text and bytes are supported; a decoded DataSet or Template (which lineside
    never sends) keeps its datatype with value None.
    """

    name: str | None
    datatype: DataType
    value: Value = None
    timestamp_ms: int | None = None
    alias: int | None = None
    is_historical: bool = False
    is_transient: bool = False


@dataclass(frozen=True, slots=True)
class Payload:
    """A whole message body. ``seq`` is None only in NDEATH (and in STATE, not protobuf)."""

    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    timestamp_ms: int | None = None
    uuid: str | None = None
    body: bytes | None = None

    def get(self, name: str) -> Metric | None:
        """The first metric called ``name``, or None."""
        return next((m for m in self.metrics if m.name == name), None)

    def values(self) -> dict[str, Value]:
        """``{name: value}`` of the named metrics (the first of each name)."""
        return {m.name: m.value for m in reversed(self.metrics) if m.name is not None}


class SeqCounter:
    """The ``seq`` of an edge node's messages in one MQTT session: 0, 1, ... 255, 0, ..."""

    def __init__(self) -> None:
        self._next = 0

    def reset(self) -> int:
        """Start again for an NBIRTH; returns its seq (0)."""
        self._next = 0
        return self.next()

    def next(self) -> int:
        """The seq of the next message."""
        seq = self._next
        self._next = (seq + 1) % SEQ_MODULUS
        return seq

    @property
    def last(self) -> int:
        """The seq most recently handed out."""
        return (self._next - 1) % SEQ_MODULUS


def next_bd_seq(bd_seq: int) -> int:
    """The bdSeq of the session after one that used ``bd_seq`` (0..255, wrapping)."""
    return (bd_seq + 1) % SEQ_MODULUS


def seq_gap(previous: int, current: int) -> int:
    """Messages missing between two consecutive ``seq`` values (0 when none is)."""
    return (current - previous - 1) % SEQ_MODULUS


def _check_int(m: Metric, value: int) -> int:
    bits = _BITS[m.datatype]
    lo, hi = (
        (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if m.datatype in _SIGNED else (0, 2**bits - 1)
    )
    if not lo <= value <= hi:
        raise ValueError(f"metric {m.name!r}: {value} is out of range for {m.datatype.name}")
    return value & (2**bits - 1) if value < 0 else value


def _fill(out: Any, m: Metric) -> None:
    """Write ``m`` into the protobuf metric ``out``. Raises ``ValueError`` for a value that
    does not fit its datatype."""
    if m.name is not None:
        out.name = m.name
    if m.alias is not None:
        out.alias = m.alias
    if m.timestamp_ms is not None:
        out.timestamp = m.timestamp_ms
    out.datatype = int(m.datatype)
    if m.is_historical:
        out.is_historical = True
    if m.is_transient:
        out.is_transient = True
    v = m.value
    if v is None:
        out.is_null = True
        return
    dt = m.datatype
    if dt in _BITS and isinstance(v, int) and not isinstance(v, bool):
        raw = _check_int(m, v)
        if _BITS[dt] == 64:
            out.long_value = raw
        else:
            out.int_value = raw
    elif dt is DataType.FLOAT and isinstance(v, int | float) and not isinstance(v, bool):
        if math.isfinite(v) and abs(v) > struct.unpack("f", b"\xff\xff\x7f\x7f")[0]:
            raise ValueError(f"metric {m.name!r}: {v} is out of range for Float")
        out.float_value = float(v)
    elif dt is DataType.DOUBLE and isinstance(v, int | float) and not isinstance(v, bool):
        out.double_value = float(v)
    elif dt is DataType.BOOLEAN and isinstance(v, bool):
        out.boolean_value = v
    elif dt in _TEXT and isinstance(v, str):
        out.string_value = v
    elif dt in _BINARY and isinstance(v, bytes):
        out.bytes_value = v
    else:
        raise ValueError(f"metric {m.name!r}: a {type(v).__name__} cannot be sent as {dt.name}")


def encode(payload: Payload) -> bytes:
    """The protobuf bytes of ``payload``. Raises ``ValueError`` for a metric whose value
    does not fit its datatype."""
    msg = pb.Payload()
    if payload.timestamp_ms is not None:
        msg.timestamp = payload.timestamp_ms
    if payload.seq is not None:
        if not 0 <= payload.seq < SEQ_MODULUS:
            raise ValueError(f"seq {payload.seq} is outside 0..255")
        msg.seq = payload.seq
    if payload.uuid is not None:
        msg.uuid = payload.uuid
    if payload.body is not None:
        msg.body = payload.body
    for m in payload.metrics:
        _fill(msg.metrics.add(), m)
    return bytes(msg.SerializeToString())


def _value(raw: Any, dt: DataType) -> Value:
    if raw.is_null:
        return None
    kind = raw.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("int_value", "long_value"):
        v = int(getattr(raw, kind))
        bits = _BITS.get(dt, 64 if kind == "long_value" else 32)
        if dt in _SIGNED and v >= 2 ** (bits - 1):
            v -= 2**bits
        return v
    if kind in ("float_value", "double_value"):
        return float(getattr(raw, kind))
    if kind == "boolean_value":
        return bool(raw.boolean_value)
    if kind == "string_value":
        return str(raw.string_value)
    if kind == "bytes_value":
        return bytes(raw.bytes_value)
    return None  # DataSet, Template, extensions: not read here


def _datatype(number: int) -> DataType:
    try:
        return DataType(number)
    except ValueError:  # the array and property types: kept as unknown
        return DataType.UNKNOWN


def decode(data: bytes) -> Payload:
    """The :class:`Payload` in ``data``. Raises ``ValueError`` when it is not a valid
    Sparkplug B protobuf payload."""
    msg = pb.Payload()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a Sparkplug B payload: {exc}") from exc
    metrics = []
    for raw in msg.metrics:
        dt = _datatype(raw.datatype)
        metrics.append(
            Metric(
                name=raw.name if raw.HasField("name") else None,
                datatype=dt,
                value=_value(raw, dt),
                timestamp_ms=raw.timestamp if raw.HasField("timestamp") else None,
                alias=raw.alias if raw.HasField("alias") else None,
                is_historical=raw.is_historical,
                is_transient=raw.is_transient,
            )
        )
    return Payload(
        metrics=tuple(metrics),
        seq=msg.seq if msg.HasField("seq") else None,
        timestamp_ms=msg.timestamp if msg.HasField("timestamp") else None,
        uuid=msg.uuid if msg.HasField("uuid") else None,
        body=bytes(msg.body) if msg.HasField("body") else None,
    )


def state_topic(host_id: str) -> str:
    """Where a host application says whether it is online: ``spBv1.0/STATE/<host id>``."""
    return f"{NAMESPACE}/STATE/{host_id}"


def state_body(online: bool, timestamp_ms: int) -> bytes:
    """A Sparkplug 3.0 host STATE message body: JSON ``{"online": …, "timestamp": ms}``."""
    return json.dumps({"online": online, "timestamp": timestamp_ms}).encode()


def parse_state(body: bytes) -> tuple[bool, int]:
    """(online, timestamp ms) of a host STATE message body: the 3.0 JSON, or the older
    plain ``ONLINE``/``OFFLINE`` (timestamp 0). Raises ``ValueError`` for anything else."""
    text = body.decode("utf-8", errors="replace").strip()
    if text in ("ONLINE", "OFFLINE"):
        return text == "ONLINE", 0
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a STATE message: {text[:60]!r}") from exc
    online = data.get("online") if isinstance(data, dict) else None
    stamp = data.get("timestamp", 0) if isinstance(data, dict) else None
    if not isinstance(online, bool) or not isinstance(stamp, int) or isinstance(stamp, bool):
        raise ValueError(f"not a STATE message: {text[:60]!r}")
    return online, stamp
