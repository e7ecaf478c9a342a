"""What the node tells the PLC: a heartbeat while it makes progress, ready/error, verdicts.

The heartbeat toggles only while the progress watchdog says the pipeline moves
and no fault keeps the node from guaranteeing its rejects (``Operation.trusted``),
so a PLC that sees it stop can fail safe. With a PLC link
(``[plc]``) the node's operating state is mirrored to its ready/error outputs —
ready while inspecting, error while in Error, the error code of the fault (or of a
raised alarm, error bit clear) — and each part's verdict, defect
code and the result counter are written (``plc.publish_verdicts``), latest first:
when the link is slower than the line, intermediate verdicts are skipped and the
counter shows how many.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import structlog

from drivers.plc.tracked import error_code
from node.config import Config
from node.errors import PlcError
from node.line.judge import Verdict
from node.operation import Operation
from node.service.watchdog import ProgressWatchdog
from node.state import VisionState

log = structlog.get_logger(__name__)


class HeartbeatTarget(Protocol):
    """Whatever carries the heartbeat: the PLC link, or the reject output without one."""

    async def heartbeat(self, alive: bool) -> None:
        """Write the heartbeat bit. Raises ``PlcError`` (or times out)."""
        ...


class StateOutputs(HeartbeatTarget, Protocol):
    """The PLC link's state and verdict outputs (``node.plc.NodePlc``)."""

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error. Raises ``PlcError``."""
        ...

    async def publish_verdict(self, verdict: Verdict) -> None:
        """Write the last verdict and the result counter. Raises ``PlcError``."""
        ...


class PlcSignals:
    """Keeps the heartbeat, state and verdict outputs current; see the module docstring.

    ``target`` carries the heartbeat; ``plc`` (None without a PLC link) also gets
    state and verdicts. ``alarm`` names the alarm raised now (None: none), shown as
    the error code outside Error; call :meth:`alarm_changed` when it changes. Each
    write waits at most ``reject.timeout_ms``.
    """

    def __init__(
        self,
        cfg: Config,
        operation: Operation,
        watchdog: ProgressWatchdog,
        target: HeartbeatTarget,
        plc: StateOutputs | None,
        alarm: Callable[[], str | None] | None = None,
    ) -> None:
        self._operation = operation
        self._alarm = alarm
        self._watchdog = watchdog
        self._target = target
        self._plc = plc
        self._timeout_s = cfg.reject.timeout_ms / 1000
        self._interval_s = min(0.5, cfg.node.watchdog_stall_s / 2)
        self._publish = cfg.plc is not None and cfg.plc.publish_verdicts
        self._last_verdict: Verdict | None = None
        self._verdict_changed = asyncio.Event()
        self._state_changed = asyncio.Event()
        operation.listen(lambda state, detail: self._state_changed.set())

    def tasks(self, halt: asyncio.Event) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The long-running tasks (by name), each ending when ``halt`` is set."""
        tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "heartbeat": lambda: self._heartbeat_loop(halt)
        }
        if self._plc is not None:
            plc = self._plc
            tasks["plc-state"] = lambda: self._state_loop(plc, halt)
        return tasks

    def alarm_changed(self) -> None:
        """An alarm was raised or cleared: write the error code again."""
        self._state_changed.set()

    def _error_code(self) -> int:
        fault = self._operation.fault
        if fault is not None:
            return error_code(fault)
        alarm = self._alarm() if self._alarm is not None else None
        return 0 if alarm is None else error_code(alarm)

    def verdict(self, verdict: Verdict) -> None:
        """A part's result is published: write its verdict when the link is free."""
        if self._plc is not None:
            self._last_verdict = verdict
            self._verdict_changed.set()

    async def _heartbeat_loop(self, halt: asyncio.Event) -> None:
        toggle = False
        while not halt.is_set():
            if self._watchdog.healthy() and self._operation.trusted:
                toggle = not toggle
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await self._target.heartbeat(toggle)
                except (TimeoutError, PlcError) as exc:
                    log.warning("heartbeat_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self._interval_s)

    async def _state_loop(self, plc: StateOutputs, halt: asyncio.Event) -> None:
        while not halt.is_set():
            try:
                if self._state_changed.is_set():
                    self._state_changed.clear()
                    state = self._operation.state
                    async with asyncio.timeout(self._timeout_s):
                        await plc.set_node_state(
                            ready=self._operation.inspecting and state is not VisionState.ERROR,
                            error=state is VisionState.ERROR,
                            error_code=self._error_code(),
                        )
                if self._verdict_changed.is_set():
                    self._verdict_changed.clear()
                    verdict = self._last_verdict
                    if self._publish and verdict is not None:
                        async with asyncio.timeout(self._timeout_s):
                            await plc.publish_verdict(verdict)
                waits = [
                    asyncio.ensure_future(self._state_changed.wait()),
                    asyncio.ensure_future(self._verdict_changed.wait()),
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
            except (TimeoutError, PlcError) as exc:
                log.warning("plc_state_write_failed", error=str(exc))
                self._state_changed.set()  # write the state again once the link is back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), 0.5)

    async def not_ready(self) -> None:
        """On the way out: tell the PLC the node is no longer ready (best effort)."""
        if self._plc is None:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._plc.set_node_state(ready=False, error=False)
        except (TimeoutError, PlcError) as exc:
            log.warning("plc_not_ready_write_failed", error=str(exc))
