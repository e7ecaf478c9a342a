"""The HMI server in a process of its own, so no OPC UA client can take the line's time.

On a thread the server still shared the node's GIL: ten panels browsing made the
line's loop wait for asyncua's Python code, and good parts went out as
``trigger_late`` fail-safes. Here the server (:class:`HmiServer`) runs in a child
process (``multiprocessing`` spawn context, reniced by ``hmi.nice``) and the node
talks to it over one pipe:

- node → HMI: state changes (never dropped), results and health (display updates,
  held in a deque of ``hmi.queue_size``; when full the oldest are dropped and
  counted), the recipe, and answers to the HMI's calls. One sender thread writes
  them, so the node's loop only appends to a deque; a stuck HMI blocks that
  thread, never the line.
- HMI → node: operator commands (Halt, Reset, modes, recipes, reviews), each run
  on the node's loop (a review on a worker thread) and answered; the HMI's log
  events, logged by the node under its own configuration; counters every second.
  Audit queries are answered in the HMI process from its own read connection to
  the audit store (:class:`node.audit.reader.AuditReader`).

When the HMI process dies the node logs ``hmi_process_died``, shows it in
``snapshot()`` (the node's status), and starts it again with a growing back-off;
it comes back in the node's current state. The line does not notice.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import itertools
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from node.audit.record import AuditRecord, Review, VerdictText
from node.config import Config
from node.hmi.interfaces import NodeControl, ResultQuery
from node.hmi.settings import HmiSettings
from node.operation import Operation
from node.state import InvalidTransition, VisionState

log = structlog.get_logger(__name__)

_START_TIMEOUT_S = 90.0
_STOP_TIMEOUT_S = 10.0
_CALL_TIMEOUT_S = 30.0
_RESTART_BACKOFF_S = (1.0, 30.0)
_COMMANDS = frozenset(
    {"halt", "reset", "select_mode_automatic", "start_continuous", "stop", "prepare_recipe"}
)
_QUERIES = frozenset({"get", "query", "review"})
_ERRORS: dict[str, type[Exception]] = {
    "KeyError": KeyError,
    "ValueError": ValueError,
    "InvalidTransition": InvalidTransition,
}


class HmiStartError(RuntimeError):
    """The HMI process could not start its server for a reason other than ``OSError``."""


@dataclass(frozen=True, slots=True)
class _ChildArgs:
    settings: HmiSettings
    state_dir: Path
    node_name: str
    audit_dir: Path | None
    recipes: list[str]
    recipe: str | None
    state: VisionState
    detail: str
    log_level: int


def _log_level() -> int:
    """The node's structlog level, so the HMI process forwards no more than the node logs."""
    try:
        level = structlog.get_logger().bind().get_effective_level()
    except AttributeError:  # not a filtering bound logger (tests): forward from debug up
        return logging.DEBUG
    return logging.DEBUG if level is None else int(level)


