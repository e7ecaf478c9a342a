"""The edge node's messages as they go out: topics, the session's seq, the death.

Every message after a session's NBIRTH (seq 0) carries the next seq, wrapping at 256; the
NDEATH carries the session's bdSeq and no seq (it is also the session's will).
"""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt

from node.north import metrics as M
from node.north.outbox import Outbox
from node.north.sparkplug import BD_SEQ, MessageType, Metric, Payload, SeqCounter, encode, topic


def now_ms() -> int:
    """Wall-clock milliseconds, as Sparkplug timestamps are."""
    return time.time_ns() // 1_000_000


class Messages:
    """Topics and numbering of one edge node with one device (``device_id``)."""

    def __init__(self, group_id: str, edge_node_id: str, device_id: str, qos: int) -> None:
        self.group_id = group_id
        self.edge_node_id = edge_node_id
        self.device_id = device_id
        self.qos = qos
        self.seq = SeqCounter()

    def topic(self, kind: MessageType, *, device: bool = False) -> str:
        """The topic of a ``kind`` message of the node (``device``: of its device)."""
        return topic(self.group_id, kind, self.edge_node_id, self.device_id if device else None)

    def death(self, bd_seq: int) -> bytes:
        """The NDEATH of the session numbered ``bd_seq``."""
        return encode(Payload((M.metric(BD_SEQ, bd_seq, now_ms()),), None, now_ms()))

    def say_death(self, client: mqtt.Client, bd_seq: int, qos: int) -> mqtt.MQTTMessageInfo:
        """Publish the NDEATH of session ``bd_seq`` (a clean stop or an ended session)."""
        return client.publish(self.topic(MessageType.NDEATH), self.death(bd_seq), qos=qos)

    def publish(
        self, client: mqtt.Client, kind: MessageType, metrics: list[Metric]
    ) -> mqtt.MQTTMessageInfo:
        """Publish one message with the next seq (NBIRTH: seq 0)."""
        device = kind in (MessageType.DBIRTH, MessageType.DDATA)
        seq = self.seq.reset() if kind is MessageType.NBIRTH else self.seq.next()
        body = encode(Payload(tuple(metrics), seq, now_ms()))
        return client.publish(self.topic(kind, device=device), body, qos=self.qos)


def device_birth(
    out: Outbox, state: str, detail: str, identity: M.Identity, extra: list[Metric], t: int
) -> list[Metric]:
    """The DBIRTH's metrics: the newest result sent (or nulls), the counters, the node's
    state and identity, the newest seq sent, then ``extra`` (the fleet commands' and the
    reviews')."""
    result = M.result_metrics(*out.last) if out.last is not None else M.null_result_metrics(t)
    device = (
        result
        + out.counters.metrics(t)
        + M.status_metrics(state, detail, identity, t)
        + [M.metric(M.NEWEST_SEQ, out.sent, t)]
    )
    return device + extra
