"""The audit store under disk faults: refused folders, corrupt databases, failing writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.audit.settings import AuditSettings
from node.audit.store import AuditError, AuditStore
from tests.unit.node.audit.mounts import read_only_folder


def test_a_read_only_folder_is_refused_with_the_os_reason(tmp_path: Path) -> None:
    """A folder the store cannot write is an ``AuditError`` naming it and the OS's reason,
    not a bare ``OSError`` about the lock file."""
    with read_only_folder(tmp_path / "ro") as folder, pytest.raises(AuditError) as err:
        AuditStore(AuditSettings(), folder)
    message = str(err.value)
    assert message.startswith(f"{folder}: cannot write there (")
    assert "Read-only file system" in message or "Permission denied" in message
    assert "\n" not in message
