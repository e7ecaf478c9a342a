"""The edge node's view of its primary host (STATE) and its queue of results asked for
again, without a broker."""

from __future__ import annotations

from node.audit.record import AuditRecord
from node.north.session import HostChange, PrimaryHost, Resends
from node.north.sparkplug import state_body
from tests.unit.node.audit import factories as F


def test_without_a_primary_host_the_node_never_waits() -> None:
    """No host id: online from the start and across sessions, no STATE topic."""
    host = PrimaryHost(None)
    host.session_started()
    assert host.online and host.topic is None


def test_online_offline_a_new_session_and_a_stale_retained_state() -> None:
    """Each session starts offline; the host's online STATE says birth; the same STATE
    again changes nothing; a newer online one (the host in a new session) asks for new
    births; its offline (stamped like its birth) ends the session; an older STATE than the
    newest seen (stale, retained) is ignored."""
    host = PrimaryHost("plant-host")
    host.session_started()
    assert host.topic == "spBv1.0/STATE/plant-host" and not host.online
    assert host.hear(state_body(True, 100)) is HostChange.ONLINE and host.online
    assert host.hear(state_body(True, 100)) is HostChange.ONLINE
    assert host.hear(state_body(True, 200)) is HostChange.NEW_SESSION
    assert host.hear(state_body(True, 150)) is HostChange.NONE and host.online
    assert host.hear(state_body(False, 200)) is HostChange.OFFLINE and not host.online
    assert host.hear(state_body(False, 200)) is HostChange.NONE
    host.session_started()
    assert host.hear(state_body(True, 150)) is HostChange.NONE and not host.online
    assert host.hear(state_body(True, 300)) is HostChange.ONLINE


def _store(n: int) -> list[tuple[int, AuditRecord]]:
    return [(seq, F.record(seq, None)) for seq in range(1, n + 1)]


def test_ranges_asked_again_come_out_in_order_within_the_room_and_above_the_floor() -> None:
    """Two ranges asked: they come out oldest request first, at most ``room`` at a time,
    nothing at or below ``floor``; an empty range is refused."""
    rows = _store(50)

    def after(seq: int, n: int) -> list[tuple[int, AuditRecord]]:
        return [r for r in rows if r[0] > seq][:n]

    again = Resends()
    assert again.ask(5, 9) and again.ask(30, 31) and not again.ask(8, 7)
    first = [seq for seq, _ in again.take(after, 4, floor=6)]
    rest = [seq for seq, _ in again.take(after, 10, floor=6)]
    assert (first, rest) == ([7, 8, 9, 30], [31]) and not again
    assert (again.requests, again.sent) == (2, 5)


def test_too_many_requests_waiting_are_refused() -> None:
    """At most ``most`` requests wait; the next is refused until one is served."""
    again = Resends(most=2)
    assert again.ask(1, 1) and again.ask(2, 2) and not again.ask(3, 3)
    again.take(lambda seq, n: _store(3)[seq : seq + n], 1, floor=0)
    assert again.ask(3, 3)
