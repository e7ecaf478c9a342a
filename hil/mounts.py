"""Folders that fail like real disks: a tiny tmpfs that fills up, a read-only folder.

A full disk or a read-only file system is simulated with the real thing — a
tmpfs mounted for the scenario — so the store meets the errors the kernel gives.
Mounting needs root (or CAP_SYS_ADMIN); where it is refused ``MountRefused`` says
why. A read-only folder for a user other than root is a plain chmod.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class MountRefused(RuntimeError):
    """The tmpfs could not be mounted (not root, or no mount in this container)."""


def _mount(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise MountRefused(f"cannot mount a tmpfs at {path}: {done.stderr.strip()}")


def _umount(path: Path) -> None:
    # lazy: a store that failed to close must not leave the mount behind
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """A tmpfs of ``size_bytes`` mounted at ``path`` (created) for the block's duration."""
    _mount(path, f"size={size_bytes}")
    try:
        yield path
    finally:
        _umount(path)


def resize(path: Path, size_bytes: int) -> None:
    """Grow (or shrink) the tmpfs at ``path`` in place: a full disk that gets space again."""
    subprocess.run(
        ["mount", "-o", f"remount,size={size_bytes}", str(path)], capture_output=True, check=True
    )


_FILL_CHUNK = 2**20


def fill(path: Path, leave_bytes: int) -> Path:
    """Write a filler file in ``path`` until only about ``leave_bytes`` are free; its path.

    It writes in chunks, measuring the free space before each, and a disk that runs
    full first (another writer, such as the store under test, took the space since)
    ends the filling instead of failing it: a full disk is what was asked for.
    """
    filler = path / "filler.bin"
    with filler.open("wb", buffering=0) as f:
        while True:
            st = os.statvfs(path)
            want = st.f_bavail * st.f_frsize - leave_bytes
            if want <= 0:
                break
            try:
                f.write(b"\0" * min(_FILL_CHUNK, want))
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    return filler


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``path`` as an empty folder nobody (root included) can write (``read_only_files``)."""
    with read_only_files(path, {}) as folder:
        yield folder


@contextlib.contextmanager
def read_only_files(path: Path, files: dict[str, str]) -> Iterator[Path]:
    """``path`` holding ``files`` (name: text) that nobody (root included) can change or add
    to: a tmpfs written and then remounted read-only for root, a chmod for anyone else — as
    the shipped unit's ``/etc/lineside`` is to the node."""
    if os.geteuid() != 0:
        path.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (path / name).write_text(text, encoding="utf-8")
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    _mount(path, "size=1m")
    try:
        for name, text in files.items():
            (path / name).write_text(text, encoding="utf-8")
        subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, check=True)
        yield path
    finally:
        _umount(path)
