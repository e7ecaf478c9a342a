"""Two pieces of an edge node's session kept apart from the publisher's thread loop: what
it knows of its primary host (Sparkplug 3.0 STATE), and the results a host asked for again.

Both are plain state, no network: the publisher feeds them what arrives and acts on what
they answer, so they are tested on their own.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable

import structlog

from node.audit.record import AuditRecord
from node.north.sparkplug import RESEND_FROM, RESEND_UNTIL, Payload, parse_state, state_topic

log = structlog.get_logger(__name__)


class HostChange(enum.Enum):
    """What a primary host's STATE message asks of the edge node."""

    NONE = "none"
    """Nothing: unreadable, stale, or no change."""
    ONLINE = "online"
    """The host is online: birth if not born."""
    NEW_SESSION = "new_session"
    """The host announced a newer session while the node was born: birth again."""
    OFFLINE = "offline"
    """The host went offline: end the session and wait in a new one."""


class PrimaryHost:
    """The primary host as its STATE messages tell it (``host_id`` None: none to wait for,
    always online)."""

    def __init__(self, host_id: str | None) -> None:
        self.host_id = host_id
        self.online = host_id is None
        self._stamp_ms = 0  # the newest STATE's timestamp

    @property
    def topic(self) -> str | None:
        """Where its STATE is published; None without a host."""
        return None if self.host_id is None else state_topic(self.host_id)

    def session_started(self) -> None:
        """A new MQTT session: offline until its (retained) STATE says otherwise."""
        if self.host_id is not None:
            self.online = False

    def view(self) -> str | None:
        """The host as last heard of, for the node's status (None: none configured)."""
        if self.host_id is None:
            return None
        return "online" if self.online else "offline"

    def hear(self, body: bytes) -> HostChange:
        """Take one STATE message body. A STATE older than the newest seen is a stale
        retained message and changes nothing. Raises ``ValueError`` for one that is not a
        STATE message."""
        online, stamp = parse_state(body)
        if stamp and stamp < self._stamp_ms:
            return HostChange.NONE
        newer = stamp > self._stamp_ms
        self._stamp_ms = max(self._stamp_ms, stamp)
        was, self.online = self.online, online
        if online:
            return HostChange.NEW_SESSION if (was and newer) else HostChange.ONLINE
        return HostChange.OFFLINE if was else HostChange.NONE


class Resends:
    """Ranges of record seqs a host asked for again, in the order asked; at most ``most``
    requests wait (more are refused: the host asks again)."""

    def __init__(self, most: int = 256) -> None:
        self._ranges: deque[tuple[int, int]] = deque()
        self._most = most
        self.requests = 0
        """Requests taken."""
        self.sent = 0
        """Results handed out again."""

    def __bool__(self) -> bool:
        return bool(self._ranges)

    def asked_in(self, command: Payload, sent: int) -> bool:
        """Take the ``Node Control/Resend From`` (and ``Until``) request in ``command``, up
        to ``sent`` at most (what was not sent yet comes anyway); False when ``command``
        asks for no resend. A request over the limit is refused and logged."""
        resend = command.get(RESEND_FROM)
        if resend is None or not isinstance(resend.value, int) or resend.value <= 0:
            return False
        until = command.get(RESEND_UNTIL)
        last = until.value if until is not None and isinstance(until.value, int) else 0
        first, last = resend.value, min(last or sent, sent)
        if self.ask(first, last):
            log.info("north_resend_requested", first=first, last=last)
        else:
            log.warning("north_resend_refused", first=first, last=last)
        return True

    def ask(self, first: int, last: int) -> bool:
        """Records ``first``..``last`` (inclusive) again; False when refused (too many
        waiting) or empty."""
        if first > last or len(self._ranges) >= self._most:
            return False
        self._ranges.append((first, last))
        self.requests += 1
        return True

    def take(
        self,
        read_after: Callable[[int, int], list[tuple[int, AuditRecord]]],
        room: int,
        floor: int,
    ) -> list[tuple[int, AuditRecord]]:
        """Up to ``room`` records asked for, oldest request first, none at or below
        ``floor`` (what the store no longer offers); ``read_after(seq, n)`` reads the store
        (``AuditReader.after``)."""
        out: list[tuple[int, AuditRecord]] = []
        while self._ranges and len(out) < room:
            lo, hi = self._ranges[0]
            lo = max(lo, floor + 1)
            batch = read_after(lo - 1, min(room - len(out), hi - lo + 1)) if lo <= hi else []
            for seq, record in batch:
                if seq > hi:
                    break
                out.append((seq, record))
                lo = seq + 1
            if not batch or lo > hi:
                self._ranges.popleft()
            else:
                self._ranges[0] = (lo, hi)
        self.sent += len(out)
        return out
