"""The fleet as one table: a row per node, in the terminal (rich) and as JSON."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.table import Table

from node.fleet.state import Fleet, NodeView
from node.north.metrics import (
    COMMAND_KIND,
    COMMAND_REASON,
    COMMAND_STATUS,
    FAIL_SAFES,
    INSPECTED,
    MODEL_SHA256,
    REJECTED,
    SHADOW_AGREE,
    SHADOW_JUDGED,
    SHADOW_SHA256,
    STATE,
    STATE_DETAIL,
)

RATE_WINDOW_MS = 10_000
"""Parts/s is counted over the newest results of this many milliseconds."""


def _device_value(n: NodeView, name: str) -> Any:
    for metrics in n.devices.values():
        if name in metrics:
            return metrics[name]
    return n.metrics.get(name)


def row(n: NodeView, now_ms: int | None = None) -> dict[str, Any]:
    """One node's figures (JSON-ready)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    inspected = _device_value(n, INSPECTED)
    rejected = _device_value(n, REJECTED)
    recent = [t for t, _ in n.recent if t >= now_ms - RATE_WINDOW_MS]
    span_ms = (max(recent) - min(recent)) if len(recent) > 1 else 0
    used = [u for _, u in n.recent if u is not None]
    return {
        "group": n.group,
        "node": n.edge_node,
        "online": n.online,
        "state": _device_value(n, STATE),
        "state_detail": _device_value(n, STATE_DETAIL),
        "parts_per_s": round((len(recent) - 1) * 1000 / span_ms, 2) if span_ms else 0.0,
        "reject_pct": round(100 * rejected / inspected, 2)
        if isinstance(inspected, int) and isinstance(rejected, int) and inspected
        else None,
        "inspected": inspected,
        "fail_safes": _device_value(n, FAIL_SAFES),
        "budget_used_p99": round(float(np.percentile(used, 99)), 4) if used else None,
        "model_sha256": _device_value(n, MODEL_SHA256),
        "last_seen_s": round((now_ms - n.last_seen_ms) / 1000, 1) if n.last_seen_ms else None,
        "results": n.results,
        "missing": n.missing,
        "duplicates": n.duplicates,
        "held": len(n.held),
        "seq_gaps": n.gaps,
        "births": n.births,
        "deaths": n.deaths,
        "bd_seq": n.bd_seq,
        "shadow": _shadow(n),
        "command": _command(n),
    }


def _shadow(n: NodeView) -> dict[str, Any] | None:
    """The shadow candidate the node runs (``Shadow/*``), None when it runs none."""
    sha = _device_value(n, SHADOW_SHA256)
    if not sha:
        return None
    return {
        "sha256": sha,
        "judged": _device_value(n, SHADOW_JUDGED),
        "agree": _device_value(n, SHADOW_AGREE),
    }


def _command(n: NodeView) -> dict[str, Any] | None:
    """The node's answer to the last fleet command (``Command/*``), None before any."""
    status = _device_value(n, COMMAND_STATUS)
    if not status:
        return None
    return {
        "kind": _device_value(n, COMMAND_KIND),
        "status": status,
        "reason": _device_value(n, COMMAND_REASON),
    }


def _shadow_cell(r: dict[str, Any]) -> str:
    """Shadow candidate and last command, short: ``ab12cd34ef56 412 parts 99 % · deploy
    accepted``."""
    cells = []
    shadow = r.get("shadow")
    if shadow:
        judged, agree = shadow.get("judged") or 0, shadow.get("agree") or 0
        share = f" {100 * agree / judged:.0f} %" if judged else ""
        cells.append(f"{str(shadow['sha256'])[:12]} {judged} parts{share}")
    command = r.get("command")
    if command:
        colour = "red" if command["status"] == "refused" else "green"
        cells.append(f"{command['kind']} [{colour}]{command['status']}[/]")
    return " · ".join(cells) or "—"


def snapshot(fleet: Fleet, now_ms: int | None = None) -> list[dict[str, Any]]:
    """Every node's row, by group and name."""
    return [row(fleet.nodes[k], now_ms) for k in sorted(fleet.nodes)]


def with_collect(rows: list[dict[str, Any]], collect: dict[str, Any]) -> None:
    """Add each node's ``--collect`` figures to its row (``node.fleet.collect``)."""
    by_node = collect.get("nodes", {})
    for r in rows:
        c = by_node.get(f"{r['group']}/{r['node']}", {})
        r["collected"] = c.get("collected", 0)
        r["collect_errors"] = c.get("errors", 0)
        r["collect_pending"] = bool(c.get("pending", False))


def render(rows: list[dict[str, Any]], title: str = "lineside fleet") -> Table:
    """The rows as a rich table for the terminal."""
    t = Table(title=title, expand=False)
    for name, justify in (
        ("node", "left"),
        ("", "left"),
        ("state", "left"),
        ("parts/s", "right"),
        ("reject %", "right"),
        ("fail-safe", "right"),
        ("budget p99", "right"),
        ("model", "left"),
        ("last seen", "right"),
        ("results", "right"),
        ("missing", "right"),
        ("seq gaps", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    rollout = any(r.get("shadow") or r.get("command") for r in rows)
    if rollout:
        t.add_column("shadow · last command", justify="left")
    collecting = any("collected" in r for r in rows)
    if collecting:
        t.add_column("collected", justify="right")
        t.add_column("collect err", justify="right")

    def num(v: Any, fmt: str) -> str:
        return "—" if v is None else format(v, fmt)

    for r in rows:
        online = "[green]online[/]" if r["online"] else "[red]offline[/]"
        state = str(r["state"] or "—")
        if state == "Error":
            state = f"[red]{state}[/] {r['state_detail'] or ''}".strip()
        collect = []
        if collecting:
            pending = "…" if r.get("collect_pending") else ""
            errors = r.get("collect_errors", 0)
            collect = [f"{r.get('collected', 0)}{pending}", f"[red]{errors}[/]" if errors else "0"]
        t.add_row(
            f"{r['group']}/{r['node']}",
            online,
            state,
            num(r["parts_per_s"], ".1f"),
            num(r["reject_pct"], ".1f"),
            num(r["fail_safes"], "d"),
            "—" if r["budget_used_p99"] is None else f"{100 * r['budget_used_p99']:.0f} %",
            str(r["model_sha256"] or "—")[:12],
            num(r["last_seen_s"], ".1f") + " s",
            str(r["results"]),
            f"[red]{r['missing']}[/]" if r["missing"] else "0",
            f"[yellow]{r['seq_gaps']}[/]" if r["seq_gaps"] else "0",
            *([_shadow_cell(r)] if rollout else []),
            *collect,
        )
    return t
