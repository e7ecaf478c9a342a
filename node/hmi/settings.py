"""Settings of the node's own OPC UA server for HMI panels (``[hmi]`` in the node's config).

Passwords never live in the TOML: each user carries a salted hash made with
``lineside hmi hash-password`` (see :mod:`node.hmi.users`). Relative paths are
resolved by the caller: ``nodeset`` against the config file's folder,
``certificate_dir`` against the node's ``state_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SecurityPolicyName = Literal[
    "Basic256Sha256_SignAndEncrypt",
    "Basic256Sha256_Sign",
    "Aes128Sha256RsaOaep_SignAndEncrypt",
    "Aes128Sha256RsaOaep_Sign",
    "Aes256Sha256RsaPss_SignAndEncrypt",
    "Aes256Sha256RsaPss_Sign",
]
"""A secured endpoint, named as asyncua's ``ua.SecurityPolicyType`` members are."""

Role = Literal["operator", "engineer"]
"""``operator``: Halt, Reset, ReviewResult and the read-only query methods; ``engineer``:
every method (modes, Start/Stop, recipes) too. Anonymous sessions may browse, read and
subscribe only (see ``node.hmi.methods.OPERATOR_METHODS``)."""


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HmiUser(_Settings):
    """One user who may log in to the HMI server with a user name and password."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
    """Login name (letters, digits, ``_ . @ -``)."""
    role: Role
    """What the user may do besides reading; see :data:`Role`."""
    password_hash: str
    """``scrypt$<n>$<r>$<p>$<salt hex>$<hash hex>`` as made by ``lineside hmi hash-password``."""

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, value: str) -> str:
        from node.hmi.users import parse_hash

        parse_hash(value)  # raises ValueError naming the problem
        return value


class HmiSettings(_Settings):
    """``[hmi]``: the OPC UA server HMI panels connect to (OPC 40100 model + plain namespace)."""

    enabled: bool = True
    """Serve at all."""
    endpoint: str = "opc.tcp://0.0.0.0:4840/lineside/"
    """Listen address; port 0 picks a free port (see ``HmiServer.endpoint_url``)."""
    nodeset: Path | None = Path("../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml")
    """The OPC 40100 Machine Vision NodeSet2 file. Missing or None: the plain namespace
    only (logged as ``hmi_nodeset_missing``)."""
    allow_unsecured: bool = True
    """Also offer the SecurityPolicy None endpoint (browse/read/subscribe for simple panels;
    user passwords are still encrypted with a secured policy's key)."""
    security_policies: list[SecurityPolicyName] = Field(
        default_factory=lambda: [  # type: ignore[arg-type]
            "Basic256Sha256_SignAndEncrypt",
            "Aes128Sha256RsaOaep_SignAndEncrypt",
            "Aes256Sha256RsaPss_SignAndEncrypt",
        ]
    )
    """Secured endpoints to offer."""
    certificate_dir: Path = Path("pki")
    """Server certificate and key (``own/``, generated on first start and kept), trusted
    client certificates (``trusted/``, DER or PEM) and refused ones (``rejected/``)."""
    trust_all_clients: bool = False
    """Accept any client certificate on secured endpoints (commissioning only)."""
    application_uri: str | None = None
    """The server's ApplicationUri; default ``urn:lineside:<node name>:hmi``."""
    users: list[HmiUser] = Field(default_factory=list)
    """Who may log in with a user name and password."""
    publish_thumbnails: bool = True
    """Publish a small PNG of each part in ``LastResult.Thumbnail``."""
    thumbnail_px: Annotated[int, Field(ge=16, le=512)] = 96
    """Longest side of the thumbnail in pixels (see ``node.hmi.thumbnail``)."""
    queue_size: Annotated[int, Field(ge=16, le=100_000)] = 2000
    """Pending updates held for the OPC UA side; beyond this the oldest are dropped
    (counted, logged) so the node never waits for its HMI clients."""
    nice: Annotated[int, Field(ge=0, le=19)] = 10
    """How much lower the HMI process's CPU priority is than the node's (``nice`` increment),
    so that where cores are shared the line's process runs first."""
    allow_insecure_writes: bool = False
    """Accept Write and Call requests on the SecurityPolicy None endpoint too (commissioning
    only; logged as a warning at every start). Without it they need a Sign or
    SignAndEncrypt channel and are refused with ``BadSecurityModeInsufficient``."""
    max_sessions: Annotated[int, Field(ge=1, le=1000)] = 20
    """Open sessions at once; one more is refused with ``BadTooManySessions``."""
    max_session_timeout_s: Annotated[float, Field(ge=10, le=3600)] = 60.0
    """Longest session timeout granted: a session whose panel vanished with subscriptions
    open keeps its slot (for a reconnect) this long at most (asyncua allows 600 s)."""
    max_subscriptions_per_session: Annotated[int, Field(ge=1, le=1000)] = 10
    """Subscriptions one session may hold (``BadTooManySubscriptions`` beyond)."""
    max_monitored_items_per_session: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Monitored items one session may hold (``BadTooManyMonitoredItems`` beyond)."""
    max_message_size: Annotated[int, Field(ge=65_536, le=256 * 1024 * 1024)] = 4 * 1024 * 1024
    """Largest OPC UA message in bytes, either way (asyncua's default is 100 MB)."""
    max_requests_per_s: Annotated[float, Field(gt=0, le=100_000)] = 200.0
    """Requests one session may make per second on average (Publish requests aside, which
    the server paces itself); beyond it a request is answered ``BadTooManyOperations``."""
    request_burst: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Requests a session may make at once before the rate applies (browsing a panel's
    screen or loading the 40100 type definitions takes a few hundred)."""
    max_string_length: Annotated[int, Field(ge=16, le=65_536)] = 1024
    """Longest string a method accepts (review comment, cause, ids); longer ones are refused
    with ``BadOutOfRange``."""
    login_backoff_after: Annotated[int, Field(ge=1, le=100)] = 3
    """Wrong passwords for one user name before each further try must wait."""
    login_backoff_s: Annotated[float, Field(gt=0, le=3600)] = 1.0
    """The first wait; it doubles with every further wrong password. A login tried sooner is
    refused without looking at the password."""
    login_lockout_after: Annotated[int, Field(ge=1, le=1000)] = 10
    """Wrong passwords for one user name that lock it out (even the right password is
    refused until ``login_lockout_s`` has passed)."""
    login_lockout_s: Annotated[float, Field(gt=0, le=86_400)] = 900.0
    """How long a lockout lasts."""

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not value.startswith("opc.tcp://"):
            raise ValueError("must start with opc.tcp://")
        return value

    @model_validator(mode="after")
    def _check(self) -> HmiSettings:
        problems = []
        if not self.allow_unsecured and not self.security_policies:
            problems.append("security_policies: empty while allow_unsecured is false")
        names = [u.name for u in self.users]
        if len(names) != len(set(names)):
            problems.append("users: duplicate name")
        if self.login_lockout_after < self.login_backoff_after:
            problems.append("login_lockout_after: less than login_backoff_after")
        if problems:
            raise ValueError("; ".join(problems))
        return self
