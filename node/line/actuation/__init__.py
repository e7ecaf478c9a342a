"""Actuation: how a rejected part gets struck, and how the node learns that it was.

Two variants behind one Protocol, chosen once in ``node.wiring`` from the config:

- :class:`~node.line.actuation.node_timed.NodeTimedActuation`: the node times the
  pulse itself (its pulse thread calls the output's ``fire`` when the part reaches
  the fire point);
- :class:`~node.line.actuation.plc_tracked.PlcTrackedActuation`: the node hands the
  verdict and the part's origin count to the PLC, whose shift register fires.

Either way each rejected part ends in exactly one ``on_acted(part, action)``:
``"rejected"`` when the strike went out as planned, ``"not_fired"`` when it failed
or may have missed its part (the node counts those as reject fire failures).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from drivers.plc.base import RejectOutput
from node.line.parts import InFlightPart
from node.line.results import Action
from node.line.tracker import Tracker

Acted = Callable[[InFlightPart, Action], None]
"""Called on the event loop once per struck part with what became of the strike."""

_HISTORY = 4096


@dataclass
class ActuationStats:
    """What the actuation did, for the run summary."""

    pulse_late_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY)
    )
    """Node-timed: how late each pulse call started after its planned instant."""
    report_ms: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=_HISTORY)
    )
    """PLC-tracked: how long each result handshake took."""


class Actuation(Protocol):
    """Gets rejected parts struck; entered (as a context manager) on the event loop."""

    stats: ActuationStats

    def strike(self, part: InFlightPart) -> None:
        """``part`` has a reject verdict: get it struck; ``on_acted`` follows later."""
        ...

    def belt_moved(self) -> None:
        """A new encoder sample is in: re-time whatever waits for the belt."""
        ...

    def tasks(self) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
        """The long-running tasks (by name) the node must run beside the line."""
        ...


class ActuationFactory(Protocol):
    """Makes the chosen actuation once the reject output is open."""

    def __call__(
        self, output: RejectOutput, tracker: Tracker, on_acted: Acted
    ) -> AbstractContextManager[Actuation]:
        """The actuation for the opened ``output``, timed by ``tracker``."""
        ...
