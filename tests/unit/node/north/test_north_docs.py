"""docs/north.md and the README say what the edge node really publishes and reads."""

from __future__ import annotations

import re
from pathlib import Path

from node.north import metrics as M
from node.north.settings import NorthSettings

ROOT = Path(__file__).resolve().parents[4]


def test_the_metric_table_is_the_published_one() -> None:
    """Every metric in docs/north.md's tables is published with that type, and every
    published metric is in them."""
    text = (ROOT / "docs" / "north.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([^`]+)` \| (\w+) \|", text, flags=re.MULTILINE))
    published = {m.name: m.datatype.name.lower() for m in (*M.NODE_METRICS, *M.DEVICE_METRICS)}
    assert {k: v.lower() for k, v in rows.items()} == published


def test_every_north_key_is_in_the_readme() -> None:
    """Each [north] key appears in the README's configuration table."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = [ln for ln in text.splitlines() if ln.startswith("| `north.")]
    keys = " ".join(rows)
    missing = [
        f for f in NorthSettings.model_fields if f"`{f}`" not in keys and f"north.{f}`" not in keys
    ]
    assert missing == []
