"""The node's lifecycle: one TaskGroup owns every long-running task.

Resources open in an ``AsyncExitStack`` and close in reverse. The path every
part takes, stage by stage in ``node/line/``:

encoder sample → Tracker (part created, stations from LineGeometry) →
CountScheduler at the camera → Acquisition (trigger, frame) → InspectionQueue
(worker thread) → Judge → verdict → Actuation (node-timed pulse or PLC shift
register) → PartResult to the sinks (stats, audit, HMI) and the PLC.

Every part's verdict is set once (``InFlightPart.decide``): a fail-safe on the
way, the judge, or the decision point — whichever comes first. A reject is
struck and published when the actuation reports it; a pass is published at the
decision point.

A stop request (SIGTERM/SIGINT sets ``stop``) drains: no new parts are
tracked, parts already on their way are inspected and acted on, and after
``node.drain_grace_s`` whatever is left is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from drivers.camera.base import Camera
from drivers.plc.base import EncoderSource, RejectOutput
from models.backend import Backend
from node.audit.store import AuditError, AuditSpillError, AuditStore
from node.config import Config
from node.errors import StartupError
from node.line.acquisition import Acquisition
from node.line.actuation import Actuation, ActuationFactory
from node.line.inspector import Inspection, InspectionQueue, Inspector
from node.line.judge import Judge, Reason, Verdict
from node.line.parts import InFlightPart, PartBook
from node.line.repeat_notices import RepeatNotices
from node.line.results import Action, ResultSink, Stats, percentiles
from node.line.scheduler import CountScheduler
from node.line.tracker import TrackedPart, Tracker, TrackerConfig
from node.operation import Operation
from node.plc import NodePlc
from node.recorder import ModelIdentity, Recorder, model_identity
from node.service.priority import lower_priority
from node.service.sdnotify import SystemdNotifier
from node.service.supervise import supervise
from node.service.watchdog import ProgressWatchdog
from node.shadow import Shadow
from node.signals import PlcSignals
from node.state import VisionState

if TYPE_CHECKING:
    from node.hmi.process import HmiProcess
    from node.north.commands import FleetOps
    from node.north.publisher import NorthPublisher

log = structlog.get_logger(__name__)

_PLC_WATCH_S = 0.02
"""How often the PLC link's state is looked at (a loss is seen within this)."""

Loops = dict[str, Callable[[], Coroutine[Any, Any, None]]]


@dataclass
class Components:
    """The node's edges, not yet opened, and how rejects are struck.

    ``encoder``, ``camera`` and ``reject`` are async context managers.
    ``backend`` is a loader run on the inference worker at startup (loading can be
    slow and must not block the loop). ``actuation`` makes the chosen actuation
    once the reject output is open. ``plc`` is the PLC link when the encoder or
    reject edge is one (it is then also that edge): the node writes its state and
    verdicts to it.
    """

    encoder: AbstractAsyncContextManager[EncoderSource]
    camera: AbstractAsyncContextManager[Camera]
    reject: AbstractAsyncContextManager[RejectOutput]
    backend: Callable[[], Backend]
    actuation: ActuationFactory
    plc: NodePlc | None = None
    shadow: Callable[[], Shadow] | None = None
    """Loads the shadow candidate (``[inspection.shadow]``), when one is configured."""


@dataclass
class RunSummary:
    """What a run did, printed on exit."""

    parts_tracked: int = 0
    parts_decided: int = 0
    rejected: int = 0
    fail_safe: int = 0
    budget_misses: int = 0
    undecided_at_stop: int = 0
    parts_ignored_while_stopping: int = 0
    bad_encoder_samples: int = 0
    frames_dropped: int = 0
    late_frames: int = 0
    reject_fire_failures: int = 0
    task_restarts: int = 0
    tracking_losses: int = 0
    sentences_late: int = 0
    """Model sentences not there when their part's result was published (it went out with
    its facts rendered plainly): written too late, or skipped as no longer wanted."""
    sentence_failures: int = 0
    """Model sentences the decoder failed to write (the verdict stood; the facts were said)."""
    parts_unseen: int = 0
    """Parts whose sensor edge the PLC's latch overwrote before the node read it: never
    tracked, judged or struck by the node (each one put the node in Error)."""
    scheduler_lateness_ms: dict[str, float] = field(default_factory=dict)
    pulse_lateness_ms: dict[str, float] = field(default_factory=dict)
    plc_report_ms: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


