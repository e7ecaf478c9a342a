"""The line in encoder counts: where each station is, measured from the origin line.

The config speaks millimetres (``[line]``); everything on the part's path
speaks counts. :meth:`LineGeometry.from_config` is the one conversion, and
the stations a part passes (camera, decision point, fire point, reject
station) are computed here only — by the tracker for every part it creates,
and by the HIL rig for the PLC's shift register.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from node.errors import ConfigError

if TYPE_CHECKING:
    from node.config import Config


@dataclass(frozen=True, slots=True, kw_only=True)
class LineGeometry:
    """The line's stations and limits in encoder counts (positions from the origin line).

    The origin line is the part-present sensor (sensor tracking) or a virtual
    line where part ``k``'s centre is at ``first_part_count + k * pitch_counts``
    (pitch tracking).

    Raises:
        ConfigError: the counts are degenerate (a ``counts_per_mm`` too coarse for
            the distances in millimetres), listing every problem at once.
    """

    camera_counts: int
    """Origin → camera."""
    reject_counts: int
    """Origin → reject station."""
    lead_counts: int = 0
    """Actuator lead: the pulse starts this far before the part's centre reaches the station."""
    max_speed_cps: float
    """Fastest plausible belt in counts/s."""
    pitch_counts: int = 0
    """Pitch tracking: distance between part centres."""
    first_part_count: int = 0
    """Pitch tracking: count at which part 0's centre is at the origin line."""
    part_length_counts: int = 0
    """Part length along the belt (sensor tracking: leading edge → centre is half of it)."""
    pulse_counts: int = 1
    """Reject pulse width."""
    jitter_counts: int = 0
    """Backward moves up to this many counts are vibration, not a reversal."""
    arm_counts: int = 0
    """The verdict is final this far (at ``max_speed_cps``) before the fire point, so the
    pulse can be armed on the timing thread in time (``node.pulse_arm_ms``)."""

    def __post_init__(self) -> None:
        problems = []
        if self.fire_offset_counts <= self.camera_counts:
            problems.append(
                "line: the fire point (reject station − actuator lead) is not downstream of "
                "the camera once converted to counts (line.counts_per_mm too coarse?)"
            )
        if not self.max_speed_cps > 0:
            problems.append("line.max_speed_mm_s: must be > 0")
        for name in ("lead_counts", "jitter_counts", "arm_counts", "pitch_counts"):
            if getattr(self, name) < 0:
                problems.append(f"line: {name} must be >= 0")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_config(cls, cfg: Config) -> LineGeometry:
        """Convert ``cfg.line`` (mm) to counts with ``line.counts_per_mm``, rounded.

        ``arm_counts`` is ``node.pulse_arm_ms`` of travel at ``line.max_speed_mm_s``.
        Raises ``ConfigError`` (see the class).
        """
        line = cfg.line

        def c(mm: float) -> int:
            return round(mm * line.counts_per_mm)

        max_speed_cps = line.max_speed_mm_s * line.counts_per_mm
        return cls(
            pitch_counts=c(line.part_pitch_mm),
            part_length_counts=c(line.part_length_mm),
            first_part_count=c(line.first_part_mm),
            camera_counts=c(line.camera_position_mm),
            reject_counts=c(line.reject_position_mm),
            lead_counts=c(line.actuator_lead_mm),
            pulse_counts=max(1, c(line.pulse_width_mm)),
            jitter_counts=c(line.jitter_mm),
            max_speed_cps=max_speed_cps,
            arm_counts=round(max_speed_cps * cfg.node.pulse_arm_ms / 1000),
        )

    @property
    def fire_offset_counts(self) -> int:
        """Origin → fire point (reject station − actuator lead): where the pulse starts.

        A PLC-tracked shift register adds exactly this to a result's origin count.
        """
        return self.reject_counts - self.lead_counts

    def stations(self, origin_count: int) -> Stations:
        """The counts at which a part whose centre crosses the origin at ``origin_count``
        reaches each station."""
        trigger = origin_count + self.camera_counts
        fire = origin_count + self.fire_offset_counts
        return Stations(
            trigger_count=trigger,
            decide_count=max(trigger + 1, fire - self.arm_counts),
            fire_count=fire,
            reject_count=origin_count + self.reject_counts,
        )


@dataclass(frozen=True, slots=True)
class Stations:
    """Where one part meets each station, in unwrapped counts."""

    trigger_count: int
    """Centre at the camera: trigger."""
    decide_count: int
    """The verdict is due: a part without one becomes a fail-safe reject here."""
    fire_count: int
    """The reject pulse must start here."""
    reject_count: int
    """Centre at the reject station."""
