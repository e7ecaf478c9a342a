"""Simulated PLC edge: encoder counter, part-present sensor and reject actuator.

Both read one :class:`drivers.sim.world.SimWorld`; the encoder is polled at a
fixed rate like a PLC's high-speed counter over a fieldbus.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import TracebackType

import structlog

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.sim.world import SimWorld

log = structlog.get_logger(__name__)


class SimEncoder:
    """Polls the simulated belt's counter every ``sample_interval_s``.

    Samples are paced on absolute deadlines so the rate does not drift.
    ``with_part_present`` controls whether the part-present sensor is wired;
    ``latch_edges`` whether the simulated PLC latches the counter at its rising
    edges (a capture input), so no part is lost when the node polls late.
    """

    def __init__(
        self,
        world: SimWorld,
        sample_interval_s: float,
        *,
        with_part_present: bool = True,
        latch_edges: bool = True,
    ) -> None:
        if sample_interval_s <= 0:
            raise ValueError("sample_interval_s must be positive")
        self._world = world
        self._interval_s = sample_interval_s
        self._with_present = with_part_present
        self._latch = latch_edges and with_part_present
        self._last_t: int | None = None
        self._closed = asyncio.Event()

    async def __aenter__(self) -> SimEncoder:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed.set()

    def read(self) -> EncoderSample:
        """Read the counter, the sensor and the edges latched since the last read."""
        t = time.monotonic_ns()
        present = self._world.part_present(t) if self._with_present else None
        edges = None
        if self._latch:
            edges = () if self._last_t is None else self._world.edges_between(self._last_t, t)
        self._last_t = t
        return EncoderSample(self._world.raw_count(t), t, present, edges)

    async def samples(self) -> AsyncIterator[EncoderSample]:
        """Yield one sample per interval until closed."""
        # The simulated belt starts when the node first reads it, so no part passes
        # the sensor while the node is still opening its other resources.
        if not self._world.started:
            self._world.start()
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        while not self._closed.is_set():
            yield self.read()
            next_t += self._interval_s
            delay = next_t - loop.time()
            if delay < -self._interval_s:  # fell far behind (loop was busy): resync
                next_t = loop.time()
                delay = 0.0
            await asyncio.sleep(max(0.0, delay))


class SimRejectOutput:
    """A reject actuator that strikes whatever part is under it.

    ``fire`` records the strike in the world at the instant it is called; the
    actuator acts ``actuator_lead_mm`` of belt travel later.
    """

    def __init__(self, world: SimWorld) -> None:
        self._world = world
        self.heartbeats = 0
        self.alive = False

    async def __aenter__(self) -> SimRejectOutput:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.alive = False

    @property
    def fire_lead_ns(self) -> int:
        """The simulated actuator acts on the call itself: no transport delay."""
        return 0

    def fire(self, command: RejectCommand) -> None:
        """Start the reject pulse for ``command.part_id`` now (thread-safe)."""
        hit = self._world.strike(command.part_id, time.monotonic_ns())
        log.debug("sim_actuator_struck", part_id=command.part_id, hit=hit.part_index)

    async def heartbeat(self, alive: bool) -> None:
        """Record the node heartbeat."""
        self.alive = alive
        self.heartbeats += 1
