"""The Sparkplug B codec: topics, payloads and sequence numbers, as the specification says."""

from __future__ import annotations

import pytest

from node.north.sparkplug import (
    DataType,
    MessageType,
    Metric,
    Payload,
    SeqCounter,
    Topic,
    decode,
    encode,
    next_bd_seq,
    parse_state,
    parse_topic,
    seq_gap,
    state_body,
    state_topic,
    topic,
)

EVERY_KIND = [
    (DataType.INT8, -128),
    (DataType.INT8, 127),
    (DataType.INT16, -32768),
    (DataType.INT32, -(2**31)),
    (DataType.INT32, 2**31 - 1),
    (DataType.INT64, -(2**63)),
    (DataType.INT64, 2**63 - 1),
    (DataType.UINT8, 255),
    (DataType.UINT16, 65535),
    (DataType.UINT32, 2**32 - 1),
    (DataType.UINT64, 2**64 - 1),
    (DataType.FLOAT, 0.5),
    (DataType.DOUBLE, 0.1),
    (DataType.BOOLEAN, True),
    (DataType.BOOLEAN, False),
    (DataType.STRING, "Kratzer am Rand ✓"),
    (DataType.TEXT, "外周にクラック"),
    (DataType.UUID, "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
    (DataType.DATETIME, 1_765_000_000_123),
    (DataType.BYTES, b"\x00\xff"),
    (DataType.FILE, b"PNG"),
    (DataType.STRING, None),
    (DataType.DOUBLE, None),
]


@pytest.mark.parametrize(("datatype", "value"), EVERY_KIND)
def test_every_datatype_round_trips(datatype: DataType, value: object) -> None:
    """A metric of each datatype lineside uses decodes to the value, type and flags it had."""
    metric = Metric("Result/X", datatype, value, timestamp_ms=7, is_historical=True)  # type: ignore[arg-type]
    back = decode(encode(Payload((metric,), seq=5, timestamp_ms=9)))
    assert back == Payload((metric,), seq=5, timestamp_ms=9)
    assert type(back.metrics[0].value) is type(value)


@pytest.mark.parametrize(
    ("datatype", "value"),
    [
        (DataType.INT8, 128),
        (DataType.UINT8, -1),
        (DataType.UINT64, 2**64),
        (DataType.BOOLEAN, 1),
        (DataType.INT32, True),
        (DataType.STRING, b"x"),
        (DataType.DOUBLE, "1.0"),
        (DataType.DATASET, 1),
    ],
)
def test_a_value_that_does_not_fit_its_type_is_refused(datatype: DataType, value: object) -> None:
    """Encoding refuses, by the metric's name, a value its datatype cannot carry."""
    with pytest.raises(ValueError, match="Result/X"):
        encode(Payload((Metric("Result/X", datatype, value),), seq=0))  # type: ignore[arg-type]


def test_ndeath_has_no_seq_and_bytes_that_are_no_payload_are_refused() -> None:
    """A payload without seq keeps none; garbage is a ValueError, not a crash."""
    death = Payload((Metric("bdSeq", DataType.INT64, 3),), seq=None, timestamp_ms=1)
    assert decode(encode(death)).seq is None
    assert decode(encode(death)).get("bdSeq") == Metric("bdSeq", DataType.INT64, 3)
    with pytest.raises(ValueError, match="not a Sparkplug B payload"):
        decode(b"\x0a\xff\xff")


def test_topics_are_built_and_parsed() -> None:
    """Node and device topics follow spBv1.0/<group>/<type>/<edge node>[/<device>]."""
    t = topic("plant-a", MessageType.DDATA, "sim-line station 1", "line")
    assert t == "spBv1.0/plant-a/DDATA/sim-line station 1/line"
    assert parse_topic(t) == Topic("plant-a", MessageType.DDATA, "sim-line station 1", "line")
    n = topic("plant-a", MessageType.NBIRTH, "edge")
    assert n == "spBv1.0/plant-a/NBIRTH/edge" and parse_topic(n).device_id is None
    assert parse_topic("spBv1.0/STATE/scada") == Topic("", MessageType.STATE, "scada")
    assert str(parse_topic("spBv1.0/STATE/scada")) == "spBv1.0/STATE/scada"


@pytest.mark.parametrize(
    "text",
    [
        "spAv1.0/g/NBIRTH/e",
        "spBv1.0/g/NBIRTH",
        "spBv1.0/g/NBIRTH/e/d",
        "spBv1.0/g/DDATA/e",
        "spBv1.0/g/HELLO/e",
        "spBv1.0/g//e",
        "spBv1.0/g/DDATA/e/d/x",
    ],
)
def test_a_topic_that_is_not_sparkplug_is_refused(text: str) -> None:
    """Wrong namespace, missing or extra levels, unknown types: ValueError."""
    with pytest.raises(ValueError):
        parse_topic(text)


def test_a_device_type_needs_its_device() -> None:
    """Building a DDATA topic without a device, or an NDATA with one, is refused."""
    with pytest.raises(ValueError):
        topic("g", MessageType.DDATA, "e")
    with pytest.raises(ValueError):
        topic("g", MessageType.NDATA, "e", "d")


def test_seq_wraps_and_restarts_at_the_birth() -> None:
    """seq counts 0..255 and wraps; reset() gives the NBIRTH its 0; gaps are counted."""
    seq = SeqCounter()
    assert [seq.next() for _ in range(258)][-3:] == [255, 0, 1]
    assert seq.last == 1
    assert seq.reset() == 0 and seq.next() == 1
    assert next_bd_seq(255) == 0 and next_bd_seq(4) == 5
    assert seq_gap(255, 0) == 0 and seq_gap(254, 1) == 2 and seq_gap(3, 4) == 0


def test_a_host_state_round_trips_and_the_older_plain_form_is_read() -> None:
    """STATE bodies: the 3.0 JSON round-trips; ``ONLINE``/``OFFLINE`` read with no
    timestamp; anything else is refused."""
    assert parse_state(state_body(True, 1234)) == (True, 1234)
    assert parse_state(state_body(False, 99)) == (False, 99)
    assert parse_state(b"OFFLINE") == (False, 0)
    assert state_topic("plant-host") == "spBv1.0/STATE/plant-host"
    for bad in (
        b"{}",
        b'{"online": "yes", "timestamp": 1}',
        b"maybe",
        b'{"online": true, "timestamp": true}',
    ):
        with pytest.raises(ValueError):
            parse_state(bad)
