"""A real MQTT broker for tests: Debian's Mosquitto on a free loopback port, and a
Sparkplug-aware subscriber that records what it sees.

The broker keeps its sessions across a restart (``persistence`` into the test's folder,
written when it stops), like a plant's broker: a host subscribed with a persistent session
misses nothing published while it was reconnecting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from node.north.sparkplug import MessageType, Payload, Topic, decode, parse_topic

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One broker process on ``port``, started and stopped by the test."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "") -> None:
        """``extra``: more lines for the listener (TLS files, ``allow_anonymous false``...)."""
        if not Path(MOSQUITTO).exists():
            pytest.skip("mosquitto is not installed (make sysdeps)")
        self.folder = folder
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        # as root it would drop to the mosquitto user, who cannot write the test's folder
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"{user}per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{extra or 'allow_anonymous true'}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.folder / "mosquitto.log", "ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + 10
        while not _listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError((self.folder / "mosquitto.log").read_text()[-2000:])
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


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
    """A subscriber to ``spBv1.0/#`` with a persistent session, decoding as it goes.

    QoS 1 delivers at least once: a message the broker sends again (``dup``: the host's
    acknowledgement did not reach it, say because it stopped) is dropped when the host has
    it already, and counted in ``redelivered``.
    """

    port: int
    client_id: str = "test-host"
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
        client.subscribe("spBv1.0/#", qos=1)

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
