"""The node's lifecycle: one TaskGroup owns every long-running task.

Resources open in an ``AsyncExitStack`` and close in reverse. The path every
part takes (DESIGN.md):

encoder sample → Tracker (part created) → CountScheduler at the camera →
Camera.trigger → Frame → Inspector (worker thread) → Judge → Verdict →
CountScheduler at the fire point → RejectOutput.fire → ResultSinks.

A stop request (SIGTERM/SIGINT sets ``stop``) drains: no new parts are
tracked, parts already on their way are inspected and acted on, and after
``node.drain_grace_s`` whatever is left is cancelled.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from drivers.camera.base import Camera, Frame, FrameStatus
from drivers.errors import DriverError
from drivers.plc.base import EncoderSource, RejectCommand, RejectOutput
from models.backend import Backend
from node.audit.store import AuditStore
from node.config import Config
from node.errors import CameraError, LinesideError, PlcError
from node.line.inspector import Inspection, Inspector
from node.line.judge import Judge, Reason, Verdict
from node.line.pulse import PulseTimer, may_have_missed
from node.line.results import Action, PartResult, ResultSink, Stats, percentiles
from node.line.scheduler import CountScheduler
from node.line.tracker import TrackedPart, Tracker, TrackerConfig
from node.operation import Operation
from node.plc import NodePlc
from node.recorder import Recorder, model_identity
from node.service.sdnotify import SystemdNotifier
from node.service.watchdog import ProgressWatchdog
from node.state import VisionState

if TYPE_CHECKING:
    from node.hmi.thread import HmiThread

log = structlog.get_logger(__name__)


@dataclass
class Components:
    """The node's edges, not yet opened: each is an async context manager.

    ``backend`` is a loader run on the inference worker at startup (loading
    can be slow and must not block the loop). ``plc`` is the PLC link when
    the encoder or reject edge is one (it is then also that edge): the node
    writes its state and verdicts to it and, in PLC-tracked mode, reports
    rejects to it instead of pulsing.
    """

    encoder: AbstractAsyncContextManager[EncoderSource]
    camera: AbstractAsyncContextManager[Camera]
    reject: AbstractAsyncContextManager[RejectOutput]
    backend: Callable[[], Backend]
    plc: NodePlc | None = None


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
    scheduler_lateness_ms: dict[str, float] = field(default_factory=dict)
    pulse_lateness_ms: dict[str, float] = field(default_factory=dict)
    plc_report_ms: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Part:
    part: TrackedPart
    trigger_t_ns: int | None = None
    deadline_t_ns: int | None = None
    frame_seen: bool = False
    verdict: Verdict | None = None
    verdict_t_ns: int | None = None
    budget_miss: bool = False
    image: npt.NDArray[np.uint8] | None = None


class Node:
    """One inspection node: wires the edges to tracker, inspector and judge."""

    def __init__(
        self,
        cfg: Config,
        components: Components,
        sinks: Sequence[ResultSink] = (),
        notifier: SystemdNotifier | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        watchdog_interval_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.tracker = Tracker(TrackerConfig.from_config(cfg), bits=cfg.line.encoder_bits)
        self.scheduler = CountScheduler(self.tracker)
        self.judge = Judge(cfg.inspection.recipe)
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
        self.watchdog.register("inference", idle=True)
        self._inferring = 0
        self.summary = RunSummary()
        self._on_status = on_status
        self._pulse_late_ns: collections.deque[int] = collections.deque(maxlen=4096)
        self.ready = asyncio.Event()
        self._components = components
        self._parts: dict[int, _Part] = {}
        self._draining = False
        self._drained = asyncio.Event()
        self._triggers: asyncio.Queue[_Part] = asyncio.Queue()
        self._inspect_q: asyncio.Queue[Frame] = asyncio.Queue()
        self._trigger_tolerance_counts = cfg.camera.trigger_tolerance_mm * cfg.line.counts_per_mm
        self._pulses: dict[int, tuple[RejectCommand, _Part]] = {}
        self._pulse_timer: PulseTimer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._camera: Camera | None = None
        self._output: RejectOutput | None = None
        self._inspector: Inspector | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._plc = components.plc
        # PLC-tracked: a reject verdict is handed to the PLC's shift register at once and
        # published when the PLC acknowledged it; no pulse is armed.
        self._tracked = (
            self._plc is not None
            and cfg.reject.driver == "plc"
            and self._plc.reject_mode == "plc_tracked"
        )
        self._reports: asyncio.Queue[_Part] = asyncio.Queue()
        self._report_ms: collections.deque[float] = collections.deque(maxlen=4096)
        self._last_verdict: Verdict | None = None
        self._verdict_changed = asyncio.Event()
        self._audit: AuditStore | None = None
        self.hmi: HmiThread | None = None
        self._model_name = ""
        self.operation = Operation(cfg.inspection.recipe.name, auto_start=cfg.node.auto_start)
        self._plc_state_changed = asyncio.Event()
        self.operation.listen(lambda state, detail: self._plc_state_changed.set())
        self.recorder: Recorder | None = None

    # -- lifecycle ---------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> RunSummary:
        """Open every resource, run until ``stop`` is set, drain, close; return the summary.

        Raises ``CameraError``/``PlcError``/``ModelError`` when a resource cannot
        be opened; those already open are closed first.
        """
        t0 = time.monotonic()
        async with AsyncExitStack() as stack:
            self._executor = stack.enter_context(
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            )
            loop = asyncio.get_running_loop()
            backend = await loop.run_in_executor(self._executor, self._components.backend)
            self._inspector = Inspector(
                backend, self.cfg.inspection.roi_size_px, self.cfg.inspection.belt_threshold
            )
            if self.cfg.audit.enabled:
                self._audit = stack.enter_context(
                    AuditStore(self.cfg.audit, self.cfg.audit_directory)
                )
            self.recorder = Recorder(
                self.cfg,
                model_identity(backend, self.cfg),
                store=self._audit,
                stats=self.stats.snapshot,
            )
            self.sinks.append(self.recorder)
            if self.cfg.hmi.enabled:
                await self._open_hmi(stack, backend.name)
            encoder = await stack.enter_async_context(self._components.encoder)
            self._camera = await stack.enter_async_context(self._components.camera)
            self._output = await stack.enter_async_context(self._components.reject)
            self._loop = asyncio.get_running_loop()
            self._pulse_timer = stack.enter_context(
                PulseTimer(self._output.fire, self._pulse_fired_threadsafe)
            )
            log.info("node_started", name=self.cfg.node.name, backend=backend.name)
            self.operation.started()
            self.notifier.ready()
            self.ready.set()
            halt = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
                    "encoder": lambda: self._encoder_loop(encoder),
                    "scheduler": lambda: self.scheduler.run(halt),
                    "trigger": self._trigger_loop,
                    "frames": self._frame_loop,
                    "inspect": self._inspect_loop,
                    "watchdog": lambda: self.watchdog.run(halt),
                    "heartbeat": lambda: self._heartbeat_loop(halt),
                    "status": lambda: self._status_loop(halt),
                }
                if self._plc is not None:
                    plc = self._plc
                    loops["plc-state"] = lambda: self._plc_state_loop(plc, halt)
                    if self._tracked:
                        loops["plc-reports"] = lambda: self._plc_report_loop(plc)
                tasks = [
                    tg.create_task(self._supervise(name, loop_fn, halt), name=name)
                    for name, loop_fn in loops.items()
                ]
                await stop.wait()
                await self._drain()
                halt.set()
                for t in tasks:
                    t.cancel()
            self.summary.frames_dropped = self._camera.dropped
            if self._plc is not None:
                await self._plc_not_ready(self._plc)
        self.summary.duration_s = time.monotonic() - t0
        self.summary.bad_encoder_samples = self.tracker.rejected_samples
        late = self.scheduler.lateness
        self.summary.scheduler_lateness_ms = {
            "p50": late.p50_ns / 1e6,
            "p99": late.p99_ns / 1e6,
            "max": late.max_ns / 1e6,
        }
        self.summary.pulse_lateness_ms = percentiles(ns / 1e6 for ns in self._pulse_late_ns)
        self.summary.plc_report_ms = percentiles(self._report_ms)
        self.summary.stats = self.stats.snapshot()
        log.info("node_stopped", **_summary_fields(self.summary))
        return self.summary

    async def _supervise(
        self, name: str, run: Callable[[], Coroutine[Any, Any, None]], halt: asyncio.Event
    ) -> None:
        """Run one long-running task; log and restart it with backoff if it crashes.

        A crash loop is visible: each restart is logged and counted, and a stage that
        stops making progress starves the watchdog and the PLC heartbeat.
        """
        backoff_s = 0.1
        while not halt.is_set():
            try:
                await run()
                return
            except Exception:  # the one supervisor per task (STYLE): log, then restart
                self.summary.task_restarts += 1
                log.exception("task_crashed", task=name, restart_in_s=backoff_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), backoff_s)
            backoff_s = min(backoff_s * 2, 5.0)

    async def _drain(self) -> None:
        self._draining = True
        self.notifier.stopping()
        log.info("node_draining", in_flight=len(self._parts))
        if self._parts:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.node.drain_grace_s):
                    await self._drained.wait()
        self.summary.undecided_at_stop = len(self._parts)
        if self._parts:
            log.warning("parts_undecided_at_stop", part_ids=sorted(self._parts))

    # -- encoder → parts -------------------------------------------------
    async def _encoder_loop(self, encoder: EncoderSource) -> None:
        async for sample in encoder.samples():
            new_parts = self.tracker.update(sample)
            self.scheduler.notify_update()
            self.watchdog.beat("encoder")
            if self._pulses:
                self._rearm_pulses()
            for part in new_parts:
                if self._draining:
                    self.summary.parts_ignored_while_stopping += 1
                    continue
                self._track(part)

    def _track(self, part: TrackedPart) -> None:
        st = _Part(part)
        self._parts[part.part_id] = st
        self.summary.parts_tracked += 1
        self.scheduler.schedule(part.trigger_count, lambda: self._on_camera(st), label="trigger")
        self.scheduler.schedule(
            part.decide_count, lambda: self._on_decision_point(st), label="decide"
        )

    def _on_camera(self, st: _Part) -> None:
        if not self.operation.inspecting:
            state = self.operation.state.value
            self._set_verdict(
                st, Judge.fail_safe(st.part.part_id, Reason.FAILSAFE_NOT_INSPECTING, state)
            )
            return
        st.trigger_t_ns = time.monotonic_ns()
        st.deadline_t_ns = self.tracker.eta_ns(st.part.decide_count)
        self._triggers.put_nowait(st)
        timeout_s = self.cfg.camera.timeout_ms / 1000
        asyncio.get_running_loop().call_later(timeout_s, self._frame_timeout, st)

    def _frame_timeout(self, st: _Part) -> None:
        if not st.frame_seen and st.verdict is None:
            self._set_verdict(st, Judge.fail_safe(st.part.part_id, Reason.FAILSAFE_FRAME_MISSING))

    async def _trigger_loop(self) -> None:
        assert self._camera is not None
        timeout_s = self.cfg.camera.timeout_ms / 1000
        while True:
            st = await self._triggers.get()
            # A trigger sent after the part has moved on would photograph the wrong place
            # (or the next part): such a part is rejected, never judged on that frame.
            late = self.tracker.estimate_position(time.monotonic_ns()) - st.part.trigger_count
            if late > self._trigger_tolerance_counts:
                late_mm = late / self.cfg.line.counts_per_mm
                self._set_verdict(
                    st,
                    Judge.fail_safe(
                        st.part.part_id,
                        Reason.FAILSAFE_TRIGGER_LATE,
                        f"{late_mm:.1f} mm past the camera",
                    ),
                )
                continue
            try:
                async with asyncio.timeout(timeout_s):
                    await self._camera.trigger(st.part.part_id, st.part.trigger_count)
            except (TimeoutError, CameraError, DriverError) as exc:
                log.error("camera_trigger_failed", part_id=st.part.part_id, error=str(exc))
                self.operation.error("camera", str(exc))
                self._set_verdict(
                    st, Judge.fail_safe(st.part.part_id, Reason.FAILSAFE_CAMERA, str(exc))
                )

    async def _frame_loop(self) -> None:
        assert self._camera is not None
        async for frame in self._camera.frames():
            st = self._parts.get(frame.part_id)
            if st is None or st.verdict is not None:
                self.summary.late_frames += 1
                log.warning("frame_late", part_id=frame.part_id, status=frame.status.value)
                continue
            st.frame_seen = True
            if frame.status is FrameStatus.COMPLETE:
                self._inferring += 1
                self.watchdog.idle("inference", False)
                self._inspect_q.put_nowait(frame)
                continue
            reason = {
                FrameStatus.INCOMPLETE: Reason.FAILSAFE_FRAME_INCOMPLETE,
                FrameStatus.MISSING: Reason.FAILSAFE_FRAME_MISSING,
            }.get(frame.status, Reason.FAILSAFE_CAMERA)
            self._set_verdict(st, Judge.fail_safe(frame.part_id, reason, frame.detail))

    # -- inspection ------------------------------------------------------------
    async def _inspect_loop(self) -> None:
        assert self._inspector is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._inspect_q.get()]
            while len(batch) < self.cfg.inspection.batch_size and not self._inspect_q.empty():
                batch.append(self._inspect_q.get_nowait())
            try:
                results = await loop.run_in_executor(self._executor, self._inspector.run, batch)
            finally:
                self._inferring -= len(batch)
                self.watchdog.idle("inference", self._inferring == 0)
            self.watchdog.beat("inference")
            for ins in results:
                self._on_inspection(ins)

    def _on_inspection(self, ins: Inspection) -> None:
        st = self._parts.get(ins.part_id)
        if st is None or st.verdict is not None:
            log.warning("verdict_late", part_id=ins.part_id)
            return
        st.image = ins.image
        if ins.findings is not None:
            verdict = self.judge.judge(ins.part_id, ins.findings)
        elif ins.no_part:
            verdict = Judge.fail_safe(ins.part_id, Reason.FAILSAFE_NO_PART, ins.error)
        else:
            verdict = Judge.fail_safe(ins.part_id, Reason.FAILSAFE_MODEL, ins.error)
            self.operation.error("model", ins.error)
        self._set_verdict(st, verdict)

    def _set_verdict(self, st: _Part, verdict: Verdict) -> None:
        if st.verdict is not None:
            return
        st.verdict = verdict
        st.verdict_t_ns = time.monotonic_ns()
        if verdict.fail_safe:
            log.warning(
                "part_fail_safe",
                part_id=verdict.part_id,
                reason=verdict.reason.value,
                detail=verdict.detail,
            )
        if verdict.reject and self._tracked:
            self._reports.put_nowait(st)
        elif verdict.reject:
            # Arm at once: the timing thread then fires on time even if this loop is
            # busy when the part reaches the fire point.
            cmd = RejectCommand(st.part.part_id, st.part.reject_count, verdict.reason.value)
            self._pulses[cmd.part_id] = (cmd, st)
            self._rearm_pulses()

    # -- reject point ------------------------------------------------------
    def _on_decision_point(self, st: _Part) -> None:
        """The verdict is due: a part without one is rejected; a pass is published.

        Rejects were armed when their verdict came; they are published when fired.
        """
        st.budget_miss = st.verdict is None
        if st.verdict is None:
            self._set_verdict(st, Judge.fail_safe(st.part.part_id, Reason.FAILSAFE_DEADLINE))
        verdict = st.verdict
        assert verdict is not None
        if not verdict.reject:
            self._publish(st, verdict, "passed")

    def _rearm_pulses(self) -> None:
        """Move every armed pulse to the latest predicted time its part reaches the fire point."""
        assert self._pulse_timer is not None and self._output is not None
        lead_ns = self._output.fire_lead_ns
        for cmd, st in self._pulses.values():
            eta = self.tracker.eta_ns(st.part.fire_count)
            if eta is None:  # belt stopped: hold the pulse until it moves again
                self._pulse_timer.disarm(cmd.part_id)
            else:
                self._pulse_timer.arm(cmd, eta - lead_ns)

    def _pulse_fired_threadsafe(
        self, cmd: RejectCommand, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        """Called on the timing thread after a pulse; hands the outcome to the loop."""
        assert self._loop is not None
        # a closed loop means the run is over: there is nobody left to tell
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._pulse_fired, cmd, late_ns, took_ns, error)

    def _pulse_fired(
        self, cmd: RejectCommand, late_ns: int, took_ns: int, error: BaseException | None
    ) -> None:
        assert self._pulse_timer is not None
        self._pulse_timer.forget(cmd.part_id)
        entry = self._pulses.pop(cmd.part_id, None)
        if entry is None:
            return
        st = entry[1]
        assert st.verdict is not None
        if error is not None:
            self.summary.reject_fire_failures += 1
            log.error("reject_fire_failed", part_id=cmd.part_id, error=str(error))
            self._publish(st, st.verdict, "not_fired")
            return
        self._pulse_late_ns.append(late_ns)
        missed = self._pulse_missed_part(late_ns, took_ns)
        if missed is not None:
            self.summary.reject_fire_failures += 1
            log.error("reject_fire_late", part_id=cmd.part_id, **missed)
            self._publish(st, st.verdict, "not_fired")
            return
        self._publish(st, st.verdict, "rejected")

    def _pulse_missed_part(self, late_ns: int, took_ns: int) -> dict[str, float] | None:
        """Why a pulse may have missed its part (ms figures), or None when it cannot have.

        When the output may have acted farther from the planned instant than half a part
        at the belt's speed (``node.line.pulse.may_have_missed``), the actuator may have struck
        the belt beside the part: the part is then ``not_fired``, never reported
        rejected on a guess.
        """
        assert self._output is not None
        speed_mm_ns = self.tracker.speed_cps / self.cfg.line.counts_per_mm / 1e9
        if speed_mm_ns <= 0:
            return None
        window_ns = self.cfg.line.part_length_mm / 2 / speed_mm_ns
        if not may_have_missed(late_ns, took_ns, self._output.fire_lead_ns, window_ns):
            return None
        return {
            "late_ms": round(late_ns / 1e6, 3),
            "took_ms": round(took_ns / 1e6, 3),
            "window_ms": round(window_ns / 1e6, 3),
        }

    def _publish(self, st: _Part, verdict: Verdict, action: Action) -> None:
        now = time.monotonic_ns()
        self._parts.pop(st.part.part_id, None)
        latency = budget = None
        if st.trigger_t_ns is not None:
            if st.verdict_t_ns is not None and not st.budget_miss:
                latency = (st.verdict_t_ns - st.trigger_t_ns) / 1e6
            if st.deadline_t_ns is not None:
                budget = (st.deadline_t_ns - st.trigger_t_ns) / 1e6
        result = PartResult(
            part_id=st.part.part_id,
            origin_count=st.part.origin_count,
            trigger_count=st.part.trigger_count,
            fire_count=st.part.fire_count,
            verdict=verdict,
            action=action,
            latency_ms=latency,
            budget_ms=budget,
            budget_miss=st.budget_miss,
            t_ns=now,
            image=st.image,
        )
        self.summary.parts_decided += 1
        self.summary.rejected += action == "rejected"
        self.summary.fail_safe += verdict.fail_safe
        self.summary.budget_misses += st.budget_miss
        if verdict.reject:
            log.info(
                "part_rejected",
                part_id=verdict.part_id,
                reason=verdict.reason.value,
                explanation=verdict.explanation,
                latency_ms=latency,
                action=action,
            )
        for sink in self.sinks:
            sink.publish(result)
        if self._plc is not None:
            self._last_verdict = verdict
            self._verdict_changed.set()
        if self._draining and not self._parts:
            self._drained.set()

    async def _open_hmi(self, stack: AsyncExitStack, model: str) -> None:
        """Serve results, state and methods to HMI panels over OPC UA (``[hmi]``), from a
        thread of its own (see ``node.hmi.thread``)."""
        from node.hmi.thread import HmiThread

        assert self._audit is not None and self.recorder is not None  # the config requires audit
        settings = self.cfg.hmi
        server = HmiThread(
            settings,
            state_dir=self.cfg.node.state_dir,
            control=self.operation,
            results=self._audit,
            node_name=self.cfg.node.name,
        )
        try:
            hmi = await stack.enter_async_context(server)
        except OSError as exc:  # e.g. the port is taken: say which setting to look at
            raise LinesideError(f"hmi.endpoint {settings.endpoint}: {exc}") from exc
        self.hmi = hmi
        self.operation.listen(self._hmi_state)
        hmi.set_recipe(self.cfg.inspection.recipe.name)
        self._model_name = model
        thumb = settings.thumbnail_px if settings.publish_thumbnails else 0
        self.recorder.add_sink(hmi, thumbnail_px=thumb)

    def _hmi_state(self, state: VisionState, detail: str) -> None:
        if self.hmi is not None:
            self.hmi.set_state(state, detail)

    def _hmi_health(self, snap: dict[str, Any]) -> None:
        if self.hmi is None:
            return
        detail = self.operation.machine.detail
        camera = f"error: {detail}" if self.operation.fault == "camera" else "ok"
        plc = str(snap["plc"]["state"]) if "plc" in snap else "not used"
        self.hmi.set_health(camera=camera, plc=plc, model=self._model_name)

    # -- the PLC link ------------------------------------------------------------
    async def _plc_report_loop(self, plc: NodePlc) -> None:
        """PLC-tracked: hand each reject to the PLC in verdict order; publish it on Ack.

        A reject the PLC did not acknowledge is published ``not_fired`` and counted:
        the PLC's own watchdog on the handshake and the heartbeat make it fail safe.
        """
        while True:
            st = await self._reports.get()
            verdict = st.verdict
            assert verdict is not None
            t0 = time.monotonic_ns()
            try:
                async with asyncio.timeout(self.cfg.reject.timeout_ms / 1000 * 4):
                    origin_raw = self.tracker.raw_count(st.part.origin_count)
                    await plc.report(st.part.part_id, origin_raw, verdict)
            except (TimeoutError, PlcError) as exc:
                self.summary.reject_fire_failures += 1
                log.error("plc_report_failed", part_id=st.part.part_id, error=str(exc))
                self._publish(st, verdict, "not_fired")
                continue
            self._report_ms.append((time.monotonic_ns() - t0) / 1e6)
            self._publish(st, verdict, "rejected")

    async def _plc_state_loop(self, plc: NodePlc, halt: asyncio.Event) -> None:
        """Mirror the node's state to the PLC (ready/error) and write each part's verdict.

        Ready is on while the node inspects (ContinuousExecution); error while it is in
        Error. Verdicts are written latest-first: when the link is slower than the line,
        intermediate ones are skipped (the result counter shows how many).
        """
        timeout_s = self.cfg.reject.timeout_ms / 1000
        publish = self.cfg.plc is not None and self.cfg.plc.publish_verdicts
        while not halt.is_set():
            try:
                if self._plc_state_changed.is_set():
                    self._plc_state_changed.clear()
                    state = self.operation.state
                    async with asyncio.timeout(timeout_s):
                        await plc.set_node_state(
                            ready=self.operation.inspecting and state is not VisionState.ERROR,
                            error=state is VisionState.ERROR,
                        )
                if self._verdict_changed.is_set():
                    self._verdict_changed.clear()
                    verdict = self._last_verdict
                    if publish and verdict is not None:
                        async with asyncio.timeout(timeout_s):
                            await plc.publish_verdict(verdict)
                waits = [
                    asyncio.ensure_future(self._plc_state_changed.wait()),
                    asyncio.ensure_future(self._verdict_changed.wait()),
                ]
                try:
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()
            except (TimeoutError, PlcError) as exc:
                log.warning("plc_state_write_failed", error=str(exc))
                self._plc_state_changed.set()  # write the state again once the link is back
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(halt.wait(), 0.5)

    async def _plc_not_ready(self, plc: NodePlc) -> None:
        """On the way out: tell the PLC the node is no longer ready (best effort)."""
        try:
            async with asyncio.timeout(self.cfg.reject.timeout_ms / 1000):
                await plc.set_node_state(ready=False, error=False)
        except (TimeoutError, PlcError) as exc:
            log.warning("plc_not_ready_write_failed", error=str(exc))

    async def _heartbeat_loop(self, halt: asyncio.Event) -> None:
        """Toggle the PLC heartbeat while the pipeline makes progress."""
        assert self._output is not None
        target: RejectOutput | NodePlc = self._plc if self._plc is not None else self._output
        interval = min(0.5, self.cfg.node.watchdog_stall_s / 2)
        toggle = False
        while not halt.is_set():
            if self.watchdog.healthy():
                toggle = not toggle
                try:
                    async with asyncio.timeout(self.cfg.reject.timeout_ms / 1000):
                        await target.heartbeat(toggle)
                except (TimeoutError, PlcError) as exc:
                    log.warning("heartbeat_failed", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), interval)

    def status(self) -> dict[str, Any]:
        """The live status: stats plus what is in flight and the pipeline's health."""
        snap = self.stats.snapshot()
        snap["in_flight"] = len(self._parts)
        snap["belt_mm_s"] = round(self.tracker.speed_cps / self.cfg.line.counts_per_mm, 1)
        snap["healthy"] = self.watchdog.healthy()
        snap["draining"] = self._draining
        snap["state"] = self.operation.state.value
        if self._plc is not None:
            snap["plc"] = self._plc.snapshot()
        if self._audit is not None:
            snap["audit"] = {
                "committed": self._audit.committed,
                "pending": self._audit.pending,
                "dropped": self._audit.dropped,
            }
        return snap

    async def _status_loop(self, halt: asyncio.Event) -> None:
        """Publish the live status to systemd and the terminal/log every interval."""
        while not halt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(halt.wait(), self.cfg.node.status_interval_s)
            snap = self.status()
            lat = snap["latency_ms"]
            self.notifier.status(
                f"{snap['inspected']} inspected, {snap['rejected']} rejected, "
                f"{snap['fail_safe']} fail-safe, p99 {lat['p99']} ms"
            )
            self._hmi_health(snap)
            if self._on_status is not None:
                self._on_status(snap)

    @property
    def in_flight(self) -> int:
        """Parts tracked and not yet acted on."""
        return len(self._parts)


def _summary_fields(s: RunSummary) -> dict[str, Any]:
    return {k: v for k, v in s.__dict__.items() if k != "stats"}
