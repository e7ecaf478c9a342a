"""Failed-login back-off and lockout per user name.

Without it a client can try passwords as fast as the server checks them (each
check costs ~50 ms of scrypt on the HMI's loop). After
``login_backoff_after`` wrong passwords a user name must wait before the next
try — ``login_backoff_s``, doubling with each further wrong password — and a
try made sooner is refused without the password being checked. After
``login_lockout_after`` wrong passwords the name is locked for
``login_lockout_s``: even the right password is refused. A right password
outside those windows clears the count. Unknown names are counted like known
ones, so a refusal tells nothing about which names exist.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import structlog

log = structlog.get_logger(__name__)

_MAX_NAMES = 10_000
"""Names remembered at once (oldest forgotten first), so guessing names cannot fill memory."""


class Verdict(Enum):
    """What to do with a login attempt before its password is checked."""

    CHECK = "check"
    THROTTLED = "throttled"
    LOCKED = "locked"


@dataclass(slots=True)
class _Failures:
    count: int = 0
    last_s: float = 0.0
    locked_until_s: float = 0.0


class LoginGuard:
    """Counts wrong passwords per user name; see the module docstring."""

    def __init__(
        self,
        *,
        backoff_after: int,
        backoff_s: float,
        lockout_after: int,
        lockout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backoff_after = backoff_after
        self._backoff_s = backoff_s
        self._lockout_after = lockout_after
        self._lockout_s = lockout_s
        self._clock = clock
        self._names: collections.OrderedDict[str, _Failures] = collections.OrderedDict()

    def wait_s(self, name: str) -> float:
        """Seconds before ``name`` may try again (0: now)."""
        f = self._names.get(name)
        if f is None:
            return 0.0
        now = self._clock()
        if f.locked_until_s:
            return max(0.0, f.locked_until_s - now)
        if f.count < self._backoff_after:
            return 0.0
        delay = min(self._backoff_s * 2.0 ** (f.count - self._backoff_after), self._lockout_s)
        return max(0.0, f.last_s + delay - now)

    def admit(self, name: str) -> Verdict:
        """Whether a login as ``name`` may have its password checked now (logged if not)."""
        f = self._names.get(name)
        if f is not None and f.locked_until_s and self._clock() >= f.locked_until_s:
            del self._names[name]  # the lockout is over: start afresh
            log.info("hmi_login_unlocked", user=name)
            return Verdict.CHECK
        wait = self.wait_s(name)
        if wait <= 0:
            return Verdict.CHECK
        locked = f is not None and bool(f.locked_until_s)
        log.warning(
            "hmi_login_locked" if locked else "hmi_login_throttled",
            user=name,
            failures=0 if f is None else f.count,
            retry_after_s=round(wait, 1),
        )
        return Verdict.LOCKED if locked else Verdict.THROTTLED

    def failed(self, name: str) -> None:
        """Count a wrong password for ``name`` (locks it at the limit; logged)."""
        f = self._names.pop(name, None) or _Failures()
        self._names[name] = f
        while len(self._names) > _MAX_NAMES:
            self._names.popitem(last=False)
        f.count += 1
        f.last_s = self._clock()
        if f.count >= self._lockout_after and not f.locked_until_s:
            f.locked_until_s = f.last_s + self._lockout_s
            log.warning("hmi_login_lockout", user=name, failures=f.count, lockout_s=self._lockout_s)

    def succeeded(self, name: str) -> None:
        """Forget the wrong passwords of ``name``."""
        self._names.pop(name, None)
