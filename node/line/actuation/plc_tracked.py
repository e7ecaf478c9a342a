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


class ResultReporter(Protocol):
    """The PLC edge as this actuation uses it (``node.plc.NodePlc``)."""

    async def report(self, part_id: int, origin_raw_count: int, verdict: Verdict) -> None:
        """Hand one reject to the PLC and wait for its Ack. Raises ``PlcError``."""
        ...


class PlcTrackedActuation:
    """Hands rejects to the PLC one at a time, in order (an ``Actuation``).

    A reject the PLC did not acknowledge within ``timeout_s`` is reported
    ``not_fired``: the PLC's own watchdog on the handshake and the
    heartbeat make it fail safe.
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
            try:
                async with asyncio.timeout(self._timeout_s):
                    origin_raw = self._tracker.raw_count(st.part.origin_count)
                    await self._plc.report(st.part_id, origin_raw, verdict)
            except (TimeoutError, PlcError) as exc:
                log.error("plc_report_failed", part_id=st.part_id, error=str(exc))
                self._on_acted(st, "not_fired")
                continue
            self.stats.report_ms.append((time.monotonic_ns() - t0) / 1e6)
            self._on_acted(st, "rejected")
