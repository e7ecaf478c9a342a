"""Following the node live as an OPC UA client of its own HMI server.

The web view learns what the node is doing the way any HMI panel does: one anonymous
session on the node's server, subscribed to the plain namespace (``Lineside.Health``,
``Counters``, ``Stats``, ``Repeats`` and ``LastResult.ResultId``). The records
themselves are read from the audit store (``node.web.feed``); the follower only says
*that* a new result was published, and what the node's state and counters are.

When the node is gone the follower says so (``connected`` False, shown on every page)
and tries again with a growing back-off; nothing here can hold the node up, since the
server paces what it sends to each session.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import structlog
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node

from node.hmi.plain import COUNTERS, HEALTH, NAMESPACE, REPEATS, STATS
from node.hmi.uahelp import nid

log = structlog.get_logger(__name__)

_BACKOFF_S = (1.0, 10.0)
_PUBLISH_MS = 200.0
_GROUPS_EVERY_S = 1.0
_WATCHED = (
    [f"Health.{k}" for k in HEALTH]
    + [f"Counters.{k}" for k in COUNTERS]
    + [f"Stats.{k}" for k in STATS]
    + [f"Repeats.{k}" for k in REPEATS]
    + ["LastResult.ResultId"]
)


def _plain(value: Any) -> Any:
    """An OPC UA value as JSON: LocalizedText as its text, datetimes as ISO text."""
    if isinstance(value, ua.LocalizedText):
        return value.Text or ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


class NodeFollower:
    """Keeps :attr:`values` (``"Health.State"`` → value) in step with the node's server.

    ``on_change(paths)`` is called on the event loop with the paths that changed (at most
    once per publishing cycle); ``on_result(result_id)`` when ``LastResult.ResultId`` does.
    Run :meth:`run` as a task; it returns only when cancelled.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        on_change: Callable[[set[str]], None] | None = None,
        on_result: Callable[[str], None] | None = None,
        timeout_s: float = 5.0,
        session_timeout_s: float = 60.0,
    ) -> None:
        self.endpoint = endpoint
        self.values: dict[str, Any] = {}
        self.by_defect_type: dict[str, int] = {}
        self.fail_safe_by_reason: dict[str, int] = {}
        self.connected = False
        self.since_ns = 0
        """When :attr:`connected` last changed (UTC epoch ns)."""
        self.error = ""
        self._on_change = on_change
        self._on_result = on_result
        self._timeout_s = timeout_s
        self._session_s = session_timeout_s
        self._lost = asyncio.Event()
        self._paths: dict[ua.NodeId, str] = {}
        self._wake = asyncio.Event()
        self._groups_at = 0.0
        self._client: Client | None = None
        self._idx = 0

    def snapshot(self) -> dict[str, Any]:
        """The node as last seen: connection, state, health, counters and stats."""
        return {
            "connected": self.connected,
            "since_ns": self.since_ns,
            "error": self.error,
            "values": dict(self.values),
            "by_defect_type": dict(self.by_defect_type),
            "fail_safe_by_reason": dict(self.fail_safe_by_reason),
        }

    async def run(self) -> None:
        """Follow the node for ever: connect, subscribe, wait for the loss, back off, again."""
        delay = _BACKOFF_S[0]
        while True:
            try:
                await self._follow_once()
                delay = _BACKOFF_S[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the supervisor of this task: log, retry
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("web_node_unreachable", endpoint=self.endpoint, error=self.error)
            self._set_connected(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_S[1])

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self.since_ns = time.time_ns()
            if self._on_change is not None:
                self._on_change({"connected"})

    async def _follow_once(self) -> None:
        client = Client(self.endpoint, timeout=self._timeout_s)
        client.session_timeout = int(self._session_s * 1000)  # the node grants no more
        client.name = client.description = "lineside web (follower)"
        client.application_uri = "urn:lineside:web:follower"
        self._lost.clear()
        self._wake.clear()

        async def lost(exc: Exception) -> None:
            self.error = f"connection lost: {type(exc).__name__}"
            self._lose()

        client.connection_lost_callback = lost
        await client.connect()
        try:
            self._client = client
            self._idx = await client.get_namespace_index(NAMESPACE)
            nodes = [client.get_node(nid(f"Lineside.{p}", self._idx)) for p in _WATCHED]
            self._paths = {n.nodeid: p for n, p in zip(nodes, _WATCHED, strict=True)}
            values = await client.read_values(nodes)
            self.values = {p: _plain(v) for p, v in zip(_WATCHED, values, strict=True)}
            await self._read_groups()
            sub = await client.create_subscription(_PUBLISH_MS, self)
            await sub.subscribe_data_change(nodes, queuesize=1)
            self.error = ""
            self._set_connected(True)
            log.info("web_following_node", endpoint=self.endpoint)
            while True:
                # the counter groups are read again at most once a second, after a change
                await self._wake.wait()
                self._wake.clear()
                if self._lost.is_set():
                    break
                await asyncio.sleep(max(0.0, self._groups_at + _GROUPS_EVERY_S - time.monotonic()))
                await self._read_groups()
                if self._on_change is not None:
                    self._on_change({"Counters"})
        finally:
            self._client = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), self._timeout_s)

    async def _read_groups(self) -> None:
        """Counters.ByDefectType and Counters.FailSafeByReason: their children come and go."""
        client = self._client
        if client is None:
            return
        self._groups_at = time.monotonic()
        for group, into in (
            ("ByDefectType", self.by_defect_type),
            ("FailSafeByReason", self.fail_safe_by_reason),
        ):
            folder: Node = client.get_node(nid(f"Lineside.Counters.{group}", self._idx))
            children = await folder.get_children()
            if not children:
                continue
            values = await client.read_values(children)
            names = [(await c.read_browse_name()).Name for c in children]
            into.clear()
            into.update({n: int(v) for n, v in zip(names, values, strict=True)})

    def _lose(self) -> None:
        self._lost.set()
        self._wake.set()

    # -- asyncua's subscription handler ---------------------------------------------------------
    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        """One changed value (asyncua calls this on the event loop)."""
        path = self._paths.get(node.nodeid)
        if path is None:
            return
        self.values[path] = _plain(val)
        if path == "LastResult.ResultId" and self._on_result is not None and val:
            self._on_result(str(val))
        if path.startswith("Counters."):
            self._wake.set()
        if self._on_change is not None:
            self._on_change({path})

    def status_change_notification(self, status: Any) -> None:
        """The subscription ended on the server's side: follow again from the start."""
        self._lose()
