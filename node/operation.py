"""The node's operating state (the OPC 40100 VisionStateMachine) and the commands that move it.

The node starts Preoperational, becomes Initialized and Ready once its
resources are open, and — with ``node.auto_start`` — goes straight on to
ContinuousExecution, because a line runs unattended. While the node is not
inspecting (Ready after Stop, Halted) every part that reaches the camera is
a fail-safe reject (``not_inspecting``): the line keeps moving and nothing
passes unjudged. A camera, PLC or model error moves it to Error, which is
shown until an operator resets it; inspection goes on trying meanwhile (each
part it cannot judge is a fail-safe reject anyway).

:class:`Operation` implements ``node.hmi.interfaces.NodeControl``; listeners
(the HMI server, the PLC state output) hear every transition.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import structlog

from node.state import InvalidTransition, StateMachine, VisionState

log = structlog.get_logger(__name__)

Listener = Callable[[VisionState, str], None]
Fault = Literal["camera", "model", "plc", "encoder", "audit"]
"""Which edge put the node in Error (shown as that edge's health)."""
S = VisionState


class Operation:
    """What the node is doing now, and the operator commands that change it."""

    def __init__(self, recipe: str, *, auto_start: bool = True) -> None:
        self.machine = StateMachine()
        self._recipe = recipe
        self._auto_start = auto_start
        self._inspecting = False
        self._fault: Fault | None = None
        self._active: dict[Fault, str] = {}
        self._listeners: list[Listener] = []

    # -- what the node consults --------------------------------------------------------
    @property
    def state(self) -> VisionState:
        """The current state."""
        return self.machine.state

    @property
    def detail(self) -> str:
        """Why the node is in its state (for Error: ``"<fault>: <detail>"``)."""
        return self.machine.detail

    @property
    def inspecting(self) -> bool:
        """True while parts are to be inspected (ContinuousExecution, or Error after it)."""
        return self._inspecting

    @property
    def trusted(self) -> bool:
        """False while a fault is active that means the node cannot guarantee its rejects
        (the PLC heartbeat stops until it clears)."""
        return not self._active

    @property
    def active_faults(self) -> dict[Fault, str]:
        """The faults active now, with why."""
        return dict(self._active)

    @property
    def fault(self) -> Fault | None:
        """The edge whose error holds the node in Error, or None outside Error."""
        return self._fault if self.machine.state is S.ERROR else None

    def listen(self, listener: Listener) -> None:
        """Call ``listener(state, detail)`` now and after every transition."""
        self._listeners.append(listener)
        listener(self.machine.state, self.machine.detail)

    def _go(self, target: VisionState, detail: str = "") -> None:
        if self.machine.move(target, detail) is None:
            return
        log.info("node_state", state=target.value, detail=detail)
        for listener in self._listeners:
            listener(target, detail)

    # -- driven by the node ------------------------------------------------------------
    def started(self) -> None:
        """Resources are open: Initialized, Ready, and inspecting when auto-started."""
        self._go(S.INITIALIZED, "resources open")
        self._go(S.READY, "automatic mode")
        if self._auto_start:
            self._inspecting = True
            self._go(S.CONTINUOUS, "started")

    def error(self, fault: Fault, detail: str) -> None:
        """A camera, PLC or model error: Error until reset (not from Halted).

        The state's detail reads ``"<fault>: <detail>"``.
        """
        if self.machine.state in (S.HALTED, S.ERROR, S.PREOPERATIONAL):
            return
        self._fault = fault
        self._go(S.ERROR, f"{fault}: {detail}")

    def raise_fault(self, fault: Fault, detail: str) -> None:
        """A condition that stops the node guaranteeing its rejects began: Error now, and
        again after a Reset for as long as it lasts (see :meth:`clear_fault`)."""
        if fault not in self._active:
            log.error("fault_raised", fault=fault, detail=detail)
        self._active[fault] = detail
        self.error(fault, detail)

    def clear_fault(self, fault: Fault) -> None:
        """The condition is gone. The node stays in Error until an operator resets it."""
        if self._active.pop(fault, None) is not None:
            log.warning("fault_cleared", fault=fault)

    # -- NodeControl: the operator's commands ------------------------------------------
    async def halt(self) -> None:
        """Stop inspecting at once: every part is a fail-safe reject until Reset and Start."""
        self._inspecting = False
        self._go(S.HALTED, "halted by operator")

    async def reset(self) -> None:
        """Leave Error (back to what the node was doing) or Halted (back to Ready)."""
        state = self.machine.state
        if state is S.ERROR:
            self._go(S.READY, "reset")
            if self._inspecting:
                self._go(S.CONTINUOUS, "reset")
            if self._active:  # the condition is still there: back to Error
                fault, detail = next(iter(self._active.items()))
                self.error(fault, detail)
        elif state is S.HALTED:
            self._go(S.PREOPERATIONAL, "reset")
            self._go(S.INITIALIZED, "reset")
            self._go(S.READY, "reset")
        else:
            raise InvalidTransition(f"Reset is not allowed in {state.value}")

    async def select_mode_automatic(self) -> None:
        """Initialized → Ready (the resources are already open)."""
        state = self.machine.state
        if state not in (S.INITIALIZED, S.READY):
            raise InvalidTransition(f"SelectModeAutomatic is not allowed in {state.value}")
        self._go(S.READY, "automatic mode")

    async def start_continuous(self) -> None:
        """Ready → ContinuousExecution: parts are inspected again."""
        if self.machine.state is not S.READY:
            raise InvalidTransition(f"StartContinuous is not allowed in {self.machine.state.value}")
        self._inspecting = True
        self._go(S.CONTINUOUS, "started by operator")

    async def stop(self) -> None:
        """ContinuousExecution → Ready: parts are fail-safe rejected until started again."""
        if self.machine.state is not S.CONTINUOUS:
            raise InvalidTransition(f"Stop is not allowed in {self.machine.state.value}")
        self._inspecting = False
        self._go(S.READY, "stopped by operator")

    def recipes(self) -> list[str]:
        """The recipe in the config (one per node config today)."""
        return [self._recipe]

    async def prepare_recipe(self, name: str) -> None:
        """Only the configured recipe can be in force. Raises ``KeyError`` for another."""
        if name != self._recipe:
            raise KeyError(f"unknown recipe {name!r}; this node has {self._recipe!r}")
