"""The primary host's bookkeeping of births, deaths and sequence numbers (Sparkplug B 3.0)."""

from __future__ import annotations

from node.fleet.state import RESULT_METRIC, Fleet, Kind, Message


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


def test_each_result_is_taken_once_and_a_skipped_one_is_missing() -> None:
    """Results are keyed by their audit record seq: a resend is a duplicate (not taken), a
    jump over seqs counts the ones never received."""
    fleet = Fleet()
    fleet.apply(_birth(0))
    for seq, part in ((1, 10), (2, 11), (3, 11), (4, 14)):
        n = fleet.apply(_data(seq, part))
    assert (n.results, n.duplicates, n.missing, n.record_seq) == (3, 1, 2, 14)


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
