"""The node's OPC UA server for HMI panels: lifecycle, endpoints and the publish queue.

``HmiServer`` is an async context manager. Entering it makes (or loads) the
server certificate, builds the address space (the OPC 40100 VisionSystem where
the NodeSet is there, and always the plain namespace) and listens; leaving it
stops the publisher and the server.

The node calls :meth:`HmiServer.publish`, :meth:`set_state` and
:meth:`set_health` from the event loop; they only put an item on a bounded
queue. One publisher task, owned by the server for its lifetime, applies the
items in order, so a slow OPC UA write never holds up the node. When the queue
is full the oldest result or health update is dropped (``dropped`` counts them;
logged); state changes are kept.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

import structlog
from asyncua import ua
from asyncua.server.server import Server

from node.audit.record import AuditRecord
from node.hmi.interfaces import NodeControl, ResultQuery
from node.hmi.limits import RequestBudget, apply_limits
from node.hmi.machine_vision import MachineVisionModel, import_nodeset, recipe_of
from node.hmi.methods import HmiMethods
from node.hmi.plain import NAMESPACE, PlainNamespace
from node.hmi.security import (
    HmiPermissions,
    HmiUserManager,
    Pki,
    TrustListValidator,
    ensure_server_certificate,
    mark_channel_security,
    security_policy_types,
)
from node.hmi.settings import HmiSettings
from node.hmi.uahelp import stop_server
from node.state import InvalidTransition, StateMachine, VisionState

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Result:
    record: AuditRecord
    thumbnail: bytes | None
    stats: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class _State:
    state: VisionState
    detail: str


@dataclass(frozen=True, slots=True)
class _Health:
    values: Mapping[str, str]


_Item = _Result | _State | _Health


class HmiServer:
    """See the module docstring. ``state_dir`` anchors a relative ``certificate_dir``."""

    def __init__(
        self,
        settings: HmiSettings,
        *,
        state_dir: Path,
        control: NodeControl,
        results: ResultQuery,
        node_name: str,
        initial_state: VisionState = VisionState.PREOPERATIONAL,
        initial_detail: str = "",
    ) -> None:
        self.settings = settings
        self._node_name = node_name
        d = settings.certificate_dir
        self._pki = Pki(d if d.is_absolute() else state_dir / d)
        self._uri = settings.application_uri or f"urn:lineside:{node_name}:hmi"
        self.machine = StateMachine(initial_state)
        self.machine.move(initial_state, initial_detail)
        self.methods = HmiMethods(
            control, results, self.machine, max_string_length=settings.max_string_length
        )
        self._server: Server | None = None
        self._plain: PlainNamespace | None = None
        self._model: MachineVisionModel | None = None
        self._queue: collections.deque[_Item] = collections.deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._url = settings.endpoint
        self._validator: TrustListValidator | None = None
        self.dropped = 0
        """Updates dropped because the queue was full."""
        self.published = 0
        """Results applied to the address space (and their events emitted)."""

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """The endpoint URL with the port actually bound (after entering)."""
        return self._url

    @property
    def has_machine_vision(self) -> bool:
        """Whether the OPC 40100 VisionSystem is served (the NodeSet was found)."""
        return self._model is not None

    @property
    def namespace_index(self) -> int:
        """Index of ``urn:lineside:hmi`` (plain namespace, VisionSystem node id)."""
        return 2

    @property
    def pki(self) -> Pki:
        """The server's certificate folders (own/, trusted/, rejected/)."""
        return self._pki

    async def reload_trust_list(self) -> None:
        """Read ``trusted/`` again (after an engineer moved a certificate there)."""
        if self._validator is not None:
            await self._validator.load()
            log.info("hmi_trust_list_reloaded")

    async def __aenter__(self) -> HmiServer:
        """Build and start the server.

        Raises:
            OSError: the port cannot be bound or the PKI folder written.
            ValueError, UaError: the NodeSet file is there but broken.
        """
        try:
            await self._start()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop publishing and close every session."""
        await self._shutdown()

    async def _start(self) -> None:
        s = self.settings
        users = HmiUserManager.from_settings(s)
        server = Server(user_manager=users)
        self._server = server
        await server.init()
        apply_limits(server, s)
        server.set_endpoint(s.endpoint)
        server.set_server_name(f"lineside {self._node_name}")
        server.product_uri = "urn:lineside"
        server.manufacturer_name = "lineside"
        await server.set_application_uri(self._uri)
        server.set_identity_tokens([ua.AnonymousIdentityToken, ua.UserNameIdentityToken])
        policies = security_policy_types(s.security_policies, s.allow_unsecured)
        if s.security_policies:
            await asyncio.to_thread(
                ensure_server_certificate, self._pki, self._uri, self._node_name
            )
            await server.load_certificate(str(self._pki.cert))
            await server.load_private_key(str(self._pki.key))
            self._validator = TrustListValidator(self._pki, trust_all=s.trust_all_clients)
            await self._validator.load()
            server.set_certificate_validator(self._validator)
        permissions = HmiPermissions(users, allow_insecure_writes=s.allow_insecure_writes)
        server.set_security_policy(policies, permission_ruleset=permissions)
        if s.allow_insecure_writes:
            log.warning(
                "hmi_insecure_writes_allowed",
                key="hmi.allow_insecure_writes",
                detail="Write and Call accepted without signing: commissioning only",
            )

        idx = await server.register_namespace(NAMESPACE)
        assert idx == self.namespace_index
        handlers = self.methods.handlers()
        ns = await import_nodeset(server, s.nodeset)
        if ns is not None:
            self._model = MachineVisionModel(server, ns, idx)
            await self._model.build(handlers, self.methods.not_implemented)
        self._plain = PlainNamespace(server, idx)
        await self._plain.build(handlers["review_result"])
        await self._apply(_State(self.machine.state, self.machine.detail))

        await server.start()
        # asyncua keeps the channel policy factories it made at start() in a private list
        mark_channel_security(
            server._policies, lambda: RequestBudget(s.max_requests_per_s, s.request_burst)
        )
        self._url = self._bound_url(server)
        self._task = asyncio.create_task(self._publisher(), name="hmi-publisher")
        log.info(
            "hmi_server_started",
            url=self._url,
            machine_vision=ns is not None,
            policies=[p.name for p in policies],
            users=len(s.users),
        )

    def _bound_url(self, server: Server) -> str:
        u = urlparse(self.settings.endpoint)
        port = u.port
        bserver = server.bserver
        if bserver is not None and bserver.port:
            port = bserver.port
        return f"opc.tcp://{u.hostname}:{port}{u.path}"

    async def _shutdown(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            with contextlib.suppress(Exception):
                await stop_server(server)
            log.info("hmi_server_stopped", url=self._url)

    # -- what the node calls ---------------------------------------------------------------------
    def _put(self, item: _Item) -> None:
        if len(self._queue) >= self.settings.queue_size:
            # drop the oldest display update; state changes are few and must all arrive
            oldest = next((i for i, q in enumerate(self._queue) if not isinstance(q, _State)), 0)
            del self._queue[oldest]
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 100 == 0:
                log.warning("hmi_updates_dropped", dropped=self.dropped)
        self._queue.append(item)
        self._idle.clear()
        self._wake.set()

    def set_state(self, state: VisionState, detail: str = "") -> None:
        """The node moved to ``state`` (``detail``: why, e.g. the camera error).

        Raises:
            InvalidTransition: the move breaks the state rules (a bug in the caller).
        """
        self.machine.move(state, detail)
        self._put(_State(state, detail))

    def force_state(self, state: VisionState, detail: str = "") -> None:
        """Take the node's ``state`` whatever the current one (after the HMI process missed
        a step); the panels see it like any other change."""
        self.machine = StateMachine(state)
        self.machine.move(state, detail)
        self.methods.use_machine(self.machine)
        self._put(_State(state, detail))

    def publish(
        self, record: AuditRecord, thumbnail_png: bytes | None, stats: Mapping[str, object]
    ) -> None:
        """Queue one part's result: LastResult, Counters and Stats, and its ResultReadyEvent.

        ``stats`` is ``node.line.results.Stats.snapshot()`` taken after this part.
        """
        thumb = thumbnail_png if self.settings.publish_thumbnails else None
        self._put(_Result(record, thumb, dict(stats)))

    def set_health(self, *, camera: str, plc: str, model: str, audit: str = "ok") -> None:
        """Health of the node's resources, in words (``ok``, ``reconnecting``, ...)."""
        self._put(_Health({"Camera": camera, "Plc": plc, "Model": model, "Audit": audit}))

    def set_recipe(self, name: str) -> None:
        """The recipe now in force (set by the node when it changes it itself)."""
        self.methods.prepared_recipe = name

    async def drain(self) -> None:
        """Wait until every queued update has been applied (tests, shutdown)."""
        await self._idle.wait()

    # -- the publisher task ----------------------------------------------------------------------
    async def _publisher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                item = self._queue.popleft()
                try:
                    await self._apply(item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - this task's supervisor: log, go on
                    log.error("hmi_publish_failed", item=type(item).__name__, error=repr(exc))
            self._idle.set()

    async def _apply(self, item: _Item) -> None:
        assert self._plain is not None
        if isinstance(item, _Result):
            rec = item.record
            await self._plain.write_result(rec, item.thumbnail, item.stats)
            await self._plain.emit(rec)
            await self._plain.emit_repeats(rec)
            if self._model is not None:
                await self._model.emit(rec, recipe_of(rec) or self.methods.prepared_recipe)
            self.published += 1
        elif isinstance(item, _State):
            if self._model is not None:
                await self._model.mirror(item.state)
            await self._plain.write_health({"State": item.state.value, "StateDetail": item.detail})
        else:
            await self._plain.write_health(item.values)


__all__ = ["HmiServer", "InvalidTransition", "VisionState"]
