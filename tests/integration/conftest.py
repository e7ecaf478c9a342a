"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto on a free loopback port for one test (skipped where not installed)."""
    b = Mosquitto(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()