def model_status(described: dict[str, Any]) -> dict[str, Any]:
    """A model runtime's ``describe()`` for the live status: each parity report without its
    per-image rows."""
    parity = described.get("parity") or {}
    return {
        **described,
        "parity": {
            step: {k: v for k, v in report.items() if k != "per_image"}
            for step, report in parity.items()
        },
    }


class Node:
    """One inspection node: opens the edges and runs the line's stages on them."""

    def __init__(
        self,
        cfg: Config,
        components: Components,
        sinks: Sequence[ResultSink] = (),
        notifier: SystemdNotifier | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        watchdog_interval_s: float | None = None,
        fleet: FleetOps | None = None,
    ) -> None:
        self.cfg = cfg
        self._fleet = fleet
        """What fleet commands (``lineside fleet deploy|promote``) take; None: with
        ``[north]`` on they are logged and ignored."""
        self.tracker = Tracker(TrackerConfig.from_config(cfg), bits=cfg.line.encoder_bits)
        self.scheduler = CountScheduler(self.tracker)
        self.judge = Judge(cfg.inspection.recipe, cfg.inspection.mm_per_px)
        self.repeats = RepeatNotices(cfg.inspection.recipe.repeats, self.judge.rules)
        self._last_reject: dict[str, Any] | None = None
        self.stats = Stats()
        self.sinks: list[ResultSink] = [self.stats, *sinks]
        self.notifier = notifier or SystemdNotifier({})
        # systemd wants a feed at least every WatchdogSec; feed at half of it (or of the
        # stall limit when systemd does not supervise us) so one late wake-up is harmless.
        feed_s = (watchdog_interval_s or cfg.node.watchdog_stall_s) / 2
        self.watchdog = ProgressWatchdog(
            self.notifier, feed_interval_s=feed_s, stall_after_s=cfg.node.watchdog_stall_s
        )
        # "encoder": samples keep arriving. "inference": frames handed to the model come
        # back; idle while none is waiting. A hung model or a dead encoder link starves
        # the watchdog and the PLC heartbeat even though fail-safe rejects still go out.
        self.watchdog.register("encoder")
        self.watchdog.register(InspectionQueue.STAGE, idle=True)
        self.operation = Operation(cfg.inspection.recipe.name, auto_start=cfg.node.auto_start)
        self.summary = RunSummary()
        self.ready = asyncio.Event()
        self.recorder: Recorder | None = None
        self.hmi: HmiProcess | None = None
        self.north: NorthPublisher | None = None
        self._components = components
        self._on_status = on_status
        self._book = PartBook()
        self._draining = False
        self._tracking_lost = False
        self._edges_refused = 0
        self._describe_model: Callable[[], dict[str, Any]] | None = None
        self._drained = asyncio.Event()
        self._audit: AuditStore | None = None
        self._audit_stopped = False
        self._audit_overflows = 0
        self._model_name = ""
        self._camera: Acquisition | None = None
        self._inspection: InspectionQueue | None = None
        self._actuation: Actuation | None = None
        self._signals: PlcSignals | None = None
        self._shadow: Shadow | None = None
        self._shadow_lock = threading.Lock()
        self._shadow_closed = False

    # -- lifecycle ---------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> RunSummary:
        """Open every resource, run until ``stop`` is set, drain, close; return the summary.

        Raises ``CameraError``/``PlcError``/``ModelError`` when a resource cannot
        be opened; those already open are closed first.
        """
        t0 = time.monotonic()
        cfg, parts = self.cfg, self._components
        async with AsyncExitStack() as stack:
            executor = stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            )
            sentences = stack.enter_context(
                ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="sentence", initializer=lower_priority
                )
            )
            backend = await asyncio.get_running_loop().run_in_executor(executor, parts.backend)
            self._model_name = backend.name
            self._describe_model = getattr(backend, "describe", None)
            if parts.shadow is not None:  # beside the active model, never acting
                shadow = await asyncio.get_running_loop().run_in_executor(executor, parts.shadow)
                try:
                    self._shadow = stack.enter_context(shadow)
                except OSError as exc:  # where it records cannot be written
                    raise StartupError(f"inspection.shadow: {shadow.directory}: {exc}") from exc
            stack.callback(self._close_shadow)  # the candidate running then: maybe a deployed one
            inspector = Inspector(
                backend, cfg.inspection.roi_size_px, cfg.inspection.belt_threshold
            )
            self._inspection = InspectionQueue(
                inspector,
                executor,
                cfg.inspection.batch_size,
                self.watchdog,
                self._inspected,
                sentence_executor=sentences,
                wanted=lambda part_id: self._book.get(part_id) is not None,
            )
            if cfg.audit.enabled:
                self._audit = stack.enter_context(self._open_audit())
            identity = model_identity(backend, cfg)
            self.recorder = Recorder(cfg, identity, store=self._audit, stats=self._published_stats)
            self.sinks.append(self.recorder)
            if cfg.north.enabled:  # follows the store: closed after the recorder's last write
                self._open_north(stack, identity)
            if cfg.hmi.enabled:
                await self._open_hmi(stack)
            # Records are built off the loop, in order; closed first, so every result
            # published reaches the store and the HMI before they close.
            self.recorder.executor = stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="publish")
            )
            encoder = await stack.enter_async_context(parts.encoder)
            camera = await stack.enter_async_context(parts.camera)
            output = await stack.enter_async_context(parts.reject)
            self._camera = acquisition = Acquisition(
                cfg,
                camera,
                self.tracker,
                self._book,
                decide=self._decide,
                inspect=self._inspection.put,
                camera_error=lambda detail: self.operation.error("camera", detail),
                camera_down=lambda detail: self.operation.raise_fault("camera", detail),
                camera_up=lambda: self.operation.clear_fault("camera"),
            )
            stack.enter_context(acquisition)
            actuation = stack.enter_context(parts.actuation(output, self.tracker, self._acted))
            self._actuation = actuation
            signals = PlcSignals(
                cfg,
                self.operation,
                self.watchdog,
                parts.plc or output,
                parts.plc,
                alarm=lambda: "audit" if self._audit and "audit" in self._audit.alarms() else None,
            )
            self._signals = signals
            # Everything opened so far lives as long as the run: out of the collector's
            # sight, a full collection no longer walks the model's and libraries' objects
            # (pauses of milliseconds on the loop, which the trigger tolerance feels).
            gc.collect()
            gc.freeze()
            stack.callback(gc.unfreeze)
            log.info("node_started", name=cfg.node.name, backend=backend.name)
            self.operation.started()
            self.notifier.ready()
            self.ready.set()
            halt = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                loops: Loops = {
                    "encoder": lambda: self._encoder_loop(encoder),
                    "scheduler": lambda: self.scheduler.run(halt),
                    "trigger": self._camera.trigger_loop,
                    "frames": self._camera.frame_loop,
                    "inspect": self._inspection.run,
                    "sentences": self._inspection.sentences,
                    "watchdog": lambda: self.watchdog.run(halt),
                    "status": lambda: self._status_loop(halt),
                    **signals.tasks(halt),
                    **actuation.tasks(),
                }
                if parts.plc is not None:
                    link = parts.plc
                    loops["plc-watch"] = lambda: self._plc_watch(link, halt)
                tasks = [
                    tg.create_task(supervise(name, loop_fn, halt, self._restarted), name=name)
                    for name, loop_fn in loops.items()
                ]
                await stop.wait()
                await self._drain()
                halt.set()
                for t in tasks:
                    t.cancel()
            self.summary.frames_dropped = camera.dropped
            await signals.not_ready()
        self._summarise(time.monotonic() - t0)
        log.info("node_stopped", **{k: v for k, v in vars(self.summary).items() if k != "stats"})
        return self.summary

    def _summarise(self, duration_s: float) -> None:
        s = self.summary
        s.duration_s = duration_s
        s.bad_encoder_samples = self.tracker.rejected_samples
        if self._camera is not None:
            s.late_frames = self._camera.late_frames
        if self._inspection is not None:
            s.sentences_late += self._inspection.sentences_skipped
        late = self.scheduler.lateness
        s.scheduler_lateness_ms = {
            "p50": late.p50_ns / 1e6,
            "p99": late.p99_ns / 1e6,
            "max": late.max_ns / 1e6,
        }
        if self._actuation is not None:
            acted = self._actuation.stats
            s.pulse_lateness_ms = percentiles(acted.pulse_late_ms)
            s.plc_report_ms = percentiles(acted.report_ms)
        s.stats = self.stats.snapshot(fresh=True)

    def _restarted(self) -> None:
        self.summary.task_restarts += 1

    async def _drain(self) -> None:
        self._draining = True
        self.notifier.stopping()
        log.info("node_draining", in_flight=len(self._book))
        if self._book:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.node.drain_grace_s):
                    await self._drained.wait()
        self.summary.undecided_at_stop = len(self._book)
        if self._book:
            log.warning("parts_undecided_at_stop", part_ids=self._book.ids())

    def _open_audit(self) -> AuditStore:
        """The audit store (``[audit]``); a folder or database it cannot use is a
        ``StartupError`` naming ``audit.directory`` (or ``audit.spill_directory``)."""
        settings, spill = self.cfg.audit, self.cfg.audit.spill_directory
        try:
            store = AuditStore(
                settings,
                self.cfg.audit_directory,
                spill_directory=None if spill is None else self.cfg.node.state_dir / spill,
            )
        except AuditError as exc:
            key = "spill_directory" if isinstance(exc, AuditSpillError) else "directory"
            raise StartupError(f"audit.{key}: {exc}") from exc
        loop = asyncio.get_running_loop()

        def changed() -> None:  # on the writer thread, or on the loop from record()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                loop.call_soon_threadsafe(self._audit_changed)

        store.listen(changed)
        return store

    def _audit_changed(self) -> None:
        """The store began or stopped refusing writes, or a record found no room.

        With ``audit.on_failure = "stop"`` a record with no room is the ``audit`` fault:
        Error, PLC Ready dropped and heartbeat stopped, and every part without a verdict
        (now or until the store writes again) is a fail-safe reject. With ``"continue"``
        parts keep their verdicts and the alarm stays raised; either way each part not
        recorded is counted (``status()["audit"]["unrecorded_parts"]``).
        """
        store = self._audit
        if store is None:
            return
        if self._signals is not None:
            self._signals.alarm_changed()
        overflowed = store.overflows != self._audit_overflows
        self._audit_overflows = store.overflows
        if overflowed and self.cfg.audit.on_failure == "stop" and not self._audit_stopped:
            self._audit_stopped = True
            why = store.alarms().get("audit", f"{store.unrecorded} parts unrecorded")
            self.operation.raise_fault("audit", why)
            for st in self._book:
                if st.verdict is None:
                    self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_AUDIT))
        if self._audit_stopped and not (store.overflowing or store.failing):
            self._audit_stopped = False
            self.operation.clear_fault("audit")

    async def _open_hmi(self, stack: AsyncExitStack) -> None:
        """Serve results, state and methods to HMI panels (``[hmi]``), from a process of its
        own (``node.hmi.process``); every published part reaches it through the recorder."""
        from node.hmi.process import HmiProcess

        assert self._audit is not None and self.recorder is not None  # the config requires audit
        try:
            self.hmi = hmi = await stack.enter_async_context(
                HmiProcess.for_node(self.cfg, self.operation, self._audit)
            )
        except OSError as exc:  # e.g. the port is taken: say which setting to look at
            raise StartupError(f"hmi.endpoint {self.cfg.hmi.endpoint}: {exc}") from exc
        self.operation.listen(hmi.set_state)
        settings = self.cfg.hmi
        self.recorder.add_sink(hmi, settings.thumbnail_px if settings.publish_thumbnails else 0)

    def _open_north(self, stack: AsyncExitStack, identity: ModelIdentity) -> None:
        """Start the Sparkplug B edge node on its thread, following the audit store."""
        from node.north.commands import open_commands
        from node.north.factory import open_north

        self.north = north = stack.enter_context(open_north(self.cfg, identity))
        self.operation.listen(north.set_state)
        if self._fleet is not None:
            # fleet commands (deploy, promote) are carried out on a thread of their own;
            # stopped before the edge node, which hands them over
            commands = open_commands(self.cfg, self, self._fleet)
            north.commands = stack.enter_context(commands)

    def install_shadow(self, shadow: Shadow) -> bool:
        """Make ``shadow`` (started) the candidate judging beside the line, from any thread,
        and close the one it replaces (on the caller's thread, never the line's). False when
        the node is stopping: the caller closes ``shadow``."""
        with self._shadow_lock:
            if self._shadow_closed:
                return False
            old, self._shadow = self._shadow, shadow
        if old is not None:
            old.close()
        return True

    def current_shadow(self) -> Shadow | None:
        """The candidate judging beside the line now, if any."""
        return self._shadow

    def _close_shadow(self) -> None:
        with self._shadow_lock:
            self._shadow_closed = True
            shadow, self._shadow = self._shadow, None
        if shadow is not None:
            shadow.close()

    # -- a part's path ----------------------------------------------------------
    async def _encoder_loop(self, encoder: EncoderSource) -> None:
        assert self._actuation is not None
        async for sample in encoder.samples():
            new_parts = self.tracker.update(sample)
            self.scheduler.notify_update()
            refused = self.tracker.edges_refused
            if refused > self._edges_refused:
                n, self._edges_refused = refused - self._edges_refused, refused
                self._parts_unseen(n, "a sensor edge at a count the belt cannot have reached")
            self._actuation.belt_moved()
            if self._camera is not None:
                self._camera.belt_moved()
            if self.tracker.last_t_ns == sample.t_ns:  # accepted: the belt is followed
                self.watchdog.beat("encoder")
                if self._tracking_lost:
                    self._tracking_regained()
            elif self.tracker.lost and not self._tracking_lost:
                self._lose_tracking()
            for part in new_parts:
                if self._draining:
                    self.summary.parts_ignored_while_stopping += 1
                    continue
                self._track(part)

    def _lose_tracking(self) -> None:
        """Every sample refused for ``line.tracking_loss_ms``: no part can be placed any more.

        A fault: Error, PLC Ready dropped and heartbeat stopped (the PLC stops or diverts
        the line), and every part in flight without a verdict — and every part the tracker
        still makes meanwhile — is a fail-safe reject, struck as well as it can be (dead
        reckoning, or the PLC's own counter) and recorded either way.
        """
        self._tracking_lost = True
        self.summary.tracking_losses += 1
        cpm = self.cfg.line.counts_per_mm
        speed = self.tracker.refused_speed_cps
        limit = self.cfg.line.max_speed_mm_s
        if speed is not None and speed / cpm > limit:
            why = f"belt at {speed / cpm:.0f} mm/s, over line.max_speed_mm_s = {limit:g}"
        else:
            why = f"encoder counts implausible ({self.tracker.last_rejection_reason})"
        self.operation.raise_fault("encoder", f"tracking lost: {why}")
        for st in self._book:
            if st.verdict is None:
                self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_TRACKING, why))

    async def _plc_watch(self, plc: NodePlc, halt: asyncio.Event) -> None:
        """The PLC link down is a fault: the node can no longer read the belt or fire
        through the PLC, so it must not look healthy (the PLC's own watch of the heartbeat
        takes over the parts). The fault clears when the link is up again; Error stays
        until Reset."""
        down = False
        unseen = plc.link.counters.edges_lost
        while not halt.is_set():
            state = plc.link.link_state
            if state == "down" and not down:
                down = True
                self.operation.raise_fault("plc", f"PLC link down: {plc.link.counters.last_error}")
            elif state == "up" and down:
                down = False
                self.operation.clear_fault("plc")
            lost = plc.link.counters.edges_lost
            if lost > unseen:
                self._parts_unseen(lost - unseen, "PLC edge latch overwritten or restarted")
                unseen = lost
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), _PLC_WATCH_S)

    def _parts_unseen(self, n: int, cause: str) -> None:
        """``n`` parts passed the sensor that the node never tracked and cannot strike:
        their edges were overwritten in the PLC's latch before the node read them (a poll
        stalled, or a link outage longer than the latch holds), latched by a PLC that
        restarted, or came at a count the belt cannot have reached. Not a silent pass:
        Error until an operator resets (the PLC stops or diverts the line, so the parts can
        be checked), the count kept in the summary and logged with its ``cause``."""
        self.summary.parts_unseen += n
        why = f"{n} part(s) passed the sensor unseen ({cause})"
        log.error("parts_unseen", parts=n, total=self.summary.parts_unseen, cause=cause)
        self.operation.error("encoder", why)

    def _tracking_regained(self) -> None:
        self._tracking_lost = False
        self.operation.clear_fault("encoder")
        log.warning("tracking_regained", position=self.tracker.position)

    def _track(self, part: TrackedPart) -> None:
        st = self._book.add(part)
        self.summary.parts_tracked += 1
        if self._tracking_lost:  # placed from a count the node no longer trusts
            self._decide(
                st, Judge.fail_safe(part.part_id, Reason.FAILSAFE_TRACKING, "made while lost")
            )
        assert self._camera is not None
        self.scheduler.schedule(
            self._camera.call_count(part.trigger_count),
            lambda: self._at_camera(st),
            label="trigger",
        )
        self.scheduler.schedule(part.decide_count, lambda: self._at_decision(st), label="decide")

    def _at_camera(self, st: InFlightPart) -> None:
        assert self._camera is not None
        if st.verdict is not None:  # already a fail-safe reject: no frame can change that
            return
        if self._audit_stopped:  # its record could not be kept: it must not pass
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_AUDIT))
            return
        if not self.operation.inspecting:
            state = self.operation.state.value
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_NOT_INSPECTING, state))
            return
        self._camera.trigger(st)

    def _inspected(self, ins: Inspection) -> None:
        if ins.sentence:
            self._explained(ins)
            return
        st = self._book.undecided(ins.part_id)
        if st is None:
            log.warning("verdict_late", part_id=ins.part_id)
            return
        st.image = ins.image
        if ins.findings is not None:
            verdict = self.judge.judge(ins.part_id, ins.findings)
            if verdict.reason is Reason.FAILSAFE_MODEL:  # findings the judge could not trust
                self.operation.error("model", verdict.detail)
        elif ins.no_part:
            verdict = Judge.fail_safe(ins.part_id, Reason.FAILSAFE_NO_PART, ins.error)
        else:
            verdict = Judge.fail_safe(ins.part_id, Reason.FAILSAFE_MODEL, ins.error)
            self.operation.error("model", ins.error)
        self._decide(st, verdict)
        shadow = self._shadow
        if shadow is not None and not verdict.fail_safe and ins.image is not None:
            shadow.offer(ins.image, verdict)  # after the verdict: the line never waits

    def _explained(self, ins: Inspection) -> None:
        """The model's sentence for a judged part: its verdict takes the words when the
        result is not yet published; a late or failed one is counted and logged."""
        st = self._book.get(ins.part_id)
        if ins.findings is None:
            # The verdict stands (it came from a checked detection), but a decoder that
            # fails is a model fault: shown as Error like any other, never a healthy node.
            self.summary.sentence_failures += 1
            log.error("sentence_failed", part_id=ins.part_id, error=ins.error)
            self.operation.error("model", f"sentence: {ins.error}")
            return
        if st is None or st.verdict is None:
            self.summary.sentences_late += 1
            log.info("sentence_late", part_id=ins.part_id)
            return
        if not st.verdict.fail_safe:
            st.explain(self.judge.rephrase(st.verdict, ins.findings))

    def _decide(self, st: InFlightPart, verdict: Verdict) -> None:
        """The one place a part gets its verdict; a reject is handed to the actuation."""
        assert self._actuation is not None
        if not st.decide(verdict):
            return
        if self._camera is not None:  # decided before its trigger went out: none goes out
            self._camera.forget(st)
        if verdict.fail_safe:
            log.warning(
                "part_fail_safe",
                part_id=verdict.part_id,
                reason=verdict.reason.value,
                detail=verdict.detail,
            )
        if verdict.reject:
            self._actuation.strike(st)

    def _at_decision(self, st: InFlightPart) -> None:
        """The verdict is due: a part without one is rejected; a pass is published.

        Rejects were handed to the actuation when their verdict came; they are
        published when it reports back.
        """
        st.budget_miss = st.verdict is None
        if st.verdict is None:
            self._decide(st, Judge.fail_safe(st.part_id, Reason.FAILSAFE_DEADLINE))
        assert st.verdict is not None
        if not st.verdict.reject:
            self._acted(st, "passed")

    def _acted(self, st: InFlightPart, action: Action) -> None:
        """Publish ``st``'s result: its strike went out (or failed), or it passed."""
        assert st.verdict is not None and self._signals is not None
        self._book.remove(st.part_id)
        raw = self.tracker.raw_count(st.part.origin_count)
        result = st.result(action, time.monotonic_ns(), raw)
        verdict = st.verdict
        notices = self.repeats.observe(verdict)
        if notices:
            result = dataclasses.replace(result, repeats=notices)
        if verdict.reject:
            self._last_reject = {
                "part_id": verdict.part_id,
                "rule": verdict.rule or verdict.reason.value,
                "text": verdict.explanation,
            }
        self.summary.parts_decided += 1
        self.summary.rejected += action == "rejected"
        self.summary.reject_fire_failures += action == "not_fired"
        if action == "not_fired":
            # A reject that did not go out: Error, so the PLC (Ready dropped, Error raised)
            # strikes what is still in flight itself and the operator sees it.
            self.operation.error("plc", f"the reject of part {st.part_id} did not go out")
        self.summary.fail_safe += verdict.fail_safe
        self.summary.budget_misses += st.budget_miss
        if verdict.reject:
            log.info(
                "part_rejected",
                part_id=verdict.part_id,
                reason=verdict.reason.value,
                explanation=verdict.explanation,
                latency_ms=result.latency_ms,
                action=action,
            )
        for sink in self.sinks:
            sink.publish(result)
        self._signals.verdict(verdict)
        if self._draining and not self._book:
            self._drained.set()

    # -- status ------------------------------------------------------------------
    def _published_stats(self) -> dict[str, Any]:
        """The running statistics published beside each result (HMI), with the shadow
        candidate's figures when one runs."""
        snap = self.stats.snapshot()
        if self._shadow is not None:
            snap["shadow"] = self._shadow.snapshot()
        return snap

    def status(self) -> dict[str, Any]:
        """The live status: stats plus what is in flight and the pipeline's health."""
        snap = self.stats.snapshot(fresh=True)
        snap["in_flight"] = len(self._book)
        snap["belt_mm_s"] = round(self.tracker.speed_cps / self.cfg.line.counts_per_mm, 1)
        snap["alarms"] = alarms = {} if self._audit is None else self._audit.alarms()
        # healthy: the pipeline moves, no fault is active and none waits for a Reset, and
        # every part is being recorded
        snap["healthy"] = (
            self.watchdog.healthy()
            and self.operation.trusted
            and self.operation.state is not VisionState.ERROR
            and "audit" not in alarms
        )
        snap["faults"] = dict(self.operation.active_faults)
        snap["draining"] = self._draining
        snap["state"] = self.operation.state.value
        snap["state_detail"] = self.operation.detail
        snap["parts_unseen"] = self.summary.parts_unseen  # also when Error has an older cause
        snap["repeats"] = self.repeats.active()
        if self.recorder is not None:
            snap["records_waiting"] = self.recorder.backlog
        if self._describe_model is not None:  # what judges: runtime, precision, fallbacks
            snap["model"] = model_status(self._describe_model())
        snap["last_reject"] = self._last_reject
        if self._components.plc is not None:
            snap["plc"] = self._components.plc.snapshot()
        if self.hmi is not None:
            snap["hmi"] = self.hmi.snapshot()
        if self.north is not None:
            snap["north"] = self.north.snapshot()
            alarm = self.north.alarm()
            if alarm is not None:
                alarms["north"] = alarm
        if self._shadow is not None:
            snap["shadow"] = self._shadow.snapshot()
        if self._audit is not None:
            snap["audit"] = {
                "committed": self._audit.committed,
                "pending": self._audit.pending,
                "dropped": self._audit.dropped,
                "unrecorded_parts": self._audit.unrecorded,
                "write_failures": self._audit.write_failures,
                "spilled": self._audit.spilled,
            }
        return snap

    async def _status_loop(self, halt: asyncio.Event) -> None:
        """Publish the live status to systemd, the HMI and the terminal every interval."""
        while not halt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self.cfg.node.status_interval_s)
            snap = self.status()
            lat = snap["latency_ms"]
            self.notifier.status(
                f"{snap['inspected']} inspected, {snap['rejected']} rejected, "
                f"{snap['fail_safe']} fail-safe, p99 {lat['p99']} ms"
            )
            if self.hmi is not None:
                self.hmi.show_health(self.operation, snap, self._model_name)
            if self._on_status is not None:
                self._on_status(snap)

    @property
    def in_flight(self) -> int:
        """Parts tracked and not yet acted on."""
        return len(self._book)
