"""structlog set-up, done once by ``__main__``: JSON lines for journald, console for a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure(*, json: bool | None = None, level: str = "info", file: TextIO | None = None) -> None:
    """Configure structlog; ``json=None`` picks JSON when stdout is not a terminal.

    Log lines go to ``file`` (default stdout, which journald reads); a command whose
    stdout is its result (a bench's JSON) passes ``sys.stderr``.
    """
    if json is None:
        json = not sys.stdout.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file or sys.stdout),
        cache_logger_on_first_use=False,
    )
