"""Shared fixtures: a sim-line config whose template is taught once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.typing import EventDict

from hil.line import CLASSICAL_CONFIG, ensure_template, sim_config
from node.config import Config, load_config


def _drop_below_warning(_: object, method: str, event: EventDict) -> EventDict:
    if method in ("debug", "info"):
        raise structlog.DropEvent
    return event


@pytest.fixture(scope="session", autouse=True)
def quiet_logs() -> None:
    """Print warnings and errors only: per-part info lines would slow the real-time loop.

    Filtering is a processor, not the bound logger's level, so tests that use
    ``structlog.testing.capture_logs`` (which swaps the processors) still see every level.
    """
    structlog.configure(
        processors=[_drop_below_warning, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.BoundLogger,
        cache_logger_on_first_use=False,
    )


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A test that runs the command line (which configures logging for itself, bound to
    that test's captured stdout) must not leave that configuration to the next test."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="session")
def taught_config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """configs/sim-classical.toml (the sim line on the classical detector) with its state
    and template in a session temp dir, template taught.

    The HMI server is off: tests that want it turn it on with a free port.
    """
    state = tmp_path_factory.mktemp("state")
    base = load_config(CLASSICAL_CONFIG)
    cfg = sim_config(
        base,
        node={"state_dir": state},
        hmi={"enabled": False},
        inspection={
            "classical": {
                **base.inspection.classical.model_dump(),
                "template": state / "template.npz",
            }
        },
    )
    ensure_template(cfg)
    return cfg


@pytest.fixture
def template_path(taught_config: Config) -> Path:
    """The session's taught template file."""
    return taught_config.inspection.classical.template
