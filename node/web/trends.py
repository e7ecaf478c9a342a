"""Trends over a shift: counts and latency per time bucket, as a PNG and as CSV.

The web view's Trends page shows rejects per defect type, fail-safes per reason,
budget misses and latency over a period. :func:`read_trends` reads them from the audit
store on a read-only connection of its own, so it can run beside a node that keeps
writing; counting happens in SQL and only the two numbers behind the percentiles
(latency and share of the budget used) come back row by row. :func:`trends_png` draws
one figure of three panels on a shared time axis, :func:`trends_csv` writes one row per
bucket. Neither touches pyplot, so both are safe from any thread of the web process.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
import numpy.typing as npt
import structlog
from matplotlib import font_manager, ft2font
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from node.audit.schema import DB_NAME, AuditError, connect, ensure_schema

log = structlog.get_logger(__name__)

NS_PER_S = 1_000_000_000
MAX_BUCKETS = 10_000
"""Most buckets one read may span (a week of minutes); more is a ``ValueError``."""
MAX_LATENCIES_PER_BUCKET = 200_000
"""Latencies one bucket's percentiles are computed from at most. A busier bucket uses
every k-th part by ``seq`` (the smallest k that stays within this), which keeps a
3-million-part shift as quick to read as a 1-million one at the cost of exactness."""
UNTYPED = "unknown"
"""The type under which a judged reject that names no defect type is counted."""


@dataclass(frozen=True, slots=True)
class Trends:
    """Per-bucket counts and percentiles over ``[since_ns, until_ns)``.

    Every list has one entry per bucket, in time order; bucket ``i`` covers
    ``[bucket_start_s[i], bucket_start_s[i] + bucket_s)`` (UTC epoch seconds, aligned to
    multiples of ``bucket_s`` since the epoch, so hourly buckets start on the UTC hour),
    clipped to the period. ``rejects`` counts every reject, fail-safes included;
    ``rejects_by_type`` only the judged ones (not fail-safe), by ``defect_type``;
    ``fail_safes_by_reason`` the fail-safes by ``reason``. Percentiles are numpy's
    (linear) over the parts that have a latency, None where a bucket has none;
    ``budget_used_*`` are fractions (``latency_ms / budget_ms``; 1.0 is the whole
    budget). ``latency_count`` is how many latencies each bucket's percentiles are
    computed from (fewer than its parts where fail-safes had none or the bucket was
    sampled, see ``MAX_LATENCIES_PER_BUCKET``).
    """

    since_ns: int
    until_ns: int
    bucket_s: int
    bucket_start_s: list[int]
    parts: list[int]
    rejects: list[int]
    rejects_by_type: dict[str, list[int]]
    fail_safes_by_reason: dict[str, list[int]]
    budget_misses: list[int]
    latency_p50_ms: list[float | None]
    latency_p99_ms: list[float | None]
    budget_used_p50: list[float | None]
    budget_used_p99: list[float | None]
    latency_count: list[int]

    @property
    def total_parts(self) -> int:
        """Parts in the whole period."""
        return sum(self.parts)


def read_trends(directory: Path, *, since_ns: int, until_ns: int, bucket_s: int = 3600) -> Trends:
    """The trends of the audit store in ``directory`` over ``[since_ns, until_ns)``.

    ``since_ns``/``until_ns`` are UTC epoch nanoseconds, ``bucket_s`` the bucket length
    in seconds. All queries run in one read transaction, so counts and percentiles
    describe the same moment of a store the node keeps writing. Raises ``ValueError``
    for an empty period, a bucket under one second or more than ``MAX_BUCKETS``
    buckets; ``AuditError`` when there is no store or it cannot be read;
    ``AuditSchemaError`` for a store this lineside cannot read.
    """
    if bucket_s < 1:
        raise ValueError(f"bucket_s must be at least 1, not {bucket_s}")
    if until_ns <= since_ns:
        raise ValueError(f"until_ns ({until_ns}) must be after since_ns ({since_ns})")
    bucket_ns = bucket_s * NS_PER_S
    first = since_ns // bucket_ns
    n = -(-until_ns // bucket_ns) - first
    if n > MAX_BUCKETS:
        raise ValueError(f"{n} buckets of {bucket_s} s; at most {MAX_BUCKETS}")
    edges = [max(since_ns, (first + i) * bucket_ns) for i in range(n)] + [until_ns]
    db = directory / DB_NAME
    conn = connect(db, "normal", create=False, read_only=True)
    try:
        ensure_schema(conn, db, read_only=True)
        conn.execute("BEGIN")  # one snapshot for every query below
        try:
            trends = _read(conn, edges, first, bucket_s, since_ns, until_ns)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise AuditError(f"{db}: cannot read trends: {exc}") from exc
    finally:
        conn.close()
    log.debug(
        "trends_read",
        path=str(directory),
        buckets=n,
        bucket_s=bucket_s,
        parts=trends.total_parts,
        sampled_buckets=sum(p > MAX_LATENCIES_PER_BUCKET for p in trends.parts),
    )
    return trends


_RANGE = "wall_time_ns >= ? AND wall_time_ns < ?"
_PARTS = f"SELECT COUNT(*) FROM records WHERE {_RANGE}"  # from the index alone
# Only rejects, fail-safes and budget misses are grouped: passes within budget (nearly
# every row) are counted from the index alone, which keeps SQLite's sorter small.
_GROUPS = (
    f"SELECT verdict = 'reject', fail_safe, reason, defect_type, budget_miss, COUNT(*) "
    f"FROM records WHERE {_RANGE} AND (verdict = 'reject' OR fail_safe OR budget_miss) "
    f"GROUP BY 1, 2, 3, 4, 5"
)
_LATENCIES = (
    f"SELECT latency_ms, latency_ms / budget_ms FROM records "
    f"WHERE {_RANGE} AND latency_ms IS NOT NULL"
)


def _read(
    conn: sqlite3.Connection,
    edges: list[int],
    first: int,
    bucket_s: int,
    since_ns: int,
    until_ns: int,
) -> Trends:
    """Query each bucket between consecutive ``edges`` (epoch ns) on ``conn``."""
    n = len(edges) - 1
    parts = [0] * n
    rejects = [0] * n
    misses = [0] * n
    by_type: dict[str, list[int]] = {}
    by_reason: dict[str, list[int]] = {}
    pct: list[list[float | None]] = [[None] * n for _ in range(4)]
    counts = [0] * n
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        (parts[i],) = conn.execute(_PARTS, (lo, hi)).fetchone()
        if not parts[i]:
            continue
        for reject, fail_safe, reason, defect_type, miss, count in conn.execute(_GROUPS, (lo, hi)):
            if miss:
                misses[i] += count
            if reject:
                rejects[i] += count
            if fail_safe:
                by_reason.setdefault(reason, [0] * n)[i] += count
            elif reject:
                by_type.setdefault(defect_type or UNTYPED, [0] * n)[i] += count
        stride = -(-parts[i] // MAX_LATENCIES_PER_BUCKET)
        if stride == 1:
            rows = conn.execute(_LATENCIES, (lo, hi)).fetchall()
        else:
            rows = conn.execute(_LATENCIES + " AND seq % ? = 0", (lo, hi, stride)).fetchall()
        counts[i] = len(rows)
        if not rows:
            continue
        values = np.array(rows, dtype=np.float64)  # a NULL share (no budget) becomes NaN
        latency = values[:, 0]
        used = values[:, 1][np.isfinite(values[:, 1])]
        pct[0][i], pct[1][i] = (float(v) for v in np.percentile(latency, [50, 99]))
        if used.size:
            pct[2][i], pct[3][i] = (float(v) for v in np.percentile(used, [50, 99]))
    return Trends(
        since_ns=since_ns,
        until_ns=until_ns,
        bucket_s=bucket_s,
        bucket_start_s=[(first + i) * bucket_s for i in range(n)],
        parts=parts,
        rejects=rejects,
        rejects_by_type=dict(sorted(by_type.items())),
        fail_safes_by_reason=dict(sorted(by_reason.items())),
        budget_misses=misses,
        latency_p50_ms=pct[0],
        latency_p99_ms=pct[1],
        budget_used_p50=pct[2],
        budget_used_p99=pct[3],
        latency_count=counts,
    )


# ---- CSV -------------------------------------------------------------------------------


def trends_csv(t: Trends) -> str:
    """``t`` as CSV text (RFC 4180, CRLF line ends), one row per bucket.

    Columns: ``bucket_start_utc`` (ISO 8601, ``Z``), ``parts``, ``rejects``, one
    ``rejects_<type>`` per defect type and one ``fail_safe_<reason>`` per reason (each
    group in sorted order), ``budget_misses``, ``latency_p50_ms``, ``latency_p99_ms``,
    ``budget_used_p50``, ``budget_used_p99`` (fractions). A missing percentile is an
    empty cell; floats are written so that they read back exactly. Raises nothing.
    """
    types = sorted(t.rejects_by_type)
    reasons = sorted(t.fail_safes_by_reason)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(
        [
            "bucket_start_utc",
            "parts",
            "rejects",
            *(f"rejects_{k}" for k in types),
            *(f"fail_safe_{k}" for k in reasons),
            "budget_misses",
            "latency_p50_ms",
            "latency_p99_ms",
            "budget_used_p50",
            "budget_used_p99",
        ]
    )
    for i, start_s in enumerate(t.bucket_start_s):
        w.writerow(
            [
                datetime.fromtimestamp(start_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                t.parts[i],
                t.rejects[i],
                *(t.rejects_by_type[k][i] for k in types),
                *(t.fail_safes_by_reason[k][i] for k in reasons),
                t.budget_misses[i],
                *(
                    "" if v[i] is None else repr(v[i])
                    for v in (
                        t.latency_p50_ms,
                        t.latency_p99_ms,
                        t.budget_used_p50,
                        t.budget_used_p99,
                    )
                ),
            ]
        )
    return out.getvalue()


# ---- the figure ------------------------------------------------------------------------

_TEXT: dict[str, dict[str, str]] = {
    "en": {
        "title": "Trends {start} – {end} UTC: {parts} parts",
        "rejects": "Rejects per defect type",
        "fail_safes": "Fail-safe rejects per reason",
        "latency": "Latency and budget used",
        "parts": "parts",
        "ms": "latency (ms)",
        "budget": "budget used (%)",
        "time": "time (UTC)",
        "p50": "latency p50",
        "p99": "latency p99",
        "budget_p99": "budget used p99",
        "none": "none",
        "empty": "no parts in this period",
    },
    "de": {
        "title": "Verlauf {start} – {end} UTC: {parts} Teile",
        "rejects": "Ausschleusungen je Fehlerart",
        "fail_safes": "Sicherheits-Ausschleusungen je Grund",
        "latency": "Latenz und genutztes Zeitbudget",
        "parts": "Teile",
        "ms": "Latenz (ms)",
        "budget": "Zeitbudget genutzt (%)",
        "time": "Zeit (UTC)",
        "p50": "Latenz p50",
        "p99": "Latenz p99",
        "budget_p99": "Zeitbudget p99",
        "none": "keine",
        "empty": "keine Teile in diesem Zeitraum",
    },
    "ja": {
        "title": "推移 {start} – {end} UTC: {parts} 個",
        "rejects": "欠陥種類別の排出数",
        "fail_safes": "理由別の安全排出数",
        "latency": "処理時間と予算使用率",
        "parts": "個数",
        "ms": "処理時間 (ms)",
        "budget": "予算使用率 (%)",
        "time": "時刻 (UTC)",
        "p50": "処理時間 p50",
        "p99": "処理時間 p99",
        "budget_p99": "予算使用率 p99",
        "none": "なし",
        "empty": "この期間に部品はありません",
    },
}
_WIDTH_PX, _HEIGHT_PX, _DPI = 1000, 800, 100
_MARKERS_UP_TO = 48
"""Buckets up to which the lines mark each point (beyond, markers only clutter)."""
_FAMILY = "DejaVu Sans"
"""matplotlib's own sans-serif, always installed with it."""


