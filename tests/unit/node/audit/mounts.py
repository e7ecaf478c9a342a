"""The rig's real failing folders (``hil.mounts``) for tests: a refused mount skips the test
with the reason instead of failing it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from hil import mounts
from hil.mounts import fill, resize

__all__ = ["fill", "read_only_files", "read_only_folder", "resize", "tmpfs"]


def _or_skip(cm: AbstractContextManager[Path]) -> Iterator[Path]:
    try:
        entered = cm.__enter__()
    except mounts.MountRefused as exc:
        pytest.skip(str(exc))
    try:
        yield entered
    finally:
        cm.__exit__(None, None, None)


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    """``hil.mounts.tmpfs``, skipped where mounting is refused."""
    yield from _or_skip(mounts.tmpfs(path, size_bytes))


@contextlib.contextmanager
def read_only_folder(path: Path) -> Iterator[Path]:
    """``hil.mounts.read_only_folder``, skipped where mounting is refused."""
    yield from _or_skip(mounts.read_only_folder(path))


@contextlib.contextmanager
def read_only_files(path: Path, files: dict[str, str]) -> Iterator[Path]:
    """``hil.mounts.read_only_files``, skipped where mounting is refused."""
    yield from _or_skip(mounts.read_only_files(path, files))
