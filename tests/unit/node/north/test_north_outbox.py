"""The edge node's outbox: the cursor moves only past results the broker has, in order."""

from __future__ import annotations

from pathlib import Path

from node.north.cursor import Cursor
from node.north.outbox import Outbox


def test_the_cursor_moves_only_past_an_unbroken_run_of_acknowledged_results(
    tmp_path: Path,
) -> None:
    """Results 1..4 in flight, the broker acknowledging 2 and 4 first: the cursor stays at 0
    until 1 is acknowledged, then moves to 2, and to 4 once 3 is; a lost session sends again
    from the cursor; the cursor written is the one a restart resumes from."""
    out = Outbox(tmp_path / "north.json")
    for seq in range(1, 5):
        out.handed(mid=100 + seq, seq=seq, published=False)
    assert out.sent == 4 and out.in_flight == 4
    for mid in (102, 104):
        assert out.follows(mid)
        out.advance()
    assert out.cursor.seq == 0
    assert not out.follows(999)  # a birth or a state: not a result
    out.follows(101)
    out.advance()
    assert out.cursor.seq == 2 and out.in_flight == 2
    out.rewind()
    assert out.sent == 2 and out.in_flight == 0
    assert out.save(force=True) is None
    saved = Cursor.load(tmp_path / "north.json")
    assert saved is not None and saved.seq == 2


def test_a_backlog_over_its_limit_skips_the_oldest_and_counts_them(tmp_path: Path) -> None:
    """1000 results waiting with max_backlog 300: the cursor jumps to 700, the 700 skipped
    are counted (in the counters and since the start), and nothing is skipped while results
    are in flight."""
    out = Outbox(tmp_path / "north.json")
    out.handed(mid=1, seq=1, published=False)
    out.skip_overflow(1000, 300)
    assert out.cursor.seq == 0  # one in flight: wait for it
    out.rewind()
    out.skip_overflow(1000, 300)
    assert out.cursor.seq == out.sent == 700
    assert out.counters.skipped == out.skipped_here == out.cursor.skipped == 700
