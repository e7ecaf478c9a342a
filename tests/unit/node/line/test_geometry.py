"""The line in counts: one conversion from millimetres, and every station of a part."""

from __future__ import annotations

import pytest

from node.config import parse_config
from node.errors import ConfigError
from node.line.geometry import LineGeometry

LINE = {
    "counts_per_mm": 4,
    "part_pitch_mm": 30,
    "part_length_mm": 28,
    "camera_position_mm": 100,
    "reject_position_mm": 400.1,
    "actuator_lead_mm": 6,
}


def test_geometry_converts_millimetres_to_counts() -> None:
    """Positions in mm become counts with counts_per_mm, rounded."""
    cfg = parse_config(
        {
            "line": {
                "counts_per_mm": 4,
                "part_pitch_mm": 30,
                "part_length_mm": 28,
                "camera_position_mm": 100,
                "reject_position_mm": 400.1,
                "actuator_lead_mm": 6,
            }
        }
    )
    g = LineGeometry.from_config(cfg)
    assert (g.pitch_counts, g.camera_counts, g.reject_counts, g.lead_counts) == (120, 400, 1600, 24)


def test_stations_of_a_part_follow_the_geometry() -> None:
    """Trigger at the camera, fire at station − lead, decide pulse_arm_ms of top speed before."""
    cfg = parse_config({"line": {**LINE, "max_speed_mm_s": 1000}, "node": {"pulse_arm_ms": 10}})
    g = LineGeometry.from_config(cfg)
    assert g.arm_counts == 40  # 10 ms at 1000 mm/s × 4 counts/mm
    at = g.stations(5000)
    assert at.trigger_count == 5400
    assert at.fire_count == 5000 + 1600 - 24 == 5000 + g.fire_offset_counts
    assert at.reject_count == 6600
    assert at.decide_count == at.fire_count - 40


def test_decision_point_never_precedes_the_trigger() -> None:
    """With a short camera-to-fire travel the verdict is due one count after the trigger."""
    g = LineGeometry(camera_counts=100, reject_counts=130, max_speed_cps=1e4, arm_counts=500)
    at = g.stations(0)
    assert at.decide_count == at.trigger_count + 1


def test_a_resolution_that_rounds_the_fire_point_onto_the_camera_is_refused() -> None:
    """A counts_per_mm so coarse that the fire point rounds onto the camera is a config error."""
    with pytest.raises(ConfigError, match="counts_per_mm"):
        LineGeometry(camera_counts=10, reject_counts=12, lead_counts=2, max_speed_cps=100.0)
