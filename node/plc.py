"""The PLC link as the node sees it: one link behind the encoder edge and the reject edge.

``encoder.driver = "plc"`` and ``reject.driver = "plc"`` share one
:class:`NodePlc`: the node enters it once per edge, and it opens the
:class:`drivers.plc.link.PlcLink` (entered once) when the first edge enters
and closes it when the last one leaves — this is the only place the edges are
counted. Link errors become ``node.errors.PlcError`` where the node awaits
them; the pulse (``fire``, on the timing thread) lets them through to the
pulse timer, which reports them. Verdicts become the PLC's codes here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcDriverError
from drivers.plc.link import PlcLink, open_link
from drivers.plc.settings import RejectMode
from drivers.plc.tracked import (
    VERDICT_FAILSAFE_REJECT,
    VERDICT_PASS,
    VERDICT_REJECT,
    PlcResult,
    defect_code,
    reason_code,
)
from node.config import Config
from node.errors import PlcError
from node.line.judge import Verdict


class NodePlc:
    """One PLC link shared by the node's edges; an async context manager, re-entrant.

    ``reject_mode`` says how rejects reach the actuator: ``node_timed`` (the
    node's pulse timer calls ``fire``) or ``plc_tracked`` (``report`` hands the
    verdict and origin count to the PLC's shift register).
    """

    def __init__(self, link: PlcLink, reject_mode: RejectMode) -> None:
        self.link = link
        self.reject_mode = reject_mode
        self._users = 0

    @classmethod
    def from_config(cls, cfg: Config) -> NodePlc:
        """The link ``cfg.plc`` describes. Raises ``PlcError`` when there is no ``[plc]``."""
        if cfg.plc is None:
            raise PlcError("plc: no [plc] section in the config")
        link = open_link(cfg.plc.settings, encoder_bits=cfg.line.encoder_bits)
        return cls(link, cfg.plc.reject_mode)

    async def __aenter__(self) -> NodePlc:
        """Open the link for the first edge. Raises ``PlcError`` when it cannot be opened."""
        if self._users == 0:
            try:
                await self.link.__aenter__()
            except PlcDriverError as exc:
                raise PlcError(f"plc: {exc}") from exc
        self._users += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Close the link when the last edge leaves."""
        self._users -= 1
        if self._users == 0:
            await self.link.__aexit__(et, e, tb)

    # -- encoder edge --------------------------------------------------------------
    def samples(self) -> AsyncIterator[EncoderSample]:
        """Encoder samples from the PLC (the link reconnects on its own)."""
        return self.link.samples()

    # -- reject edge ---------------------------------------------------------------
    @property
    def fire_lead_ns(self) -> int:
        """How long before the fire point ``fire`` must be called (transport + PLC scan)."""
        return self.link.fire_lead_ns

    def fire(self, command: RejectCommand) -> None:
        """Pulse the reject output now (thread-safe; link errors go to the pulse timer)."""
        self.link.fire(command)

    async def heartbeat(self, alive: bool) -> None:
        """Write the node heartbeat. Raises ``PlcError``."""
        try:
            await self.link.heartbeat(alive)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def report(self, part_id: int, origin_raw_count: int, verdict: Verdict) -> None:
        """PLC-tracked: hand one reject to the PLC (``origin_raw_count`` in its counter's
        terms) and wait for its Ack. Raises ``PlcError``."""
        result = PlcResult(
            part_id=part_id,
            reject=verdict.reject,
            origin_raw_count=origin_raw_count,
            reason_code=reason_code(verdict.reason.value),
            defect_code=defect_code(verdict.defect_type),
        )
        try:
            await self.link.report(result)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error. Raises ``PlcError``."""
        try:
            await self.link.set_node_state(ready=ready, error=error, error_code=error_code)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def publish_verdict(self, verdict: Verdict) -> None:
        """Write the last verdict, its defect code and the result counter. Raises ``PlcError``."""
        if verdict.fail_safe:
            code = VERDICT_FAILSAFE_REJECT
        else:
            code = VERDICT_REJECT if verdict.reject else VERDICT_PASS
        try:
            await self.link.publish_verdict(code, defect_code(verdict.defect_type))
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    def snapshot(self) -> dict[str, Any]:
        """Link state and counters, for the node's status."""
        snap = self.link.counters.snapshot()
        snap["reject_mode"] = self.reject_mode
        return snap
