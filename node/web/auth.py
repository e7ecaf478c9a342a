"""Who is looking, who may act, and acting on the node as them.

The web view has no users of its own. A person logs in with a name and password
from the node's ``[[hmi.users]]``; the web opens an OPC UA session on the node's
server *as that person* (a signed, encrypted channel with the web's own client
certificate), so the node checks the password, applies its back-off and lockout,
and later decides every call by the person's role, exactly as for an HMI panel.
The password is used for that one connection and never kept. The session is held
while the person is logged in and closed at logout or after ``web.session_idle_s``
unused; when the node restarts it is gone, and acting asks for a new login.

The browser holds only a random session token (``HttpOnly``, ``SameSite=Strict``,
``Secure`` under HTTPS). Every form carries a CSRF token: the login's own for
someone logged in, a double-submit cookie for the login form itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.ua.status_codes import get_name_and_doc
from asyncua.ua.uaerrors import UaStatusCodeError

from node.hmi.lockout import LoginGuard, Verdict
from node.hmi.plain import NAMESPACE
from node.hmi.security import Pki, ensure_server_certificate
from node.hmi.settings import HmiSettings, Role
from node.hmi.uahelp import StatusCodes, nid
from node.web.settings import WebSettings

log = structlog.get_logger(__name__)

MV_NAMESPACE = "http://opcfoundation.org/UA/MachineVision"
COMMANDS: dict[str, tuple[str, ...]] = {
    "halt": ("VisionStateMachine", "Halt"),
    "reset": ("VisionStateMachine", "Reset"),
    "automatic": ("VisionStateMachine", "SelectModeAutomatic"),
    "start": ("VisionStateMachine", "AutomaticModeStateMachine", "StartContinuous"),
    "stop": ("VisionStateMachine", "AutomaticModeStateMachine", "Stop"),
}
"""The node's OPC 40100 state-machine methods the web offers, by the form's name: the
path below the VisionSystem and the method. The node decides who may call which (an
operator Halt and Reset; the engineer every one)."""
SESSION_COOKIE = "lineside_session"
LOGIN_CSRF_COOKIE = "lineside_login_csrf"

_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class LoginRefused(Exception):
    """A login the web refuses; ``str(exc)`` is safe to show (it never says which of name
    or password was wrong)."""


class ActionRefused(Exception):
    """The node refused a call (``status`` is its OPC UA status name) or could not be
    asked; ``str(exc)`` is safe to show."""

    def __init__(self, why: str, status: str = "") -> None:
        super().__init__(why)
        self.status = status


@dataclass
class Login:
    """One logged-in person: their OPC UA session on the node and their CSRF token."""

    token: str
    name: str
    role: Role
    csrf: str
    client: Client = field(repr=False)
    last_ns: int
    lost: bool = False
    flash: tuple[str, str] | None = None
    """A message for the next page shown to them: (text, "ok" or "error")."""

    @property
    def may_command(self) -> bool:
        """Modes and recipes are the engineer's (as on the node's server)."""
        return self.role == "engineer"


def same(a: str, b: str) -> bool:
    """Constant-time string equality (CSRF tokens)."""
    return hmac.compare_digest(a.encode(), b.encode())


def web_pki(state_dir: Path, web: WebSettings) -> Pki:
    """Where the web's own client certificate lives."""
    d = web.certificate_dir
    return Pki(d if d.is_absolute() else state_dir / d)


def node_pki(state_dir: Path, hmi: HmiSettings) -> Pki:
    """The node's HMI server certificate folders."""
    d = hmi.certificate_dir
    return Pki(d if d.is_absolute() else state_dir / d)


def prepare_certificate(state_dir: Path, node_name: str, web: WebSettings, hmi: HmiSettings) -> Pki:
    """Make the web's client certificate unless it has one, and (``web.trust_on_node``) put
    it in the node's ``trusted/`` folder. Blocking; raises ``OSError`` when a folder
    cannot be written."""
    pki = web_pki(state_dir, web)
    ensure_server_certificate(pki, application_uri(node_name), f"{node_name} web")
    if web.trust_on_node:
        trusted = node_pki(state_dir, hmi).trusted
        trusted.mkdir(parents=True, exist_ok=True)
        target = trusted / "lineside-web.der"
        if not target.is_file() or target.read_bytes() != pki.cert.read_bytes():
            tmp = trusted.parent / ".lineside-web.der.tmp"
            shutil.copyfile(pki.cert, tmp)
            tmp.replace(target)  # the node re-reads trusted/ when it changes
            log.info("web_certificate_trusted_on_node", path=str(target))
    return pki


def application_uri(node_name: str) -> str:
    """The web's OPC UA ApplicationUri (in its certificate)."""
    return f"urn:lineside:{node_name.replace(' ', '-')}:web"


