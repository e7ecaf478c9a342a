"""Debian's Mosquitto on a free loopback port: the broker the integration tests and the
fleet bench run their Sparkplug traffic through.

The broker keeps its sessions across a restart (``persistence`` into its folder, written
when it stops), like a plant's broker: a client subscribed with a persistent session
misses nothing published while it was reconnecting.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

from hil.plc_modbus import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class MosquittoMissing(RuntimeError):
    """No ``mosquitto`` executable on this machine (``make sysdeps`` installs it)."""


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port`` now."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Mosquitto:
    """One broker process on ``port`` (a free one when not given); :meth:`start` and
    :meth:`stop` may alternate, the port and the persisted sessions stay."""

    def __init__(self, folder: Path, port: int | None = None, extra: str = "") -> None:
        """``extra``: more lines for the listener (TLS files, ``allow_anonymous false``...).
        Raises :class:`MosquittoMissing`."""
        if not Path(MOSQUITTO).exists():
            raise MosquittoMissing("mosquitto is not installed (make sysdeps)")
        self.folder = folder
        self.port = port or free_port()
        self.config = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        # as root it would drop to the mosquitto user, who cannot write the folder
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"{user}per_listener_settings true\n"
            f"listener {self.port} 127.0.0.1\n"
            f"{extra or 'allow_anonymous true'}\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            "autosave_interval 0\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The running broker's process id, None while stopped."""
        return self.proc.pid if self.proc is not None else None

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker and return once it accepts connections. Raises
        ``RuntimeError`` with its log's tail when it exits or does not listen in time."""
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        end = time.monotonic() + timeout_s
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > end:
                self.stop()
                raise RuntimeError(self.log.read_text()[-2000:])
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the broker (SIGTERM: it writes its persisted sessions first)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
