"""Fetching over HTTP(S) for ``lineside fleet --collect``: one GET with the plant's bearer
token, HTTPS checked against a CA, redirects not followed (the token goes to the announced
host only), answers capped at ``MAX_BYTES``. ``Fetcher`` is the seam a test fills with
its own server or a fault.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

MAX_BYTES = 64 << 20
"""Largest answer taken (an image or a listing)."""


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status and body."""

    status: int
    body: bytes


class Fetcher(Protocol):
    """Gets a URL with the bearer token; raises ``OSError`` when it cannot be reached."""

    def get(self, url: str, token: str) -> Reply: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not followed: the token goes to the announced host only."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrlFetcher:
    """:class:`Fetcher` with the standard library: HTTPS checked against ``ca_file`` (or
    the system's CAs), ``timeout_s`` per request, redirects not followed."""

    def __init__(self, ca_file: Path | None = None, timeout_s: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
        self._open = urllib.request.build_opener(
            _NoRedirect(), urllib.request.HTTPSHandler(context=context)
        ).open
        self.timeout_s = timeout_s

    def get(self, url: str, token: str) -> Reply:
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {token}", "User-Agent": "lineside-fleet"}
        )
        try:
            with self._open(request, timeout=self.timeout_s) as r:
                body = r.read(MAX_BYTES + 1)
                status = int(r.status)
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, exc.read(4096))
        if len(body) > MAX_BYTES:
            raise OSError(f"{url}: more than {MAX_BYTES} bytes")
        return Reply(status, body)
