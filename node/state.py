"""The node's state as OPC 40100 sees it, and the rules for moving between states.

The VisionStateMachine of OPC 40100-1 has four top-level states (Preoperational,
Operational, Error, Halted); Operational holds the automatic-mode sub-machine
(Initialized, Ready, SingleExecution, ContinuousExecution). The node uses:

- ``PREOPERATIONAL`` while starting (resources opening);
- ``INITIALIZED`` once started (Operational, automatic mode not yet ready);
- ``READY`` when the automatic mode is selected and camera, PLC and model are open;
- ``CONTINUOUS`` while parts are being inspected (ContinuousExecution);
- ``ERROR`` on a camera, PLC or model error; Reset goes back to Initialized/Ready;
- ``HALTED`` after Halt; Reset leaves it (to Preoperational, then on as the node starts).

:class:`StateMachine` is pure: no I/O, no clock. The HMI server mirrors it into
the 40100 model; the OPC UA methods ask it whether a command is allowed now.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class VisionState(enum.StrEnum):
    """The node's state; values are the 40100 state BrowseNames."""

    PREOPERATIONAL = "Preoperational"
    INITIALIZED = "Initialized"
    READY = "Ready"
    CONTINUOUS = "ContinuousExecution"
    ERROR = "Error"
    HALTED = "Halted"

    @property
    def top(self) -> str:
        """The top-level VisionStateMachine state: Preoperational, Operational, Error, Halted."""
        return "Operational" if self in _OPERATIONAL else self.value

    @property
    def automatic(self) -> str | None:
        """The automatic-mode sub-state, or None outside Operational."""
        return self.value if self in _OPERATIONAL else None


_OPERATIONAL = frozenset({VisionState.INITIALIZED, VisionState.READY, VisionState.CONTINUOUS})


class Command(enum.StrEnum):
    """The 40100 methods that act on the node; values are their BrowseNames."""

    HALT = "Halt"
    RESET = "Reset"
    SELECT_MODE_AUTOMATIC = "SelectModeAutomatic"
    START_CONTINUOUS = "StartContinuous"
    STOP = "Stop"


S = VisionState
_TRANSITIONS: dict[VisionState, frozenset[VisionState]] = {
    S.PREOPERATIONAL: frozenset({S.INITIALIZED, S.READY, S.ERROR, S.HALTED}),
    S.INITIALIZED: frozenset({S.READY, S.CONTINUOUS, S.PREOPERATIONAL, S.ERROR, S.HALTED}),
    S.READY: frozenset({S.INITIALIZED, S.CONTINUOUS, S.PREOPERATIONAL, S.ERROR, S.HALTED}),
    S.CONTINUOUS: frozenset({S.READY, S.INITIALIZED, S.ERROR, S.HALTED}),
    S.ERROR: frozenset({S.PREOPERATIONAL, S.INITIALIZED, S.READY, S.HALTED}),
    S.HALTED: frozenset({S.PREOPERATIONAL, S.INITIALIZED}),
}
"""Allowed moves; staying in a state is always allowed (a no-op). Initialized →
ContinuousExecution covers a node configured to start inspecting on its own."""

_COMMANDS: dict[Command, frozenset[VisionState]] = {
    Command.HALT: frozenset(set(S) - {S.HALTED}),
    Command.RESET: frozenset({S.ERROR, S.HALTED}),
    Command.SELECT_MODE_AUTOMATIC: frozenset({S.INITIALIZED, S.READY}),
    Command.START_CONTINUOUS: frozenset({S.READY}),
    Command.STOP: frozenset({S.CONTINUOUS}),
}
"""In which states each command is accepted (40100-1 §8.2/8.3 transitions)."""


class InvalidTransition(ValueError):
    """A state change or command that the rules do not allow from the current state."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One accepted state change; ``detail`` says why (e.g. the camera error)."""

    source: VisionState
    target: VisionState
    detail: str
    seq: int


class StateMachine:
    """The current :class:`VisionState` and the rules that move it."""

    def __init__(self, initial: VisionState = VisionState.PREOPERATIONAL) -> None:
        self._state = initial
        self._detail = ""
        self._seq = 0

    @property
    def state(self) -> VisionState:
        """The current state."""
        return self._state

    @property
    def detail(self) -> str:
        """Why the node is in this state (empty unless given)."""
        return self._detail

    def can_move(self, target: VisionState) -> bool:
        """Whether ``target`` is reachable from the current state in one step."""
        return target == self._state or target in _TRANSITIONS[self._state]

    def move(self, target: VisionState, detail: str = "") -> Transition | None:
        """Go to ``target``; returns the transition, or None when already there.

        Raises:
            InvalidTransition: the rules do not allow ``target`` from here.
        """
        if target == self._state:
            if detail != self._detail:
                self._detail = detail
            return None
        if target not in _TRANSITIONS[self._state]:
            raise InvalidTransition(f"{self._state.value} -> {target.value} is not allowed")
        self._seq += 1
        t = Transition(self._state, target, detail, self._seq)
        self._state, self._detail = target, detail
        return t

    def allows(self, command: Command) -> bool:
        """Whether ``command`` is accepted in the current state."""
        return self._state in _COMMANDS[command]

    def check(self, command: Command) -> None:
        """Raise unless ``command`` is accepted now.

        Raises:
            InvalidTransition: naming the command and the current state.
        """
        if not self.allows(command):
            raise InvalidTransition(f"{command.value} is not allowed in {self._state.value}")
