"""PLC-tracked rejects: the PLC's shift register fires; the node hands it each reject.

A reject verdict is queued at once; one task hands the queued rejects to the PLC in
verdict order (the part's origin in the PLC's own counter terms, ResultValid/Ack —
``docs/plc.md``) and reports each as struck when the PLC acknowledged it. Timing is
exact in counts whatever the network's latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol

import structlog

from node.errors import PlcError
from node.line.actuation import Acted, ActuationStats
from node.line.judge import Verdict
from node.line.parts import InFlightPart
from node.line.tracker import Tracker

log = structlog.get_logger(__name__)

_RETRY_PAUSE_S = 0.01
"""Between tries of a report (a link that is down fails at once)."""


class ResultReporter(Protocol):
    """The PLC edge as this actuation uses it (``node.plc.NodePlc``)."""

    async def report(self, part_id: int, origin_raw_count: int, verdict: Verdict) -> None:
        """Hand one reject to the PLC and wait for its Ack. Raises ``PlcError``."""
        ...


class PlcTrackedActuation:
    """Hands rejects to the PLC one at a time, in order (an ``Actuation``).

    A reject the PLC did not acknowledge within ``timeout_s`` is handed over again while
    another try still fits before its fire point; one that cannot be is reported
    ``not_fired`` (the node then goes to Error, and the PLC's own watch of the
    handshake and the heartbeat make it fail safe).
    """

    def __init__(
        self, plc: ResultReporter, tracker: Tracker, on_acted: Acted, *, timeout_s: float
    ) -> None:
        self.stats = ActuationStats()
        self._plc = plc
        self._tracker = tracker
        self._on_acted = on_acted
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[InFlightPart] = asyncio.Queue()

    def __enter__(self) -> PlcTrackedActuation:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The report loop."""
        return {"plc-reports": self._report_loop}

    def strike(self, part: InFlightPart) -> None:
        """Queue the reject for the PLC."""
        self._queue.put_nowait(part)

    def belt_moved(self) -> None:
        """Nothing to re-time: the PLC fires on its own counter."""

    async def _report_loop(self) -> None:
        while True:
            st = await self._queue.get()
            verdict = st.verdict
            assert verdict is not None
            t0 = time.monotonic_ns()
            origin_raw = self._tracker.raw_count(st.part.origin_count)
            tries = 0
            while True:
                tries += 1
                try:
                    async with asyncio.timeout(self._timeout_s):
                        await self._plc.report(st.part_id, origin_raw, verdict)
                except (TimeoutError, PlcError) as exc:
                    if self._time_for_another(st):
                        log.warning("plc_report_retry", part_id=st.part_id, error=str(exc))
                        await asyncio.sleep(_RETRY_PAUSE_S)
                        continue
                    log.error("plc_report_failed", part_id=st.part_id, error=str(exc), tries=tries)
                    self._on_acted(st, "not_fired")
                    break
                self.stats.report_ms.append((time.monotonic_ns() - t0) / 1e6)
                self._on_acted(st, "rejected")
                break

    def _time_for_another(self, st: InFlightPart) -> bool:
        """Whether a new try can still be acknowledged before the part's fire point (a try
        that failed after the PLC took the result makes it strike twice at the same count:
        harmless, where a reject never handed over is not)."""
        eta = self._tracker.eta_ns(st.part.fire_count)
        if eta is None:
            return False
        return eta - time.monotonic_ns() > (self._timeout_s + _RETRY_PAUSE_S) * 1e9
