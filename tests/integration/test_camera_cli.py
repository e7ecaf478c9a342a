"""`lineside cameras`, `lineside grab` and `lineside run` with the GigE Vision/GenTL examples."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from drivers.sim.fakegv import FakeGvCamera
from node.config import Config

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_camera() -> Iterator[FakeGvCamera]:
    """Aravis' fake GigE Vision camera on 127.0.0.1, killed at teardown."""
    with FakeGvCamera("127.0.0.1") as fake:
        yield fake


def lineside(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def test_cameras_lists_the_fake_camera_and_viky(fake_camera: FakeGvCamera) -> None:
    """`lineside cameras` lists the fake GigE camera and viky's three devices."""
    proc = lineside("cameras", "--address", "127.0.0.1", "--viky")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.startswith("aravis") and "127.0.0.1" in line for line in lines)
    assert sum(line.startswith("harvesters") and "Viky" in line for line in lines) == 3


def test_grab_saves_one_triggered_frame(fake_camera: FakeGvCamera, tmp_path: Path) -> None:
    """`lineside grab configs/aravis.toml` writes the frame at the configured size."""
    out = tmp_path / "frame.png"
    proc = lineside("grab", "configs/aravis.toml", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    with Image.open(out) as img:
        assert img.size == (384, 320) and img.mode == "L"


def test_grab_without_a_camera_is_a_camera_error(tmp_path: Path) -> None:
    """With no camera at the address, grab exits 3 with a message naming the driver."""
    proc = lineside("grab", "configs/aravis.toml", "--out", str(tmp_path / "x.png"), timeout=90)
    assert proc.returncode == 3
    assert "camera (aravis)" in proc.stderr


def _run_briefly(config: Path, taught: Config, seconds: float) -> dict[str, object]:
    text = config.read_text().replace(
        'template = "state/sim-template.npz"',
        f'template = "{taught.inspection.classical.template}"',
    )
    cfg = REPO / "state" / f"test-{config.name}"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ},
    )
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    cfg.unlink()
    assert proc.returncode == 0, err
    return dict(json.loads(out[out.index('{\n  "summary"') :])["summary"])


@pytest.mark.parametrize("config", ["configs/aravis.toml", "configs/harvesters.toml"])
def test_node_runs_with_each_camera_example(
    config: str, taught_config: Config, fake_camera: FakeGvCamera
) -> None:
    """The node runs on each driver's example config; parts it cannot see fail safe."""
    summary = _run_briefly(REPO / config, taught_config, 6.0)
    assert summary["parts_decided"] == summary["parts_tracked"] > 0
    # the example cameras show test patterns, not the simulated parts: never a pass
    assert summary["fail_safe"] == summary["parts_decided"]
