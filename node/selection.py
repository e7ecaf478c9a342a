"""The model selection a node keeps in its state directory where it cannot rewrite its
config file.

A fleet deploy keeps its candidate across restarts, and a promotion (from the fleet, or
``lineside shadow promote``) changes the active model, by rewriting the config file's
``[inspection.model]`` and ``[inspection.shadow]`` ``package`` and ``sha256``. Under the
shipped unit that file is root's (``/etc/lineside`` is ``root:lineside 0750``, and
``ProtectSystem=strict`` makes it read-only to the service), so the node cannot. Then
those four keys go to ``<node.state_dir>/models.toml`` instead::

    [inspection.model]
    package = "/var/lib/lineside/packages/0123456789abcdef"
    sha256 = "…"

    [inspection.shadow]
    package = ""          # "": no candidate, whatever the config file says

:func:`overlay` lays them over the config file's own values when the config is loaded
(and says so in the log); a later rewrite of the config file itself
(``node.config_rewrite``) takes them in and removes the file, so there is one truth at a
time.
"""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

import structlog
import tomlkit

log = structlog.get_logger(__name__)

SELECTION_FILE = "models.toml"
TABLES = ("model", "shadow")
KEYS = ("package", "sha256")

Selection = dict[str, dict[str, str]]
"""``{"model": {"package": …, "sha256": …}, "shadow": {…}}``; ``""`` clears a key."""


def selection_path(data: dict[str, Any]) -> Path:
    """Where the selection file of a config (parsed TOML) lives: in its ``node.state_dir``."""
    node = data.get("node")
    state = node.get("state_dir", "state") if isinstance(node, dict) else "state"
    return Path(str(state)) / SELECTION_FILE


def read_selection(path: Path) -> Selection:
    """The selection in ``path`` (empty when there is none).

    Raises ``ValueError`` (one line, the file named) for a file that is not valid TOML or
    holds anything but the four keys as strings.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from exc
    out: Selection = {}
    inspection = raw.pop("inspection", {})
    if raw or not isinstance(inspection, dict) or set(inspection) - set(TABLES):
        raise ValueError(f"{path}: only [inspection.model] and [inspection.shadow] belong here")
    for table, values in inspection.items():
        if not isinstance(values, dict) or set(values) - set(KEYS):
            raise ValueError(f"{path}: inspection.{table}: only package and sha256 belong here")
        for key, value in values.items():
            if not isinstance(value, str):
                raise ValueError(f"{path}: inspection.{table}.{key}: expected a string")
        out[table] = dict(values)
    return out


def overlay(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``data`` (a parsed config) with its state directory's selection laid over it.

    Raises ``ValueError`` for a selection file that cannot be read (see ``read_selection``).
    """
    path = selection_path(data)
    selection = read_selection(path)
    if not selection:
        return data
    out = copy.deepcopy(data)
    apply(out.setdefault("inspection", {}), selection)
    log.info("config_model_selection", config=source, selection=str(path), **_flat(selection))
    return out


def apply(inspection: Any, selection: Selection) -> None:
    """Set (or, for ``""``, remove) the selection's keys in an ``[inspection]`` mapping
    (a dict, or a tomlkit table)."""
    for table, values in selection.items():
        section = inspection.setdefault(table, {})
        for key, value in values.items():
            if value:
                section[key] = value
            elif key in section:
                del section[key]


def write_selection(path: Path, selection: Selection) -> None:
    """Write ``selection`` to ``path`` whole, atomically and synced.

    Raises ``OSError`` when it cannot be written.
    """
    doc = tomlkit.document()
    doc.add(tomlkit.comment("lineside's model selection: overrides the config file's"))
    doc.add(tomlkit.comment("(written by the node; see node/selection.py)"))
    inspection = tomlkit.table(is_super_table=True)
    for table in TABLES:
        values = selection.get(table)
        if values:
            section = tomlkit.table()
            for key in KEYS:
                if key in values:
                    section[key] = values[key]
            inspection[table] = section
    doc["inspection"] = inspection
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(tomlkit.dumps(doc))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _flat(selection: Selection) -> dict[str, str]:
    return {f"{t}_{k}": v or "(none)" for t, values in selection.items() for k, v in values.items()}
