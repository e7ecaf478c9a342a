"""The OPC UA methods: who may call them, what they do to the node, what they answer.

Every handler is called by asyncua with the object's NodeId and the input
Variants, and answers a list of output Variants or a Bad ``StatusCode``:

- ``BadUserAccessDenied``: the caller is not a configured user, or an operator
  calling an engineer's method (see :data:`OPERATOR_METHODS`; anonymous Call
  requests are refused before this, by ``security.HmiPermissions``);
- ``BadOutOfRange``: a string input longer than ``max_string_length``;
- ``BadInvalidState``: the node's state does not allow the command now;
- ``BadInvalidArgument`` / ``BadNotFound``: bad input, unknown result or recipe;
- ``BadArgumentsMissing`` / ``BadTooManyArguments``: wrong number of inputs;
- ``BadInternalError``: the node refused for another reason (logged).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from asyncua import ua

from node.audit.record import VerdictText
from node.hmi.interfaces import NodeControl, ResultQuery
from node.hmi.machine_vision import recipe_of, result_data, ua_type
from node.hmi.security import Caller, current_user
from node.hmi.uahelp import StatusCodes, status
from node.state import Command, InvalidTransition, StateMachine

log = structlog.get_logger(__name__)

V = ua.VariantType
Outputs = list[ua.Variant]
_MAX_RESULTS = 1000

OPERATOR_METHODS = frozenset(
    {
        "halt",
        "reset",
        "review_result",
        "get_result_by_id",
        "get_result_list_filtered",
        "get_recipe_list_filtered",
    }
)
"""What an ``operator`` may call: stop the line, clear a fault, review results, and look.
Modes, Start/Stop and recipes are the ``engineer``'s (who may call everything)."""


def _too_long(value: Any, limit: int) -> bool:
    """Whether ``value`` (a string, id structure, LocalizedText or list of those) holds a
    string longer than ``limit``."""
    if isinstance(value, str):
        return len(value) > limit
    if isinstance(value, bytes):
        return len(value) > limit
    if isinstance(value, list | tuple):
        return any(_too_long(v, limit) for v in value)
    if isinstance(value, ua.Variant):
        return _too_long(value.Value, limit)
    if isinstance(value, ua.LocalizedText):
        return _too_long(value.Text, limit)
    for field in ("Id", "Text", "Description"):
        inner = getattr(value, field, None)
        if inner is not None and _too_long(inner, limit):
            return True
    return False


class Refused(Exception):
    """A call the server answers with ``status`` (a ``ua.StatusCodes`` value)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _ok() -> ua.Variant:
    return ua.Variant(0, V.Int32)


def _id_of(value: Any) -> str:
    """The ``Id`` of a 40100 id structure (or a plain string); "" when empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return str(getattr(value, "Id", "") or "")


