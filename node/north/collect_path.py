"""The collect path's contract: what ``lineside web`` serves (``node.web.collect``) and
``lineside fleet --collect`` fetches (``node.fleet.collect``) — the paths, the image
digest header, and the bearer token's file and rules. Kept apart from both, so neither
process imports the other's code.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from urllib.parse import urlsplit

from node.errors import ConfigError

PREFIX = "/collect"
REVIEWED = "/reviewed"
IMAGE = "/image/"
IMAGE_SHA256_HEADER = "x-image-sha256"
MIN_TOKEN_CHARS = 16


def read_token(path: Path, key: str) -> str:
    """The bearer token in the first line of ``path``. Raises ``ConfigError`` naming
    ``key`` when the file cannot be read or the token is shorter than
    :data:`MIN_TOKEN_CHARS` characters or holds a space."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{key}: {path}: {exc}"]) from exc
    token = lines[0].strip() if lines else ""
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError(
            [f"{key}: {path}: the token must be one word of at least {MIN_TOKEN_CHARS} characters"]
        )
    return token


def is_loopback(url: str) -> bool:
    """Whether ``url``'s host is this machine (``localhost``, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
