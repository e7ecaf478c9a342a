"""The live terminal status shown while the node runs in a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text


def render_status(name: str, snap: dict[str, Any]) -> Group:
    """A compact table of throughput, counts, latency and budget use."""
    lat = snap["latency_ms"]
    bud = snap["budget_used"]
    t = Table(title=f"lineside · {name}", title_justify="left", expand=False)
    for col in (
        "parts/s",
        "inspected",
        "rejected",
        "fail-safe",
        "budget misses",
        "latency p50/p99 ms",
        "budget used p50/p99",
        "belt mm/s",
        "in flight",
    ):
        t.add_column(col, justify="right")
    t.add_row(
        f"{snap['parts_per_s']:.1f}",
        str(snap["inspected"]),
        str(snap["rejected"]),
        str(snap["fail_safe"]),
        str(snap["budget_misses"]),
        f"{lat['p50']:.1f} / {lat['p99']:.1f}",
        f"{bud['p50']:.0%} / {bud['p99']:.0%}",
        f"{snap['belt_mm_s']:.0f}",
        str(snap["in_flight"]),
    )
    faults = snap.get("faults") or {}
    if faults:
        state = "[red]" + "; ".join(f"{name}: {why}" for name, why in faults.items())
    elif snap.get("state") == "Error":
        state = "[red]Error (reset to clear)"
    elif snap["healthy"]:
        state = "[green]healthy"
    else:
        state = "[red]pipeline stalled"
    alarms = snap.get("alarms") or {}
    unrecorded = (snap.get("audit") or {}).get("unrecorded_parts", 0)
    if alarms and not faults:
        state = "[yellow]" + "; ".join(f"{name} alarm: {why}" for name, why in alarms.items())
    if unrecorded:
        state += f"[/]   [red]{unrecorded} parts unrecorded"
    if snap["draining"]:
        state = "[yellow]draining"
    types = ", ".join(f"{k}: {v}" for k, v in sorted(snap["defects_by_type"].items())) or "—"
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(snap["fail_safe_by_reason"].items())) or "—"
    lines: list[Table | Text] = [
        t,
        Text.from_markup(f"state: {state}[/]   defects: {types}   fail-safe reasons: {reasons}"),
    ]
    model = snap.get("model")
    if model:
        runtime = (
            f"model: {model['runtime']} {model.get('precision', '')} on {model.get('device', '?')}"
        )
        if model.get("fallbacks"):
            steps = "; ".join(f"{f['from']} → {f['to']}: {f['reason']}" for f in model["fallbacks"])
            lines.append(Text(f"{runtime}   fell back: {steps}", style="yellow"))
        else:
            lines.append(Text(runtime, style="dim"))
    last = snap.get("last_reject")
    if last:
        lines.append(Text(f"last reject, part {last['part_id']} ({last['rule']}): {last['text']}"))
    for repeat in snap.get("repeats") or ():
        lines.append(Text(f"⚠ {repeat['text']}", style="bold yellow"))
    lines.append(Text("Ctrl-C stops after draining the parts in flight.", style="dim"))
    return Group(*lines)
