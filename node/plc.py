"""The PLC link as the node sees it: one driver behind the encoder edge and the reject edge.

``encoder.driver = "plc"`` and ``reject.driver = "plc"`` share one
:class:`NodePlc`; it opens the driver when the first edge enters it and closes
it when the last one leaves. Driver errors become ``node.errors.PlcError``
where the node awaits them; the pulse (``fire``, on the timing thread) lets
them through to the pulse timer, which reports them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import structlog

from drivers.plc.base import EncoderSample, RejectCommand
from drivers.plc.errors import PlcDriverError
from drivers.plc.iomap import next_result_counter
from drivers.plc.settings import ModbusSettings, OpcUaSettings, RejectMode
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
from node.judge import Verdict

log = structlog.get_logger(__name__)

if TYPE_CHECKING:  # the drivers are imported lazily: only the chosen transport loads
    from drivers.plc.modbus import ModbusPlc
    from drivers.plc.opcua import OpcUaPlc


def open_driver(
    settings: ModbusSettings | OpcUaSettings, encoder_bits: Literal[16, 32]
) -> ModbusPlc | OpcUaPlc:
    """The driver for ``settings`` (only that transport's library is imported)."""
    if isinstance(settings, ModbusSettings):
        from drivers.plc.modbus import ModbusPlc

        return ModbusPlc(settings, encoder_bits=encoder_bits)
    from drivers.plc.opcua import OpcUaPlc

    return OpcUaPlc(settings, encoder_bits=encoder_bits)


class NodePlc:
    """One PLC driver shared by the node's edges; an async context manager, re-entrant.

    ``reject_mode`` says how rejects reach the actuator: ``node_timed`` (the
    node's pulse timer calls ``fire``) or ``plc_tracked`` (``report`` hands the
    verdict and origin count to the PLC's shift register).
    """

    def __init__(self, driver: ModbusPlc | OpcUaPlc, reject_mode: RejectMode) -> None:
        self.driver = driver
        self.reject_mode = reject_mode
        self._users = 0
        self._result_counter = 0

    @classmethod
    def from_config(cls, cfg: Config) -> NodePlc:
        """The link ``cfg.plc`` describes. Raises ``PlcError`` when there is no ``[plc]``."""
        if cfg.plc is None:
            raise PlcError("plc: no [plc] section in the config")
        driver = open_driver(cfg.plc.settings, cfg.line.encoder_bits)
        return cls(driver, cfg.plc.reject_mode)

    async def __aenter__(self) -> NodePlc:
        if self._users == 0:
            try:
                await self.driver.__aenter__()
            except PlcDriverError as exc:
                raise PlcError(f"plc: {exc}") from exc
        self._users += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._users -= 1
        if self._users == 0:
            await self.driver.__aexit__(et, e, tb)

    # -- encoder edge --------------------------------------------------------------
    def samples(self) -> AsyncIterator[EncoderSample]:
        """Encoder samples from the PLC (the driver reconnects on its own)."""
        return self.driver.samples()

    # -- reject edge ---------------------------------------------------------------
    @property
    def fire_lead_ns(self) -> int:
        """How long before the fire point ``fire`` must be called (transport + PLC scan)."""
        return self.driver.fire_lead_ns

    def fire(self, command: RejectCommand) -> None:
        """Pulse the reject output now (thread-safe; driver errors go to the pulse timer)."""
        self.driver.fire(command)

    async def heartbeat(self, alive: bool) -> None:
        """Write the node heartbeat. Raises ``PlcError``."""
        try:
            await self.driver.heartbeat(alive)
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
            await self.driver.report(result)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def set_node_state(self, *, ready: bool, error: bool, error_code: int = 0) -> None:
        """Write node ready/error. Raises ``PlcError``."""
        try:
            await self.driver.set_node_state(ready=ready, error=error, error_code=error_code)
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    async def publish_verdict(self, verdict: Verdict) -> None:
        """Write the last verdict, its defect code and the result counter. Raises ``PlcError``."""
        if verdict.fail_safe:
            code = VERDICT_FAILSAFE_REJECT
        else:
            code = VERDICT_REJECT if verdict.reject else VERDICT_PASS
        self._result_counter = next_result_counter(self._result_counter)
        try:
            await self.driver.publish_verdict(
                code, defect_code(verdict.defect_type), self._result_counter
            )
        except PlcDriverError as exc:
            raise PlcError(str(exc)) from exc

    def snapshot(self) -> dict[str, Any]:
        """Link state and counters, for the node's status."""
        snap = self.driver.counters.snapshot()
        snap["reject_mode"] = self.reject_mode
        return snap
