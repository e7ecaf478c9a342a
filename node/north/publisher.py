"""The Sparkplug B edge node: every committed result, north to an MQTT broker, in order.

It runs on a thread of its own (mostly waiting on its socket) and follows the audit store
(committed records, in insertion order) from a cursor it keeps on disk, so the line never
waits on the network: while the broker is away results stay in the store, and when it
returns they are forwarded in order (flagged historical), and a restart resumes where the
last run left.
The cursor moves only past results the broker acknowledged (``north.qos`` = 1). More than
``north.max_backlog`` results waiting: the oldest are skipped — counted in
``Counters/North Skipped`` and the node's status, and logged as ``north_backlog_skipped``.

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
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from node.audit.reader import AuditReader
from node.audit.record import AuditRecord
from node.north import metrics as M
from node.north.cursor import Cursor
from node.north.mqtt import secure_client
from node.north.reviews import ReviewAnnouncer
from node.north.session import HostChange, PrimaryHost, Resends
from node.north.settings import NorthSettings
from node.north.sparkplug import (
    BD_SEQ,
    REBIRTH,
    RESEND_FROM,
    RESEND_UNTIL,
    MessageType,
    Metric,
    Payload,
    SeqCounter,
    decode,
    encode,
    next_bd_seq,
    topic,
)

if TYPE_CHECKING:
    from node.north.commands import NodeCommands

log = structlog.get_logger(__name__)

_SAVE_EVERY_S = 0.2
_SAVE_EVERY_RESULTS = 20
"""The cursor is written once this much time or this many results have passed (and at the
end): a crash re-sends at most what was acknowledged since."""
_FLUSH_S = 2.0
"""A clean stop forwards what is committed for up to this long before its NDEATH."""
_FIRST_BACKOFF_S = 0.25
_QUIET_S = 1.0
_SAY_AGAIN_S = 10.0
"""Nothing sent for ``_QUIET_S``: the newest seq is said on its own, then every
``_SAY_AGAIN_S`` while it stays quiet."""
_MAX_RESENDS = 256
"""Resend requests waiting at most; more are refused (logged): a host asks again."""
_BATCH = 16
"""Results encoded and handed to the client per turn: a backlog drains in short turns, each
followed by a wait on the socket, so the thread never holds the GIL for long."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


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
        self._state_file = state_file
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
        self._sent_at = 0.0  # when (monotonic) a result last went out
        self._newest_said = (0, 0.0)  # the newest seq said on its own, and when
        self._host = PrimaryHost(settings.primary_host_id)
        self._seq = SeqCounter()
        self._cursor = Cursor()
        self._sent = 0  # last record handed to the client
        self._inflight: deque[tuple[int, int]] = deque()  # (mid, record seq), in send order
        self._acked: set[int] = set()  # message ids of results in flight the broker has
        self._live_from = 0  # results up to this one were committed before the births
        self._pending_bd_seq = 0
        self._more = False  # results are waiting beyond the last batch
        self._skipped_here = 0
        self._backoff = _FIRST_BACKOFF_S
        self._reader: AuditReader | None = None
        self._last: tuple[int, AuditRecord] | None = None
        self._counters = M.Counters()
        self._reviews = ReviewAnnouncer()  # operator reviews, announced (node.north.reviews)
        self._counted = 0  # last record in the counters (one sent again is not counted again)
        self._saved_at = 0.0
        self._dirty = False
        self._saved_seq = 0
        self.sessions = 0
        self.rebirths = 0
        self.forwarded = 0
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
            "bd_seq": self._cursor.bd_seq,
            "seq": self._seq.last,
            "sessions": self.sessions,
            "rebirths": self.rebirths,
            "resends": self._resends.requests,
            "resent": self._resends.sent,
            "primary_host": self._host_view(),
            "forwarded": self.forwarded,
            "cursor": self._cursor.seq,
            "backlog": self.backlog,
            "skipped": self._counters.skipped,
            "last_error": self.last_error,
        } | self._reviews.snapshot()

    def _host_view(self) -> str | None:
        """The primary host as the node last heard of it (None: none configured)."""
        if self._host.host_id is None:
            return None
        return "online" if self._host.online else "offline"

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
        skipped = self._skipped_here
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
            self._start_cursor(reader)
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

    def _start_cursor(self, reader: AuditReader) -> None:
        last = reader.last_seq()
        cursor = Cursor.load(self._state_file)
        if cursor is None:  # first start: results from now on
            cursor = Cursor(seq=last)
        elif cursor.seq > last:
            log.warning("north_cursor_ahead_of_store", cursor=cursor.seq, last=last)
            cursor.seq = 0  # a new store: everything in it is new
        self._cursor = cursor
        self._reviews.start(reader, cursor)
        self._counters.skipped = cursor.skipped
        self._sent = self._counted = cursor.seq
        if cursor.seq > 0:
            found = reader.after(cursor.seq - 1, 1)
            self._last = found[0] if found and found[0][0] == cursor.seq else None
        log.info("north_resuming", cursor=cursor.seq, waiting=last - cursor.seq)

    def _connect(self) -> bool:
        """Open a new MQTT session (its will the NDEATH of the next bdSeq). False when the
        broker cannot be reached."""
        s = self.settings
        bd_seq = next_bd_seq(self._cursor.bd_seq) if self._cursor.bd_seq >= 0 else 0
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self._client_id, clean_session=True
        )
        client.max_inflight_messages_set(s.window)
        client.will_set(self._topic(MessageType.NDEATH), self._death(bd_seq), qos=1)
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
                    death = self._death(self._cursor.bd_seq)
                    client.publish(self._topic(MessageType.NDEATH), death, qos=0)
                client.disconnect()
        if self._live:
            log.warning("north_disconnected", bd_seq=self._cursor.bd_seq, error=self.last_error)
        self._live = False
        self._inflight.clear()
        self._acked.clear()
        self._sent = self._cursor.seq
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
        self._cursor.bd_seq = self._pending_bd_seq
        self._dirty = True
        self.sessions += 1
        client.subscribe(self._topic(MessageType.NCMD), qos=1)
        client.subscribe(self._topic(MessageType.DCMD, device=True), qos=1)
        host = self._host.topic
        self._host.session_started()
        if host is not None:  # the retained STATE answers at once; no birth before it says so
            client.subscribe(host, qos=1)
        else:
            self._birth(client)
        log.info(
            "north_connected",
            broker=f"{self.settings.host}:{self.settings.port}",
            bd_seq=self._cursor.bd_seq,
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
        if any(m == mid for m, _ in self._inflight):  # births and states are not followed
            self._acked.add(mid)
            self._advance()
        elif self._reviews.acked(mid):
            self._dirty = True

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
        resend = command.get(RESEND_FROM)
        until = command.get(RESEND_UNTIL)
        if rebirth is not None and rebirth.value is True:
            log.info("north_rebirth_requested", topic=message.topic)
            self._rebirth = True
        elif resend is not None and isinstance(resend.value, int) and resend.value > 0:
            last = until.value if until is not None and isinstance(until.value, int) else 0
            # only what was sent already goes again: the rest comes anyway
            first, last = resend.value, min(last or self._sent, self._sent)
            if self._resends.ask(first, last):
                log.info("north_resend_requested", first=first, last=last)
            else:
                log.warning("north_resend_refused", first=first, last=last)
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
    def _topic(self, kind: MessageType, *, device: bool = False) -> str:
        return topic(self.group_id, kind, self.edge_node_id, self.device_id if device else None)

    def _death(self, bd_seq: int) -> bytes:
        return encode(Payload((M.metric(BD_SEQ, bd_seq, _now_ms()),), None, _now_ms()))

    def _publish(
        self, client: mqtt.Client, kind: MessageType, metrics: list[Metric]
    ) -> mqtt.MQTTMessageInfo:
        """Publish one message with the next seq."""
        device = kind in (MessageType.DBIRTH, MessageType.DDATA)
        seq = self._seq.reset() if kind is MessageType.NBIRTH else self._seq.next()
        body = encode(Payload(tuple(metrics), seq, _now_ms()))
        return client.publish(self._topic(kind, device=device), body, qos=self.settings.qos)

    def _birth(self, client: mqtt.Client) -> None:
        """NBIRTH (seq 0) and DBIRTH with every metric; results after it are live."""
        t = _now_ms()
        collect_url = self.settings.collect_url
        self._publish(
            client,
            MessageType.NBIRTH,
            M.node_metrics(self._cursor.bd_seq, self._node_name, t, collect_url=collect_url),
        )
        if self._last is not None:
            result = M.result_metrics(*self._last)
        else:
            result = M.null_result_metrics(t)
        state, detail = self._state
        self._state_changed.clear()
        device = (
            result
            + self._counters.metrics(t)
            + M.status_metrics(state, detail, self._identity, t)
            + [M.metric(M.NEWEST_SEQ, self._sent, t)]
        )
        if self.commands is not None:
            device += self.commands.birth_metrics(t)
        else:
            device += M.command_metrics(None, t) + M.shadow_metrics(None, None, t)
        device += self._reviews.birth_metrics(t)
        self._publish(client, MessageType.DBIRTH, device)
        assert self._reader is not None
        self._live_from = self._reader.last_seq()
        self._live = True

    def _end_session(self, client: mqtt.Client) -> None:
        """NDEATH and disconnect, as a clean stop does but without waiting: what was in
        flight goes out again from the cursor in the next session."""
        client.publish(self._topic(MessageType.NDEATH), self._death(self._cursor.bd_seq), qos=0)
        self._live = False
        self.last_error = "primary host offline"
        client.disconnect()
        self._gone = True

    def _watch_backlog(self, reader: AuditReader) -> int:
        """The newest committed record's seq; skips the oldest beyond ``max_backlog``."""
        last = reader.last_seq()
        self._skip_overflow(last)
        self.backlog = last - self._cursor.seq
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
            t = _now_ms()
            self._publish(
                client,
                MessageType.DDATA,
                [M.metric(M.STATE, state, t), M.metric(M.STATE_DETAIL, detail, t)],
            )
        if self.commands is not None:
            for answer in self.commands.updates(_now_ms()):
                self._publish(client, MessageType.DDATA, answer)
        if self._reviews.pump(reader, lambda m: self._publish(client, MessageType.DDATA, m)):
            self._dirty = True
        room = min(self.settings.window - len(self._inflight), _BATCH)
        self._more = False
        if room > 0 and self._resends:
            room -= self._send_again(client, reader, room, last)
            self._more = bool(self._resends)
        if room <= 0 or self._sent >= last:
            self._say_newest(client)
            return
        batch = reader.after(self._sent, room)
        self._more = self._more or (len(batch) == room and batch[-1][0] < last)
        for seq, record in batch:
            if seq > self._counted:
                self._counters.count(record)
                self._counted = seq
            t = _now_ms()
            metrics = M.result_metrics(seq, record, historical=seq <= self._live_from)
            info = self._publish(client, MessageType.DDATA, metrics + self._counters.metrics(t))
            self._inflight.append((info.mid, seq))
            if info.is_published():  # QoS 0 is done once written, maybe within publish()
                self._acked.add(info.mid)
            self._sent = seq
            self._sent_at = time.monotonic()
            if self._last is None or seq > self._last[0]:
                self._last = (seq, record)
        self._advance()

    def _say_newest(self, client: mqtt.Client) -> None:
        """Once the line has gone quiet (nothing sent for ``_QUIET_S``), say the newest result
        sent, alone in a DDATA, and again every ``_SAY_AGAIN_S`` while quiet: the last
        results before a stop, dropped on their way to a host, leave no later one behind
        them to show the hole."""
        now = time.monotonic()
        said, at = self._newest_said
        if not self._sent or now - self._sent_at < _QUIET_S:
            return
        if said == self._sent and now - at < _SAY_AGAIN_S:
            return
        self._publish(client, MessageType.DDATA, [M.metric(M.NEWEST_SEQ, self._sent, _now_ms())])
        self._newest_said = (self._sent, now)

    def _send_again(self, client: mqtt.Client, reader: AuditReader, room: int, last: int) -> int:
        """Send up to ``room`` results asked for again (flagged historical), no further
        back than ``max_backlog``; returns how many went."""
        floor = max(last - self.settings.max_backlog, 0)
        again = self._resends.take(reader.after, room, floor)
        for seq, record in again:
            metrics = M.result_metrics(seq, record, historical=True)
            info = self._publish(
                client, MessageType.DDATA, metrics + self._counters.metrics(_now_ms())
            )
            self._inflight.append((info.mid, seq))
            if info.is_published():
                self._acked.add(info.mid)
        if again:
            self._sent_at = time.monotonic()
        return len(again)

    def _advance(self) -> None:
        """Move the cursor past every result acknowledged, in order."""
        while self._inflight and self._inflight[0][0] in self._acked:
            mid, seq = self._inflight.popleft()
            self._acked.discard(mid)
            self._cursor.seq = max(self._cursor.seq, seq)
            self.forwarded += 1
            self._dirty = True

    def _skip_overflow(self, last: int) -> None:
        limit = self.settings.max_backlog
        if last - self._cursor.seq <= limit or self._inflight:
            return
        skip = last - limit - self._cursor.seq
        self._cursor.seq = self._sent = last - limit
        self._counted = max(self._counted, self._sent)
        self._counters.skipped += skip
        self._skipped_here += skip
        self._cursor.skipped = self._counters.skipped
        self._dirty = True
        log.error(
            "north_backlog_skipped",
            skipped=skip,
            total=self._counters.skipped,
            max_backlog=limit,
            resume_at=self._cursor.seq,
        )

    def _goodbye(self, reader: AuditReader) -> None:
        """A clean stop: forward what is committed (bounded), then NDEATH, then disconnect."""
        client = self._client
        if client is None or not self._live:
            return
        deadline = time.monotonic() + _FLUSH_S
        while time.monotonic() < deadline and not self._gone:
            self._pump(reader)
            if self._cursor.seq >= reader.last_seq() and not self._inflight:
                break
            client.loop(timeout=0.02)
        info = client.publish(
            self._topic(MessageType.NDEATH), self._death(self._cursor.bd_seq), qos=1
        )
        with contextlib.suppress(Exception):
            deadline = time.monotonic() + 1.0
            while not info.is_published() and time.monotonic() < deadline and not self._gone:
                client.loop(timeout=0.02)
        self._live = False
        client.disconnect()
        client.loop(timeout=0.05)
        log.info("north_stopped", forwarded=self.forwarded, cursor=self._cursor.seq)

    def _save(self, *, force: bool) -> None:
        now = time.monotonic()
        due = (
            force
            or now - self._saved_at >= _SAVE_EVERY_S
            or self._cursor.seq - self._saved_seq >= _SAVE_EVERY_RESULTS
        )
        if not self._dirty or not due:
            return
        try:
            self._cursor.save(self._state_file)
        except OSError as exc:
            self.last_error = f"north.state_file: {exc}"
            log.error("north_cursor_not_saved", path=str(self._state_file), error=str(exc))
        self._saved_at = now
        self._saved_seq = self._cursor.seq
        self._dirty = False
