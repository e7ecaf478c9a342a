"""Belt tracking: unwrap the encoder counter, estimate belt speed, create parts.

Everything here is pure and synchronous: :meth:`Tracker.update` is called for
every encoder sample (500–1000 Hz) and does O(1) work per sample. Positions
are encoder counts as Python ints, unwrapped from the PLC's 16- or 32-bit
counter; times are ``time.monotonic_ns()`` values carried by the samples.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

import structlog

from drivers.plc.base import EncoderSample
from node.errors import ConfigError

_log: Final = structlog.get_logger(__name__)

_NS_PER_S: Final = 1_000_000_000

RejectionReason = Literal[
    "raw_out_of_range", "time_not_increasing", "forward_jump", "backward_jump"
]
"""Why :meth:`Tracker.update` refused a sample as bad data."""


class CounterUnwrapper:
    """Turns a wrapping ``bits``-wide hardware counter into a continuous count.

    Each step is taken as the signed difference modulo ``2**bits``, so a small
    backward move stays a small backward move; steps are therefore only
    unambiguous while ``|step| < 2**(bits - 1)`` between two readings. The first
    reading maps to itself.

    Raises:
        ValueError: ``bits`` is not 16 or 32.
    """

    __slots__ = ("_half", "_last_raw", "_modulus", "_position")

    def __init__(self, bits: Literal[16, 32]) -> None:
        if bits not in (16, 32):
            raise ValueError(f"counter width must be 16 or 32 bits, got {bits!r}")
        self._modulus: Final = 1 << bits
        self._half: Final = 1 << (bits - 1)
        self._last_raw: int | None = None
        self._position = 0

    @property
    def modulus(self) -> int:
        """``2**bits``: raw values lie in ``[0, modulus)``."""
        return self._modulus

    @property
    def position(self) -> int | None:
        """The last unwrapped count in counts, or None before the first reading."""
        return None if self._last_raw is None else self._position

    def signed_step(self, raw_from: int, raw_to: int) -> int:
        """Return the signed step in counts from ``raw_from`` to ``raw_to``, in ±2**(bits-1)."""
        step = (raw_to - raw_from) % self._modulus
        return step - self._modulus if step >= self._half else step

    def peek(self, raw: int) -> int:
        """Return what :meth:`unwrap` would return for ``raw`` without changing state.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``.
        """
        if not 0 <= raw < self._modulus:
            raise ValueError(f"raw count {raw} outside [0, {self._modulus})")
        if self._last_raw is None:
            return raw
        return self._position + self.signed_step(self._last_raw, raw)

    def unwrap(self, raw: int) -> int:
        """Return the continuous count in counts for the raw counter value ``raw``.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``; state is unchanged.
        """
        self._position = self.peek(raw)
        self._last_raw = raw
        return self._position

    def to_raw(self, count: int) -> int:
        """The raw counter value that means unwrapped ``count`` now (after any ``rebase``)."""
        if self._last_raw is None:
            return count % self._modulus
        return (self._last_raw + count - self._position) % self._modulus

    def rebase(self, raw: int, position: int) -> None:
        """Declare that the raw value ``raw`` now means unwrapped count ``position``.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``.
        """
        if not 0 <= raw < self._modulus:
            raise ValueError(f"raw count {raw} outside [0, {self._modulus})")
        self._last_raw = raw
        self._position = position


class SpeedEstimator:
    """Least-squares slope of position over time across a short sliding window.

    Keeps every sample not older than ``window_ns`` before the newest one plus
    the newest sample at or before that boundary (so the fit spans the whole
    window even after a gap in polling), and always at least the last two. Sums
    are exact integers, so a window of equal positions gives exactly 0. Fed with
    a non-decreasing position (the tracker feeds its high-water mark) the slope
    is never negative; it is clamped at 0 regardless.
    """

    __slots__ = (
        "_buf",
        "_n",
        "_speed_cps",
        "_st",
        "_stt",
        "_stx",
        "_sx",
        "_t0",
        "_window_ns",
        "_x0",
    )

    def __init__(self, window_ns: int) -> None:
        self._window_ns = window_ns
        self._buf: deque[tuple[int, int]] = deque()
        self._t0 = 0
        self._x0 = 0
        self._n = self._st = self._sx = self._stt = self._stx = 0
        self._speed_cps = 0.0

    @property
    def speed_cps(self) -> float:
        """The latest estimate in counts/s (>= 0; 0 until two samples are in)."""
        return self._speed_cps

    def reset(self) -> None:
        """Forget all samples; the speed reads 0 until two new samples are in."""
        self._buf.clear()
        self._n = self._st = self._sx = self._stt = self._stx = 0
        self._speed_cps = 0.0

    def add(self, t_ns: int, position: int) -> float:
        """Add a sample (time in ns, position in counts) and return the new speed in counts/s."""
        buf = self._buf
        if not buf:
            self._t0, self._x0 = t_ns, position
        t, x = t_ns - self._t0, position - self._x0
        buf.append((t, x))
        self._n += 1
        self._st += t
        self._sx += x
        self._stt += t * t
        self._stx += t * x
        oldest_t = t - self._window_ns
        # Keep one sample at or before the window's start, so the fit always spans the
        # whole window: after a gap in polling, two samples a millisecond apart would
        # otherwise set the speed from a difference of a count or two.
        while self._n > 2 and buf[1][0] <= oldest_t:
            ot, ox = buf.popleft()
            self._n -= 1
            self._st -= ot
            self._sx -= ox
            self._stt -= ot * ot
            self._stx -= ot * ox
        den = self._n * self._stt - self._st * self._st
        if den <= 0:
            self._speed_cps = 0.0
        else:
            num = self._n * self._stx - self._st * self._sx
            self._speed_cps = max(0.0, num * _NS_PER_S / den)
        return self._speed_cps


@dataclass(frozen=True, slots=True, kw_only=True)
class TrackerConfig:
    """Belt geometry and tracking limits, all lengths in encoder counts.

    Counts are measured along the belt from the *origin line*: in pitch mode a
    virtual line where part ``k``'s centre is at count
    ``first_part_count + k * pitch_counts``; in sensor mode the part-present
    sensor, where a part's centre is half a part length after its rising edge.

    Raises:
        ConfigError: listing every invalid field at once.
    """

    mode: Literal["pitch", "sensor"]
    camera_counts: int
    """Origin → camera."""
    reject_counts: int
    """Origin → reject station."""
    lead_counts: int
    """Actuator lead: the pulse starts this far before the part's centre reaches the station."""
    max_speed_cps: float
    """Fastest plausible belt in counts/s; a sample implying more is bad data."""
    jitter_counts: int
    """Backward moves up to this many counts are vibration, not a reversal."""
    time_jitter_ns: int = 0
    """How far a sample's time may be off (a poll's round trip, a late wake-up): the
    plausibility check lets the belt move at ``max_speed_cps`` for this much longer."""
    pitch_counts: int = 0
    """Pitch mode: distance between part centres (> 0 in pitch mode)."""
    first_part_count: int = 0
    """Pitch mode: count at which part 0's centre is at the origin line."""
    part_length_counts: int = 0
    """Sensor mode: part length along the belt (> 0 in sensor mode)."""
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

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.mode not in ("pitch", "sensor"):
            problems.append(f"tracker.mode: must be 'pitch' or 'sensor', got {self.mode!r}")
        if self.mode == "pitch" and self.pitch_counts <= 0:
            problems.append("tracker.pitch_counts: must be > 0 in pitch mode")
        if self.mode == "sensor" and self.part_length_counts <= 0:
            problems.append("tracker.part_length_counts: must be > 0 in sensor mode")
        if self.lead_counts < 0:
            problems.append("tracker.lead_counts: must be >= 0")
        if self.reject_counts - self.lead_counts <= self.camera_counts:
            problems.append(
                "tracker.reject_counts: the fire point (reject_counts - lead_counts) must be"
                " downstream of the camera (camera_counts)"
            )
        if not self.max_speed_cps > 0:
            problems.append("tracker.max_speed_cps: must be > 0")
        for name in ("jitter_counts", "time_jitter_ns", "debounce_counts", "resync_after_samples"):
            if getattr(self, name) < 0:
                problems.append(f"tracker.{name}: must be >= 0")
        for name in ("window_ns", "extrapolation_limit_ns"):
            if getattr(self, name) <= 0:
                problems.append(f"tracker.{name}: must be > 0")
        if problems:
            raise ConfigError(problems)


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
    """

    def __init__(self, cfg: TrackerConfig, bits: Literal[16, 32]) -> None:
        """Create a tracker for a ``bits``-wide counter.

        Raises:
            ValueError: ``bits`` is not 16 or 32.
        """
        self._cfg = cfg
        self._unwrapper = CounterUnwrapper(bits)
        self._speed = SpeedEstimator(cfg.window_ns)
        self._hw = 0
        self._unwrapped = 0
        self._last_t_ns: int | None = None
        self._next_id = cfg.part_id_start
        self._next_origin = 0
        self._reversing = False
        self._sensor_state = False
        self._pending: _PendingEdge | None = None
        self._last_edge: int | None = None
        self._rejected = 0
        self._last_reason: RejectionReason | None = None
        self._streak = 0
        self._bad_run = 0
        self._streak_raw = 0
        self._streak_t_ns = 0

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
    def last_t_ns(self) -> int | None:
        """``t_ns`` of the last accepted sample, or None before the first one."""
        return self._last_t_ns

    @property
    def next_part_id(self) -> int:
        """The ``part_id`` the next created part will get."""
        return self._next_id

    @property
    def rejected_samples(self) -> int:
        """How many samples were refused as bad data."""
        return self._rejected

    @property
    def last_rejection_reason(self) -> RejectionReason | None:
        """Why the latest refused sample was refused, or None if none was."""
        return self._last_reason

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
        if t_ns <= last_t:
            self._streak = 0
            refused = self._refuse(sample, "time_not_increasing", f"last_t_ns={last_t}")
            return refused + self._salvage_edges(sample)
        allowance = self._allowance(t_ns - last_t)
        step = unwrapped - self._unwrapped
        if step > allowance or step < -allowance:
            parts = self._refuse_jump(sample, step, allowance)
            return parts if parts else self._salvage_edges(sample)
        self._unwrapper.unwrap(sample.raw_count)
        return self._accept(sample, unwrapped)

    # -- internals ------------------------------------------------------------

    def _allowance(self, dt_ns: int) -> float:
        cfg = self._cfg
        return cfg.max_speed_cps * (dt_ns + cfg.time_jitter_ns) / _NS_PER_S + cfg.jitter_counts

    def _start(self, sample: EncoderSample, unwrapped: int) -> list[TrackedPart]:
        cfg = self._cfg
        self._unwrapper.unwrap(sample.raw_count)
        self._hw = self._unwrapped = unwrapped
        self._last_t_ns = sample.t_ns
        self._speed.add(sample.t_ns, unwrapped)
        if cfg.mode == "pitch":
            # Parts whose centre passed the origin before we started are unknown to us.
            k = max(0, -((cfg.first_part_count - unwrapped) // cfg.pitch_counts))
            self._next_origin = cfg.first_part_count + k * cfg.pitch_counts
            return self._pitch_parts(sample.t_ns)
        self._sensor_state = bool(sample.part_present)
        return []

    def _accept(self, sample: EncoderSample, unwrapped: int) -> list[TrackedPart]:
        cfg = self._cfg
        self._streak = self._bad_run = 0
        prev = self._unwrapped
        self._unwrapped = unwrapped
        if unwrapped > self._hw:
            self._hw = unwrapped
        self._last_t_ns = sample.t_ns
        self._speed.add(sample.t_ns, self._hw)
        deficit = self._hw - unwrapped
        if deficit > cfg.jitter_counts and not self._reversing:
            self._reversing = True
            _log.info("belt_reversed", position=self._hw, behind_counts=deficit)
        elif deficit == 0 and self._reversing:
            self._reversing = False
            _log.info("belt_reversal_recovered", position=self._hw)
        if cfg.mode == "pitch":
            return self._pitch_parts(sample.t_ns)
        return self._sensor_parts(sample, prev, unwrapped)

    def _pitch_parts(self, t_ns: int) -> list[TrackedPart]:
        parts: list[TrackedPart] = []
        while self._next_origin <= self._hw:
            parts.append(self._make_part(self._next_origin, t_ns))
            self._next_origin += self._cfg.pitch_counts
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
        if last is not None and 2 * (edge - last) < self._cfg.part_length_counts:
            _log.debug("sensor_edge_ignored", edge_count=edge, previous_edge_count=last)
            return []
        self._last_edge = edge
        return [self._make_part(edge + self._cfg.part_length_counts // 2, sample.t_ns)]

    def _latched_parts(self, sample: EncoderSample, cur: int) -> list[TrackedPart]:
        """Parts from edges the PLC latched: exact counts, none lost to a slow poll."""
        return self._edge_parts(
            sample, lambda raw: cur + self._unwrapper.signed_step(sample.raw_count, raw)
        )

    def _salvage_edges(self, sample: EncoderSample) -> list[TrackedPart]:
        """Parts from the latched edges of a refused sample.

        Only the count read with them is suspect: each edge is the PLC's own latch,
        placed from the last accepted count. An edge farther from the belt position
        than the belt can have moved is refused too (logged). Without this, a part
        whose edge came with a bad count would never be tracked — never judged.
        """
        if self._cfg.mode != "sensor" or not sample.edges or self._last_t_ns is None:
            return []
        dt_ns = max(0, sample.t_ns - self._last_t_ns)
        reach = self._allowance(dt_ns) + self._cfg.part_length_counts

        def place(raw: int) -> int | None:
            edge = self._unwrapper.peek(raw)  # from the last accepted count
            if abs(edge - self._hw) > reach:
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
                _log.warning("sensor_edge_out_of_range", edge_raw_count=raw)
                continue
            edge = place(raw)
            if edge is None:
                continue
            last = self._last_edge
            if last is not None and 2 * (edge - last) < self._cfg.part_length_counts:
                _log.debug("sensor_edge_ignored", edge_count=edge, previous_edge_count=last)
                continue
            self._last_edge = edge
            parts.append(self._make_part(edge + self._cfg.part_length_counts // 2, sample.t_ns))
        return parts

    def _make_part(self, origin: int, t_ns: int) -> TrackedPart:
        cfg = self._cfg
        part = TrackedPart(
            part_id=self._next_id,
            origin_count=origin,
            trigger_count=origin + cfg.camera_counts,
            fire_count=origin + cfg.reject_counts - cfg.lead_counts,
            reject_count=origin + cfg.reject_counts,
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
            consistent = abs(s) <= self._allowance(sample.t_ns - self._streak_t_ns)
        self._streak = self._streak + 1 if consistent else 1
        self._streak_raw, self._streak_t_ns = sample.raw_count, sample.t_ns
        limit = self._cfg.resync_after_samples
        if limit and self._streak >= limit:
            return self._resync(sample)
        reason: RejectionReason = "forward_jump" if step > 0 else "backward_jump"
        return self._refuse(sample, reason, f"step={step} counts, allowed {allowance:.1f}")

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
        self._unwrapped = anchor  # no interpolation across the gap
        return self._accept(sample, anchor)
