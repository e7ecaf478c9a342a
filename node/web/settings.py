"""Settings of ``lineside web`` (``[web]`` in the node's config).

The web view is a process of its own beside the node (``systemd/lineside-web.service``).
It needs no users of its own: people log in with the ``[[hmi.users]]`` of the node's
OPC UA server, and every action goes to the node as that user (see ``node.web.auth``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Language = Literal["en", "de", "ja"]


class WebSettings(BaseModel):
    """``[web]``: where the web view listens and who may look without logging in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Address to listen on (``0.0.0.0`` for every interface)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """TCP port (0 picks a free one; the chosen port is logged as ``web_listening``)."""
    anonymous_view: bool = True
    """Whether people who have not logged in may look (never act). False: every page but
    the login asks for a login first."""
    https: bool = False
    """Serve HTTPS with the node's own certificate (its HMI server's, in
    ``<state_dir>/<hmi.certificate_dir>/own/``); session cookies are then ``Secure``."""
    node_endpoint: str | None = None
    """The node's OPC UA server to follow and act through; default ``hmi.endpoint`` with a
    wildcard host replaced by 127.0.0.1."""
    certificate_dir: Path = Path("web-pki")
    """The web's own client certificate for signed OPC UA sessions, relative to
    ``node.state_dir``; made on first start."""
    trust_on_node: bool = True
    """Copy that certificate into the node's ``trusted/`` folder at start (both run from the
    same ``state_dir`` on one machine), so the node accepts the web's signed sessions."""
    language: Language = "en"
    """Language for viewers whose browser asks for none of en, de, ja."""
    cards: Annotated[int, Field(ge=1, le=200)] = 12
    """Results shown as cards on the live page."""
    session_idle_s: Annotated[float, Field(ge=60, le=86_400)] = 1800.0
    """A login unused this long ends (its OPC UA session is closed)."""
    max_logins: Annotated[int, Field(ge=1, le=100)] = 10
    """Logged-in people at once (each holds one OPC UA session on the node)."""
    max_viewers: Annotated[int, Field(ge=1, le=1000)] = 50
    """Live pages following at once; one more gets ``503``."""
    viewer_queue: Annotated[int, Field(ge=8, le=10_000)] = 200
    """Updates held for one live page that reads slowly; beyond it the oldest are dropped
    (counted in ``/status``)."""
    nice: Annotated[int, Field(ge=0, le=19)] = 10
    """How much lower the web process's CPU priority is than a normal process's."""
    call_timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    """Longest wait for the node to answer a review or a command."""
    collect_token_file: Path | None = None
    """A file whose first line is the bearer token a fleet host presents to fetch reviewed
    images (``/collect/...``, see ``node.web.collect``); none: the collect path is not
    served (404)."""
