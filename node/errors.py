"""The node's small error hierarchy; vendor errors are wrapped at driver edges."""

from __future__ import annotations


class LinesideError(Exception):
    """Base for every error lineside raises on purpose."""


class ConfigError(LinesideError):
    """The configuration is invalid; ``problems`` lists every one with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


class StartupError(LinesideError):
    """A resource the config names cannot be used at start (a port in use, a read-only or
    corrupt folder); the message names the key to look at."""


class CameraError(LinesideError):
    """A camera could not be opened, configured or read."""


class PlcError(LinesideError):
    """The PLC link failed or refused a request."""


class ModelError(LinesideError):
    """A model package or backend failed to load or infer."""
