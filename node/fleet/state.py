"""What the primary host knows of each edge node, from the Sparkplug messages it saw.

Pure bookkeeping, no network: :meth:`Fleet.apply` takes one decoded message and updates
the node it is about. The rules are the Sparkplug B 3.0 ones a host application must
keep:

- an NBIRTH makes the node online with its ``bdSeq`` and ``seq`` 0, and carries every
  node metric; a DBIRTH does the same for one device of it;
- every later message of that MQTT session carries ``seq`` one more than the last
  (modulo 256); a message out of order is a *gap*: counted, and the host asks the node
  for a rebirth (:attr:`NodeView.wants_rebirth`) rather than trust a partial picture;
- an NDEATH whose ``bdSeq`` is the current birth's makes the node offline; one with an
  older ``bdSeq`` is a late will of a session already replaced, and is ignored;
- data from a node not born (since the host started, or since its death) is not trusted
  either: it is counted and a rebirth asked for.

Results are taken once each and in the order of the node's audit store (``Result/Record
Seq``, gap-free there). A result past a hole is held, and taken once the hole before it
is filled: the host asks the node for each hole's results again (:meth:`Fleet.holes`;
NCMD ``Node Control/Resend From``/``Until``). The tail counts too: a node says the newest
result it sent (``Result/Newest Seq``, in its DBIRTH and on its own once its line goes
quiet), so results lost just before a stop are asked for although none came after them.
A hole the node cannot fill (its results skipped past ``north.max_backlog``) is asked for
:data:`RESEND_TRIES` times; then it is counted as missing and the held results behind it
are taken.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from node.north.metrics import BUDGET_USED, NEWEST_SEQ, RECORD_SEQ


class Kind(StrEnum):
    """Sparkplug message types the host handles."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded Sparkplug message: its topic's parts, ``seq`` (None in an NDEATH),
    ``bd_seq`` (NBIRTH and NDEATH), the metrics by name, and its timestamp (ms UTC)."""

    group: str
    edge_node: str
    kind: Kind
    device: str = ""
    seq: int | None = None
    bd_seq: int | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    timestamp_ms: int = 0


@dataclass
class NodeView:
    """One edge node as the host sees it."""

    group: str
    edge_node: str
    online: bool = False
    bd_seq: int | None = None
    seq: int | None = None
    births: int = 0
    deaths: int = 0
    gaps: int = 0
    untrusted: int = 0
    """Messages from a node not born (or dead) when they came."""
    wants_rebirth: bool = False
    last_seen_ms: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    """Node metrics (from NBIRTH/NDATA), latest value each."""
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Device metrics by device id (from DBIRTH/DDATA), latest value each."""
    results: int = 0
    """Results taken: DDATA carrying a ``Result/Record Seq`` newer than the last."""
    record_seq: int | None = None
    """The newest result's place in the node's audit store (gap-free there)."""
    missing: int = 0
    """Results skipped over: record seqs never received between two that were."""
    duplicates: int = 0
    """Results received again (a resend after a broker outage): counted, not taken."""
    held: dict[int, tuple[int, float | None]] = field(default_factory=dict)
    """Results received past a hole, by record seq: (timestamp ms, budget used); taken
    once the holes before them are filled."""
    resend_asks: int = 0
    """Resend requests made for the first hole since the last result taken in order."""
    newest: int = 0
    """The newest record seq the node says it sent (``Result/Newest Seq``)."""
    recent: collections.deque[tuple[int, float | None]] = field(
        default_factory=lambda: collections.deque(maxlen=2000)
    )
    """(timestamp ms, budget used) of the newest results: parts/s and budget p99."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.edge_node)


RESULT_METRIC = RECORD_SEQ
"""The device metric every per-part DDATA carries (its presence marks a result)."""

RESEND_TRIES = 10
"""Resend requests for the first hole before the host counts it as missing: at the host's
2 s between requests, 20 s, so a broker that drops the resent results too (its queue for
the host full) does not turn a hole into a loss."""

HOLD_MAX = 20_000
"""Results held past holes per node at most; one more counts the first hole as missing."""


class Fleet:
    """Every node seen on the bus, by (group, edge node)."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], NodeView] = {}

    def node(self, group: str, edge_node: str) -> NodeView:
        """The view of one node (made on first mention)."""
        key = (group, edge_node)
        view = self.nodes.get(key)
        if view is None:
            view = self.nodes[key] = NodeView(group, edge_node)
        return view

    def apply(self, msg: Message) -> NodeView:
        """Update the node ``msg`` is about; returns its view."""
        n = self.node(msg.group, msg.edge_node)
        n.last_seen_ms = max(n.last_seen_ms, msg.timestamp_ms)
        if msg.kind is Kind.NBIRTH:
            n.online, n.bd_seq, n.seq = True, msg.bd_seq, msg.seq
            n.births += 1
            n.wants_rebirth = False
            n.metrics = dict(msg.metrics)
            n.devices = {}
            return n
        if msg.kind is Kind.NDEATH:
            if n.online and msg.bd_seq is not None and msg.bd_seq == n.bd_seq:
                n.online = False
                n.deaths += 1
                n.seq = None
            return n
        if not n.online:
            n.untrusted += 1
            n.wants_rebirth = True
            return n
        if not self._in_order(n, msg.seq):
            n.gaps += 1
            n.wants_rebirth = True
        n.seq = msg.seq
        newest = msg.metrics.get(NEWEST_SEQ)
        if isinstance(newest, int) and not isinstance(newest, bool):
            n.newest = max(n.newest, newest)
        if msg.kind is Kind.DBIRTH:
            n.devices[msg.device] = dict(msg.metrics)
        elif msg.kind is Kind.DDEATH:
            n.devices.pop(msg.device, None)
        elif msg.kind is Kind.DDATA:
            n.devices.setdefault(msg.device, {}).update(msg.metrics)
            if RESULT_METRIC in msg.metrics:
                self._result(n, msg)
        else:
            n.metrics.update(msg.metrics)
        return n

    @staticmethod
    def _result(n: NodeView, msg: Message) -> None:
        seq = msg.metrics[RESULT_METRIC]
        if not isinstance(seq, int):
            return
        used = msg.metrics.get(BUDGET_USED)
        entry = (msg.timestamp_ms, float(used) if isinstance(used, int | float) else None)
        if (n.record_seq is not None and seq <= n.record_seq) or seq in n.held:
            n.duplicates += 1
            return
        if n.record_seq is not None and seq > n.record_seq + 1:
            n.held[seq] = entry
            if len(n.held) > HOLD_MAX:
                Fleet._give_up(n)
            return
        Fleet._take(n, seq, entry)

    @staticmethod
    def _take(n: NodeView, seq: int, entry: tuple[int, float | None]) -> None:
        """Take ``seq``, then every held result that follows it without a hole."""
        while True:
            n.record_seq = seq
            n.resend_asks = 0
            n.results += 1
            n.recent.append(entry)
            nxt = n.held.pop(seq + 1, None)
            if nxt is None:
                return
            seq, entry = seq + 1, nxt

    @staticmethod
    def lacking(n: NodeView) -> bool:
        """Whether the host lacks results of ``n`` it knows were sent: a hole before a held
        one, or the tail up to what the node says it sent."""
        return n.record_seq is not None and (bool(n.held) or n.newest > n.record_seq)

    @staticmethod
    def _give_up(n: NodeView) -> None:
        """Count the first hole as missing and take what is held behind it (with nothing
        held: the tail)."""
        if n.record_seq is None:
            return
        if not n.held:
            if n.newest > n.record_seq:
                n.missing += n.newest - n.record_seq
                n.record_seq = n.newest
                n.resend_asks = 0
            return
        first = min(n.held)
        n.missing += first - n.record_seq - 1
        Fleet._take(n, first, n.held.pop(first))

    @staticmethod
    def holes(n: NodeView, most: int = 16) -> list[tuple[int, int]]:
        """The first ``most`` holes (first, last record seq lacking) to ask ``n`` for again,
        counting the request; after :data:`RESEND_TRIES` requests the first hole is counted
        as missing instead. Empty when nothing is lacking."""
        if Fleet.lacking(n) and n.resend_asks >= RESEND_TRIES:
            Fleet._give_up(n)
        if not Fleet.lacking(n) or n.record_seq is None:
            return []
        found: list[tuple[int, int]] = []
        before = n.record_seq
        for seq in sorted(n.held):
            if seq > before + 1:
                found.append((before + 1, seq - 1))
                if len(found) == most:
                    break
            before = seq
        if n.newest > before and len(found) < most:
            found.append((before + 1, n.newest))  # the tail: sent, never seen
        n.resend_asks += 1
        return found

    @staticmethod
    def _in_order(n: NodeView, seq: int | None) -> bool:
        return seq is not None and n.seq is not None and seq == (n.seq + 1) % 256
