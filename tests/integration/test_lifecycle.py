"""Lifecycle: startup failure unwinds, SIGTERM drains and exits 0, a stall starves the watchdog."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import pytest

from drivers.camera.base import Camera
from drivers.sim.plc import SimEncoder
from models.backend import Backend, Image
from models.findings import Findings
from node.app import Node
from node.config import Config
from node.errors import CameraError, ModelError
from node.service.sdnotify import SystemdNotifier
from node.wiring import build_components, load_backend


class BrokenCamera:
    """Fault injection: a camera whose device cannot be opened."""

    async def __aenter__(self) -> Camera:
        raise CameraError("no device with serial 1234")

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        raise AssertionError("a camera that failed to open must not be closed")


class TrackedEncoder(SimEncoder):
    """The real sim encoder, recording whether it was closed."""

    closed = False

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        TrackedEncoder.closed = True
        await super().__aexit__(et, e, tb)


async def test_failing_resource_at_startup_unwinds_the_open_ones(taught_config: Config) -> None:
    """A camera that fails to open raises CameraError after the open encoder is closed."""
    components, sim = build_components(taught_config)
    assert sim is not None
    enc = TrackedEncoder(sim.world, 0.002)
    broken = dataclasses.replace(components, encoder=enc, camera=BrokenCamera())
    node = Node(taught_config, broken)
    with pytest.raises(CameraError, match="serial 1234"):
        await node.run(asyncio.Event())
    assert TrackedEncoder.closed
    assert not node.ready.is_set()


async def test_missing_template_is_a_model_error(taught_config: Config, tmp_path: Path) -> None:
    """A backend that cannot load stops startup with a ModelError naming the config key."""
    from hil.line import sim_config

    cfg = sim_config(taught_config, inspection={"classical": {"template": tmp_path / "no.npz"}})
    with pytest.raises(ModelError, match=r"inspection\.classical\.template"):
        load_backend(cfg)


def _write_config(cfg: Config, path: Path) -> None:
    t = cfg.inspection.classical.template
    path.write_text(f"""
[node]
state_dir = "{cfg.node.state_dir}"
drain_grace_s = 3.0
watchdog_stall_s = 1.0
[line]
counts_per_mm = 4.0
tracking = "sensor"
part_pitch_mm = 32.0
part_length_mm = 24.0
camera_position_mm = 100.0
reject_position_mm = 400.0
actuator_lead_mm = 6.0
[encoder.sim]
count_offset = 4294900000
[inspection.classical]
template = "{t}"
[sim]
speed_mm_s = 600.0
defect_rate = 0.2
""")


def _bind_notify_socket(tmp_path: Path) -> tuple[socket.socket, str]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    return sock, path


def _drain_datagrams(
    sock: socket.socket, until: float, stop_at: str | None = None
) -> list[tuple[float, str]]:
    got = []
    while time.monotonic() < until:
        try:
            got.append((time.monotonic(), sock.recv(4096).decode()))
        except TimeoutError:
            continue
        if got[-1][1] == stop_at:
            break
    return got


@pytest.mark.slow
def test_sigterm_drains_and_exits_zero(taught_config: Config, tmp_path: Path) -> None:
    """SIGTERM: READY then STOPPING, every tracked part decided, exit 0 with a summary."""
    cfg_path = tmp_path / "node.toml"
    _write_config(taught_config, cfg_path)
    sock, sock_path = _bind_notify_socket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": sock_path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "run", str(cfg_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        got = _drain_datagrams(sock, time.monotonic() + 20, stop_at="READY=1")
        assert any(m == "READY=1" for _, m in got), got
        time.sleep(2.0)  # parts flow
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    later = [m for _, m in _drain_datagrams(sock, time.monotonic() + 0.5)]
    sock.close()
    assert "STOPPING=1" in later
    summary = json.loads(out[out.index('{\n  "summary"') :])["summary"]
    assert summary["parts_decided"] > 0
    assert summary["undecided_at_stop"] == 0
    assert summary["parts_decided"] == summary["parts_tracked"]
    events = [json.loads(line)["event"] for line in out.splitlines() if line.startswith('{"')]
    assert "node_draining" in events and "node_stopped" in events


class HangingBackend:
    """Fault injection: a model that hangs after its first few batches until released."""

    def __init__(self, inner: Backend, hang_after: int) -> None:
        self.inner = inner
        self.name = "hanging"
        self.calls = 0
        self.hang_after = hang_after
        self.release = threading.Event()
        self.hung = threading.Event()

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        self.calls += 1
        if self.calls > self.hang_after:
            self.hung.set()
            self.release.wait(10)
        return self.inner.infer(images)


@pytest.mark.slow
async def test_watchdog_starves_while_the_pipeline_stalls(
    taught_config: Config, tmp_path: Path
) -> None:
    """WATCHDOG=1 flows while inference progresses, stops during a hang, resumes after."""
    sock, sock_path = _bind_notify_socket(tmp_path)
    components, _ = build_components(taught_config)
    hanging = HangingBackend(load_backend(taught_config), hang_after=5)
    components = dataclasses.replace(components, backend=lambda: hanging)
    notifier = SystemdNotifier({"NOTIFY_SOCKET": sock_path})
    node = Node(taught_config, components, notifier=notifier, watchdog_interval_s=0.4)
    stop = asyncio.Event()
    stall_s = taught_config.node.watchdog_stall_s

    async def scenario() -> list[tuple[float, str]]:
        await asyncio.to_thread(hanging.hung.wait, 15)
        t_hung = time.monotonic()
        got = await asyncio.to_thread(_drain_datagrams, sock, t_hung + stall_s + 2.0)
        hanging.release.set()
        got += await asyncio.to_thread(_drain_datagrams, sock, time.monotonic() + 1.5)
        stop.set()
        return [(t - t_hung, m) for t, m in got]

    with notifier:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(node.run(stop))
            timeline = await tg.create_task(scenario())
    sock.close()
    feeds = [t for t, m in timeline if m == "WATCHDOG=1"]
    # fed until the stall limit passes, then silent until the model is released
    assert not [t for t in feeds if stall_s + 0.3 < t < stall_s + 2.0], timeline
    assert any(t > stall_s + 2.0 for t in feeds), "feeding resumed after recovery"


class FlakyBackend:
    """Fault injection: a model that once breaks its contract (no findings for a batch)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = "flaky"
        self.calls = 0

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        self.calls += 1
        if self.calls == 3:
            return []  # the inspector cannot pair findings with frames: its task crashes
        return self.inner.infer(images)


@pytest.mark.slow
async def test_a_crashed_task_is_restarted_and_its_parts_fail_safe(taught_config: Config) -> None:
    """A task that crashes is logged and restarted; parts it dropped are rejected, not passed."""
    from hil.line import run_line

    report, node, _ = await run_line(taught_config, 40, backend_wrapper=FlakyBackend)
    assert node.summary.task_restarts == 1
    assert report["parts"] == 40
    assert report["missed_rejects"] == 0 and report["escapes"] == 0
    assert set(report["failsafe_reasons"]) <= {"deadline_missed", "trigger_late"}
