"""The physical world behind the simulated drivers: a belt, the parts on it, an actuator.

The sim camera, sim encoder and sim reject output all read one ``SimWorld`` so
they agree on where every part is at every instant. Positions are millimetres
along the belt, downstream positive, measured from the origin line (the
part-present sensor). Part ``k`` has its centre on the origin line when the
belt's displacement equals ``part.cross_mm``; at any time its centre is at
``displacement - cross_mm``.

What a part *looks like* is not known here (drivers import nothing of ours):
each part carries an opaque ``payload`` and the camera is handed a render
function by whoever builds the world.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SimPart:
    """One part on the simulated belt; ``payload`` is whatever the renderer needs."""

    index: int
    cross_mm: float
    length_mm: float
    payload: object


@dataclass(frozen=True, slots=True)
class ActuatorHit:
    """Where the simulated actuator struck, and which part it struck.

    ``error_mm`` is the struck part's centre minus the reject station position
    at the moment of the strike (positive: the part was already past it);
    ``part_index`` is None when no part was under the actuator.
    """

    commanded_part_id: int
    part_index: int | None
    error_mm: float
    t_ns: int


@dataclass(slots=True)
class _Segment:
    t0_ns: int
    d0_mm: float
    speed_mm_s: float
    accel_mm_s2: float = 0.0
    """Signed: the speed at ``t`` into the segment is ``speed_mm_s + accel_mm_s2 * t``."""

    def speed_after(self, dt_s: float) -> float:
        return self.speed_mm_s + self.accel_mm_s2 * dt_s

    def travel(self, dt_s: float) -> float:
        return self.speed_mm_s * dt_s + 0.5 * self.accel_mm_s2 * dt_s * dt_s

    def time_to(self, dist_mm: float) -> float | None:
        """Seconds into the segment until it has moved ``dist_mm`` (> 0), or None if its
        speed never gets it there."""
        v, a = self.speed_mm_s, self.accel_mm_s2
        if a == 0.0:
            return dist_mm / v if v > 0 else None
        disc = v * v + 2.0 * a * dist_mm
        if disc < 0:  # decelerating: stops short
            return None
        return (-v + math.sqrt(disc)) / a


def _state_at(seg: _Segment, t_ns: int) -> tuple[float, float]:
    """Displacement and speed at ``t_ns`` (not before the segment's start) by ``seg``."""
    dt = max(0, t_ns - seg.t0_ns) / 1e9
    return seg.d0_mm + seg.travel(dt), seg.speed_after(dt)


@dataclass
class SimWorld:
    """Belt kinematics and the parts on it.

    ``speed_profile`` is a sequence of ``(t_s, speed_mm_s)`` steps relative to
    ``start()``; the belt runs at the first speed from the start. At each later step's
    time the drive ramps to the new speed at ``accel_mm_s2`` (0: at once, a step no
    real belt makes — a 1.2 m/s belt does not stop in a millisecond).
    ``part_factory(index)`` makes the payload of part ``index``; parts are made
    lazily as the belt brings them upstream of the origin line.
    """

    counts_per_mm: float
    encoder_bits: int
    pitch_mm: float
    part_length_mm: float
    speed_profile: Sequence[tuple[float, float]]
    part_factory: Callable[[int], object]
    placement_jitter_mm: Callable[[int], float] = field(default=lambda i: 0.0)
    first_part_mm: float = 0.0
    count_offset: int = 0
    clock_ns: Callable[[], int] = time.monotonic_ns
    reject_position_mm: float = 0.0
    actuator_lead_mm: float = 0.0
    max_parts: int | None = None
    accel_mm_s2: float = 0.0
    keep_parts: int = 4096
    """Without ``max_parts`` — an endless belt, as the node's own sim line runs for days —
    only the newest ``keep_parts`` parts and actuator hits are kept (older parts are far
    past the reject station); a run with ``max_parts`` keeps them all for scoring."""

    def __post_init__(self) -> None:
        if not self.speed_profile:
            raise ValueError("speed_profile needs at least one (t_s, speed_mm_s) step")
        self._segments: list[_Segment] = []
        self._parts: list[SimPart] = []
        self._base = 0
        """The index of ``_parts[0]``: older parts were forgotten (see ``keep_parts``)."""
        self._max_jitter_mm = 0.0
        """The largest |placement jitter| so far: part k's centre is within it of nominal."""
        self._lock = threading.Lock()
        self.hits: list[ActuatorHit] = []

    # -- kinematics --------------------------------------------------------
    def start(self, t0_ns: int | None = None) -> None:
        """Start the belt's clock; displacement is 0 at ``t0_ns``."""
        t0 = self.clock_ns() if t0_ns is None else t0_ns
        if self.accel_mm_s2 < 0:
            raise ValueError("accel_mm_s2 must not be negative")
        steps = sorted(self.speed_profile)
        segs: list[_Segment] = [_Segment(t0 + int(steps[0][0] * 1e9), 0.0, float(steps[0][1]))]
        for t_s, v in steps[1:]:
            t_ns = t0 + int(t_s * 1e9)
            # a step that comes while the previous ramp still runs cuts it short
            segs = [seg for seg in segs if seg.t0_ns < t_ns] or segs[:1]
            d, speed = _state_at(segs[-1], t_ns)
            if self.accel_mm_s2 == 0.0 or speed == v:
                segs.append(_Segment(t_ns, d, float(v)))
                continue
            a = math.copysign(self.accel_mm_s2, v - speed)
            segs.append(_Segment(t_ns, d, speed, a))
            ramp_ns = t_ns + int(abs(v - speed) / self.accel_mm_s2 * 1e9)
            segs.append(_Segment(ramp_ns, _state_at(segs[-1], ramp_ns)[0], float(v)))
        self._segments = segs
        self._seg_starts = [s.t0_ns for s in segs]

    def set_speed(self, t_ns: int, speed_mm_s: float) -> None:
        """Run the belt at ``speed_mm_s`` from ``t_ns`` on, at once (no ramp: a fault
        injection, or a PLC's hard stop); the travel before is kept.

        Steps of the profile after ``t_ns`` are dropped. Raises ``RuntimeError``
        before ``start()``.
        """
        d = self.displacement_mm(t_ns)
        segs = [s for s in self._segments if s.t0_ns < t_ns]
        segs.append(_Segment(t_ns, d, float(speed_mm_s)))
        self._segments = segs
        self._seg_starts = [s.t0_ns for s in segs]

    @property
    def started(self) -> bool:
        """True once ``start()`` has run."""
        return bool(self._segments)

    def displacement_mm(self, t_ns: int) -> float:
        """How far the belt has moved since ``start()``, at monotonic time ``t_ns``."""
        if not self._segments:
            raise RuntimeError("SimWorld.start() has not been called")
        i = max(0, bisect.bisect_right(self._seg_starts, t_ns) - 1)
        return _state_at(self._segments[i], t_ns)[0]

    def time_at(self, displacement_mm: float) -> int | None:
        """The first monotonic time the belt has moved ``displacement_mm`` (None if, by the
        speed profile as it stands, it never does)."""
        for i, seg in enumerate(self._segments):
            end = self._segments[i + 1].d0_mm if i + 1 < len(self._segments) else math.inf
            if displacement_mm <= seg.d0_mm:
                return seg.t0_ns
            if displacement_mm <= end:
                dt = seg.time_to(displacement_mm - seg.d0_mm)
                if dt is not None:
                    return seg.t0_ns + math.ceil(dt * 1e9)
        return None

    def speed_mm_s(self, t_ns: int) -> float:
        """Belt speed at ``t_ns``."""
        i = max(0, bisect.bisect_right(self._seg_starts, t_ns) - 1)
        return _state_at(self._segments[i], t_ns)[1]

    def raw_count(self, t_ns: int) -> int:
        """The PLC's counter at ``t_ns``: wraps at ``2**encoder_bits``."""
        counts = int(self.displacement_mm(t_ns) * self.counts_per_mm) + self.count_offset
        return counts % (1 << self.encoder_bits)

    # -- parts ---------------------------------------------------------------
    def _ensure_parts(self, upto_cross_mm: float) -> None:
        with self._lock:
            while True:
                k = self._base + len(self._parts)
                if self.max_parts is not None and k >= self.max_parts:
                    return
                nominal = self.first_part_mm + k * self.pitch_mm
                if nominal - self.pitch_mm > upto_cross_mm:
                    return
                jitter = self.placement_jitter_mm(k)
                self._max_jitter_mm = max(self._max_jitter_mm, abs(jitter))
                cross = nominal + jitter
                self._parts.append(SimPart(k, cross, self.part_length_mm, self.part_factory(k)))
                if self.max_parts is None and len(self._parts) >= 2 * self.keep_parts:
                    drop = len(self._parts) - self.keep_parts
                    del self._parts[:drop]
                    self._base += drop

    def _crossing(self, lo_mm: float, hi_mm: float) -> list[SimPart]:
        """Parts whose crossing point (``cross_mm``) is in [lo_mm, hi_mm]: found by index from
        the nominal pitch, so a long run's lookups do not grow with the parts made."""
        with self._lock:
            j = self._max_jitter_mm
            first = max(0, math.floor((lo_mm - j - self.first_part_mm) / self.pitch_mm))
            last = math.ceil((hi_mm + j - self.first_part_mm) / self.pitch_mm)
            base = self._base
            window = self._parts[max(0, first - base) : max(0, first - base, last + 1 - base)]
        return [p for p in window if lo_mm <= p.cross_mm <= hi_mm]

    def parts_near(self, position_mm: float, t_ns: int, radius_mm: float) -> list[SimPart]:
        """Parts whose centre is within ``radius_mm`` of ``position_mm`` at ``t_ns``."""
        d = self.displacement_mm(t_ns)
        self._ensure_parts(d - position_mm + radius_mm)
        return self._crossing(d - position_mm - radius_mm, d - position_mm + radius_mm)

    def parts_beyond(self, position_mm: float, t_ns: int) -> list[SimPart]:
        """Every part whose centre is downstream of ``position_mm`` at ``t_ns``, in belt
        order — made first if nothing has asked for them yet (the belt carried them anyway)."""
        d = self.displacement_mm(t_ns)
        self._ensure_parts(d - position_mm)
        limit = d - position_mm
        with self._lock:
            j = self._max_jitter_mm
            sure = max(0, math.floor((limit - j - self.first_part_mm) / self.pitch_mm))
            sure = max(0, sure - self._base)
            parts = self._parts[:sure]  # every part up to here is past, jitter or not
            rest = self._parts[sure:]
        return parts + [p for p in rest if p.cross_mm < limit]

    def part_position_mm(self, part: SimPart, t_ns: int) -> float:
        """Where ``part``'s centre is at ``t_ns``."""
        return self.displacement_mm(t_ns) - part.cross_mm

    def edges_between(self, t0_ns: int, t1_ns: int) -> tuple[int, ...]:
        """Raw counter values at which a part's leading edge reached the sensor in (t0, t1].

        This is what a PLC's capture input latches: exact, however slowly it is polled.
        """
        d0, d1 = self.displacement_mm(t0_ns), self.displacement_mm(t1_ns)
        if d1 <= d0:
            return ()
        self._ensure_parts(d1 + self.part_length_mm)
        half = self.part_length_mm / 2
        modulus = 1 << self.encoder_bits
        out = []
        for p in self._crossing(d0 - half, d1 + half):
            lead = p.cross_mm - p.length_mm / 2
            if d0 < lead <= d1:
                out.append((int(lead * self.counts_per_mm) + self.count_offset) % modulus)
        return tuple(out)

    def part_present(self, t_ns: int) -> bool:
        """The part-present sensor at the origin line: true while a part covers it."""
        return bool(self.parts_near(0.0, t_ns, self.part_length_mm / 2))

    @property
    def parts(self) -> list[SimPart]:
        """Every part made so far (that is kept: see ``keep_parts``), in belt order."""
        with self._lock:
            return list(self._parts)

    def part(self, index: int) -> SimPart | None:
        """Part ``index``, or None if it was not made yet or is forgotten."""
        with self._lock:
            i = index - self._base
            return self._parts[i] if 0 <= i < len(self._parts) else None

    # -- actuator ----------------------------------------------------------------
    def strike(self, commanded_part_id: int, t_ns: int) -> ActuatorHit:
        """Record the actuator started at ``t_ns``; it acts ``actuator_lead_mm`` later.

        The struck part is the one whose body lies under the reject station when
        the actuator acts.
        """
        acts_at_d = self.displacement_mm(t_ns) + self.actuator_lead_mm
        self._ensure_parts(acts_at_d - self.reject_position_mm + self.part_length_mm)
        at = acts_at_d - self.reject_position_mm
        parts = self._crossing(at - self.part_length_mm, at + self.part_length_mm)
        best: SimPart | None = None
        best_err = 0.0
        for p in parts:
            err = acts_at_d - p.cross_mm - self.reject_position_mm
            if abs(err) <= p.length_mm / 2 and (best is None or abs(err) < abs(best_err)):
                best, best_err = p, err
        hit = ActuatorHit(commanded_part_id, None if best is None else best.index, best_err, t_ns)
        with self._lock:
            self.hits.append(hit)
            if self.max_parts is None and len(self.hits) >= 2 * self.keep_parts:
                del self.hits[: len(self.hits) - self.keep_parts]
        return hit
