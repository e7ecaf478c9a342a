"""Changing the model selection for the next start: in the config file, or — where the
node cannot write it — in its state directory's selection file (``node.selection``).

Used by ``lineside shadow promote`` and by the fleet's deploy and promote on the node.
"""

from __future__ import annotations

import copy
import datetime as dt
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from node.config import parse_config
from node.errors import ConfigError
from node.selection import TABLES, Selection, apply, read_selection, selection_path, write_selection


@dataclass(frozen=True)
class Rewrite:
    """A checked change of the model selection, ready to take effect (``commit``): in the
    config file (``backup`` keeps the old one) or, where that cannot be written
    (``why_not_config``), in the state directory's selection file."""

    config: Path
    selection_file: Path
    text: str
    """The config file's text before."""
    tmp: Path | None
    """The rewritten config, beside it (None: the selection file takes the change)."""
    backup: Path | None
    selection: Selection
    why_not_config: str = ""

    def commit(self) -> None:
        """Make the change take effect (for the next start). Raises ``OSError``."""
        if self.tmp is None:
            write_selection(self.selection_file, self.selection)
            return
        assert self.backup is not None
        self.backup.write_text(self.text, encoding="utf-8")
        os.replace(self.tmp, self.config)
        self.selection_file.unlink(missing_ok=True)  # taken into the config: one truth

    def discard(self) -> None:
        """Leave everything as it was."""
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)

    def describe(self) -> str:
        """Where the change is kept, for a person."""
        if self.tmp is None:
            return (
                f"kept in {self.selection_file} (the config file cannot be written: "
                f"{self.why_not_config})"
            )
        assert self.backup is not None
        return f"kept in {self.config} (old config: {self.backup.name})"


def prepare(config: Path, change: Selection, tag: str) -> Rewrite | None:
    """The config file ``config`` with ``change`` made to its selection (what the state
    directory's selection file already says taken in first), checked, not yet in effect;
    None when nothing would change. ``tag`` names the temporary file.

    Raises ``OSError`` when the config cannot be read, ``ValueError`` (one line) when the
    changed config would be refused or the selection file is bad.
    """
    text = config.read_text(encoding="utf-8")
    plain = tomllib.loads(text)
    selection_file = selection_path(plain)
    current = read_selection(selection_file)
    before = copy.deepcopy(plain.get("inspection", {}))
    apply(before, current)
    after = copy.deepcopy(before)
    apply(after, change)
    if after == before:
        return None
    plain["inspection"] = after
    try:
        parse_config(plain, str(config))
    except ConfigError as exc:
        raise ValueError(f"{config}: the changed config is refused: {exc.problems[0]}") from exc
    doc = tomlkit.parse(text)
    inspection = doc.setdefault("inspection", tomlkit.table())
    for table in TABLES:
        if table in current or table in change:
            inspection.setdefault(table, tomlkit.table())
    apply(inspection, current)
    apply(inspection, change)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tmp = config.with_name(f".{config.name}.{tag}")
    merged = {t: {**current.get(t, {}), **change.get(t, {})} for t in (*current, *change)}
    try:
        tmp.write_text(tomlkit.dumps(doc), encoding="utf-8")
    except OSError as exc:
        why = exc.strerror or str(exc)
        return Rewrite(config, selection_file, text, None, None, merged, why)
    backup = config.with_name(f"{config.name}.{stamp}.bak")
    return Rewrite(config, selection_file, text, tmp, backup, merged)
