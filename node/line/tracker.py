"""Belt tracking: follow the belt from encoder samples and create a part as each arrives.

Everything here is pure and synchronous: :meth:`Tracker.update` is called for
every encoder sample (500–1000 Hz) and does O(1) work per sample. Positions
are encoder counts as Python ints, unwrapped from the PLC's 16- or 32-bit
counter (``node.line.encoder``); times are ``time.monotonic_ns()`` values
carried by the samples.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import structlog

from drivers.plc.base import EncoderSample
from node.errors import ConfigError
from node.line.encoder import CounterUnwrapper, SpeedEstimator
from node.line.geometry import LineGeometry

if TYPE_CHECKING:
    from node.config import Config

_log: Final = structlog.get_logger(__name__)

_NS_PER_S: Final = 1_000_000_000

RejectionReason = Literal[
    "raw_out_of_range", "time_not_increasing", "forward_jump", "backward_jump", "unconfirmed"
]
"""Why :meth:`Tracker.update` refused a sample as bad data."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerConfig:
    """How the tracker follows the belt: the line's geometry plus tracking limits.

    Counts are measured along the belt from the *origin line*: in pitch mode a
    virtual line where part ``k``'s centre is at count
    ``first_part_count + k * pitch_counts``; in sensor mode the part-present
    sensor, where a part's centre is half a part length after its rising edge.

    Raises:
        ConfigError: listing every invalid field at once.
    """

    mode: Literal["pitch", "sensor"]
    geometry: LineGeometry
    """Stations, part size and the speed limit, in counts."""
    time_jitter_ns: int = 0
    """How far a sample's time may be off (a poll's round trip, a late wake-up): the
    plausibility check lets the belt move at ``max_speed_cps`` for this much longer."""
    window_ns: int = 40_000_000
    """Speed estimation window."""
    debounce_counts: int = 0
    """Sensor mode: forward travel a sensor change must persist for before it counts."""
    part_id_start: int = 0
    """The first part's ``part_id``."""
    extrapolation_limit_ns: int = 50_000_000
    """Longest time :meth:`Tracker.estimate_position` dead-reckons past the last sample."""
    resync_after_samples: int = 10
    """Consecutive mutually consistent jump samples that re-anchor the counter (0: never)."""
    loss_after_ns: int = 50_000_000
    """Samples refused for this long in a row (no good one between) mean tracking is lost
    (:attr:`Tracker.lost`): parts can no longer be placed on the belt."""

    def __post_init__(self) -> None:
        problems: list[str] = []
        g = self.geometry
        if self.mode not in ("pitch", "sensor"):
            problems.append(f"tracker.mode: must be 'pitch' or 'sensor', got {self.mode!r}")
        if self.mode == "pitch" and g.pitch_counts <= 0:
            problems.append("tracker.pitch_counts: must be > 0 in pitch mode")
        if self.mode == "sensor" and g.part_length_counts <= 0:
            problems.append("tracker.part_length_counts: must be > 0 in sensor mode")
        for name in ("time_jitter_ns", "debounce_counts", "resync_after_samples"):
            if getattr(self, name) < 0:
                problems.append(f"tracker.{name}: must be >= 0")
        for name in ("window_ns", "extrapolation_limit_ns", "loss_after_ns"):
            if getattr(self, name) <= 0:
                problems.append(f"tracker.{name}: must be > 0")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_config(cls, cfg: Config) -> TrackerConfig:
        """The tracker for ``cfg``'s ``[line]``. Raises ``ConfigError``."""
        line = cfg.line
        return cls(
            mode=line.tracking,
            geometry=LineGeometry.from_config(cfg),
            window_ns=int(line.speed_window_ms * 1e6),
            time_jitter_ns=int(line.sample_time_jitter_ms * 1e6),
            loss_after_ns=int(line.tracking_loss_ms * 1e6),
        )


