"""The node's Sparkplug B edge node, built from its config (``[north]``).

Kept apart from the publisher so the config's checks (password, TLS files) and the
identity of what judges are worked out on the node's side, before the thread starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.errors import StartupError
from node.north import metrics as M
from node.north.publisher import NorthPublisher

if TYPE_CHECKING:
    from node.config import Config
    from node.recorder import ModelIdentity


def open_north(cfg: Config, model: ModelIdentity) -> NorthPublisher:
    """The node's edge node for ``cfg`` (``[north]``), not yet started.

    Raises ``StartupError`` naming the key when the password or a TLS file cannot be read.
    """
    s = cfg.north
    try:
        password = s.password()
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    if s.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(s, key)
            if path is not None and not path.is_file():
                raise StartupError(f"north.{key}: {path} does not exist")
    if s.key_file is not None and s.cert_file is None:
        raise StartupError("north.key_file: set north.cert_file too (the key's certificate)")
    recipe = cfg.inspection.recipe
    state_file = s.state_file if s.state_file.is_absolute() else cfg.node.state_dir / s.state_file
    identity = M.Identity(
        model.name,
        model.version,
        model.sha256,
        recipe.name,
        M.recipe_sha256(recipe.model_dump_json()),
    )
    return NorthPublisher(
        s,
        audit_dir=cfg.audit_directory,
        state_file=state_file,
        node_name=cfg.node.name,
        identity=identity,
        password=password,
    )