@functools.cache
def _font_for(lang: str) -> str | None:
    """An installed font family with every glyph of ``lang``'s labels; None: none has.

    matplotlib's default sans-serif first, then every font its font manager knows
    (upright and proportional ones first), judged by its character map, not its name.
    Looked up once per language: reading the character maps takes a while."""
    needed = {ord(c) for text in _TEXT[lang].values() for c in text if not c.isspace()}
    default = font_manager.FontProperties(family=_FAMILY)
    candidates = [(_FAMILY, font_manager.findfont(default), 0)] + [
        (e.name, e.fname, e.index)
        for e in sorted(
            font_manager.fontManager.ttflist,
            key=lambda e: (e.style != "normal", "Mono" in e.name, e.name),
        )
    ]
    for name, path, index in candidates:
        try:
            charmap = ft2font.FT2Font(path, face_index=index).get_charmap()
        except (OSError, RuntimeError, ValueError):
            continue
        if needed <= charmap.keys():
            return name
    log.debug("trends_font_missing", lang=lang, fallback="en")
    return None


def _language(lang: str) -> tuple[dict[str, str], list[str]]:
    """The label table for ``lang`` and the font families to draw it with; English (and
    its font) for an unknown language or one no installed font can draw."""
    family = _font_for(lang) if lang in _TEXT else None
    if family is None:
        return _TEXT["en"], [_FAMILY]
    return _TEXT[lang], list(dict.fromkeys([family, _FAMILY]))


