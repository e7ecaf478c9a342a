"""The systemd notify protocol (``sd_notify(3)``), spoken directly over a unix datagram socket.

systemd passes the address of its notification socket in ``NOTIFY_SOCKET``: a filesystem
path (``/run/systemd/notify``) or, when it starts with ``@``, a name in the abstract socket
namespace. A message is one datagram of newline-separated ``KEY=value`` assignments, e.g.
``READY=1`` or ``WATCHDOG=1``. systemd identifies the sender by the kernel-attached
credentials, so with ``NotifyAccess=main`` the datagram must come from the main process
(any thread of it is fine).

We speak the protocol ourselves rather than depend on python-systemd: it is a dozen lines,
and the service must also run (and be tested) where systemd is absent. Without
``NOTIFY_SOCKET`` the notifier is disabled and every call is a cheap no-op.

A notification is advisory: a failed send never raises into the caller (the pipeline must
not die because systemd is momentarily busy). A failure streak is logged once as
``sd_notify_failed`` and its end as ``sd_notify_recovered``.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Final

import structlog

__all__ = ["SystemdNotifier", "watchdog_interval_s"]

_log = structlog.get_logger(__name__)

# sd_notify(3) keys are upper-case ASCII, digits and underscores; anything else (notably
# '=' or a newline) would corrupt the datagram.
_KEY_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")

# systemd ignores a notification datagram longer than PIPE_BUF (4096 bytes); a status of at
# most this many characters (<= 4 UTF-8 bytes each) always fits next to other fields.
_MAX_STATUS_CHARS: Final = 960


def _socket_address(raw: str) -> str | bytes | None:
    """Map a ``NOTIFY_SOCKET`` value to a ``sendto`` address, or None if unsupported.

    ``@name`` is the abstract namespace: the kernel wants a leading NUL byte instead.
    """
    if raw.startswith("/"):
        return raw
    if raw.startswith("@") and len(raw) > 1:
        return b"\0" + raw[1:].encode()
    # systemd >= 254 may also pass "vsock:CID:PORT" (VMs); a node beside a line never
    # runs that way, so it is reported as unsupported instead of half-implemented.
    return None


class SystemdNotifier:
    """Sends ``sd_notify`` messages to the service manager, if there is one.

    Args:
        environ: where to read ``NOTIFY_SOCKET`` (default: ``os.environ``); injectable
            so tests can point it at a socket they bound.

    ``enabled`` is False when ``NOTIFY_SOCKET`` is unset, empty or not a unix address;
    then every method returns False without doing anything. The socket is created on
    first use, non-blocking, and closed by :meth:`close` (or leaving the ``with`` block).
    Methods may be called from any thread of the main process.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _socket_address(raw) if raw else None
        if raw and self._address is None:
            _log.warning("sd_notify_unsupported_address", notify_socket=raw)
        self._sock: socket.socket | None = None
        # Guards lazy socket creation and the failure-streak bookkeeping across threads.
        self._lock = threading.Lock()
        self._failing = False
        self._failures = 0

    @property
    def enabled(self) -> bool:
        """True when a notification socket was configured and messages are sent."""
        return self._address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram with the given assignments, in argument order.

        ``notify(READY=1, STATUS="warming up")`` sends ``b"READY=1\\nSTATUS=warming up"``.

        Returns:
            True if the datagram was handed to the kernel; False when disabled or when the
            send failed (a transient failure is logged, never raised).

        Raises:
            ValueError: a key is not an upper-case sd_notify name, a value contains a
                newline or NUL, or no field was given — programming errors, not transient ones.
        """
        if not fields:
            raise ValueError("notify() needs at least one field")
        parts: list[str] = []
        for key, value in fields.items():
            if not _KEY_RE.fullmatch(key):
                raise ValueError(f"invalid sd_notify key {key!r}")
            text = str(value)
            # systemd drops a whole datagram that contains a NUL byte.
            if "\n" in text or "\0" in text:
                raise ValueError(f"sd_notify value for {key} contains a newline or NUL")
            parts.append(f"{key}={text}")
        if self._address is None:
            return False
        # "replace": a lone surrogate in a status text must not raise into the caller.
        return self._send("\n".join(parts).encode(errors="replace"))

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
        if status is None:
            return self.notify(READY=1)
        return self.notify(READY=1, STATUS=_one_line(status))

    def status(self, text: str) -> bool:
        """Set the status line shown by ``systemctl status``.

        Line breaks become spaces and a text longer than 960 characters is cut, so the
        datagram always stays within what systemd accepts.
        """
        return self.notify(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """Feed the service watchdog (``WATCHDOG=1``); see ``WatchdogSec=``."""
        return self.notify(WATCHDOG=1)

    def watchdog_trigger(self) -> bool:
        """Ask systemd to act as if the watchdog expired now (``WATCHDOG=trigger``)."""
        return self.notify(WATCHDOG="trigger")

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        if status is None:
            return self.notify(STOPPING=1)
        return self.notify(STOPPING=1, STATUS=_one_line(status))

    def reloading(self) -> bool:
        """Tell systemd a configuration reload began (``RELOADING=1`` + ``MONOTONIC_USEC``).

        ``MONOTONIC_USEC`` (CLOCK_MONOTONIC, microseconds) is required by
        ``Type=notify-reload`` (systemd >= 253) and ignored by older managers. Send
        :meth:`ready` when the reload is done.
        """
        now_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(RELOADING=1, MONOTONIC_USEC=now_us)

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (``EXTEND_TIMEOUT_USEC``).

        Useful while a long model load or a drain is visibly progressing.
        """
        return self.notify(EXTEND_TIMEOUT_USEC=max(0, round(seconds * 1_000_000)))

    def close(self) -> None:
        """Close the socket; later calls reopen it. Safe to call more than once."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, payload: bytes) -> bool:
        assert self._address is not None
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                # EAGAIN (systemd's queue full), ECONNREFUSED/ENOENT (manager restarting),
                # ... all transient from our side: report once per streak, keep running.
                self._failures += 1
                if not self._failing:
                    self._failing = True
                    _log.warning(
                        "sd_notify_failed",
                        error=repr(exc),
                        payload=payload.decode(errors="replace"),
                    )
                return False
            if self._failing:
                self._failing = False
                _log.info("sd_notify_recovered", failed_sends=self._failures)
                self._failures = 0
            return True


def _one_line(text: str) -> str:
    """Fold free text into one short sd_notify value: no line breaks, no NUL bytes."""
    line = " ".join(text.replace("\0", " ").splitlines())
    if len(line) > _MAX_STATUS_CHARS:
        line = line[: _MAX_STATUS_CHARS - 1] + "…"
    return line


def watchdog_interval_s(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """The systemd watchdog timeout for this process in seconds, or None if not enabled.

    Reads ``WATCHDOG_USEC`` (a positive integer, microseconds) and honours
    ``WATCHDOG_PID``: when set, the timeout applies only if it names this process
    (``pid``, default ``os.getpid()``), so a child that inherited the environment does not
    feed a watchdog that is not its own. Feed at about half the returned interval.

    Malformed values are logged as ``sd_watchdog_env_invalid`` and yield None (the
    manager's own watchdog still fires; we just do not know its period).
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            wd_pid = int(raw_pid)
        except ValueError:
            _log.warning("sd_watchdog_env_invalid", key="WATCHDOG_PID", value=raw_pid)
            return None
        if wd_pid != (os.getpid() if pid is None else pid):
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        usec = 0
    if usec <= 0:
        _log.warning("sd_watchdog_env_invalid", key="WATCHDOG_USEC", value=raw_usec)
        return None
    return usec / 1_000_000