class Logins:
    """The logged-in people, by session token."""

    def __init__(
        self,
        web: WebSettings,
        hmi: HmiSettings,
        *,
        endpoint: str,
        pki: Pki,
        node_name: str,
    ) -> None:
        self._web = web
        self._roles: dict[str, Role] = {u.name: u.role for u in hmi.users}
        self._endpoint = endpoint
        self._pki = pki
        self._uri = application_uri(node_name)
        self._logins: dict[str, Login] = {}
        self._guard = LoginGuard(
            backoff_after=hmi.login_backoff_after,
            backoff_s=hmi.login_backoff_s,
            lockout_after=hmi.login_lockout_after,
            lockout_s=hmi.login_lockout_s,
        )
        self._policy, self._mode = _policy_of(hmi)
        self._session_ms = int(hmi.max_session_timeout_s * 1000)

    @property
    def count(self) -> int:
        """People logged in now."""
        return len(self._logins)

    async def login(self, name: str, password: str) -> Login:
        """Log ``name`` in by opening their session on the node.

        Raises ``LoginRefused`` for an unknown name or wrong password (the same words
        for both), a name backing off or locked out, too many logins, or a node that
        cannot be reached.
        """
        await self.expire()
        if self._policy is None:
            raise LoginRefused("the node offers no signed endpoint; logins are off")
        verdict = self._guard.admit(name)
        if verdict is not Verdict.CHECK:
            wait = self._guard.wait_s(name)
            log.warning("web_login_refused", user=name, reason=verdict.value)
            raise LoginRefused(f"too many wrong passwords: try again in {wait:.0f} s")
        role = self._roles.get(name)
        if len(self._logins) >= self._web.max_logins:
            raise LoginRefused("too many people are logged in; try again later")
        client = Client(self._endpoint, timeout=self._web.call_timeout_s)
        client.session_timeout = self._session_ms  # the node grants no more
        client.name = client.description = f"lineside web ({name})"
        client.application_uri = self._uri
        client.set_user(name)
        client.set_password(password)
        try:
            await client.set_security(
                self._policy, str(self._pki.cert), str(self._pki.key), mode=self._mode
            )
            await client.connect()
        except UaStatusCodeError as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            if exc.code in (
                StatusCodes.BadUserAccessDenied,
                StatusCodes.BadIdentityTokenRejected,
                StatusCodes.BadIdentityTokenInvalid,
            ):
                self._guard.failed(name)
                log.warning("web_login_refused", user=name, reason="wrong name or password")
                raise LoginRefused("wrong name or password") from exc
            log.warning("web_login_failed", user=name, error=str(exc))
            raise LoginRefused(f"the node refused the session: {exc}") from exc
        except (OSError, TimeoutError) as exc:
            with contextlib.suppress(Exception):
                await client.disconnect()
            log.warning("web_login_failed", user=name, error=f"{type(exc).__name__}: {exc}")
            raise LoginRefused("the node cannot be reached; logins need it") from exc
        if role is None:  # the node knows them but this config does not: look only
            await _close(client)
            raise LoginRefused("wrong name or password")
        self._guard.succeeded(name)
        login = Login(
            token=secrets.token_urlsafe(32),
            name=name,
            role=role,
            csrf=secrets.token_urlsafe(32),
            client=client,
            last_ns=time.monotonic_ns(),
        )

        async def lost(exc: Exception) -> None:
            login.lost = True

        client.connection_lost_callback = lost
        self._logins[login.token] = login
        log.info("web_login", user=name, role=role)
        return login

    def get(self, token: str | None) -> Login | None:
        """The login of ``token`` (touched), or None when there is none or it went idle."""
        if not token:
            return None
        login = self._logins.get(token)
        if login is None:
            return None
        now = time.monotonic_ns()
        if (now - login.last_ns) / 1e9 > self._web.session_idle_s or login.lost:
            return None
        login.last_ns = now
        return login

    async def logout(self, token: str) -> None:
        """End the login of ``token`` and close its OPC UA session."""
        login = self._logins.pop(token, None)
        if login is not None:
            log.info("web_logout", user=login.name)
            await _close(login.client)

    async def expire(self) -> None:
        """Close every login idle past ``web.session_idle_s`` or whose session was lost."""
        now = time.monotonic_ns()
        for token, login in list(self._logins.items()):
            if login.lost or (now - login.last_ns) / 1e9 > self._web.session_idle_s:
                self._logins.pop(token, None)
                log.info("web_login_ended", user=login.name, lost=login.lost)
                await _close(login.client)

    async def close(self) -> None:
        """Log everyone out."""
        for token in list(self._logins):
            await self.logout(token)

    # -- acting on the node as the person ------------------------------------------------------
    async def review(
        self, login: Login, result_id: str, verdict: str, defect_type: str, comment: str
    ) -> None:
        """``Lineside.ReviewResult`` as ``login``. Raises ``ActionRefused``."""
        client = login.client
        try:
            idx = await client.get_namespace_index(NAMESPACE)
            root = client.get_node(nid("Lineside", idx))
            await root.call_method(
                nid("Lineside.ReviewResult", idx),
                ua.Variant(result_id, ua.VariantType.String),
                ua.Variant(verdict, ua.VariantType.String),
                ua.Variant(defect_type, ua.VariantType.String),
                ua.Variant(comment, ua.VariantType.String),
            )
        except UaStatusCodeError as exc:
            name = StatusCodes.__dict__.get("_names", {}).get(exc.code, "") or _status(exc)
            log.warning("web_review_refused", user=login.name, result_id=result_id, status=name)
            raise ActionRefused(_words(name), name) from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            login.lost = True
            raise ActionRefused("the node cannot be reached; log in again", "") from exc
        log.info("web_review", user=login.name, result_id=result_id, verdict=verdict)

    async def command(self, login: Login, name: str, cause: str) -> None:
        """One of :data:`COMMANDS` on the node as ``login`` (``cause`` is the text a Halt,
        Reset or Stop carries). Raises ``ActionRefused``, also when the node has no OPC
        40100 model (``hmi.nodeset``) to call it on."""
        if name not in COMMANDS:
            raise ActionRefused(f"no command {name!r}")
        try:
            await _call_command(login.client, name, cause)
        except UaStatusCodeError as exc:
            status = _status(exc)
            log.warning("web_command_refused", user=login.name, command=name, status=status)
            raise ActionRefused(_words(status), status) from exc
        except ValueError as exc:  # a namespace or browse name the node does not have
            raise ActionRefused("the node serves no OPC 40100 state machine (hmi.nodeset)") from exc
        except (OSError, TimeoutError, ConnectionError) as exc:
            login.lost = True
            raise ActionRefused("the node cannot be reached; log in again") from exc
        log.info("web_command", user=login.name, command=name, cause=cause)