@dataclass(frozen=True, slots=True)
class TrackedPart:
    """A part the tracker has seen, with its stations as unwrapped counts.

    The part's centre is at a station when the belt reaches that count; its
    cycle budget is the travel from ``trigger_count`` to ``fire_count``, and
    ``Tracker.eta_ns(fire_count)`` is its deadline.
    """

    part_id: int
    origin_count: int
    """Count at which the part's centre is at the origin line."""
    trigger_count: int
    """``origin_count + camera_counts``: centre at the camera."""
    decide_count: int
    """The verdict is due (``LineGeometry.stations``): none by then is a fail-safe reject."""
    fire_count: int
    """``origin_count + reject_counts - lead_counts``: the reject pulse must start here."""
    reject_count: int
    """``origin_count + reject_counts``: centre at the reject station."""
    created_t_ns: int
    """``t_ns`` of the sample that created the part."""


@dataclass(slots=True)
class _PendingEdge:
    edge_count: int
    at_frontier: bool


class Tracker:
    """Follows the belt from encoder samples and creates a part as each one arrives.

    ``position`` is the *high-water mark*: the furthest unwrapped count accepted
    so far. Backward moves (jitter or a real reversal) hold it; it advances
    again only once the belt passes it. Because parts ride the belt, a count is
    "reached" the first time the belt reaches it, so everything keyed on
    ``position`` happens once, however the belt shakes or reverses.

    Samples that imply a jump faster than ``max_speed_cps`` (forward or
    backward), go back in time, or carry an out-of-range raw count are bad
    data: they are counted, logged with a reason (the first of a run of them,
    then every 1000th), and leave the state as it was. If
    ``resync_after_samples`` such jumps in a row agree with each other (the PLC
    counter was reset), the tracker re-anchors the counter at its own position
    estimate and goes on.

    The first plausible sample after refused ones is only *held*: the longer the
    refusals lasted, the wider the plausible range, and a garbage count can land in
    it by chance. It is accepted when the next sample agrees with it (within the
    short time between them), otherwise refused as ``"unconfirmed"`` — so one lucky
    bad count can never move the belt position and hide the parts behind it.
    """

    def __init__(self, cfg: TrackerConfig, bits: Literal[16, 32]) -> None:
        """Create a tracker for a ``bits``-wide counter.

        Raises:
            ValueError: ``bits`` is not 16 or 32.
        """
        self._cfg = cfg
        self._geo = cfg.geometry
        self._unwrapper = CounterUnwrapper(bits)
        self._speed = SpeedEstimator(cfg.window_ns)
        self._hw = 0
        self._unwrapped = 0
        self._last_t_ns: int | None = None
        self._last_err_ns = 0
        self._next_id = cfg.part_id_start
        self._next_origin = 0
        self._reversing = False
        self._sensor_state = False
        self._pending: _PendingEdge | None = None
        self._last_edge: int | None = None
        self._rejected = 0
        self._edges_refused = 0
        self._last_reason: RejectionReason | None = None
        self._streak = 0
        self._bad_run = 0
        self._streak_start = EncoderSample(0, 0)
        self._refused_since: EncoderSample | None = None
        self._refused_last: EncoderSample | None = None
        self._streak_raw = 0
        self._streak_t_ns = 0
        self._streak_err_ns = 0
        self._held: tuple[EncoderSample, int] | None = None
        """The first plausible sample after refused ones, with its unwrapped count."""

    @property
    def config(self) -> TrackerConfig:
        """The configuration this tracker runs with."""
        return self._cfg

    @property
    def position(self) -> int:
        """High-water mark in counts: the furthest belt position seen (0 before any sample)."""
        return self._hw

    @property
    def unwrapped_count(self) -> int:
        """The last accepted unwrapped count, unfiltered (may be behind ``position``)."""
        return self._unwrapped

    @property
    def speed_cps(self) -> float:
        """Belt speed in counts/s (>= 0), least-squares over the last ``window_ns``."""
        return self._speed.speed_cps

    @property
    def extrapolation_limit_ns(self) -> int:
        """How long past the last sample the position is extrapolated (and trusted)."""
        return self._cfg.extrapolation_limit_ns

    @property
    def last_t_ns(self) -> int | None:
        """``t_ns`` of the last accepted sample, or None before the first one."""
        return self._last_t_ns

    def blind_ms(self, t_ns: int) -> float | None:
        """How long the belt's position has been unknown at ``t_ns`` (ms since the last
        sample; ``inf`` before the first) when that is longer than the position is
        extrapolated, else None (the prediction is trusted). Read from the timing thread."""
        last = self._last_t_ns
        if last is None:
            return math.inf
        if t_ns - last > self._cfg.extrapolation_limit_ns:
            return (t_ns - last) / 1e6
        return None

    @property
    def next_part_id(self) -> int:
        """The ``part_id`` the next created part will get."""
        return self._next_id

    @property
    def rejected_samples(self) -> int:
        """How many samples were refused as bad data."""
        return self._rejected

    @property
    def edges_refused(self) -> int:
        """How many latched sensor edges could not be placed (a count out of range, or
        farther from the belt than it can have moved): each one a part that passed the
        sensor and was never tracked, so never judged."""
        return self._edges_refused

    @property
    def last_rejection_reason(self) -> RejectionReason | None:
        """Why the latest refused sample was refused, or None if none was."""
        return self._last_reason

    @property
    def lost(self) -> bool:
        """True while tracking is lost: every sample for ``loss_after_ns`` (or longer) was
        refused. Cleared by the next accepted sample (or a resync)."""
        first, last = self._refused_since, self._refused_last
        return (
            first is not None
            and last is not None
            and last.t_ns - first.t_ns >= self._cfg.loss_after_ns
        )

    @property
    def refused_speed_cps(self) -> float | None:
        """Belt speed in counts/s implied by the current run of refused samples — from the
        first to the latest, when the counter moved forward — or None without such a run.
        Far over ``max_speed_cps`` for a whole run: the belt really runs too fast (or the
        counter's scale is wrong); None or erratic: the counts are garbage."""
        first, last = self._refused_since, self._refused_last
        if first is None or last is None or last.t_ns <= first.t_ns:
            return None
        if not (0 <= first.raw_count < self._unwrapper.modulus):
            return None
        if not (0 <= last.raw_count < self._unwrapper.modulus):
            return None
        step = self._unwrapper.signed_step(first.raw_count, last.raw_count)
        return step * _NS_PER_S / (last.t_ns - first.t_ns) if step > 0 else None

    @property
    def consistent_refusals(self) -> int:
        """How many of the latest refused samples agree with each other (a steady counter
        moving too fast, or one reset: see ``resync_after_samples``)."""
        return self._streak

    def raw_count(self, count: int) -> int:
        """The PLC's raw counter value at our unwrapped ``count``.

        Equal to ``count`` modulo ``2**bits`` until a resync rebases the counter; after
        one, counts the node handed out before it still name the same belt positions,
        so whatever goes back to the PLC (a PLC-tracked result's origin) is converted here.
        """
        return self._unwrapper.to_raw(count)

    def estimate_position(self, t_ns: int) -> float:
        """Predict the belt position in counts at monotonic time ``t_ns``.

        Extrapolates from ``position`` with ``speed_cps`` for at most
        ``extrapolation_limit_ns`` past the last sample, and never returns less
        than ``position``. Before the first sample it returns ``-inf`` (no count
        has been reached).
        """
        last = self._last_t_ns
        if last is None:
            return -math.inf
        dt_ns = min(t_ns - last, self._cfg.extrapolation_limit_ns)
        if dt_ns <= 0:
            return float(self._hw)
        return self._hw + self._speed.speed_cps * dt_ns / _NS_PER_S

    def eta_ns(self, count: int) -> int | None:
        """Predict the monotonic time in ns at which the belt reaches ``count``.

        Returns the last sample's time if ``count`` is already reached, and None
        before the first sample or while the belt is stopped (speed 0).
        """
        last = self._last_t_ns
        if last is None:
            return None
        if count <= self._hw:
            return last
        speed = self._speed.speed_cps
        if speed <= 0.0:
            return None
        return last + math.ceil((count - self._hw) * _NS_PER_S / speed)

    def reached_ns(self, count: int) -> int | None:
        """When the belt reaches ``count``: ``eta_ns`` for a count still ahead; for one
        already passed, when it passed it (back from the last sample at the belt's speed,
        or the last sample's time while the belt stands), so a late caller can tell how
        late it is. None before the first sample, or ahead while the belt is stopped.
        """
        last = self._last_t_ns
        if last is None or count > self._hw:
            return self.eta_ns(count)
        speed = self._speed.speed_cps
        if speed <= 0.0:
            return last
        return last - math.floor((self._hw - count) * _NS_PER_S / speed)

    def update(self, sample: EncoderSample) -> list[TrackedPart]:
        """Take one encoder sample and return the parts it created (usually none).

        Bad samples are refused (see the class docstring) and return ``[]``;
        this method never raises for bad input.
        """
        t_ns = sample.t_ns
        try:
            unwrapped = self._unwrapper.peek(sample.raw_count)
        except ValueError:
            self._streak = 0
            return self._refuse(sample, "raw_out_of_range", "") + self._salvage_edges(sample)
        last_t = self._last_t_ns
        if last_t is None:
            return self._start(sample, unwrapped)
        held = self._held
        latest_t = last_t if held is None else held[0].t_ns
        if t_ns <= latest_t:
            self._streak = 0
            refused = self._refuse(sample, "time_not_increasing", f"last_t_ns={latest_t}")
            return refused + self._salvage_edges(sample)
        if held is not None:
            return self._confirm(held, sample, unwrapped)
        allowance = self._allowance(t_ns - last_t, self._last_err_ns + sample.t_err_ns)
        step = unwrapped - self._unwrapped
        if step > allowance or step < -allowance:
            parts = self._refuse_jump(sample, step, allowance)
            return parts if parts else self._salvage_edges(sample)
        if self._bad_run:  # plausible after refused ones: believed once the next agrees
            self._held = (sample, unwrapped)
            return self._salvage_edges(sample)
        self._unwrapper.unwrap(sample.raw_count)
        return self._accept(sample, unwrapped)

    # -- internals ------------------------------------------------------------

    def _allowance(self, dt_ns: int, err_ns: int = 0) -> float:
        """The most counts the belt can move between two samples ``dt_ns`` apart whose
        times are known to within ``err_ns`` together (their ``t_err_ns`` summed)."""
        cfg = self._cfg
        g = self._geo
        span_ns = dt_ns + cfg.time_jitter_ns + max(0, err_ns)
        return g.max_speed_cps * span_ns / _NS_PER_S + g.jitter_counts

    def _start(self, sample: EncoderSample, unwrapped: int) -> list[TrackedPart]:
        g = self._geo
        self._unwrapper.unwrap(sample.raw_count)
        self._hw = self._unwrapped = unwrapped
        self._last_t_ns = sample.t_ns
        self._last_err_ns = sample.t_err_ns
        self._speed.add(sample.t_ns, unwrapped)
        if self._cfg.mode == "pitch":
            # Parts whose centre passed the origin before we started are unknown to us.
            k = max(0, -((g.first_part_count - unwrapped) // g.pitch_counts))
            self._next_origin = g.first_part_count + k * g.pitch_counts
            return self._pitch_parts(sample.t_ns)
        self._sensor_state = bool(sample.part_present)
        return []

    def _accept(self, sample: EncoderSample, unwrapped: int) -> list[TrackedPart]:
        self._streak = self._bad_run = 0
        self._refused_since = self._refused_last = None
        prev = self._unwrapped
        self._unwrapped = unwrapped
        if unwrapped > self._hw:
            self._hw = unwrapped
        self._last_t_ns = sample.t_ns
        self._last_err_ns = sample.t_err_ns
        self._speed.add(sample.t_ns, self._hw)
        deficit = self._hw - unwrapped
        if deficit > self._geo.jitter_counts and not self._reversing:
            self._reversing = True
            _log.info("belt_reversed", position=self._hw, behind_counts=deficit)
        elif deficit == 0 and self._reversing:
            self._reversing = False
            _log.info("belt_reversal_recovered", position=self._hw)
        if self._cfg.mode == "pitch":
            return self._pitch_parts(sample.t_ns)
        return self._sensor_parts(sample, prev, unwrapped)

    def _confirm(
        self, held: tuple[EncoderSample, int], sample: EncoderSample, unwrapped: int
    ) -> list[TrackedPart]:
        """Accept the held sample if ``sample`` agrees with it, then take ``sample``;
        otherwise refuse the held one and take ``sample`` afresh."""
        first, first_unwrapped = held
        self._held = None
        step = unwrapped - first_unwrapped  # both unwrapped from the last accepted count
        if abs(step) > self._allowance(sample.t_ns - first.t_ns, first.t_err_ns + sample.t_err_ns):
            self._refuse(first, "unconfirmed", f"the next sample is {step} counts away")
            return self.update(sample)
        self._unwrapper.unwrap(first.raw_count)
        # its edges were placed when it was held
        edges = None if first.edges is None else ()
        parts = self._accept(dataclasses.replace(first, edges=edges), first_unwrapped)
        return parts + self.update(sample)

    def _pitch_parts(self, t_ns: int) -> list[TrackedPart]:
        parts: list[TrackedPart] = []
        while self._next_origin <= self._hw:
            parts.append(self._make_part(self._next_origin, t_ns))
            self._next_origin += self._geo.pitch_counts
        return parts

    def _sensor_parts(self, sample: EncoderSample, prev: int, cur: int) -> list[TrackedPart]:
        if sample.edges is not None:
            return self._latched_parts(sample, cur)
        present = sample.part_present
        if present is None:  # not read this time: hold the debounced state
            return []
        if present == self._sensor_state:
            self._pending = None
            return []
        pending = self._pending
        if pending is None:
            # A change seen behind the high-water mark is the belt carrying an
            # already-seen part back and forth past the sensor, never a new part.
            pending = self._pending = _PendingEdge((prev + cur) // 2, cur >= self._hw)
        if self._hw - pending.edge_count < self._cfg.debounce_counts:
            return []
        self._sensor_state = present
        self._pending = None
        if not present or not pending.at_frontier:
            return []
        edge = pending.edge_count
        last = self._last_edge
        if last is not None and 2 * (edge - last) < self._geo.part_length_counts:
            _log.debug("sensor_edge_ignored", edge_count=edge, previous_edge_count=last)
            return []
        self._last_edge = edge
        return [self._make_part(edge + self._geo.part_length_counts // 2, sample.t_ns)]

    def _latched_parts(self, sample: EncoderSample, cur: int) -> list[TrackedPart]:
        """Parts from edges the PLC latched: exact counts, none lost to a slow poll."""
        return self._edge_parts(
            sample, lambda raw: cur + self._unwrapper.signed_step(sample.raw_count, raw)
        )

    def _salvage_edges(self, sample: EncoderSample) -> list[TrackedPart]:
        """Parts from the latched edges of a refused sample.

        Only the count read with them is suspect: each edge is the PLC's own latch,
        placed from the last accepted count. An edge farther from the belt position
        than the belt can have moved is refused too (logged and counted in
        ``edges_refused``: the node treats it as a part that passed unseen). Without
        this, a part whose edge came with a bad count would never be tracked — never
        judged.
        """
        if self._cfg.mode != "sensor" or not sample.edges or self._last_t_ns is None:
            return []
        dt_ns = max(0, sample.t_ns - self._last_t_ns)
        reach = self._allowance(dt_ns, self._last_err_ns + sample.t_err_ns)
        reach += self._geo.part_length_counts

        def place(raw: int) -> int | None:
            edge = self._unwrapper.peek(raw)  # from the last accepted count
            if abs(edge - self._hw) > reach:
                self._edges_refused += 1
                _log.warning("sensor_edge_refused", edge_raw_count=raw, position=self._hw)
                return None
            return edge

        return self._edge_parts(sample, place)

    def _edge_parts(
        self, sample: EncoderSample, place: Callable[[int], int | None]
    ) -> list[TrackedPart]:
        parts: list[TrackedPart] = []
        for raw in sample.edges or ():
            if not 0 <= raw < self._unwrapper.modulus:
                self._edges_refused += 1
                _log.warning("sensor_edge_out_of_range", edge_raw_count=raw)
                continue
            edge = place(raw)
            if edge is None:
                continue
            last = self._last_edge
            if last is not None and 2 * (edge - last) < self._geo.part_length_counts:
                _log.debug("sensor_edge_ignored", edge_count=edge, previous_edge_count=last)
                continue
            self._last_edge = edge
            parts.append(self._make_part(edge + self._geo.part_length_counts // 2, sample.t_ns))
        return parts

    def _make_part(self, origin: int, t_ns: int) -> TrackedPart:
        at = self._geo.stations(origin)
        part = TrackedPart(
            part_id=self._next_id,
            origin_count=origin,
            trigger_count=at.trigger_count,
            decide_count=at.decide_count,
            fire_count=at.fire_count,
            reject_count=at.reject_count,
            created_t_ns=t_ns,
        )
        self._next_id += 1
        return part

    def _refuse(
        self, sample: EncoderSample, reason: RejectionReason, detail: str
    ) -> list[TrackedPart]:
        self._rejected += 1
        self._last_reason = reason
        self._bad_run += 1
        if self._refused_since is None:
            self._refused_since = sample
        self._refused_last = sample
        # A misconfigured source refuses every sample; keep journald readable.
        if self._bad_run == 1 or self._bad_run % 1000 == 0:
            _log.warning(
                "encoder_sample_rejected",
                reason=reason,
                detail=detail,
                raw_count=sample.raw_count,
                t_ns=sample.t_ns,
                rejected_samples=self._rejected,
                consecutive=self._bad_run,
            )
        return []

    def _refuse_jump(self, sample: EncoderSample, step: int, allowance: float) -> list[TrackedPart]:
        # Jumps that agree with each other, sample after sample, mean the counter
        # itself moved (a PLC restart reset it), not that one reading is garbage.
        consistent = False
        if self._streak and sample.t_ns > self._streak_t_ns:
            s = self._unwrapper.signed_step(self._streak_raw, sample.raw_count)
            err_ns = self._streak_err_ns + sample.t_err_ns
            consistent = abs(s) <= self._allowance(sample.t_ns - self._streak_t_ns, err_ns)
        self._streak = self._streak + 1 if consistent else 1
        if self._streak == 1:
            self._streak_start = sample
        self._streak_raw, self._streak_t_ns = sample.raw_count, sample.t_ns
        self._streak_err_ns = sample.t_err_ns
        limit = self._cfg.resync_after_samples
        if limit and self._streak >= limit:
            if not self._streak_too_fast(sample):
                return self._resync(sample)
            # A steady counter, but faster than any belt may run: the belt really runs
            # too fast (or the count's scale is wrong). That is never adopted; tracking
            # stays lost until the counter moves at a believable speed again.
            self._streak = 1
            self._streak_start = sample
        reason: RejectionReason = "forward_jump" if step > 0 else "backward_jump"
        return self._refuse(sample, reason, f"step={step} counts, allowed {allowance:.1f}")

    def _streak_too_fast(self, sample: EncoderSample) -> bool:
        start = self._streak_start
        dt_ns = sample.t_ns - start.t_ns
        if dt_ns <= 0:
            return False
        step = abs(self._unwrapper.signed_step(start.raw_count, sample.raw_count))
        return step > self._allowance(dt_ns, start.t_err_ns + sample.t_err_ns)

    def _resync(self, sample: EncoderSample) -> list[TrackedPart]:
        anchor = max(self._hw, round(self.estimate_position(sample.t_ns)))
        _log.warning(
            "encoder_resynced",
            raw_count=sample.raw_count,
            position=anchor,
            previous_unwrapped=self._unwrapped,
        )
        self._unwrapper.rebase(sample.raw_count, anchor)
        self._speed.reset()
        self._pending = None
        self._held = None
        self._unwrapped = anchor  # no interpolation across the gap
        return self._accept(sample, anchor)
