"""Limits per client, so no panel (or anyone on the network) can take the HMI server's time.

asyncua's defaults let one client send 100 MB messages, open any number of
sessions and subscriptions and ask as fast as it likes. :func:`apply_limits`
sets what asyncua exposes (message size and chunk count, connections) and
wraps session creation to enforce the rest:

- ``max_sessions`` open sessions (``BadTooManySessions``); a session whose
  connection was lost with subscriptions open is kept for a reconnect, at most
  ``max_session_timeout_s``;
- ``max_subscriptions_per_session`` and ``max_monitored_items_per_session``
  (``BadTooManySubscriptions`` / ``BadTooManyMonitoredItems``);
- ``max_requests_per_s`` per connection with a burst of ``request_burst``
  (:class:`RequestBudget`, checked by ``security.HmiPermissions``;
  ``BadTooManyOperations``).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable
from typing import Any

import structlog
from asyncua import ua
from asyncua.common.connection import TransportLimits
from asyncua.common.utils import ServiceError
from asyncua.server.internal_session import InternalSession, SessionState
from asyncua.server.server import Server

from node.hmi.settings import HmiSettings
from node.hmi.uahelp import StatusCodes

log = structlog.get_logger(__name__)

_BUFFER = 65_535


class RequestBudget:
    """A token bucket: ``burst`` requests at once, refilled at ``rate_per_s``."""

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._t = clock()
        self.refused = 0
        """Requests refused so far."""

    def take(self) -> bool:
        """Spend one request; False (counted) when the budget is empty."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._t) * self._rate)
        self._t = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        self.refused += 1
        if self.refused == 1 or self.refused % 100 == 0:
            log.warning("hmi_requests_refused", reason="rate", refused=self.refused)
        return False


class _SessionGuard:
    """Counts one session's subscriptions and monitored items, refusing past the limits."""

    def __init__(self, session: InternalSession, settings: HmiSettings) -> None:
        self._s = settings
        self._items: dict[int, int] = {}  # subscription id -> monitored items
        create_sub = session.create_subscription
        create_items = session.create_monitored_items
        delete_items = session.delete_monitored_items
        delete_subs = session.delete_subscriptions

        async def create_subscription(params: Any, *args: Any, **kw: Any) -> Any:
            if len(self._items) >= self._s.max_subscriptions_per_session:
                log.warning("hmi_limit_reached", limit="max_subscriptions_per_session")
                raise ServiceError(StatusCodes.BadTooManySubscriptions)
            result = await create_sub(params, *args, **kw)
            self._items[result.SubscriptionId] = 0
            return result

        async def create_monitored_items(params: ua.CreateMonitoredItemsParameters) -> Any:
            n = len(params.ItemsToCreate or [])
            if sum(self._items.values()) + n > self._s.max_monitored_items_per_session:
                log.warning("hmi_limit_reached", limit="max_monitored_items_per_session")
                raise ServiceError(StatusCodes.BadTooManyMonitoredItems)
            results = await create_items(params)
            good = sum(1 for r in results if r.StatusCode.is_good())
            sid = params.SubscriptionId
            if sid in self._items:
                self._items[sid] += good
            return results

        async def delete_monitored_items(params: ua.DeleteMonitoredItemsParameters) -> Any:
            results = await delete_items(params)
            sid = params.SubscriptionId
            if sid in self._items:
                gone = sum(1 for r in results if r.is_good())
                self._items[sid] = max(0, self._items[sid] - gone)
            return results

        async def delete_subscriptions(ids: list[int]) -> Any:
            results = await delete_subs(ids)
            for sid in ids:
                self._items.pop(sid, None)
            return results

        session.create_subscription = create_subscription  # type: ignore[method-assign]
        session.create_monitored_items = create_monitored_items  # type: ignore[method-assign]
        session.delete_monitored_items = delete_monitored_items  # type: ignore[method-assign]
        session.delete_subscriptions = delete_subscriptions  # type: ignore[method-assign]


def apply_limits(server: Server, settings: HmiSettings) -> None:
    """Set the transport limits and wrap session creation (call before ``server.start()``)."""
    size = settings.max_message_size
    server.limits = TransportLimits(
        max_recv_buffer=_BUFFER,
        max_send_buffer=_BUFFER,
        max_chunk_count=math.ceil(size / _BUFFER),
        max_message_size=size,
    )
    iserver = server.iserver
    # connections not yet holding a session count too; leave room for a few of those
    iserver.max_connections = settings.max_sessions + 5
    iserver.max_subscriptions = settings.max_sessions * settings.max_subscriptions_per_session
    iserver.max_session_timeout_ms = settings.max_session_timeout_s * 1000.0
    sessions: weakref.WeakSet[InternalSession] = weakref.WeakSet()
    create = iserver.create_session

    def create_session(name: str, user: Any = None, external: bool = False) -> Any:
        more: dict[str, Any] = {} if user is None else {"user": user}
        if not external:
            return create(name, external=external, **more)
        live = sum(1 for s in sessions if s.state != SessionState.Closed)
        if live >= settings.max_sessions:
            log.warning("hmi_limit_reached", limit="max_sessions", sessions=live)
            raise ServiceError(StatusCodes.BadTooManySessions)
        session = create(name, external=external, **more)
        sessions.add(session)
        session._hmi_guard = _SessionGuard(session, settings)  # type: ignore[attr-defined]
        return session

    iserver.create_session = create_session  # type: ignore[method-assign]
