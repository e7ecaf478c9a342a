"""Contracts at the PLC edge: encoder input and reject output."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class EncoderSample:
    """One reading of the line's inputs.

    ``raw_count`` is the counter as the PLC holds it (wraps at its bit width);
    ``t_ns`` is ``time.monotonic_ns()`` when the reading was taken, known to within
    ``t_err_ns`` either side (half the round trip of a polled read: the PLC answered
    somewhere inside it; 0 where the time is exact);
    ``part_present`` is the part-present sensor, or None where not wired;
    ``edges`` are the raw counter values the PLC latched at each rising edge of
    the part-present sensor since the previous sample (its capture input), or
    None where the PLC does not latch — then the node interpolates edges from
    ``part_present``, which misses a gap shorter than one polling interval.
    """

    raw_count: int
    t_ns: int
    part_present: bool | None = None
    edges: tuple[int, ...] | None = None
    t_err_ns: int = 0


class EncoderSource(Protocol):
    """An async stream of encoder samples, in time order."""

    def samples(self) -> AsyncIterator[EncoderSample]:
        """Yield samples until the source is closed."""
        ...


@dataclass(frozen=True, slots=True)
class RejectCommand:
    """A command to reject one part.

    ``at_count`` is the unwrapped encoder count at which the actuator must act
    (the part's centre at the reject station); ``reason`` is a short code.
    """

    part_id: int
    at_count: int
    reason: str


class RejectOutput(Protocol):
    """Fires the reject actuator.

    ``fire`` is called by the node's pulse-timing thread at the moment the pulse
    must start (node-timed mode: the node has already compensated the actuator
    lead). It is synchronous so no event-loop wake-up sits between the deadline
    and the output; it must be thread-safe, return within the reject timeout, and
    raise (any exception) when the pulse could not be started.
    """

    @property
    def fire_lead_ns(self) -> int:
        """Expected time from a ``fire`` call to the output acting (transport delay).

        The node calls ``fire`` this much before the pulse is due; a driver may
        update it from measured round trips.
        """
        ...

    def fire(self, command: RejectCommand) -> None:
        """Start the reject pulse for ``command.part_id`` now."""
        ...

    async def heartbeat(self, alive: bool) -> None:
        """Toggle the node heartbeat seen by the PLC."""
        ...
