"""The HMI server on a thread of its own, so OPC UA work never delays the line.

A panel connecting, browsing or subscribing makes asyncua do tens of
milliseconds of work at a time; on the node's event loop that delays camera
triggers (a part 30 mm past the camera is a fail-safe reject). Here the server
runs on its own event loop in a daemon thread: the node hands it updates with
``call_soon_threadsafe``, and the operator's commands come back to the node's
loop with ``run_coroutine_threadsafe``. Audit queries run on the HMI thread, off
the line's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any

import structlog

from node.audit.record import AuditRecord
from node.config import Config
from node.hmi.interfaces import NodeControl, ResultQuery
from node.hmi.server import HmiServer
from node.hmi.settings import HmiSettings
from node.operation import Operation
from node.state import VisionState

log = structlog.get_logger(__name__)

_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 10.0


class _ControlOnLoop:
    """``NodeControl`` whose commands run on the node's loop (called from the HMI loop)."""

    def __init__(self, control: NodeControl, loop: asyncio.AbstractEventLoop) -> None:
        self._control = control
        self._loop = loop

    async def _on_node(self, coro: Coroutine[Any, Any, None]) -> None:
        await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    async def halt(self) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.halt())

    async def reset(self) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.reset())

    async def select_mode_automatic(self) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.select_mode_automatic())

    async def start_continuous(self) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.start_continuous())

    async def stop(self) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.stop())

    def recipes(self) -> list[str]:
        """See ``NodeControl`` (a constant list: safe from any thread)."""
        return self._control.recipes()

    async def prepare_recipe(self, name: str) -> None:
        """See ``NodeControl``."""
        await self._on_node(self._control.prepare_recipe(name))


class HmiThread:
    """An :class:`HmiServer` running on its own thread; the same calls, thread-safe.

    Enter it on the node's loop; ``publish``, ``set_state``, ``set_health`` and
    ``set_recipe`` may then be called from that loop and return at once.
    Raises ``OSError`` on entry when the server cannot listen.
    """

    def __init__(
        self,
        settings: HmiSettings,
        *,
        state_dir: Any,
        control: NodeControl,
        results: ResultQuery,
        node_name: str,
        recipe: str | None = None,
    ) -> None:
        self._args = (settings, state_dir, control, results, node_name)
        self._recipe = recipe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: HmiServer | None = None
        self._thread: threading.Thread | None = None
        self._started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._stop: asyncio.Event | None = None

    @classmethod
    def for_node(cls, cfg: Config, control: Operation, results: ResultQuery) -> HmiThread:
        """The HMI of the node ``cfg`` describes, showing its recipe; enter it to serve."""
        return cls(
            cfg.hmi,
            state_dir=cfg.node.state_dir,
            control=control,
            results=results,
            node_name=cfg.node.name,
            recipe=cfg.inspection.recipe.name,
        )

    @property
    def server(self) -> HmiServer:
        """The server (for its properties: endpoint, counters)."""
        assert self._server is not None
        return self._server

    async def __aenter__(self) -> HmiThread:
        node_loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._run, args=(node_loop,), name="hmi-server", daemon=True
        )
        self._thread.start()
        await asyncio.wait_for(asyncio.wrap_future(self._started), _START_TIMEOUT_S)
        if self._recipe is not None:
            self.set_recipe(self._recipe)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, _STOP_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("hmi_thread_did_not_stop")

    def _run(self, node_loop: asyncio.AbstractEventLoop) -> None:
        asyncio.run(self._serve(node_loop))

    async def _serve(self, node_loop: asyncio.AbstractEventLoop) -> None:
        settings, state_dir, control, results, node_name = self._args
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = HmiServer(
            settings,
            state_dir=state_dir,
            control=_ControlOnLoop(control, node_loop),
            results=results,
            node_name=node_name,
        )
        try:
            await server.__aenter__()
        except Exception as exc:  # noqa: BLE001 - handed to the node's loop, which raises it
            self._started.set_exception(exc)
            return
        self._server = server
        self._started.set_result(None)
        try:
            await self._stop.wait()
        finally:
            await server.__aexit__(None, None, None)

    def _call(self, fn: Any, *args: Any) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the HMI loop closed between the check and the call
            log.debug("hmi_update_after_stop")

    def set_state(self, state: VisionState, detail: str = "") -> None:
        """Queue a state change (an invalid one is logged on the HMI thread)."""
        self._call(self._set_state, state, detail)

    def _set_state(self, state: VisionState, detail: str) -> None:
        try:
            self.server.set_state(state, detail)
        except ValueError as exc:  # InvalidTransition: the two state machines disagree
            log.error("hmi_state_rejected", state=state.value, error=str(exc))

    def publish(
        self, record: AuditRecord, thumbnail_png: bytes | None, stats: Mapping[str, object]
    ) -> None:
        """Queue one part's result."""
        self._call(self.server.publish, record, thumbnail_png, dict(stats))

    def set_health(self, *, camera: str, plc: str, model: str) -> None:
        """Queue the resources' health."""
        self._call(lambda: self.server.set_health(camera=camera, plc=plc, model=model))

    def show_health(self, operation: Operation, status: Mapping[str, Any], model: str) -> None:
        """Queue the health of camera, PLC link and model from the node's ``status()``."""
        camera = f"error: {operation.machine.detail}" if operation.fault == "camera" else "ok"
        plc = status.get("plc")
        self.set_health(
            camera=camera, plc="not used" if plc is None else str(plc["state"]), model=model
        )

    def set_recipe(self, name: str) -> None:
        """Queue the recipe now in force."""
        self._call(self.server.set_recipe, name)
