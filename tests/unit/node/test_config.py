"""Config validation: typed, frozen, every problem reported with its key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import DEFAULT_CONFIG, load_config, parse_config
from node.errors import ConfigError

BROKEN = """
[node]
drain_grace_s = -1

[line]
counts_per_mm = 0
part_pitch_mm = 30
camera_position_mm = 100
reject_position_mm = 400
encoder_bits = 24

[camera]
driver = "gige"
bogus = 1

[inspection.recipe]
reject_score = "high"
"""


def test_embedded_default_is_valid() -> None:
    """configs/sim.toml, the file `make run` uses, validates."""
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.camera.driver == "sim"


def test_every_problem_is_listed_with_its_key_path(tmp_path: Path) -> None:
    """A broken file yields one problem per bad key, each naming its dotted key path."""
    path = tmp_path / "bad.toml"
    path.write_text(BROKEN)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    keys = {p.split(": ")[1] for p in info.value.problems}
    assert keys == {
        "node.drain_grace_s",
        "line.counts_per_mm",
        "line.encoder_bits",
        "line.part_length_mm",
        "camera.driver",
        "camera.bogus",
        "inspection.recipe.reject_score",
    }
    assert all(p.startswith(str(path)) for p in info.value.problems)


def test_cross_field_geometry_is_checked() -> None:
    """A reject station upstream of the camera is refused under its own key."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "line": {
                    "counts_per_mm": 4,
                    "part_pitch_mm": 30,
                    "part_length_mm": 20,
                    "camera_position_mm": 300,
                    "reject_position_mm": 100,
                }
            }
        )
    assert info.value.problems == [
        "<config>: line.reject_position_mm: must be downstream of line.camera_position_mm (300 mm)"
    ]


