"""The primary host's bookkeeping of births, deaths and sequence numbers (Sparkplug B 3.0)."""

from __future__ import annotations

from node.fleet.state import RESEND_TRIES, RESULT_METRIC, Fleet, Kind, Message
from node.north.metrics import NEWEST_SEQ


def _birth(bd: int, **metrics: object) -> Message:
    return Message("plant", "line1", Kind.NBIRTH, seq=0, bd_seq=bd, metrics=metrics)


def _data(seq: int, part: int) -> Message:
    return Message(
        "plant", "line1", Kind.DDATA, device="cam1", seq=seq, metrics={RESULT_METRIC: part}
    )


def test_a_born_node_counts_its_results_in_order_across_the_seq_wrap() -> None:
    """NBIRTH, DBIRTH, then 300 DDATA whose seq wraps at 256: online, 300 results, no gap."""
    fleet = Fleet()
    fleet.apply(_birth(3, **{"Node Control/Rebirth": False}))
    fleet.apply(Message("plant", "line1", Kind.DBIRTH, device="cam1", seq=1))
    for i in range(300):
        n = fleet.apply(_data((i + 2) % 256, i))
    assert n.online and n.results == 300 and n.gaps == 0 and not n.wants_rebirth
    assert n.devices["cam1"][RESULT_METRIC] == 299


def test_each_result_is_taken_once_and_in_order_holes_are_asked_for_and_filled() -> None:
    """Results are keyed by their audit record seq: one received again is a duplicate; ones
    past holes are held, the holes are asked for (first, last), and once the resent results
    fill them the held ones are taken behind them, in order."""
    fleet = Fleet()
    fleet.apply(_birth(0))
    for seq, part in enumerate((10, 11, 11, 14, 15, 18), start=1):
        n = fleet.apply(_data(seq, part))
    assert (n.results, n.duplicates, sorted(n.held), n.record_seq) == (2, 1, [14, 15, 18], 11)
    assert fleet.holes(n) == [(12, 13), (16, 17)] and n.resend_asks == 1
    for seq, part in enumerate((12, 13, 14, 16, 17), start=7):
        n = fleet.apply(_data(seq, part))
    assert (n.results, n.duplicates, n.missing, n.record_seq, n.held) == (9, 2, 0, 18, {})
    assert fleet.holes(n) == [] and n.resend_asks == 0


def test_a_hole_the_node_cannot_fill_is_counted_missing_after_the_tries() -> None:
    """After RESEND_TRIES requests for the first hole the host counts it as missing and
    takes what it held behind it; the next hole is then asked for."""
    fleet = Fleet()
    fleet.apply(_birth(0))
    n = fleet.apply(_data(1, 10))
    for seq, part in ((2, 20), (3, 21), (4, 25)):
        n = fleet.apply(_data(seq, part))
    asked = [fleet.holes(n) for _ in range(RESEND_TRIES)]
    assert asked == [[(11, 19), (22, 24)]] * RESEND_TRIES and n.missing == 0
    assert fleet.holes(n) == [(22, 24)]
    assert (n.results, n.missing, n.record_seq, sorted(n.held)) == (3, 9, 21, [25])


def test_a_skipped_seq_is_a_gap_and_asks_for_a_rebirth() -> None:
    """A message whose seq is not the next one is counted as a gap and a rebirth is wanted;
    the next birth clears the wish."""
    fleet = Fleet()
    fleet.apply(_birth(0))
    fleet.apply(_data(1, 0))
    n = fleet.apply(_data(3, 2))
    assert n.gaps == 1 and n.wants_rebirth
    n = fleet.apply(_birth(1))
    assert not n.wants_rebirth and n.births == 2


def test_only_the_current_sessions_death_takes_a_node_offline() -> None:
    """An NDEATH with the birth's bdSeq makes the node offline; a late will of an older
    session (older bdSeq) is ignored."""
    fleet = Fleet()
    fleet.apply(_birth(4))
    n = fleet.apply(Message("plant", "line1", Kind.NDEATH, bd_seq=3))
    assert n.online and n.deaths == 0
    n = fleet.apply(Message("plant", "line1", Kind.NDEATH, bd_seq=4))
    assert not n.online and n.deaths == 1


def test_data_from_a_node_not_born_is_not_trusted() -> None:
    """Data before any birth (the host started mid-session) or after a death is counted as
    untrusted, not as results, and a rebirth is wanted."""
    fleet = Fleet()
    n = fleet.apply(_data(7, 1))
    assert n.untrusted == 1 and n.results == 0 and n.wants_rebirth
    fleet.apply(_birth(0))
    fleet.apply(Message("plant", "line1", Kind.NDEATH, bd_seq=0))
    n = fleet.apply(_data(1, 2))
    assert n.untrusted == 2 and n.results == 0


def test_nodes_are_kept_apart_by_group_and_name() -> None:
    """Two nodes of one name in different groups, and two in one group, are four views."""
    fleet = Fleet()
    for group in ("plantA", "plantB"):
        for node in ("line1", "line2"):
            fleet.apply(Message(group, node, Kind.NBIRTH, seq=0, bd_seq=0))
    assert len(fleet.nodes) == 4 and all(n.online for n in fleet.nodes.values())


def test_a_tail_lost_before_the_line_stopped_is_asked_for_from_the_newest_seq() -> None:
    """The last results before a stop never arrived and nothing came after them: the
    node's ``Result/Newest Seq`` (said on its own once quiet) shows the tail, the host asks
    for it, and takes it when it comes; a tail never filled is counted missing after the
    tries."""
    fleet = Fleet()
    fleet.apply(_birth(0))
    n = fleet.apply(_data(1, 10))
    assert not fleet.lacking(n) and fleet.holes(n) == []
    n = fleet.apply(
        Message("plant", "line1", Kind.DDATA, device="cam1", seq=2, metrics={NEWEST_SEQ: 13})
    )
    assert fleet.lacking(n) and fleet.holes(n) == [(11, 13)]
    for seq, part in ((3, 11), (4, 12), (5, 13)):
        n = fleet.apply(_data(seq, part))
    assert (n.results, n.record_seq, n.missing) == (4, 13, 0) and not fleet.lacking(n)
    n = fleet.apply(
        Message("plant", "line1", Kind.DDATA, device="cam1", seq=6, metrics={NEWEST_SEQ: 15})
    )
    for _ in range(RESEND_TRIES):
        assert fleet.holes(n) == [(14, 15)]
    assert fleet.holes(n) == [] and (n.missing, n.record_seq) == (2, 15)
