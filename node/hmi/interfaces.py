"""What the HMI server needs from the node: control of its state, and the audit trail."""

from __future__ import annotations

from typing import Protocol

from node.audit.record import AuditRecord, Review, VerdictText


class NodeControl(Protocol):
    """The node's side of the 40100 methods; each may raise to refuse (→ Bad status).

    The node reports the resulting state with ``HmiServer.set_state``; the server
    does not change the published state on its own.
    """

    async def halt(self) -> None:
        """Stop inspecting and release the line (Halted)."""
        ...

    async def reset(self) -> None:
        """Leave Error or Halted."""
        ...

    async def select_mode_automatic(self) -> None:
        """Open camera, PLC and model for the automatic mode (→ Ready)."""
        ...

    async def start_continuous(self) -> None:
        """Start inspecting parts as they come (→ ContinuousExecution)."""
        ...

    async def stop(self) -> None:
        """Stop inspecting after the parts in flight (→ Ready)."""
        ...

    def recipes(self) -> list[str]:
        """The names of the recipes in the config."""
        ...

    async def prepare_recipe(self, name: str) -> None:
        """Make ``name`` the recipe in force. Raises ``KeyError`` for an unknown name."""
        ...


class ResultQuery(Protocol):
    """Read and review access to the audit store (``node/audit/store.py``)."""

    def get(self, result_id: str) -> AuditRecord | None:
        """One record by its ``result_id``."""
        ...

    def query(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        verdict: VerdictText | None = None,
        defect_type: str | None = None,
        part_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[AuditRecord]:
        """Records matching every given filter, newest first."""
        ...

    def review(
        self,
        result_id: str,
        verdict: VerdictText,
        defect_type: str | None,
        comment: str,
        user: str,
    ) -> Review:
        """Store an operator's review beside the decision.

        Raises:
            KeyError: no such result.
            ValueError: the review is invalid.
        """
        ...