def test_cross_field_errors_are_reported_beside_other_errors_of_their_section() -> None:
    """A camera after the reject station is still reported, under its exact key, when the
    same [line] has another error — every problem at once."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "line": {
                    "counts_per_mm": 4,
                    "part_pitch_mm": 30,
                    "part_length_mm": 40,
                    "camera_position_mm": 300,
                    "reject_position_mm": 100,
                    "jitter_mm": "lots",
                }
            }
        )
    keys = sorted(p.split(": ")[1] for p in info.value.problems)
    assert keys == ["line.jitter_mm", "line.part_length_mm", "line.reject_position_mm"]


def test_a_trigger_lead_must_stay_inside_the_trigger_tolerance() -> None:
    """A trigger aimed as far ahead as the tolerance allows off the centre would be refused
    even when sent on time: camera.trigger_lead_mm is refused under its own key."""
    data = load_config(DEFAULT_CONFIG).model_dump(mode="python")
    data["camera"]["trigger_tolerance_mm"] = 8.0
    data["camera"]["trigger_lead_mm"] = 8.0
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.toml")
    assert info.value.problems == [
        "x.toml: camera.trigger_lead_mm: must be less than camera.trigger_tolerance_mm (8 mm): "
        "a trigger sent on time would already be refused as off the camera"
    ]
    data["camera"]["trigger_lead_mm"] = 4.0
    assert parse_config(data, "x.toml").camera.trigger_lead_mm == 4.0


def test_a_sim_belt_over_the_max_speed_is_refused() -> None:
    """A simulated belt faster than line.max_speed_mm_s would be refused sample by sample:
    check-config says so under sim.speed_mm_s (and for a profile step)."""
    data = load_config(DEFAULT_CONFIG).model_dump(mode="python")
    data["line"]["max_speed_mm_s"] = 300.0
    data["sim"]["speed_mm_s"] = 640.0
    data["sim"]["speed_profile"] = [(0.0, 200.0), (5.0, 900.0)]
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.toml")
    assert [p.split(": ")[1] for p in info.value.problems] == [
        "sim.speed_mm_s",
        "sim.speed_profile",
    ]
    data["encoder"]["driver"] = "plc"  # behind a PLC the sim belt is the rig's, not the node's
    data["plc"] = {"driver": "modbus", "modbus": {"port": 1502}}
    assert parse_config(data, "x.toml").sim.speed_mm_s == 640.0


def test_bad_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    """Unparsable TOML and unreadable files give a ConfigError, not a traceback."""
    bad = tmp_path / "x.toml"
    bad.write_text("[line\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_config_is_frozen() -> None:
    """Validated config objects cannot be changed at run time."""
    cfg = load_config(DEFAULT_CONFIG)
    with pytest.raises(ValueError, match="frozen"):
        cfg.line.counts_per_mm = 1.0  # type: ignore[misc]


def test_check_config_cli_lists_errors_and_exits_nonzero(tmp_path: Path) -> None:
    """`lineside check-config` prints every problem with its key path and exits 2."""
    path = tmp_path / "bad.toml"
    path.write_text(BROKEN)
    proc = subprocess.run(
        [sys.executable, "-m", "node", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "7 problem(s)" in proc.stderr
    for key in ("line.counts_per_mm", "camera.bogus", "inspection.recipe.reject_score"):
        assert key in proc.stderr
    ok = subprocess.run(
        [sys.executable, "-m", "node", "check-config", str(DEFAULT_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr


def test_plc_edges_need_their_plc_section() -> None:
    """``encoder.driver = "plc"`` without ``[plc]``, and ``[plc]`` naming a driver without its
    table, are both refused with the key path."""
    data = load_config(DEFAULT_CONFIG).model_dump(mode="python")
    data["encoder"]["driver"] = "plc"
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.toml")
    assert any("plc" in p and "encoder.driver" in p for p in info.value.problems)
    data["plc"] = {"driver": "opcua", "modbus": {"port": 1502}}
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.toml")
    assert any("plc.opcua: needed by plc.driver = 'opcua'" in p for p in info.value.problems)
    data["plc"] = {"driver": "modbus", "modbus": {"port": 1502, "reject_mode": "plc_tracked"}}
    cfg = parse_config(data, "x.toml")
    assert cfg.plc is not None and cfg.plc.reject_mode == "plc_tracked"


def test_model_trust_keys_are_validated_by_key() -> None:
    """``inspection.model.sha256`` must be a sha256 hex digest, and
    ``require_signature = true`` needs at least one trusted key; the defaults trust any
    intact package."""
    cfg = load_config(DEFAULT_CONFIG)
    m = cfg.inspection.model
    assert m.sha256 is None and m.trusted_keys == () and not m.require_signature
    data = cfg.model_dump(mode="python")
    data["inspection"]["model"].update(sha256="DC81", require_signature=True)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "x.toml")
    assert any(p.startswith("x.toml: inspection.model.sha256: ") for p in info.value.problems)
    assert any(
        p.startswith("x.toml: inspection.model.trusted_keys: empty, but")
        for p in info.value.problems
    )
    data["inspection"]["model"].update(sha256="a" * 64, trusted_keys=["qa.pub"])
    model = parse_config(data, "x.toml").inspection.model
    assert model.sha256 == "a" * 64 and model.trusted_keys == (Path("qa.pub"),)


def test_check_config_reads_the_painted_zone_image(tmp_path: Path) -> None:
    """A painted zone image that is missing is named by check-config (exit 2), before a node
    would fail to start on it."""
    text = DEFAULT_CONFIG.read_text().replace(
        '[[inspection.recipe.zones]]\nname = "rim"',
        f'zone_image = "{tmp_path / "nowhere.png"}"\n\n[[inspection.recipe.zones]]\n'
        'name = "paint"\ncolour = "#ff0000"\n\n[[inspection.recipe.zones]]\nname = "rim"',
        1,
    )
    path = tmp_path / "zones.toml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "node", "check-config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "inspection.recipe.zone_image: cannot read" in proc.stderr
    assert "Traceback" not in proc.stderr