def trends_png(t: Trends, lang: str = "en") -> bytes:
    """``t`` as a 1000 x 800 px PNG: three panels sharing the time axis.

    (1) judged rejects per defect type and (2) fail-safe rejects per reason, both as
    stacked bars per bucket; (3) latency p50/p99 in ms (left axis) and budget used p99
    in % (right axis) as lines. Labels are in ``lang`` ("en", "de", "ja"); Japanese
    falls back to English where no installed font has its glyphs, an unknown language
    too. A period without parts gives a figure that says so. Raises nothing for any
    data ``read_trends`` returns.
    """
    text, family = _language(lang)
    fig = Figure(figsize=(_WIDTH_PX / _DPI, _HEIGHT_PX / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    since = datetime.fromtimestamp(t.since_ns / NS_PER_S, UTC)
    until = datetime.fromtimestamp(t.until_ns / NS_PER_S, UTC)
    fig.suptitle(
        text["title"].format(
            start=since.strftime("%Y-%m-%d %H:%M"),
            end=until.strftime("%Y-%m-%d %H:%M"),
            parts=t.total_parts,
        ),
        family=family,
        fontsize=12,
    )
    if t.total_parts == 0:
        fig.text(0.5, 0.5, text["empty"], ha="center", va="center", fontsize=16, family=family)
    else:
        _draw(fig, t, text, family)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=_DPI)
    return out.getvalue()


def _draw(fig: Figure, t: Trends, text: dict[str, str], family: list[str]) -> None:
    """The three panels of a period with parts."""
    starts = [datetime.fromtimestamp(s, UTC) for s in t.bucket_start_s]
    # matplotlib.dates has no type hints; its calls are the documented ones
    x = np.asarray(mdates.date2num(starts), dtype=np.float64)  # type: ignore[no-untyped-call]
    width_d = t.bucket_s / 86_400
    ax_rej, ax_fs, ax_lat = fig.subplots(3, 1, sharex=True)
    for ax, key, series in (
        (ax_rej, "rejects", t.rejects_by_type),
        (ax_fs, "fail_safes", t.fail_safes_by_reason),
    ):
        _stacked(ax, x, width_d, series, text["none"], family)
        ax.set_title(text[key], family=family, fontsize=10, loc="left")
        ax.set_ylabel(text["parts"], family=family)
    mid = x + width_d / 2
    marker = "." if len(x) <= _MARKERS_UP_TO else None
    p50, p99 = _nan(t.latency_p50_ms), _nan(t.latency_p99_ms)
    ax_lat.plot(mid, p50, marker=marker, label=text["p50"])
    ax_lat.plot(mid, p99, marker=marker, label=text["p99"])
    ax_lat.set_ylabel(text["ms"], family=family)
    ax_lat.set_ylim(0, _top(p99, 1.0))
    ax_budget = ax_lat.twinx()
    used = 100 * _nan(t.budget_used_p99)
    ax_budget.plot(
        mid, used, color="tab:red", linestyle="--", marker=marker, label=text["budget_p99"]
    )
    ax_budget.axhline(100, color="tab:red", linewidth=0.6, alpha=0.5)
    ax_budget.set_ylabel(text["budget"], family=family)
    ax_budget.set_ylim(0, _top(used, 150.0))
    handles = ax_lat.get_legend_handles_labels()[0] + ax_budget.get_legend_handles_labels()[0]
    ax_lat.legend(handles=handles, loc="upper left", ncols=3, prop={"family": family, "size": 8})
    ax_lat.set_title(text["latency"], family=family, fontsize=10, loc="left")
    ax_lat.set_xlabel(text["time"], family=family)
    ax_lat.set_xlim(x[0], x[-1] + width_d)
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    ax_lat.xaxis.set_major_locator(locator)
    formatter = mdates.ConciseDateFormatter(locator, tz=UTC)  # type: ignore[no-untyped-call]
    ax_lat.xaxis.set_major_formatter(formatter)
    fig.align_ylabels([ax_rej, ax_fs, ax_lat])
    fig.subplots_adjust(left=0.08, right=0.92, top=0.92, bottom=0.08, hspace=0.35)


def _stacked(
    ax: Axes,
    x: npt.NDArray[np.float64],
    width_d: float,
    series: dict[str, list[int]],
    none: str,
    family: list[str],
) -> None:
    """``series`` as bars stacked per bucket, with a legend; a note where it is empty."""
    bottom = np.zeros(len(x))
    for name, counts in sorted(series.items()):
        heights = np.asarray(counts, dtype=np.float64)
        ax.bar(
            x, heights, width=width_d * 0.9, bottom=bottom, align="edge", linewidth=0, label=name
        )
        bottom += heights
    if series:
        ax.legend(loc="upper left", fontsize=8, ncols=min(4, len(series)))
    else:
        ax.text(0.5, 0.5, none, transform=ax.transAxes, ha="center", va="center", family=family)
    ax.set_ylim(0, _top(bottom, 1.0))
    ax.yaxis.set_major_locator(MaxNLocator("auto", steps=[1, 2, 5, 10], integer=True))


def _top(values: npt.NDArray[np.float64], floor: float) -> float:
    """An upper axis limit that leaves the top third for the legend, at least ``floor``."""
    finite = values[np.isfinite(values)]
    return max(floor, float(finite.max(initial=0.0)) * 1.5)


def _nan(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    """``values`` with None as NaN (a gap in a line)."""
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)
