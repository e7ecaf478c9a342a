"""``lineside fleet``'s table and JSON rows: what each node's row says."""

from __future__ import annotations

from rich.console import Console

from node.fleet.state import RESULT_METRIC, Fleet, Kind, Message
from node.fleet.table import render, snapshot
from node.north import metrics as M

KEY = ("plant", "line-1")


def _text(rows: list[dict[str, object]]) -> str:
    console = Console(width=300, record=True)
    console.print(render(rows))
    return console.export_text()


def test_a_row_shows_the_shadow_candidate_and_the_last_fleet_command() -> None:
    """A node running a candidate that answered a deploy: its row carries the candidate's
    digest, parts judged and agreement, and the command's kind, status and reason; the
    table shows them short. A node with neither shows a dash, and null in JSON; a fleet
    where no node has either has no such column."""
    fleet = Fleet()
    fleet.apply(Message(*KEY, Kind.NBIRTH, seq=0, bd_seq=0))
    fleet.apply(Message("plant", "line-2", Kind.NBIRTH, seq=0, bd_seq=0))
    device = {
        M.SHADOW_SHA256: "ab12cd34ef56" + "0" * 52,
        M.SHADOW_JUDGED: 400,
        M.SHADOW_AGREE: 396,
        M.COMMAND_KIND: "deploy",
        M.COMMAND_STATUS: "accepted",
        M.COMMAND_REASON: "running as the shadow candidate",
        RESULT_METRIC: 1,
    }
    fleet.apply(Message(*KEY, Kind.DBIRTH, device="line", seq=1, metrics=device))
    rows = snapshot(fleet)
    one, two = rows
    assert one["shadow"] == {"sha256": device[M.SHADOW_SHA256], "judged": 400, "agree": 396}
    assert one["command"] == {
        "kind": "deploy",
        "status": "accepted",
        "reason": "running as the shadow candidate",
    }
    assert two["shadow"] is None and two["command"] is None
    text = _text(rows)
    assert "ab12cd34ef56 400 parts 99 % · deploy accepted" in text
    assert "shadow · last command" in text
    assert "last command" not in _text(rows[1:])


def test_a_refused_command_is_shown_without_a_candidate() -> None:
    """A node that refused a deploy and runs no candidate: only the refusal is shown."""
    fleet = Fleet()
    fleet.apply(Message(*KEY, Kind.NBIRTH, seq=0, bd_seq=0))
    device = {M.COMMAND_KIND: "deploy", M.COMMAND_STATUS: "refused", M.SHADOW_SHA256: None}
    fleet.apply(Message(*KEY, Kind.DBIRTH, device="line", seq=1, metrics=device))
    rows = snapshot(fleet)
    assert rows[0]["shadow"] is None and rows[0]["command"]["status"] == "refused"
    assert "deploy refused" in _text(rows)
