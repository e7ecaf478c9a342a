"""The primary host application: one MQTT session that hears every lineside node.

It announces itself as Sparkplug B 3.0 asks of a primary host (``spBv1.0/STATE/<host id>``,
retained, ``{"online": true, "timestamp": ms}``, its will the same with ``false``), so the
edge nodes know a host is there; subscribes to every group's node and device messages;
decodes each payload and hands it to :class:`node.fleet.state.Fleet`; and asks a node for
a rebirth (NCMD ``Node Control/Rebirth``) when its picture of it cannot be trusted (a
sequence gap, data before a birth), at most every ``rebirth_every_s`` per node.

Its MQTT session is clean, as Sparkplug 3.0 asks of every client. Nothing is lost for it
while it is away: the edge nodes that name it their primary host (``north.primary_host_id``)
publish only while its STATE says online, and keep their results meanwhile; a result it
lacks all the same (a hole in a node's ``Result/Record Seq``, say from nodes that saw a
stale retained STATE after a broker restart) it asks the node for again (NCMD ``Node
Control/Resend From``, at most every ``resend_every_s`` per node; see
:mod:`node.fleet.state`).

paho's network loop runs on its own thread; every callback only decodes and queues, and
:meth:`FleetHost.drain` applies the queue on the caller's thread, so the fleet's state is
only ever touched from one thread.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from node.fleet.state import Fleet, Kind, Message, NodeView
from node.north.messages import now_ms
from node.north.mqtt import secure_client
from node.north.sparkplug import (
    BD_SEQ,
    NAMESPACE,
    REBIRTH,
    RESEND_FROM,
    RESEND_UNTIL,
    DataType,
    MessageType,
    Metric,
    Payload,
    decode,
    encode,
    parse_topic,
    state_body,
    state_topic,
    topic,
)

log = structlog.get_logger(__name__)

_KINDS = {k.value: k for k in Kind}


@dataclass(frozen=True, slots=True)
class Broker:
    """Where the broker is and how to log in to it."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


def parse_broker(text: str) -> tuple[str, int]:
    """``host[:port]`` → (host, port). Raises ``ValueError`` for a bad port."""
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, 1883
    number = int(port)
    if not 0 < number < 65536 or not host:
        raise ValueError(f"not host:port: {text!r}")
    return host, number


def to_message(topic_text: str, data: bytes) -> Message | None:
    """A decoded Sparkplug message for the fleet, or None for one it does not track (STATE,
    commands). Raises ``ValueError`` for a topic or payload that is not Sparkplug B."""
    t = parse_topic(topic_text)
    kind = _KINDS.get(t.message_type.value)
    if kind is None:
        return None
    payload: Payload = decode(data)
    values = payload.values()
    bd = values.get(BD_SEQ)
    return Message(
        group=t.group_id,
        edge_node=t.edge_node_id,
        kind=kind,
        device=t.device_id or "",
        seq=payload.seq,
        bd_seq=int(bd) if isinstance(bd, int) else None,
        metrics={k: v for k, v in values.items() if k != BD_SEQ},
        timestamp_ms=payload.timestamp_ms or now_ms(),
    )


