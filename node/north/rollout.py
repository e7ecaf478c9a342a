"""A deployed package on the node's side: fetched into the state directory, checked against
its reference, kept across restarts in the node's config, and on record.

- :func:`fetch_package`: the package named by a deploy (a folder the node can read, e.g. on
  a shared filesystem mounted alike on every node) is copied to
  ``<node.state_dir>/packages/<digest[:16]>/`` and its copy verified there (every file
  against its manifest, the manifest's digest against the reference's), so what runs is
  what was checked and the node no longer depends on the share.
- :func:`with_shadow`: the node's config with that copy as the ``[inspection.shadow]``
  candidate, pinned by the digest, so the usual rules (``check_model_package``) apply.
- :func:`persist_shadow`: the config file rewritten the same way (the old one kept beside
  it as ``<config>.<UTC stamp>.bak``) — or, where the node cannot write it (the shipped
  unit), ``<node.state_dir>/models.toml`` (``node.selection``) — so a restarted node runs
  the candidate again.
- :func:`record`: one line appended to ``<node.state_dir>/model-history.jsonl``, where
  ``lineside shadow promote`` writes its promotions: deploys, refusals and promotions from
  the fleet are on the same record.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from node.config import Config
from node.config_rewrite import Rewrite, prepare
from node.north.fleet_command import CommandRefused

HISTORY = "model-history.jsonl"
PACKAGES = "packages"


def fetch_package(source: Path, sha256: str, packages_dir: Path) -> Path:
    """The node's own verified copy of the package at ``source`` whose digest must be
    ``sha256``; an earlier copy with that digest is reused.

    Raises ``CommandRefused`` (one line) for a source that cannot be read, a package that
    does not verify, or a digest other than ``sha256``.
    """
    from models.package import PackageError, load_package

    dest = packages_dir / sha256[:16]
    if dest.is_dir():
        try:
            if load_package(dest).sha256 == sha256:
                return dest
        except PackageError:
            pass
        shutil.rmtree(dest, ignore_errors=True)  # a copy cut short or changed: fetch again
    if not source.is_absolute():
        raise CommandRefused(f"body.package: {source} is not an absolute path")
    if not source.is_dir():
        raise CommandRefused(f"body.package: {source}: not a folder this node can read")
    tmp = packages_dir / f".{sha256[:16]}.{uuid.uuid4().hex[:8]}"
    try:
        packages_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, tmp)
        try:
            got = load_package(tmp).sha256
        except PackageError as exc:
            raise CommandRefused(f"body.package: {source}: {exc}") from None
        if got != sha256:
            raise CommandRefused(
                f"body.package_sha256: the reference names {sha256[:16]}..., "
                f"the package at {source} has {got[:16]}..."
            )
        os.replace(tmp, dest)
    except OSError as exc:
        raise CommandRefused(f"body.package: {source}: cannot copy: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def with_shadow(cfg: Config, package: Path, sha256: str) -> Config:
    """``cfg`` with ``package`` as the shadow candidate, pinned to ``sha256``."""
    insp = cfg.inspection
    shadow = insp.shadow.model_copy(update={"package": package, "sha256": sha256})
    return cfg.model_copy(update={"inspection": insp.model_copy(update={"shadow": shadow})})


def persist_shadow(config: Path, package: Path, sha256: str) -> Rewrite | None:
    """Keep ``package`` pinned to ``sha256`` as the ``[inspection.shadow]`` candidate for the
    next start: in ``config`` (the old file kept beside it), or where that file cannot be
    written in the state directory's selection file (``node.selection``). Returns where it
    was kept (None: the config said so already and is left as it is).

    Raises ``OSError`` when nothing can be read or written, ``ValueError`` when the changed
    config would be refused.
    """
    change = {"shadow": {"package": str(package), "sha256": sha256}}
    rewrite = prepare(config, change, "deploy")
    if rewrite is not None:
        rewrite.commit()
    return rewrite


def record(state_dir: Path, entry: dict[str, Any]) -> None:
    """Append ``entry`` (with the time) to ``<state_dir>/model-history.jsonl``, synced.
    Raises ``OSError`` when it cannot be written."""
    line = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), **entry}
    path = state_dir / HISTORY
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