class HmiProcess:
    """The node's HMI server in a child process; same calls as :class:`HmiServer`'s feed.

    ``results`` takes reviews (and, without ``audit_dir``, answers the queries);
    with ``audit_dir`` the HMI process reads the audit store there itself. Enter
    it on the node's loop; ``publish``, ``set_state``, ``set_health`` and
    ``set_recipe`` return at once. Raises ``OSError`` on entry when the server
    cannot listen (e.g. the port is taken).
    """

    def __init__(
        self,
        settings: HmiSettings,
        *,
        state_dir: Path,
        control: NodeControl,
        results: ResultQuery,
        node_name: str,
        recipe: str | None = None,
        audit_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self._state_dir = state_dir
        self._control = control
        self._results = results
        self._node_name = node_name
        self._recipe = recipe
        self._audit_dir = audit_dir
        self._state = (VisionState.PREOPERATIONAL, "")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: Any = None
        self._conn: Connection | None = None
        self._cond = threading.Condition()
        self._first: collections.deque[tuple[Any, ...]] = collections.deque()
        self._updates: collections.deque[tuple[Any, ...]] = collections.deque()
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._url = settings.endpoint
        self._child_pid: int | None = None
        self.dropped = 0
        """Display updates dropped because the queue to the HMI process was full."""
        self.restarts = 0
        """Times the HMI process died and was started again."""
        self.alive = False
        """Whether the HMI process is serving."""
        self.child: dict[str, Any] = {}
        """The HMI process's last counters (``dropped``, ``published``)."""

    @classmethod
    def for_node(cls, cfg: Config, control: Operation, results: ResultQuery) -> HmiProcess:
        """The HMI of the node ``cfg`` describes, reading its audit store; enter it to serve."""
        return cls(
            cfg.hmi,
            state_dir=cfg.node.state_dir,
            control=control,
            results=results,
            node_name=cfg.node.name,
            recipe=cfg.inspection.recipe.name,
            audit_dir=cfg.audit_directory if cfg.audit.enabled else None,
        )

    @property
    def endpoint_url(self) -> str:
        """The endpoint URL with the port actually bound."""
        return self._url

    @property
    def pid(self) -> int | None:
        """The HMI process's id (None when it is not running)."""
        return None if self._proc is None else self._proc.pid

    def snapshot(self) -> dict[str, Any]:
        """For the node's status: up or not, restarts, updates dropped on either side."""
        return {
            "alive": self.alive,
            "restarts": self.restarts,
            "dropped": self.dropped,
            "dropped_in_hmi": int(self.child.get("dropped", 0)),
        }

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> HmiProcess:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._spawn)
        for name, target in (("hmi-send", self._send_loop), ("hmi-receive", self._receive_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closing.set()
        with self._cond:
            self._first.append(("stop",))
            self._cond.notify()
        await asyncio.to_thread(self._stop_child)

    def _stop_child(self) -> None:
        for t in self._threads:
            if t.name == "hmi-send":
                t.join(_STOP_TIMEOUT_S)
        proc = self._proc
        if proc is not None:
            proc.join(_STOP_TIMEOUT_S)
            if proc.is_alive():
                log.warning("hmi_process_did_not_stop", pid=proc.pid)
                proc.kill()
                proc.join(_STOP_TIMEOUT_S)
        if self._conn is not None:
            self._conn.close()
        for t in self._threads:
            t.join(_STOP_TIMEOUT_S)
        self.alive = False

    def _spawn(self) -> None:
        """Start the HMI process and wait until it serves (blocking; a thread's work).

        Raises:
            OSError: the server cannot listen or write its PKI folder.
            HmiStartError: any other failure to start.
        """
        ctx = mp.get_context("spawn")
        here, there = ctx.Pipe()
        state, detail = self._state
        args = _ChildArgs(
            settings=self.settings,
            state_dir=self._state_dir,
            node_name=self._node_name,
            audit_dir=self._audit_dir,
            recipes=self._control.recipes(),
            recipe=self._recipe,
            state=state,
            detail=detail,
            log_level=_log_level(),
        )
        proc = ctx.Process(target=child_main, args=(there, args), name="lineside-hmi", daemon=True)
        proc.start()
        self._child_pid = proc.pid
        there.close()
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while True:
                if not here.poll(max(0.0, deadline - time.monotonic())):
                    raise HmiStartError(f"the HMI process did not start in {_START_TIMEOUT_S} s")
                msg = here.recv()
                if msg[0] == "log":
                    self._log(msg)
                elif msg[0] == "started":
                    self._url = msg[1]
                    break
                elif msg[0] == "failed":
                    raise (OSError if msg[1] else HmiStartError)(msg[2])
        except EOFError as exc:
            raise HmiStartError(f"the HMI process ended at start (exit {proc.exitcode})") from exc
        except BaseException:
            here.close()
            proc.join(_STOP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
            raise
        self._proc, self._conn = proc, here
        self.alive = True
        log.info("hmi_process_started", pid=proc.pid, url=self._url)

    # -- the two threads ----------------------------------------------------------------------
    def _send_loop(self) -> None:
        """Write queued messages to the HMI process (answers and states first)."""
        while True:
            with self._cond:
                while not (self._first or self._updates):
                    self._cond.wait()
                msg = self._first.popleft() if self._first else self._updates.popleft()
                conn = self._conn
            if conn is None:
                continue
            try:
                conn.send(msg)
            except (OSError, ValueError):  # the process is gone; the receiver restarts it
                if msg[0] == "stop":
                    return
            if msg[0] == "stop":
                return

    def _receive_loop(self) -> None:
        """Handle what the HMI process sends; restart it when it dies."""
        while not self._closing.is_set():
            conn = self._conn
            try:
                assert conn is not None
                msg = conn.recv()
            except (EOFError, OSError, AssertionError):
                if self._closing.is_set():
                    return
                self._restart()
                continue
            try:
                self._dispatch(msg)
            except Exception as exc:  # noqa: BLE001 - this thread's supervisor: log, go on
                log.error("hmi_message_failed", kind=str(msg[0]), error=repr(exc))

    def _dispatch(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "call":
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(self._answer(*msg[1:]), self._loop)
        elif kind == "log":
            self._log(msg)
        elif kind == "stats":
            self.child = msg[1]

    def _restart(self) -> None:
        proc = self._proc
        self.alive = False
        if proc is not None:
            proc.join(1.0)
        if self._conn is not None:
            self._conn.close()
        log.error(
            "hmi_process_died",
            exitcode=None if proc is None else proc.exitcode,
            restarts=self.restarts,
            effect="HMI panels disconnected; the line goes on",
        )
        backoff, most = _RESTART_BACKOFF_S
        while not self._closing.wait(backoff):
            try:
                self._spawn()
            except Exception as exc:  # noqa: BLE001 - this thread supervises the process: retry
                log.error("hmi_process_restart_failed", error=f"{type(exc).__name__}: {exc}")
                backoff = min(backoff * 2, most)
                continue
            self.restarts += 1
            log.warning("hmi_process_restarted", restarts=self.restarts, url=self._url)
            if self._closing.is_set() and self._conn is not None:  # closed meanwhile
                with contextlib.suppress(OSError):
                    self._conn.send(("stop",))
            return

    def _log(self, msg: tuple[Any, ...]) -> None:
        _, method, event, fields = msg
        logger = structlog.get_logger(str(fields.pop("logger", "node.hmi")))
        getattr(logger, method, logger.info)(event, hmi_pid=self._child_pid, **fields)

    async def _answer(self, call_id: int, name: str, args: tuple[Any, ...]) -> None:
        """Run one of the HMI's calls on the node's loop and queue the answer."""
        try:
            if name in _COMMANDS:
                value = await getattr(self._control, name)(*args)
            elif name in _QUERIES:
                fn = getattr(self._results, name)
                if name == "query":
                    value = await asyncio.to_thread(lambda: fn(**args[0]))
                else:
                    value = await asyncio.to_thread(fn, *args)
            else:
                raise ValueError(f"unknown call {name!r}")
            reply: tuple[Any, ...] = ("reply", call_id, True, value)
        except Exception as exc:  # noqa: BLE001 - the node refuses by raising: tell the HMI
            reply = ("reply", call_id, False, (type(exc).__name__, str(exc)))
        with self._cond:
            self._first.append(reply)
            self._cond.notify()

    # -- what the node calls ----------------------------------------------------------------
    def _put(self, msg: tuple[Any, ...], *, droppable: bool = True) -> None:
        with self._cond:
            if not droppable:
                self._first.append(msg)
            else:
                if len(self._updates) >= self.settings.queue_size:
                    self._updates.popleft()
                    self.dropped += 1
                    if self.dropped == 1 or self.dropped % 100 == 0:
                        log.warning("hmi_updates_dropped", dropped=self.dropped, side="node")
                self._updates.append(msg)
            self._cond.notify()

    def set_state(self, state: VisionState, detail: str = "") -> None:
        """The node moved to ``state``; never dropped, and the state a restarted HMI starts in."""
        self._state = (state, detail)
        self._put(("state", state, detail), droppable=False)

    def publish(
        self, record: AuditRecord, thumbnail_png: bytes | None, stats: Mapping[str, object]
    ) -> None:
        """Queue one part's result for the panels."""
        thumb = thumbnail_png if self.settings.publish_thumbnails else None
        self._put(("result", record, thumb, dict(stats)))

    def set_health(self, *, camera: str, plc: str, model: str, audit: str = "ok") -> None:
        """Queue the resources' health."""
        self._put(("health", camera, plc, model, audit))

    def show_health(self, operation: Operation, status: Mapping[str, Any], model: str) -> None:
        """Queue the health of camera, PLC link, model and audit store from the node's
        ``status()``: an active fault or alarm is shown in words on its resource."""
        self.set_health(**health_words(operation, status, model))

    def set_recipe(self, name: str) -> None:
        """The recipe now in force (also the one a restarted HMI shows)."""
        self._recipe = name
        self._put(("recipe", name), droppable=False)


def health_words(operation: Operation, status: Mapping[str, Any], model: str) -> dict[str, str]:
    """Camera, PLC, model and audit health in the words a panel shows: ``ok``, the link
    state, or ``fault: <why>`` while a fault on it is active (``error: <why>`` while its
    error holds the node in Error)."""
    faults = operation.active_faults
    held = operation.fault

    def word(name: str, fine: str) -> str:
        if name in faults:
            return f"fault: {faults[name]}"
        if held == name:
            return f"error: {operation.machine.detail}"
        return fine

    plc = status.get("plc")
    alarms = status.get("alarms") or {}
    audit = status.get("audit") or {}
    audit_fine = "ok"
    if "audit" in alarms:
        audit_fine = f"alarm: {alarms['audit']}"
    elif audit.get("unrecorded_parts"):
        audit_fine = f"{audit['unrecorded_parts']} parts unrecorded"
    return {
        "camera": word("camera", "ok"),
        "plc": word("plc", "not used" if plc is None else str(plc["state"])),
        "model": word("model", model),
        "audit": word("audit", audit_fine),
    }


# -- the HMI process --------------------------------------------------------------------------
class _Link:
    """The HMI process's end of the pipe: sends from any thread, calls into the node."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}

    def send(self, msg: tuple[Any, ...]) -> None:
        with self._lock:
            self._conn.send(msg)

    def call(self, name: str, *args: Any) -> concurrent.futures.Future[Any]:
        call_id = next(self._ids)
        fut: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._calls[call_id] = fut
        self.send(("call", call_id, name, args))
        return fut

    def answered(self, call_id: int, ok: bool, value: Any) -> None:
        fut = self._calls.pop(call_id, None)
        if fut is None:
            return
        if ok:
            fut.set_result(value)
        else:
            kind, text = value
            fut.set_exception(_ERRORS.get(kind, RuntimeError)(text))

    def fail_all(self) -> None:
        for fut in self._calls.values():
            fut.set_exception(RuntimeError("the node closed the link"))
        self._calls.clear()


class _ControlViaNode:
    """``NodeControl`` whose commands run in the node (see ``HmiProcess._answer``)."""

    def __init__(self, link: _Link, recipes: list[str]) -> None:
        self._link = link
        self._recipes = recipes

    async def _call(self, name: str, *args: Any) -> None:
        fut = self._link.call(name, *args)
        await asyncio.wait_for(asyncio.wrap_future(fut), _CALL_TIMEOUT_S)

    async def halt(self) -> None:
        await self._call("halt")

    async def reset(self) -> None:
        await self._call("reset")

    async def select_mode_automatic(self) -> None:
        await self._call("select_mode_automatic")

    async def start_continuous(self) -> None:
        await self._call("start_continuous")

    async def stop(self) -> None:
        await self._call("stop")

    def recipes(self) -> list[str]:
        return list(self._recipes)

    async def prepare_recipe(self, name: str) -> None:
        await self._call("prepare_recipe", name)


class _ResultsInHmi:
    """``ResultQuery`` for the HMI process: reads from the audit store where one is given
    (else asks the node), and hands reviews to the node (whose store writes them)."""

    def __init__(self, link: _Link, audit_dir: Path | None) -> None:
        from node.audit.reader import AuditReader

        self._link = link
        self._reader = None if audit_dir is None else AuditReader(audit_dir)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def get(self, result_id: str) -> AuditRecord | None:
        if self._reader is not None:
            return self._reader.get(result_id)
        rec: AuditRecord | None = self._link.call("get", result_id).result(_CALL_TIMEOUT_S)
        return rec

    def query(self, **filters: Any) -> list[AuditRecord]:
        if self._reader is not None:
            return self._reader.query(**filters)
        recs: list[AuditRecord] = self._link.call("query", filters).result(_CALL_TIMEOUT_S)
        return recs

    def review(
        self, result_id: str, verdict: VerdictText, defect_type: str | None, comment: str, user: str
    ) -> Review:
        fut = self._link.call("review", result_id, verdict, defect_type, comment, user)
        review: Review = fut.result(_CALL_TIMEOUT_S)
        return review


def _configure_child_logging(link: _Link, level: int) -> None:
    """Send every structlog event to the node (logged there under its configuration)."""

    def forward(logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        name = event.pop("event")
        fields = {
            k: v if isinstance(v, str | int | float | bool | None) else repr(v)
            for k, v in event.items()
        }
        fields.setdefault("logger", getattr(logger, "name", "node.hmi"))
        with contextlib.suppress(OSError):  # the node is gone; this process ends with it
            link.send(("log", method, str(name), fields))
        raise structlog.DropEvent

    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, forward],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=logging.WARNING)
    # asyncua logs every refused request as an error; our own events count them instead
    logging.getLogger("asyncua.server.uaprocessor").setLevel(logging.CRITICAL)
    # a port in use is reported by the node in one line; asyncua would add a traceback
    logging.getLogger("asyncua.server.server").setLevel(logging.CRITICAL)


def child_main(conn: Connection, args: _ChildArgs) -> None:
    """Entry point of the HMI process (``multiprocessing`` target)."""
    # Ctrl-C reaches the whole process group and systemd signals the whole cgroup: the
    # node decides when its HMI stops (a "stop" message, or the pipe closing with it)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    link = _Link(conn)
    _configure_child_logging(link, args.log_level)
    if args.settings.nice:
        os.nice(args.settings.nice)
    asyncio.run(_serve(conn, link, args))


async def _serve(conn: Connection, link: _Link, a: _ChildArgs) -> None:
    from node.hmi.server import HmiServer

    loop = asyncio.get_running_loop()
    results = _ResultsInHmi(link, a.audit_dir)
    server = HmiServer(
        a.settings,
        state_dir=a.state_dir,
        control=_ControlViaNode(link, a.recipes),
        results=results,
        node_name=a.node_name,
        initial_state=a.state,
        initial_detail=a.detail,
    )
    try:
        await server.__aenter__()
    except OSError as exc:
        link.send(("failed", True, str(exc)))
        results.close()
        return
    except Exception as exc:  # noqa: BLE001 - reported to the node, which raises it
        link.send(("failed", False, f"{type(exc).__name__}: {exc}"))
        results.close()
        return
    if a.recipe:
        server.set_recipe(a.recipe)
    stop = asyncio.Event()

    def apply(msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "result":
            server.publish(msg[1], msg[2], msg[3])
        elif kind == "state":
            try:
                server.set_state(msg[1], msg[2])
            except InvalidTransition as exc:  # a restart or a dropped step: take the node's
                log.warning("hmi_state_resynced", state=msg[1].value, error=str(exc))
                server.force_state(msg[1], msg[2])
        elif kind == "health":
            server.set_health(camera=msg[1], plc=msg[2], model=msg[3], audit=msg[4])
        elif kind == "recipe":
            server.set_recipe(msg[1])

    def receive() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "reply":
                link.answered(msg[1], msg[2], msg[3])
            elif msg[0] == "stop":
                break
            else:
                loop.call_soon_threadsafe(apply, msg)
        link.fail_all()
        loop.call_soon_threadsafe(stop.set)

    link.send(("started", server.endpoint_url))
    threading.Thread(target=receive, name="hmi-receive", daemon=True).start()
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                link.send(("stats", {"dropped": server.dropped, "published": server.published}))
    finally:
        await server.__aexit__(None, None, None)
        results.close()
