"""The Sparkplug B edge node: every committed result, north to an MQTT broker, in order.

It runs on a thread of its own (mostly waiting on its socket) and follows the audit store
(committed records, in insertion order) from a cursor it keeps on disk, so the line never
waits on the network: while the broker is away results stay in the store, and when it
returns they are forwarded in order (flagged historical), and a restart resumes where the
last run left. What went out, what the broker has (``north.qos`` = 1), the cursor and the
backlog's limit are the outbox's (``node.north.outbox``).

Each MQTT session (a new connection) starts with the NDEATH as its will, then NBIRTH
(seq 0, the session's bdSeq) and DBIRTH; every later message's seq is one more, wrapping
at 256. A result is one DDATA; a change of the node's state is one too. An NCMD writing
``Node Control/Rebirth`` true gets a new NBIRTH and DBIRTH; one writing ``Node
Control/Resend From`` (a record seq; with ``Node Control/Resend Until``, up to that one)
sends those results again, so a host that found a hole in ``Result/Record Seq`` gets
what it lacks; fleet commands (``Model Control/Deploy``, ``Model Control/Promote``) are
handed to ``node.north.commands``, whose answers and shadow figures go out as DDATA. A
clean stop publishes the NDEATH itself before it disconnects.

With ``north.primary_host_id`` set, the node follows that host's STATE as Sparkplug 3.0
asks of an edge node: it publishes no birth (and so no result) until the host says it is
online, and when the host says it went offline the node ends its session (NDEATH,
disconnect) and waits for it in a new one. Meanwhile results stay in the store and go out,
in order, once the host is back: a host away is like a broker away.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from node.audit.reader import AuditReader
from node.north import metrics as M
from node.north.messages import Messages, device_birth, now_ms
from node.north.mqtt import secure_client
from node.north.outbox import Outbox
from node.north.reviews import ReviewAnnouncer
from node.north.session import HostChange, PrimaryHost, Resends
from node.north.settings import NorthSettings
from node.north.sparkplug import (
    REBIRTH,
    MessageType,
    decode,
    next_bd_seq,
)

if TYPE_CHECKING:
    from node.north.commands import NodeCommands

log = structlog.get_logger(__name__)

_FLUSH_S = 2.0
"""A clean stop forwards what is committed for up to this long before its NDEATH."""
_FIRST_BACKOFF_S = 0.25
_MAX_RESENDS = 256
"""Resend requests waiting at most; more are refused (logged): a host asks again."""
_BATCH = 16
"""Results encoded and handed to the client per turn: a backlog drains in short turns, each
followed by a wait on the socket, so the thread never holds the GIL for long."""


class NorthPublisher:
    """One Sparkplug B edge node with one device, fed from the audit store in ``audit_dir``.

    A context manager: entering starts its thread, leaving stops it (clean NDEATH). Only
    :meth:`set_state` and :meth:`snapshot` are called from other threads.
    """

    def __init__(
        self,
        settings: NorthSettings,
        *,
        audit_dir: Path,
        state_file: Path,
        node_name: str,
        identity: M.Identity,
        password: str | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = settings.group_id
        self.edge_node_id = settings.edge_node(node_name)
        self.device_id = settings.device_id
        self._audit_dir = audit_dir
        self._node_name = node_name
        self._identity = identity
        self._password = password
        self._client_id = settings.client_id or f"lineside-{self.group_id}-{self.edge_node_id}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = ("", "")
        self._state_changed = threading.Event()
        self.commands: NodeCommands | None = None
        """Takes fleet commands (NCMD ``Model Control/*``); set before entering."""
        # the thread's own from here on
        self._client: mqtt.Client | None = None
        self._live = False  # births sent: results may go out
        self._gone = False  # the connection dropped: make a new one
        self._established = False  # this client's session got its CONNACK
        self._rebirth = False
        self._resends = Resends(_MAX_RESENDS)
        self._host = PrimaryHost(settings.primary_host_id)
        self._msg = Messages(self.group_id, self.edge_node_id, self.device_id, settings.qos)
        self._out = Outbox(state_file)  # results sent and acknowledged, and the cursor
        self._live_from = 0  # results up to this one were committed before the births
        self._pending_bd_seq = 0
        self._more = False  # results are waiting beyond the last batch
        self._backoff = _FIRST_BACKOFF_S
        self._reader: AuditReader | None = None
        self._reviews = ReviewAnnouncer()  # operator reviews, announced (node.north.reviews)
        self.sessions = 0
        self.rebirths = 0
        self.backlog = 0
        self.last_error = ""

    # -- other threads ----------------------------------------------------------------
    def set_state(self, state: str, detail: str = "") -> None:
        """The node's state changed (an ``Operation`` listener): a DDATA goes out."""
        self._state = (str(state), detail)
        self._state_changed.set()

    def snapshot(self) -> dict[str, Any]:
        """The edge node for the node's status."""
        s = self.settings
        return {
            "broker": f"{s.host}:{s.port}",
            "connected": self._live,
            "edge_node_id": self.edge_node_id,
            "bd_seq": self._out.cursor.bd_seq,
            "seq": self._msg.seq.last,
            "sessions": self.sessions,
            "rebirths": self.rebirths,
            "resends": self._resends.requests,
            "resent": self._resends.sent,
            "primary_host": self._host.view(),
            "forwarded": self.forwarded,
            "cursor": self._out.cursor.seq,
            "backlog": self.backlog,
            "skipped": self._out.counters.skipped,
            "last_error": self.last_error,
        } | self._reviews.snapshot()

    @property
    def forwarded(self) -> int:
        """Results the broker acknowledged since the start."""
        return self._out.forwarded

    @property
    def resends(self) -> int:
        """Requests to send results again taken (``Node Control/Resend From``)."""
        return self._resends.requests

    @property
    def resent(self) -> int:
        """Results sent again on request."""
        return self._resends.sent

    def alarm(self) -> str | None:
        """What an operator must see: results skipped since the start because the backlog
        overflowed, else None. (``Counters/North Skipped`` counts them across restarts.)"""
        skipped = self._out.skipped_here
        if not skipped:
            return None
        return f"{skipped} results never sent north: more than north.max_backlog waited"

    def __enter__(self) -> NorthPublisher:
        """Open the audit store for reading and start the thread. Raises ``AuditError`` when
        the store cannot be opened."""
        reader = AuditReader(self._audit_dir, read_only=True)
        self._thread = threading.Thread(target=self._run, args=(reader,), name="north", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_FLUSH_S + 3.0)

    # -- the thread ---------------------------------------------------------------------
    def _run(self, reader: AuditReader) -> None:
        # The thread keeps the process's priority: it runs Python (holding the GIL), and a
        # thread the OS keeps waiting while it holds the GIL would hold up the line's loop.
        with reader:
            self._reader = reader
            self._out.start(reader)
            self._reviews.start(reader, self._out.cursor)
            while not self._stop.is_set():
                try:
                    self._watch_backlog(reader)
                    if self._client is None and not self._connect():
                        self._back_off()
                        continue
                    client = self._client
                    assert client is not None
                    # with more waiting, only a glance at the socket before the next batch
                    client.loop(timeout=0.002 if self._more else self.settings.poll_ms / 1000)
                    if self._gone:
                        self._drop_client()
                        self._back_off()
                        continue
                    self._pump(reader)
                except Exception as exc:  # the thread's supervisor: log, start a new session
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.exception("north_failed", error=self.last_error)
                    self._drop_client()
                    self._back_off()
                self._save(force=False)
            with contextlib.suppress(Exception):  # best effort: the will covers the rest
                self._goodbye(reader)
            self._save(force=True)

    def _back_off(self) -> None:
        """Wait before the next connection attempt: 0.25 s, doubling to
        ``north.reconnect_max_s`` until a session is established."""
        self._stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.reconnect_max_s)

    def _connect(self) -> bool:
        """Open a new MQTT session (its will the NDEATH of the next bdSeq). False when the
        broker cannot be reached."""
        s = self.settings
        cursor = self._out.cursor
        bd_seq = next_bd_seq(cursor.bd_seq) if cursor.bd_seq >= 0 else 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True
        )
        client.max_inflight_messages_set(s.window)
        client.will_set(self._msg.topic(MessageType.NDEATH), self._msg.death(bd_seq), qos=1)
        secure_client(
            client,
            username=s.username,
            password=self._password,
            tls=s.tls,
            ca_file=s.ca_file,
            cert_file=s.cert_file,
            key_file=s.key_file,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._gone = self._established = False
        self._pending_bd_seq = bd_seq
        try:
            client.connect(s.host, s.port, keepalive=s.keepalive_s)
        except OSError as exc:
            if self.last_error != str(exc):
                log.warning("north_connect_failed", broker=f"{s.host}:{s.port}", error=str(exc))
            self.last_error = str(exc)
            return False
        self._client = client
        return True

    def _drop_client(self) -> None:
        """Forget the session: what was in flight is sent again from the cursor."""
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                if self._live and not self._gone:
                    # dropped on an error while connected: a clean disconnect does not
                    # release the will, so say the death it would have said
                    self._msg.say_death(client, self._out.cursor.bd_seq, qos=0)
                client.disconnect()
        if self._live:
            log.warning("north_disconnected", bd_seq=self._out.cursor.bd_seq, error=self.last_error)
        self._live = False
        self._out.rewind()
        self._reviews.drop()

    # paho callbacks: they run on this thread, inside client.loop()
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if reason.is_failure:
            error = f"broker refused the connection: {reason}"
            if error != self.last_error:
                log.error("north_refused", reason=str(reason))
            self.last_error = error
            self._gone = True
            return
        self._established = True
        self._backoff = _FIRST_BACKOFF_S
        self._out.cursor.bd_seq = self._pending_bd_seq
        self._out.dirty = True
        self.sessions += 1
        client.subscribe(self._msg.topic(MessageType.NCMD), qos=1)
        client.subscribe(self._msg.topic(MessageType.DCMD, device=True), qos=1)
        host = self._host.topic
        self._host.session_started()
        if host is not None:  # the retained STATE answers at once; no birth before it says so
            client.subscribe(host, qos=1)
        else:
            self._birth(client)
        log.info(
            "north_connected",
            broker=f"{self.settings.host}:{self.settings.port}",
            bd_seq=self._out.cursor.bd_seq,
            edge_node=self.edge_node_id,
            waiting_for=self._host.host_id,
        )

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self._established and not self._stop.is_set():
            self.last_error = f"disconnected: {reason}"
        self._gone = True

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any
    ) -> None:
        if self._out.follows(mid):  # births and states are not followed
            self._out.advance()
        elif self._reviews.acked(mid):
            self._out.dirty = True

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._host.topic:
            self._on_host_state(client, bytes(message.payload))
            return
        try:
            command = decode(bytes(message.payload))
        except ValueError as exc:
            log.warning("north_command_unreadable", topic=message.topic, error=str(exc))
            return
        rebirth = command.get(REBIRTH)
        if rebirth is not None and rebirth.value is True:
            log.info("north_rebirth_requested", topic=message.topic)
            self._rebirth = True
        elif self._resends.asked_in(command, self._out.sent):
            return
        elif self.commands is not None and self.commands.wants(command):
            log.info("north_fleet_command", topic=message.topic)
            self.commands.receive(command)
        else:
            log.info("north_command_ignored", topic=message.topic, metrics=list(command.values()))

    def _on_host_state(self, client: mqtt.Client, body: bytes) -> None:
        """The primary host's STATE: born once it is online (born again when it announces a
        new session); the session ended (NDEATH, disconnect; a new one waits for it) once it
        is offline. A STATE older than the newest one seen is a stale retained message, and
        ignored."""
        try:
            change = self._host.hear(body)
        except ValueError as exc:
            log.warning("north_host_state_unreadable", error=str(exc))
            return
        if change is HostChange.ONLINE and not self._live:
            log.info("north_primary_host_online", host=self._host.host_id)
            self._birth(client)
        elif change is HostChange.NEW_SESSION:  # the host (re)connected: it wants births
            self._rebirth = True
        elif change is HostChange.OFFLINE:
            log.warning("north_primary_host_offline", host=self._host.host_id)
            if self._live:
                self._end_session(client)

    # -- what goes out --------------------------------------------------------------------
    def _birth(self, client: mqtt.Client) -> None:
        """NBIRTH (seq 0) and DBIRTH with every metric; results after it are live."""
        t = now_ms()
        node = M.node_metrics(
            self._out.cursor.bd_seq, self._node_name, t, collect_url=self.settings.collect_url
        )
        self._msg.publish(client, MessageType.NBIRTH, node)
        state, detail = self._state
        self._state_changed.clear()
        if self.commands is not None:
            extra = self.commands.birth_metrics(t)
        else:
            extra = M.command_metrics(None, t) + M.shadow_metrics(None, None, t)
        extra += self._reviews.birth_metrics(t)
        device = device_birth(self._out, state, detail, self._identity, extra, t)
        self._msg.publish(client, MessageType.DBIRTH, device)
        assert self._reader is not None
        self._live_from = self._reader.last_seq()
        self._live = True

    def _end_session(self, client: mqtt.Client) -> None:
        """NDEATH and disconnect, as a clean stop does but without waiting: what was in
        flight goes out again from the cursor in the next session."""
        self._msg.say_death(client, self._out.cursor.bd_seq, qos=0)
        self._live = False
        self.last_error = "primary host offline"
        client.disconnect()
        self._gone = True

    def _watch_backlog(self, reader: AuditReader) -> int:
        """The newest committed record's seq; skips the oldest beyond ``max_backlog``."""
        last = reader.last_seq()
        self._out.skip_overflow(last, self.settings.max_backlog)
        self.backlog = last - self._out.cursor.seq
        return last

    def _pump(self, reader: AuditReader) -> None:
        """Forward what is committed and not yet sent, as far as the window allows."""
        last = reader.last_seq()
        client = self._client
        if not self._live or client is None:
            return
        if self._rebirth:
            self._rebirth = False
            self.rebirths += 1
            self._birth(client)
        if self._state_changed.is_set():
            self._state_changed.clear()
            state, detail = self._state
            t = now_ms()
            self._msg.publish(
                client,
                MessageType.DDATA,
                [M.metric(M.STATE, state, t), M.metric(M.STATE_DETAIL, detail, t)],
            )
        if self.commands is not None:
            for answer in self.commands.updates(now_ms()):
                self._msg.publish(client, MessageType.DDATA, answer)
        if self._reviews.pump(reader, lambda m: self._msg.publish(client, MessageType.DDATA, m)):
            self._out.dirty = True
        out = self._out
        room = min(self.settings.window - out.in_flight, _BATCH)
        self._more = False
        if room > 0 and self._resends:
            room -= self._send_again(client, reader, room, last)
            self._more = bool(self._resends)
        if room <= 0 or out.sent >= last:
            self._say_newest(client)
            return
        batch = reader.after(out.sent, room)
        self._more = self._more or (len(batch) == room and batch[-1][0] < last)
        for seq, record in batch:
            out.count(seq, record)
            t = now_ms()
            metrics = M.result_metrics(seq, record, historical=seq <= self._live_from)
            info = self._msg.publish(client, MessageType.DDATA, metrics + out.counters.metrics(t))
            # QoS 0 is done once written, maybe within publish()
            out.handed(info.mid, seq, info.is_published())
            if out.last is None or seq > out.last[0]:
                out.last = (seq, record)
        out.advance()

    def _say_newest(self, client: mqtt.Client) -> None:
        """The newest result sent, alone in a DDATA, when the line has gone quiet
        (``Outbox.newest_to_say``)."""
        seq = self._out.newest_to_say()
        if seq is not None:
            self._msg.publish(client, MessageType.DDATA, [M.metric(M.NEWEST_SEQ, seq, now_ms())])

    def _send_again(self, client: mqtt.Client, reader: AuditReader, room: int, last: int) -> int:
        """Send up to ``room`` results asked for again (flagged historical), no further
        back than ``max_backlog``; returns how many went."""
        floor = max(last - self.settings.max_backlog, 0)
        again = self._resends.take(reader.after, room, floor)
        for seq, record in again:
            metrics = M.result_metrics(seq, record, historical=True)
            info = self._msg.publish(
                client, MessageType.DDATA, metrics + self._out.counters.metrics(now_ms())
            )
            self._out.handed(info.mid, seq, info.is_published(), again=True)
        return len(again)

    def _goodbye(self, reader: AuditReader) -> None:
        """A clean stop: forward what is committed (bounded), then NDEATH, then disconnect."""
        client = self._client
        if client is None or not self._live:
            return
        deadline = time.monotonic() + _FLUSH_S
        while time.monotonic() < deadline and not self._gone:
            self._pump(reader)
            if self._out.cursor.seq >= reader.last_seq() and not self._out.in_flight:
                break
            client.loop(timeout=0.02)
        info = self._msg.say_death(client, self._out.cursor.bd_seq, qos=1)
        with contextlib.suppress(Exception):
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline and not self._gone:
                client.loop(timeout=0.02)
        self._live = False
        client.disconnect()
        client.loop(timeout=0.05)
        log.info("north_stopped", forwarded=self.forwarded, cursor=self._out.cursor.seq)

    def _save(self, *, force: bool) -> None:
        error = self._out.save(force=force)
        if error is not None:
            self.last_error = error