class FleetHost:
    """Connects, follows and keeps :attr:`fleet` (call :meth:`drain` to bring it up to date)."""

    def __init__(
        self,
        broker: Broker,
        *,
        host_id: str = "lineside-fleet",
        groups: tuple[str, ...] = ("+",),
        rebirth_every_s: float = 5.0,
        resend_every_s: float = 2.0,
        on_message: Callable[[Message, NodeView], None] | None = None,
    ) -> None:
        self.broker = broker
        self.host_id = host_id
        self.fleet = Fleet()
        self.connected = False
        self.connected_at: float | None = None
        """When (monotonic s) the current session was acknowledged; None while away."""
        self.bad_messages = 0
        self.rebirths_asked = 0
        self.resends_asked = 0
        self._groups = groups
        self._rebirth_every_s = rebirth_every_s
        self._resend_every_s = resend_every_s
        self._asked: dict[tuple[str, str], float] = {}
        self._resend_asked: dict[tuple[str, str], float] = {}
        self._stamp_ms = 0
        self._chased = 0.0
        self._inbox: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self._on_message = on_message
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=host_id, clean_session=True
        )
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._received

    @property
    def state_topic(self) -> str:
        """Where this host says whether it is online."""
        return state_topic(self.host_id)

    def start(self) -> None:
        """Start the network thread; it connects, and reconnects after a loss, by itself
        (1 to 2 s apart: the nodes that name it wait for it), so a broker that is not up
        yet is simply waited for."""
        b, c = self.broker, self._client
        self._arm_will()
        secure_client(
            c,
            username=b.username,
            password=b.password,
            tls=b.tls,
            ca_file=b.ca_file,
            cert_file=b.cert_file,
            key_file=b.key_file,
        )
        c.reconnect_delay_set(1, 2)
        c.connect_async(b.host, b.port, keepalive=10)
        c.loop_start()

    def stop(self) -> None:
        """Say offline (retained: the nodes stop and keep their results), disconnect, stop
        the network thread."""
        c = self._client
        if self.connected:
            body = state_body(False, self._stamp_ms)
            info = c.publish(self.state_topic, body, qos=1, retain=True)
            info.wait_for_publish(2.0)
        c.disconnect()
        c.loop_stop()

    def _arm_will(self) -> None:
        """A new session's STATE stamp, and its will (offline) with that stamp: Sparkplug
        3.0 has the death carry its birth's timestamp, so an edge node can tell a stale
        retained STATE (older than the newest it saw) from this session's."""
        self._stamp_ms = max(now_ms(), self._stamp_ms + 1)
        body = state_body(False, self._stamp_ms)
        self._client.will_set(self.state_topic, body, qos=1, retain=True)

    def _topics(self) -> list[str]:
        """What the host subscribes to: every node's and device's messages of its groups."""
        return [f"{NAMESPACE}/{g}/{levels}" for g in self._groups for levels in ("+/+", "+/+/+")]

    def drain(self, timeout_s: float = 0.0) -> int:
        """Apply every message received so far (waiting up to ``timeout_s`` for the first);
        returns how many were applied."""
        n = 0
        try:
            item = self._inbox.get(timeout=timeout_s) if timeout_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            item = None
        while item is not None:
            self._apply(*item)
            n += 1
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._chase()
        return n

    def _chase(self) -> None:
        """Ask again for holes of nodes that have gone quiet since (a hole is otherwise
        asked for when the node's next result comes)."""
        now = time.monotonic()
        if now - self._chased < self._resend_every_s:
            return
        self._chased = now
        for view in self.fleet.nodes.values():
            if view.online and Fleet.lacking(view):
                self._ask_resend(view)

    def _apply(self, topic_text: str, data: bytes) -> None:
        try:
            msg = to_message(topic_text, data)
        except ValueError as exc:
            self.bad_messages += 1
            log.warning("fleet_bad_message", topic=topic_text, error=str(exc))
            return
        if msg is None:
            return
        view = self.fleet.apply(msg)
        if self._on_message is not None:
            self._on_message(msg, view)
        if view.wants_rebirth:
            self._ask_rebirth(view)
        elif Fleet.lacking(view):
            self._ask_resend(view)

    def _ask_resend(self, view: NodeView) -> None:
        """Ask for the node's holes again (one NCMD per hole), at most every
        ``resend_every_s``."""
        now = time.monotonic()
        if now - self._resend_asked.get(view.key, -1e9) < self._resend_every_s:
            return
        self._resend_asked[view.key] = now
        holes = self.fleet.holes(view)
        for first, last in holes:
            self._command(
                view,
                Metric(RESEND_FROM, DataType.UINT64, first),
                Metric(RESEND_UNTIL, DataType.UINT64, last),
            )
        self.resends_asked += len(holes)
        if holes:
            log.info(
                "fleet_resend_asked",
                group=view.group,
                edge_node=view.edge_node,
                holes=len(holes),
                first=holes[0][0],
            )

    def _ask_rebirth(self, view: NodeView) -> None:
        now = time.monotonic()
        if now - self._asked.get(view.key, -1e9) < self._rebirth_every_s:
            return
        self._asked[view.key] = now
        self._command(view, Metric(REBIRTH, DataType.BOOLEAN, True))
        self.rebirths_asked += 1
        log.info("fleet_rebirth_asked", group=view.group, edge_node=view.edge_node)

    def _command(self, view: NodeView, *metrics: Metric) -> None:
        """One NCMD to ``view``'s node writing ``metrics``."""
        body = encode(Payload(metrics=metrics, timestamp_ms=now_ms()))
        self._client.publish(topic(view.group, MessageType.NCMD, view.edge_node), body, qos=0)

    # paho callbacks (its network thread)
    def _connected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            log.error("fleet_broker_refused", reason=str(reason))
            return
        self.connected = True
        self.connected_at = time.monotonic()
        for t in self._topics():
            client.subscribe(t, qos=1)
        body = state_body(True, self._stamp_ms)
        client.publish(self.state_topic, body, qos=1, retain=True)
        log.info("fleet_connected", broker=f"{self.broker.host}:{self.broker.port}")

    def _disconnected(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.connected = False
        self.connected_at = None
        self._arm_will()  # before paho reconnects: the next session's stamp
        log.warning("fleet_disconnected", reason=str(reason))

    def _received(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._inbox.put((message.topic, bytes(message.payload)))
