"""Who may connect and what they may do: certificates, trust list, users, permissions.

- The server's certificate and key live in ``<certificate_dir>/own/`` and are made
  on first start (RSA 2048, self-signed, 10 years) and kept; a certificate that
  has expired or names another ApplicationUri is made anew (logged).
- Client certificates on secured endpoints must be in ``trusted/`` (DER or PEM);
  a refused one is saved to ``rejected/`` so an engineer can move it to ``trusted/``.
- Anonymous sessions may browse, read and subscribe; Write and Call requests need
  a user who logged in with a name and password from the settings, on a Sign or
  SignAndEncrypt channel (unless ``allow_insecure_writes``); what each role may
  call is decided in ``node.hmi.methods``.
- Wrong passwords back off and lock out per user name (``node.hmi.lockout``);
  each connection has a request budget (``node.hmi.limits.RequestBudget``).
- The method handlers learn who called them from :func:`current_user`: asyncua
  handles one connection's requests one after the other in one task, and the
  permission check runs in that task just before the request is dispatched.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import USER_TYPES, SimpleRoleRuleset, User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from node.hmi.limits import RequestBudget
from node.hmi.lockout import LoginGuard, Verdict
from node.hmi.settings import HmiSettings, HmiUser, Role
from node.hmi.uahelp import ObjectIds, StatusCodes, nid
from node.hmi.users import verify_password

log = structlog.get_logger(__name__)

_CERT_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the current request: ``name`` None for anonymous sessions."""

    name: str | None
    role: Role | None


ANONYMOUS = Caller(None, None)
LOCAL = Caller("local", "engineer")
"""Calls made inside the process (tests, the node itself), not over the network."""

_caller: contextvars.ContextVar[Caller] = contextvars.ContextVar("hmi_caller", default=LOCAL)
_secured: contextvars.ContextVar[bool] = contextvars.ContextVar("hmi_secured", default=True)
_budget: contextvars.ContextVar[RequestBudget | None] = contextvars.ContextVar(
    "hmi_budget", default=None
)


def mark_channel_security(
    factories: Iterable[Any], budget: Callable[[], RequestBudget] | None = None
) -> None:
    """Let the certificate check know whether the current secure channel is encrypted.

    asyncua validates any client certificate a session presents, even on the
    SecurityPolicy None channel, where it protects nothing (and many clients send
    one anyway). Each channel picks its policy in its connection task, the same
    task that later creates the session, so the policy factories record it in a
    context variable. ``factories`` are asyncua's ``SecurityPolicyFactory`` objects;
    ``budget`` makes each connection's request budget, kept the same way.
    """
    for factory in factories:
        secured = factory.mode != ua.MessageSecurityMode.None_
        create = factory.create

        def wrapped(peer_certificate: Any, _c: Any = create, _s: bool = secured) -> Any:
            _secured.set(_s)
            if budget is not None and _budget.get() is None:
                _budget.set(budget())
            return _c(peer_certificate)

        factory.create = wrapped


def current_user() -> Caller:
    """The caller of the OPC UA request being handled (see the module docstring)."""
    return _caller.get()


# -- certificates -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Pki:
    """Paths of the server's PKI folder."""

    root: Path

    @property
    def cert(self) -> Path:
        return self.root / "own" / "cert.der"

    @property
    def key(self) -> Path:
        return self.root / "own" / "private" / "key.pem"

    @property
    def trusted(self) -> Path:
        return self.root / "trusted"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"


