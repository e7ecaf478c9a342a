"""Fleet commands on the node: a signed package reference (``Model Control/Deploy``) or a
signed promotion (``Model Control/Promote``) in an NCMD, checked and carried out off the
line's path, and answered on the bus.

The edge node's thread only hands the command text over (:meth:`NodeCommands.receive`);
a thread of its own (``fleet-commands``, lowest CPU priority) does the rest:

- **deploy**: the command is opened (``node.north.fleet_command.open_command``: signature
  by a ``north.fleet_keys`` key, this node named, not expired, not replayed); the package
  is copied into the state directory and its digest checked against the reference
  (``node.north.rollout.fetch_package``); it is verified by the node's usual rules and
  loaded as the shadow candidate (``node.wiring.open_shadow``, as ``[inspection.shadow]``
  is at startup), handed to the running node (:meth:`ShadowHost.install_shadow`, which
  closes the one it replaces), and written into the node's config so a restart keeps it;
- **promote**: ``lineside shadow promote``'s promotion (``node.cli.shadow.promote``) of the
  config's candidate, with the command's user, reason and ``min_parts``; the node loads
  it when restarted.

Each command is answered in a DDATA (``Command/*``: its id, ``received`` and then
``accepted``, ``promoted`` or ``refused`` with the reason in one line); every deploy,
promotion and refusal is logged and appended to ``<node.state_dir>/model-history.jsonl``.
While a candidate runs, its figures (``Shadow/*``) go out every ``north.figures_every_s``
when they changed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from node.errors import ModelError, StartupError
from node.north import metrics as M
from node.north import rollout
from node.north.fleet_command import (
    CommandRefused,
    FleetCommand,
    Kind,
    ReplayGuard,
    open_command,
    trusted_keys,
)
from node.north.messages import now_ms
from node.north.sparkplug import Metric, Payload, Value

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from node.config import Config
    from node.shadow import Shadow

log = structlog.get_logger(__name__)

_KINDS: dict[str, Kind] = {M.DEPLOY: "deploy", M.PROMOTE: "promote"}
SEEN_FILE = Path("north/commands-seen.json")
"""Command ids taken, under ``node.state_dir`` (the replay guard)."""


@dataclass(frozen=True, slots=True)
class FleetOps:
    """What carrying out fleet commands takes from the rest of the node, handed in by
    ``lineside run`` (this module imports neither the wiring nor the command line: both
    import the node).

    ``config_path``: the file the node's config came from (None: deploys are not kept
    across a restart, promotions are refused); ``open_candidate``: a config's
    ``[inspection.shadow]`` verified and loaded, not started (``node.wiring.open_shadow``);
    ``promote``: ``node.cli.shadow.promote``.
    """

    config_path: Path | None
    open_candidate: Callable[[Config], Shadow]
    promote: Callable[..., dict[str, Any]]


class ShadowHost(Protocol):
    """The running node, as far as fleet commands touch it."""

    def install_shadow(self, shadow: Shadow) -> bool:
        """Make ``shadow`` (started) the candidate judging beside the line and close the one
        it replaces; False when the node is stopping (the caller closes ``shadow``)."""
        ...

    def current_shadow(self) -> Shadow | None:
        """The candidate judging now, if any."""
        ...


def _claimed(text: str) -> dict[str, Any]:
    """What an unopened command says of itself (its id, for the answer): never trusted."""
    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
        body = json.loads(json.loads(text)["body"])
        return {"id": str(body.get("id", "")), "package_sha256": body.get("package_sha256")}
    return {"id": "", "package_sha256": None}


class NodeCommands:
    """Takes fleet commands for one node; see the module docstring. A context manager:
    entering starts its thread, leaving stops it (a command being carried out finishes)."""

    def __init__(
        self,
        cfg: Config,
        host: ShadowHost,
        *,
        keys: list[Ed25519PublicKey],
        ops: FleetOps,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = f"{cfg.north.group_id}/{cfg.north.edge_node(cfg.node.name)}"
        self._host = host
        self._keys = keys
        self._ops = ops
        self._config_path = ops.config_path
        self._clock_ms = clock_ms or now_ms
        state = cfg.node.state_dir
        self._guard = ReplayGuard.load(state / SEEN_FILE)
        self._packages = state / rollout.PACKAGES
        self._inbox: queue.Queue[tuple[Kind, str] | None] = queue.Queue(maxsize=16)
        self._lock = threading.Lock()
        self._answers: deque[dict[str, Value]] = deque(maxlen=64)
        self._last_answer: dict[str, Value] | None = None
        self._figures: tuple[Any, ...] | None = None
        self._figures_at = 0.0
        self._thread: threading.Thread | None = None
        self.refused = 0
        self.accepted = 0

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> NodeCommands:
        self._thread = threading.Thread(target=self._work, name="fleet-commands", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            with contextlib.suppress(queue.Full):
                self._inbox.put(None, timeout=5.0)
            thread.join(timeout=30.0)

    # -- the edge node's thread ------------------------------------------------------------
    def wants(self, command: Payload) -> bool:
        """Whether ``command`` (an NCMD's payload) carries a fleet command."""
        return any(isinstance(command.values().get(name), str) for name in _KINDS)

    def receive(self, command: Payload) -> None:
        """Queue the fleet command(s) in ``command`` for the worker; never blocks."""
        for name, kind in _KINDS.items():
            text = command.values().get(name)
            if not isinstance(text, str):
                continue
            try:
                self._inbox.put_nowait((kind, text))
            except queue.Full:
                self._refuse(kind, text, "the node is busy with 16 commands: send it again")

    def updates(self, now_ms: int) -> list[list[Metric]]:
        """What to publish now, one DDATA each: answers not yet sent, then the shadow's
        figures when they changed and ``north.figures_every_s`` has passed."""
        with self._lock:
            answers = list(self._answers)
            self._answers.clear()
        out = [M.command_metrics(a, now_ms) for a in answers]
        now = time.monotonic()
        if now - self._figures_at >= self.cfg.north.figures_every_s:
            self._figures_at = now
            figures = self._shadow_figures()
            if figures != self._figures:
                self._figures = figures
                out.append(M.shadow_metrics(figures[0], figures[1], now_ms))
        return out

    def birth_metrics(self, timestamp_ms: int) -> list[Metric]:
        """The DBIRTH's command and shadow metrics: the last answer and the figures now."""
        with self._lock:
            answer = self._last_answer
        self._figures = figures = self._shadow_figures()
        return M.command_metrics(answer, timestamp_ms) + M.shadow_metrics(
            figures[0], figures[1], timestamp_ms
        )

    def _shadow_figures(self) -> tuple[str | None, dict[str, int] | None]:
        shadow = self._host.current_shadow()
        if shadow is None:
            return (None, None)
        snap = shadow.snapshot()
        sha = str(snap.pop("package_sha256", "")) or None
        return (sha, {k: int(v) for k, v in snap.items()})

    # -- the worker -------------------------------------------------------------------------
    def _answer(self, kind: Kind, command_id: str, status: str, reason: str, sha: Any) -> None:
        answer: dict[str, Value] = {
            M.COMMAND_ID: command_id,
            M.COMMAND_KIND: kind,
            M.COMMAND_STATUS: status,
            M.COMMAND_REASON: " ".join(reason.split()),  # one line
            M.COMMAND_SHA256: sha if isinstance(sha, str) else None,
        }
        with self._lock:
            self._answers.append(answer)
            self._last_answer = answer

    def _refuse(self, kind: Kind, text: str, reason: str) -> None:
        claimed = _claimed(text)
        self.refused += 1
        log.warning("fleet_command_refused", command=kind, id=claimed["id"], reason=reason)
        self._answer(kind, claimed["id"], "refused", reason, claimed["package_sha256"])
        self._record(
            {"event": f"fleet_{kind}_refused", "command_id": claimed["id"], "reason": reason}
        )

    def _record(self, entry: dict[str, Any]) -> None:
        try:
            rollout.record(self.cfg.node.state_dir, {"node": self.node, **entry})
        except OSError as exc:
            log.error("model_history_not_written", error=str(exc), **entry)

    def _work(self) -> None:
        with contextlib.suppress(OSError):  # Linux: this thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        while (item := self._inbox.get()) is not None:
            kind, text = item
            try:
                self._carry_out(kind, text)
            except CommandRefused as exc:
                self._refuse(kind, text, str(exc))
            except Exception as exc:  # the worker's supervisor: refuse, log, go on
                log.exception("fleet_command_failed", command=kind)
                self._refuse(kind, text, f"{type(exc).__name__}: {exc}")

    def _carry_out(self, kind: Kind, text: str) -> None:
        try:
            cmd = open_command(
                text, self._keys, node=self.node, now_ms=self._clock_ms(), guard=self._guard
            )
        except OSError as exc:  # the replay record cannot be written: take nothing
            raise CommandRefused(f"{SEEN_FILE}: cannot write: {exc}") from None
        if cmd.command != kind:
            raise CommandRefused(f"body.command: {cmd.command!r} sent as {kind!r}")
        self._answer(kind, cmd.id, "received", "", cmd.package_sha256)
        if kind == "deploy":
            reason = self._deploy(cmd)
            status = "accepted"
        else:
            reason = self._promote(cmd)
            status = "promoted"
        self.accepted += 1
        log.info(f"fleet_{kind}_done", id=cmd.id, user=cmd.user, detail=reason)
        self._answer(kind, cmd.id, status, reason, cmd.package_sha256)

    def _deploy(self, cmd: FleetCommand) -> str:
        assert cmd.package is not None and cmd.package_sha256 is not None
        sha = cmd.package_sha256
        if self.cfg.inspection.backend == "classical":
            raise CommandRefused(
                "inspection.backend: 'classical': a shadow candidate needs a model backend"
            )
        running = self._host.current_shadow()
        if running is not None and running.package.get("sha256") == sha:
            package = Path(running.package.get("path", ""))
            note = "already running as the shadow candidate"
        else:
            local = rollout.fetch_package(Path(cmd.package), sha, self._packages)
            try:
                shadow = self._ops.open_candidate(rollout.with_shadow(self.cfg, local, sha))
            except ModelError as exc:
                raise CommandRefused(str(exc)) from None
            try:
                shadow.__enter__()
            except OSError as exc:
                raise CommandRefused(f"inspection.shadow: {shadow.directory}: {exc}") from None
            if not self._host.install_shadow(shadow):
                shadow.close()
                raise CommandRefused("the node is stopping")
            package, note = local, f"running as the shadow candidate from {local}"
        kept = self._persist(package, sha)
        self._record(
            {
                "event": "fleet_deploy",
                "command_id": cmd.id,
                "user": cmd.user,
                "source": cmd.package,
                "package": str(package),
                "sha256": sha,
                "persisted": kept,
            }
        )
        return f"{note}; {kept}"

    def _persist(self, package: Path, sha: str) -> str:
        """Keep the candidate in the config file; says what became of it."""
        if self._config_path is None:
            return "not kept across a restart: the node was started without a config file"
        try:
            kept = rollout.persist_shadow(self._config_path, package, sha)
        except (OSError, ValueError) as exc:
            log.error("fleet_deploy_not_persisted", config=str(self._config_path), error=str(exc))
            return f"not kept across a restart: {exc}"
        if kept is None:
            return f"kept in {self._config_path} (as it was)"
        return kept.describe()

    def _promote(self, cmd: FleetCommand) -> str:
        from models.package import PackageError, load_package
        from node.config import load_config
        from node.errors import ConfigError

        if self._config_path is None:
            raise CommandRefused("the node was started without a config file: nothing to promote")
        if cmd.package_sha256 is not None:
            try:
                shadow = load_config(self._config_path).inspection.shadow
                sha = shadow.sha256 or (
                    load_package(shadow.package).sha256 if shadow.package else None
                )
            except (ConfigError, PackageError, OSError) as exc:
                raise CommandRefused(f"{self._config_path}: {exc}") from None
            if sha != cmd.package_sha256:
                raise CommandRefused(
                    f"body.package_sha256: the candidate is {(sha or 'none')[:16]}, "
                    f"not {cmd.package_sha256[:16]}..."
                )
        try:
            done = self._ops.promote(
                self._config_path,
                user=cmd.user,
                reason=cmd.reason,
                min_parts=cmd.min_parts,
                force=cmd.force,
                extra={"via": "fleet", "command_id": cmd.id, "node": self.node},
            )
        except (ValueError, ModelError, OSError) as exc:
            raise CommandRefused(str(exc)) from None
        return f"promoted {done['to']['sha256'][:16]} by {cmd.user}: restart the node to load it"


def open_commands(cfg: Config, host: ShadowHost, ops: FleetOps) -> NodeCommands:
    """The node's fleet command taker, not yet started. Raises ``StartupError`` naming
    ``north.fleet_keys[i]`` for a key file that cannot be read."""
    try:
        keys = [key for _, key in trusted_keys(cfg.north.fleet_keys)]
    except ValueError as exc:
        raise StartupError(str(exc)) from exc
    return NodeCommands(cfg, host, keys=keys, ops=ops)