async def _call_command(client: Client, name: str, cause: str) -> None:
    """Call the 40100 method ``COMMANDS[name]`` with the inputs the node's handler takes."""
    ns = await client.get_namespace_index(MV_NAMESPACE)
    own = await client.get_namespace_index(NAMESPACE)  # the instance is named in the node's
    *path, method = COMMANDS[name]
    obj = await client.nodes.objects.get_child(f"{own}:VisionSystem")
    for part in path:
        obj = await obj.get_child(f"{ns}:{part}")
    if name in ("halt", "reset", "stop"):
        args = [ua.Variant(0, ua.VariantType.Int32), ua.Variant(cause, ua.VariantType.String)]
    elif name == "start":
        args = [ua.Variant() for _ in range(5)]  # no MeasId, PartId, recipe, product, params
    else:
        args = []
    await obj.call_method(f"{ns}:{method}", *args)


def _status(exc: UaStatusCodeError) -> str:
    """The status's name, e.g. ``BadUserAccessDenied``."""
    try:
        return get_name_and_doc(exc.code)[0]
    except KeyError:
        return f"0x{exc.code:08X}"


_WORDS = {
    "BadUserAccessDenied": "your role may not do this",
    "BadNotFound": "the node knows no such result",
    "BadInvalidArgument": "the node refused the input",
    "BadOutOfRange": "a text is too long",
    "BadInvalidState": "not possible in the node's present state",
    "BadSecurityModeInsufficient": "the session is not signed",
}


def _words(status: str) -> str:
    for key, words in _WORDS.items():
        if status.startswith(key):
            return words
    return f"the node refused ({status})"


def _policy_of(
    hmi: HmiSettings,
) -> tuple[type[security_policies.SecurityPolicy] | None, Any]:
    """The strongest signed policy the node offers: SignAndEncrypt first."""
    names = sorted(hmi.security_policies, key=lambda n: not n.endswith("SignAndEncrypt"))
    for name in names:
        base, _, mode = name.partition("_")
        policy = _POLICIES.get(base)
        if policy is not None:
            m = (
                ua.MessageSecurityMode.SignAndEncrypt
                if mode == "SignAndEncrypt"
                else ua.MessageSecurityMode.Sign
            )
            return policy, m
    return None, None


async def _close(client: Client) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 5.0)


def safe_next(value: object) -> str:
    """A local path to go back to (never another site)."""
    text = str(value or "")
    if not text.startswith("/") or text.startswith("//") or "\\" in text:
        return "/live"
    return text
