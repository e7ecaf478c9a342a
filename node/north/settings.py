"""Settings of the north-bound Sparkplug B edge node (``[north]`` in the node's config).

The password never sits in the TOML: ``password_env`` names an environment variable
(the systemd unit's environment file) or ``password_file`` a file that holds it; when
both are set the variable wins, and a missing one is a startup error naming the key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_FORBIDDEN = re.compile(r"[+/#]")
"""Characters a Sparkplug group, edge node or device id may not hold (MQTT topic syntax)."""
_COLLECT_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")


def sparkplug_id(text: str) -> str:
    """``text`` made a valid Sparkplug id: ``+``, ``/`` and ``#`` become ``-``."""
    return _FORBIDDEN.sub("-", text).strip() or "lineside"


class NorthSettings(BaseModel):
    """``[north]``: the broker, the Sparkplug ids, and how much may wait for it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "127.0.0.1"
    """The MQTT broker's host name or address."""
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    tls: bool = False
    """Connect over TLS (then usually port 8883)."""
    ca_file: Path | None = None
    """CA certificate(s) the broker's certificate must chain to (none: the system's)."""
    cert_file: Path | None = None
    """The node's client certificate, where the broker asks for one (with ``key_file``)."""
    key_file: Path | None = None
    username: str | None = None
    password_env: str | None = None
    """Name of the environment variable holding the broker password."""
    password_file: Path | None = None
    """A file holding the broker password (its first line)."""
    client_id: str | None = None
    """The MQTT client id; default ``lineside-<group_id>-<edge_node_id>``."""
    group_id: str = "lineside"
    edge_node_id: str | None = None
    """Default: ``node.name`` with ``+ / #`` replaced by ``-``."""
    device_id: str = "line"
    """The inspection station (line and camera) the results are about."""
    keepalive_s: Annotated[int, Field(ge=1, le=3600)] = 10
    """MQTT keep-alive: the broker sends the node's NDEATH within 1.5 times this once the
    node is gone without a word."""
    qos: Literal[0, 1] = 1
    """QoS of births and results. Sparkplug asks for 0; at 1 a result counts as forwarded
    only once the broker acknowledged it, so a broker crash loses none (a result in flight
    may then arrive twice, with the same ``Result/Record Seq``)."""
    poll_ms: Annotated[float, Field(ge=5, le=5000)] = 50.0
    """How often the audit store is asked for newly committed results."""
    window: Annotated[int, Field(ge=1, le=1000)] = 64
    """Results published and not yet acknowledged at most."""
    max_backlog: Annotated[int, Field(ge=10, le=10_000_000)] = 100_000
    """Results waiting for the broker at most; beyond, the oldest are skipped, counted
    (``Counters/North Skipped``, ``north.skipped`` in the status) and logged as
    ``north_backlog_skipped``."""
    reconnect_max_s: Annotated[float, Field(gt=0, le=300)] = 5.0
    """Longest wait between two connection attempts (doubling from 0.25 s)."""
    primary_host_id: str | None = None
    """The Sparkplug host id of the plant's primary host application (``lineside fleet
    --host-id``). Set, the node publishes only while that host's STATE says online, and
    keeps its results in the store while it does not; unset, it publishes whenever the
    broker is there."""
    state_file: Path = Path("north/cursor.json")
    """Where the last forwarded record and the bdSeq are kept (relative: under
    ``node.state_dir``), so a restart resumes where it left."""
    fleet_keys: tuple[Path, ...] = ()
    """ed25519 public key files (``lineside model keygen``) whose signed fleet commands
    (``lineside fleet deploy|promote``) the node takes; none: every one is refused."""
    figures_every_s: Annotated[float, Field(ge=0.2, le=3600)] = 2.0
    """A running shadow candidate's figures go out at most this often (when they changed)."""

    collect_url: str | None = None
    """Where a fleet host fetches this node's reviewed images: the base of ``lineside web``'s
    collect path as the host reaches it, e.g. ``https://line-3.plant.example:8080/collect``
    (announced in the NBIRTH as ``Properties/Collect URL``; none: not announced)."""

    @field_validator("collect_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not _COLLECT_URL.fullmatch(value):
            raise ValueError("must be an http:// or https:// URL with a host, without ? or #")
        return None if value is None else value.rstrip("/")

    @field_validator("group_id", "edge_node_id", "device_id", "primary_host_id")
    @classmethod
    def _no_topic_characters(cls, value: str | None) -> str | None:
        if value is not None and (not value or _FORBIDDEN.search(value)):
            raise ValueError("must be non-empty and hold none of '+', '/', '#'")
        return value

    def edge_node(self, node_name: str) -> str:
        """The edge node id: ``edge_node_id``, else ``node_name`` made valid."""
        return self.edge_node_id or sparkplug_id(node_name)

    def password(self) -> str | None:
        """The broker password from ``password_env`` or ``password_file`` (None when neither
        is set). Raises ``ValueError`` naming the key when the one set cannot be read."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ValueError(
                    f"north.password_env: the environment variable {self.password_env} is not set"
                )
            return value
        if self.password_file is not None:
            try:
                lines = self.password_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(f"north.password_file: {self.password_file}: {exc}") from exc
            if not lines or not lines[0]:
                raise ValueError(f"north.password_file: {self.password_file} is empty")
            return lines[0]
        return None