def _san_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def ensure_server_certificate(pki: Pki, application_uri: str, node_name: str) -> None:
    """Make the server's key and certificate unless usable ones exist (blocking, ~0.1 s).

    Raises:
        OSError: the folder cannot be written.
    """
    for d in (pki.cert.parent, pki.key.parent, pki.trusted, pki.rejected):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(pki.key.parent, 0o700)
    if pki.cert.is_file() and pki.key.is_file():
        cert = x509.load_der_x509_certificate(pki.cert.read_bytes())
        now = dt.datetime.now(dt.UTC)
        if cert.not_valid_after_utc > now and application_uri in _san_uris(cert):
            return
        log.warning("hmi_certificate_renewed", reason="expired or other ApplicationUri")
    host = socket.gethostname()
    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(host),
        x509.DNSName("localhost"),
    ]
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        f"lineside {node_name}",
        {"organizationName": "lineside"},
        names,
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=_CERT_DAYS,
    )
    fd = os.open(pki.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    log.info("hmi_certificate_created", path=str(pki.cert), uri=application_uri)


class TrustListValidator:
    """Accepts client certificates found in ``trusted/``; saves refused ones to ``rejected/``.

    Checks validity dates, that the ApplicationUri is in the certificate, and trust
    (directly or through a CA in ``trusted/``). The list is read at start, and again
    whenever a secured session finds the folder changed (a certificate an engineer
    moved there, or ``lineside web``'s own, placed at its start), so no restart is needed.
    """

    def __init__(self, pki: Pki, *, trust_all: bool = False) -> None:
        self._pki = pki
        options = CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
        if not trust_all:
            options |= CertificateValidatorOptions.TRUSTED
        self._trust_all = trust_all
        self._options = options
        self._store = TrustStore([pki.trusted], [])
        self._validator = CertificateValidator(options, self._store)
        self._empty = True
        self._loaded: frozenset[tuple[str, int, int]] = frozenset()

    def _listing(self) -> frozenset[tuple[str, int, int]]:
        """What ``trusted/`` holds now: (name, size, mtime) of each file."""
        out = set()
        for entry in os.scandir(self._pki.trusted):
            if entry.is_file():
                st = entry.stat()
                out.add((entry.name, st.st_size, st.st_mtime_ns))
        return frozenset(out)

    async def load(self) -> None:
        """Read the trusted certificates (an empty ``trusted/`` trusts nobody)."""
        listing = self._listing()
        self._loaded = listing
        self._empty = not listing
        self._store = TrustStore([self._pki.trusted], [])
        self._validator = CertificateValidator(self._options, self._store)
        if not self._empty:
            await self._store.load()

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        """Raise ``ServiceError`` (Bad status) unless ``cert`` is acceptable."""
        if not _secured.get():
            return  # SecurityPolicy None: the certificate is not used, trust is moot
        if self._listing() != self._loaded:
            await self.load()
            log.info("hmi_trust_list_reloaded", certificates=len(self._loaded))
        try:
            if self._empty and not self._trust_all:
                raise ServiceError(StatusCodes.BadCertificateUntrusted)
            await self._validator.validate(cert, app)
        except Exception as exc:
            thumb = cert.fingerprint(hashes.SHA1()).hex()
            path = self._pki.rejected / f"{thumb}.der"
            if not path.exists():
                path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
            log.warning(
                "hmi_client_certificate_refused",
                application_uri=app.ApplicationUri,
                reason=type(exc).__name__,
                saved=str(path),
            )
            raise


# -- users and permissions ----------------------------------------------------------------
class HmiUserManager(UserManager):
    """Anonymous sessions get ``UserRole.Anonymous``; configured users ``UserRole.User``.

    A wrong name or password refuses the session (``BadUserAccessDenied``), and so
    does a login while its name is backing off or locked out (``guard``). The
    scrypt check runs on the event loop (about 50 ms, once per admitted login).
    """

    def __init__(self, users: Iterable[HmiUser], guard: LoginGuard | None = None) -> None:
        self._users = {u.name: u for u in users}
        self._guard = guard

    @classmethod
    def from_settings(cls, settings: HmiSettings) -> HmiUserManager:
        """The users of ``settings`` with its back-off and lockout rules."""
        guard = LoginGuard(
            backoff_after=settings.login_backoff_after,
            backoff_s=settings.login_backoff_s,
            lockout_after=settings.login_lockout_after,
            lockout_s=settings.login_lockout_s,
        )
        return cls(settings.users, guard)

    def role_of(self, name: str | None) -> Role | None:
        """The configured role of ``name``."""
        u = self._users.get(name or "")
        return None if u is None else u.role

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        """The asyncua user for a session's identity token, or None to refuse it."""
        if username is None:
            # X509 identity tokens are not offered, so no name means an anonymous token
            # (``certificate`` is then the secure channel's client certificate, if any)
            return User(role=UserRole.Anonymous)
        guard = self._guard
        if guard is not None and guard.admit(username) is not Verdict.CHECK:
            return None
        u = self._users.get(username or "")
        if u is None or password is None or not verify_password(password, u.password_hash):
            log.warning("hmi_login_refused", user=username)
            if guard is not None:
                guard.failed(username)
            return None
        if guard is not None:
            guard.succeeded(username)
        log.info("hmi_login", user=username, role=u.role)
        return User(role=UserRole.User, name=u.name)


_DENIED_TO_ANONYMOUS = {
    nid(ObjectIds.WriteRequest_Encoding_DefaultBinary),
    nid(ObjectIds.CallRequest_Encoding_DefaultBinary),
    nid(ObjectIds.HistoryUpdateRequest_Encoding_DefaultBinary),
}
_NEED_SECURED = _DENIED_TO_ANONYMOUS
_UNMETERED = {nid(ObjectIds.PublishRequest_Encoding_DefaultBinary)}
"""Publish requests are paced by the server (one answer per publishing interval)."""


class HmiPermissions(SimpleRoleRuleset):
    """Anonymous: everything a reading client needs; users: that plus Write and Call,
    on a signed channel unless ``allow_insecure_writes``.

    Address-space changes (AddNodes, DeleteNodes, ...) are refused to everyone
    over the network. Every request but Publish spends the connection's budget.
    """

    def __init__(self, users: HmiUserManager, *, allow_insecure_writes: bool = False) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._users = users
        self._insecure_ok = allow_insecure_writes
        user_ids = {nid(t) for t in USER_TYPES}
        self._allowed = {
            UserRole.Anonymous: user_ids - _DENIED_TO_ANONYMOUS,
            UserRole.User: user_ids,
            UserRole.Admin: user_ids,
        }

    def check_validity(self, user: User, action_type_id: ua.NodeId, body: Any) -> bool:
        """Whether ``user`` may make a request of type ``action_type_id``.

        Raises:
            ServiceError: ``BadTooManyOperations`` past the request budget,
                ``BadSecurityModeInsufficient`` for a user's Write or Call on an
                unsigned channel.
        """
        budget = _budget.get()
        if budget is not None and action_type_id not in _UNMETERED and not budget.take():
            raise ServiceError(StatusCodes.BadTooManyOperations)
        if user.role == UserRole.Anonymous or user.name is None:
            _caller.set(ANONYMOUS)
        else:
            _caller.set(Caller(user.name, self._users.role_of(user.name)))
        allowed = action_type_id in self._allowed.get(user.role, set())
        insecure = not self._insecure_ok and not _secured.get()
        if allowed and insecure and action_type_id in _NEED_SECURED:
            log.warning("hmi_insecure_write_refused", user=user.name)
            raise ServiceError(StatusCodes.BadSecurityModeInsufficient)
        return allowed


def security_policy_types(
    names: Sequence[str], allow_unsecured: bool
) -> list[ua.SecurityPolicyType]:
    """asyncua's policy types for the configured endpoint names."""
    types = [getattr(ua.SecurityPolicyType, n) for n in names]
    if allow_unsecured:
        types.insert(0, ua.SecurityPolicyType.NoSecurity)
    return types