class HmiMethods:
    """Implements the methods on the node's ``control`` and ``results``."""

    def __init__(
        self,
        control: NodeControl,
        results: ResultQuery,
        machine: StateMachine,
        *,
        max_string_length: int = 1024,
    ) -> None:
        self._max_len = max_string_length
        self._control = control
        self._results = results
        self._machine = machine
        self._jobs = 0
        self.prepared_recipe: str = ""
        """The recipe last prepared over OPC UA (or set by the node)."""

    def use_machine(self, machine: StateMachine) -> None:
        """Check commands against ``machine`` from now on (the server replaced its own)."""
        self._machine = machine

    # -- wrapping -------------------------------------------------------------------------
    def handler(
        self, name: str, fn: Callable[..., Awaitable[Outputs]], n_inputs: int
    ) -> Callable[..., Awaitable[Outputs | ua.StatusCode]]:
        """``fn(caller, *input values)`` as an asyncua method callback named ``name``."""

        async def call(parent: ua.NodeId, *args: ua.Variant) -> Outputs | ua.StatusCode:
            caller = current_user()
            if caller.role is None or (caller.role != "engineer" and name not in OPERATOR_METHODS):
                log.warning("hmi_call_denied", method=name, user=caller.name, role=caller.role)
                return status(StatusCodes.BadUserAccessDenied)
            if any(_too_long(a.Value, self._max_len) for a in args):
                log.warning("hmi_call_refused", method=name, user=caller.name, reason="too long")
                return status(StatusCodes.BadOutOfRange)
            if len(args) != n_inputs:
                return status(
                    StatusCodes.BadArgumentsMissing
                    if len(args) < n_inputs
                    else StatusCodes.BadTooManyArguments
                )
            try:
                out = await fn(caller, *(a.Value for a in args))
            except InvalidTransition as exc:
                log.warning("hmi_call_refused", method=name, user=caller.name, reason=str(exc))
                return status(StatusCodes.BadInvalidState)
            except Refused as exc:
                log.warning("hmi_call_refused", method=name, user=caller.name, reason=str(exc))
                return status(exc.status)
            except Exception as exc:  # noqa: BLE001 - the node refuses by raising; answer Bad
                log.warning(
                    "hmi_call_failed",
                    method=name,
                    user=caller.name,
                    error=f"{type(exc).__name__}: {exc}",
                )
                return status(StatusCodes.BadInternalError)
            log.info("hmi_call", method=name, user=caller.name)
            return out

        call.__name__ = f"hmi_{name}"
        return call

    async def not_implemented(self, parent: ua.NodeId, *args: ua.Variant) -> ua.StatusCode:
        """Mandatory 40100 methods the node does not offer."""
        return status(StatusCodes.BadNotImplemented)

    def handlers(self) -> dict[str, Callable[..., Awaitable[Outputs | ua.StatusCode]]]:
        """Every handler by the name ``machine_vision.METHODS`` and the plain namespace use."""
        table: dict[str, tuple[Callable[..., Awaitable[Outputs]], int]] = {
            "halt": (self.halt, 2),
            "reset": (self.reset, 2),
            "select_mode_automatic": (self.select_mode_automatic, 0),
            "start_continuous": (self.start_continuous, 5),
            "stop": (self.stop, 2),
            "abort": (self.stop, 2),
            "get_result_by_id": (self.get_result_by_id, 2),
            "get_result_list_filtered": (self.get_result_list_filtered, 12),
            "get_recipe_list_filtered": (self.get_recipe_list_filtered, 6),
            "prepare_recipe": (self.prepare_recipe, 2),
            "review_result": (self.review_result, 4),
        }
        return {name: self.handler(name, fn, n) for name, (fn, n) in table.items()}

    # -- state machine ----------------------------------------------------------------------
    async def _command(self, command: Command, action: Callable[[], Awaitable[None]]) -> None:
        self._machine.check(command)
        await action()

    async def halt(self, caller: Caller, cause: int, description: str) -> Outputs:
        """Halt(Cause, CauseDescription) → Error."""
        log.info("hmi_halt_requested", user=caller.name, cause=cause, description=description)
        await self._command(Command.HALT, self._control.halt)
        return [_ok()]

    async def reset(self, caller: Caller, cause: int, description: str) -> Outputs:
        """Reset(Cause, CauseDescription) → Error."""
        await self._command(Command.RESET, self._control.reset)
        return [_ok()]

    async def select_mode_automatic(self, caller: Caller) -> Outputs:
        """SelectModeAutomatic() → Error."""
        await self._command(Command.SELECT_MODE_AUTOMATIC, self._control.select_mode_automatic)
        return [_ok()]

    async def start_continuous(
        self, caller: Caller, meas_id: Any, part_id: Any, recipe: Any, product: Any, params: Any
    ) -> Outputs:
        """StartContinuous(MeasId, PartId, RecipeId, ProductId, Parameters) → JobId, Error.

        A non-empty RecipeId is prepared first.
        """
        self._machine.check(Command.START_CONTINUOUS)
        name = _id_of(recipe)
        if name and name != self.prepared_recipe:
            await self._prepare(name)
        await self._control.start_continuous()
        self._jobs += 1
        job = ua_type("JobIdDataType")(
            Id=f"continuous-{datetime.now(UTC):%Y%m%dT%H%M%S}-{self._jobs}"
        )
        return [ua.Variant(job), _ok()]

    async def stop(self, caller: Caller, cause: int, description: str) -> Outputs:
        """Stop/Abort(Cause, CauseDescription) → Error."""
        await self._command(Command.STOP, self._control.stop)
        return [_ok()]

    # -- recipes ------------------------------------------------------------------------------
    async def _prepare(self, name: str) -> None:
        if name not in self._control.recipes():
            raise Refused(StatusCodes.BadNotFound, f"unknown recipe {name!r}")
        await self._control.prepare_recipe(name)
        self.prepared_recipe = name

    async def get_recipe_list_filtered(
        self,
        caller: Caller,
        external: Any,
        product: Any,
        is_prepared: Any,
        max_n: int,
        start: int,
        timeout_ms: int,
    ) -> Outputs:
        """GetRecipeListFiltered → IsComplete, ResultCount, RecipeHandle, RecipeList, Error."""
        names = self._control.recipes()
        want = _id_of(external)
        if want:
            names = [n for n in names if n == want]
        flag = int(is_prepared or 0) if not hasattr(is_prepared, "value") else is_prepared.value
        if flag in (0, 1):
            names = [n for n in names if (n == self.prepared_recipe) == bool(flag)]
        total = len(names)
        names = names[start or 0 :]
        if max_n:
            names = names[:max_n]
        cls = ua_type("RecipeIdInternalDataType")
        recipes = [cls(Id=n, Description=ua.LocalizedText(n, "en")) for n in names]
        complete = (start or 0) + len(names) >= total
        return [
            ua.Variant(complete, V.Boolean),
            ua.Variant(len(recipes), V.UInt32),
            ua.Variant(0, V.UInt32),
            ua.Variant(recipes),
            _ok(),
        ]

    async def prepare_recipe(self, caller: Caller, external: Any, internal: Any) -> Outputs:
        """PrepareRecipe(ExternalId, InternalIdIn) → InternalIdOut, IsCompleted, Error."""
        name = _id_of(internal) or _id_of(external)
        if not name:
            raise Refused(StatusCodes.BadInvalidArgument, "no recipe id given")
        await self._prepare(name)
        out = ua_type("RecipeIdInternalDataType")(Id=name, Description=ua.LocalizedText(name, "en"))
        return [ua.Variant(out), ua.Variant(True, V.Boolean), _ok()]

    # -- results --------------------------------------------------------------------------------
    async def get_result_by_id(self, caller: Caller, result_id: Any, timeout_ms: int) -> Outputs:
        """GetResultById(ResultId, Timeout) → ResultHandle, Result, Error (1: not found)."""
        rec = self._results.get(_id_of(result_id))
        if rec is None:
            empty = ua_type("ResultDataType")()
            empty.ResultId = ua_type("ResultIdDataType")(Id=_id_of(result_id))
            empty.ResultState = 0
            return [ua.Variant(0, V.UInt32), ua.Variant(empty), ua.Variant(1, V.Int32)]
        return [ua.Variant(0, V.UInt32), ua.Variant(result_data(rec)), _ok()]

    async def get_result_list_filtered(
        self,
        caller: Caller,
        state: int,
        meas_id: Any,
        part_id: Any,
        external_recipe: Any,
        internal_recipe: Any,
        external_config: Any,
        internal_config: Any,
        product: Any,
        job: Any,
        max_n: int,
        start: int,
        timeout_ms: int,
    ) -> Outputs:
        """GetResultListFiltered → IsComplete, ResultCount, ResultHandle, ResultList, Error.

        Filters honoured: ResultState (0: any), PartId, InternalRecipeId, JobId; at most
        1000 results per call (MaxResults 0 means that many).
        """
        pid_text = _id_of(part_id)
        try:
            pid = int(pid_text) if pid_text else None
        except ValueError as exc:
            raise Refused(StatusCodes.BadInvalidArgument, "PartId is not a number") from exc
        limit = min(int(max_n or _MAX_RESULTS), _MAX_RESULTS)
        records = self._results.query(part_id=pid, limit=limit + 1, offset=int(start or 0))
        complete = len(records) <= limit
        records = records[:limit]
        recipe, job_id = _id_of(internal_recipe), _id_of(job)
        if state:
            records = [r for r in records if (4 if r.fail_safe else 1) == state]
        if recipe:
            records = [r for r in records if recipe_of(r) == recipe]
        if job_id:
            records = [r for r in records if r.run_id == job_id]
        results = [result_data(r) for r in records]
        return [
            ua.Variant(complete, V.Boolean),
            ua.Variant(len(results), V.UInt32),
            ua.Variant(0, V.UInt32),
            ua.Variant(results),
            _ok(),
        ]

    # -- review -----------------------------------------------------------------------------------
    async def review_result(
        self, caller: Caller, result_id: str, verdict: str, defect_type: str, comment: str
    ) -> Outputs:
        """ReviewResult(resultId, verdict, defectType, comment) → reviewTime."""
        if verdict not in ("pass", "reject"):
            raise Refused(StatusCodes.BadInvalidArgument, "verdict must be pass or reject")
        verdict_text: VerdictText = "pass" if verdict == "pass" else "reject"
        try:
            review = self._results.review(
                str(result_id or ""),
                verdict_text,
                str(defect_type) if defect_type else None,
                str(comment or ""),
                caller.name or "",
            )
        except KeyError as exc:
            raise Refused(StatusCodes.BadNotFound, f"no result {result_id!r}") from exc
        except ValueError as exc:
            raise Refused(StatusCodes.BadInvalidArgument, str(exc)) from exc
        log.info("hmi_review_stored", result_id=result_id, verdict=verdict, user=caller.name)
        when = datetime.fromtimestamp(review.wall_time_ns / 1e9, UTC)
        return [ua.Variant(when, V.DateTime)]
