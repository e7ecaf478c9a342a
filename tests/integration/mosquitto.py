"""A real MQTT broker for tests (:mod:`hil.mosquitto`, skipped where it is not installed),
and a Sparkplug-aware subscriber that records what it sees."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

import hil.mosquitto
from node.north.sparkplug import MessageType, Payload, Topic, decode, parse_topic


class Mosquitto(hil.mosquitto.Mosquitto):
    """The rig's broker; the test is skipped where Mosquitto is not installed."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "") -> None:
        try:
            super().__init__(folder, port, extra)
        except hil.mosquitto.MosquittoMissing as exc:
            pytest.skip(str(exc))


@dataclass(frozen=True)
class Seen:
    """One message as the host got it: when (monotonic s), where, and what."""

    t: float
    topic: Topic
    payload: Payload | None
    dup: bool = False
    """The broker sent it again (QoS 1: it had no acknowledgement from this host)."""


@dataclass
class SparkplugHost:
    """A subscriber to ``topics`` (all of Sparkplug unless told) with a persistent
    session, decoding as it goes.

    QoS 1 delivers at least once: a message the broker sends again (``dup``: the host's
    acknowledgement did not reach it, say because it stopped) is dropped when the host has
    it already, and counted in ``redelivered``.
    """

    port: int
    client_id: str = "test-host"
    topics: str = "spBv1.0/#"
    seen: list[Seen] = field(default_factory=list)
    redelivered: int = 0
    _had: set[tuple[str, bytes]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        c.reconnect_delay_set(0.05, 0.2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        self.client = c

    def _on_connect(self, client: mqtt.Client, *args: Any) -> None:
        client.subscribe(self.topics, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        t = parse_topic(msg.topic)
        raw = bytes(msg.payload)
        body = None
        if t.message_type is not MessageType.STATE:
            with contextlib.suppress(ValueError):  # kept, undecoded: a test may send garbage
                body = decode(raw)
        with self._lock:
            if msg.dup and (msg.topic, raw) in self._had:
                self.redelivered += 1
                return
            self._had.add((msg.topic, raw))
            self.seen.append(Seen(time.monotonic(), t, body, bool(msg.dup)))

    def __enter__(self) -> SparkplugHost:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test host did not get its subscription")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self, since: int = 0) -> list[Seen]:
        with self._lock:
            return self.seen[since:]

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)
