"""The HMI server in its own process: commands reach the node, a stuck HMI never blocks the
node, a dead HMI is restarted in the node's state, and a taken port stops the node cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.common.node import Node
from structlog.testing import capture_logs

from hil.plc_modbus import free_port
from node.config import Config
from node.hmi import HmiSettings, HmiUser, hash_password
from node.hmi.process import HmiProcess
from node.sim.hmi import MemoryResults, SimControl, sample_record
from node.state import VisionState

NODESET = Path(__file__).resolve().parents[2] / "../shared/opcua/Opc.Ua.MachineVision.NodeSet2.xml"
MV = "http://opcfoundation.org/UA/MachineVision"
ENGINEER = ("emil", "emerald-9")


def _settings(port: int, **kw: object) -> HmiSettings:
    return HmiSettings(
        endpoint=f"opc.tcp://127.0.0.1:{port}/lineside/",
        security_policies=[],
        allow_insecure_writes=True,
        users=[
            HmiUser(name=ENGINEER[0], role="engineer", password_hash=hash_password(ENGINEER[1]))
        ],
        **kw,  # type: ignore[arg-type]
    )


async def _until(pred: Callable[[], bool], within_s: float = 20.0) -> None:
    """Wait for ``pred`` about the other process (nothing to await across processes)."""
    async with asyncio.timeout(within_s):
        while not pred():  # noqa: ASYNC110 - the state lives in the HMI process
            await asyncio.sleep(0.05)


async def _read_until(node: Node, value: object, within_s: float = 10.0) -> None:
    """Read ``node`` until it holds ``value``."""
    async with asyncio.timeout(within_s):
        while await node.read_value() != value:  # noqa: ASYNC110 - polled over OPC UA
            await asyncio.sleep(0.05)


async def test_commands_and_reviews_run_in_the_node(tmp_path: Path) -> None:
    """An engineer's SelectModeAutomatic runs on the node's control (here SimControl) and the
    state it reports comes back to the panel; a review lands in the node's results; results
    published by the node reach the panel."""
    control, results = SimControl(), MemoryResults()
    hmi = HmiProcess(
        _settings(free_port(), nodeset=NODESET),
        state_dir=tmp_path,
        control=control,
        results=results,
        node_name="l1",
    )
    async with hmi:
        control.report = hmi.set_state
        hmi.set_state(VisionState.INITIALIZED)
        rec = sample_record(5)
        results.add(rec)
        hmi.publish(rec, None, {"inspected": 1})
        c = Client(hmi.endpoint_url, timeout=5)
        c.set_user(ENGINEER[0])
        c.set_password(ENGINEER[1])
        async with c:
            part = c.get_node("ns=2;s=Lineside.LastResult.PartId")
            await _read_until(part, 5)
            ns = await c.get_namespace_index(MV)
            sm = await (await c.nodes.objects.get_child("2:VisionSystem")).get_child(
                f"{ns}:VisionStateMachine"
            )
            assert await sm.call_method(f"{ns}:SelectModeAutomatic") == 0
            assert control.calls == ["select_mode_automatic"]
            state = c.get_node("ns=2;s=Lineside.Health.State")
            await _read_until(state, "Ready")
            lin = await c.nodes.objects.get_child("2:Lineside")
            await lin.call_method("2:ReviewResult", rec.result_id, "pass", "", "dust")
            assert results.reviews[rec.result_id].user == ENGINEER[0]
            with pytest.raises(ua.uaerrors.BadNotFound):
                await lin.call_method("2:ReviewResult", "nope", "pass", "", "")


async def test_a_stopped_hmi_never_blocks_the_node_and_drops_oldest(tmp_path: Path) -> None:
    """With the HMI process frozen (SIGSTOP), 5000 results are handed over without waiting for
    it (none takes longer than a thread switch or two); the oldest beyond ``queue_size`` are
    dropped and counted; the state change is kept, and once the process runs again the panel
    shows the latest result and state."""
    hmi = HmiProcess(
        _settings(free_port(), nodeset=None, queue_size=16),
        state_dir=tmp_path,
        control=SimControl(),
        results=MemoryResults(),
        node_name="l1",
    )
    async with hmi:
        assert hmi.pid is not None
        os.kill(hmi.pid, signal.SIGSTOP)
        try:
            worst = 0.0
            for i in range(5000):
                t = time.perf_counter()
                hmi.publish(sample_record(i), b"\x89PNG" + bytes(2000), {"inspected": i})
                worst = max(worst, time.perf_counter() - t)
            hmi.set_state(VisionState.INITIALIZED)
            assert worst < 0.05, f"publish took {worst * 1e3:.1f} ms"
            assert hmi.dropped >= 5000 - 16 - 200  # a few went into the pipe before it filled
        finally:
            os.kill(hmi.pid, signal.SIGCONT)
        async with Client(hmi.endpoint_url, timeout=5) as c:
            part = c.get_node("ns=2;s=Lineside.LastResult.PartId")
            state = c.get_node("ns=2;s=Lineside.Health.State")
            await _read_until(part, 4999)
            await _read_until(state, "Initialized")
        assert hmi.snapshot()["dropped"] == hmi.dropped


async def test_a_killed_hmi_is_logged_and_restarted_in_the_nodes_state(tmp_path: Path) -> None:
    """SIGKILL of the HMI process: the node logs ``hmi_process_died``, the snapshot shows it
    down, then it is restarted on the same endpoint in the node's current state and serves."""
    hmi = HmiProcess(
        _settings(free_port(), nodeset=None),
        state_dir=tmp_path,
        control=SimControl(),
        results=MemoryResults(),
        node_name="l1",
    )
    with capture_logs() as logs:
        async with hmi:
            hmi.set_state(VisionState.INITIALIZED)
            hmi.set_state(VisionState.READY)
            first = hmi.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            await _until(lambda: any(e.get("event") == "hmi_process_died" for e in logs))
            hmi.set_state(VisionState.CONTINUOUS)  # the node goes on while the HMI is down
            for i in range(50):
                hmi.publish(sample_record(i), None, {"inspected": i})
            await _until(lambda: hmi.alive and hmi.restarts == 1)
            assert hmi.pid != first
            async with Client(hmi.endpoint_url, timeout=5) as c:
                state = await c.get_node("ns=2;s=Lineside.Health.State").read_value()
                assert state == "ContinuousExecution"
                hmi.publish(sample_record(77), None, {"inspected": 77})
                part = c.get_node("ns=2;s=Lineside.LastResult.PartId")
                await _read_until(part, 77)
    died = next(e for e in logs if e.get("event") == "hmi_process_died")
    assert died["log_level"] == "error" and died["exitcode"] == -signal.SIGKILL
    assert any(e.get("event") == "hmi_process_restarted" for e in logs)
    assert hmi.snapshot()["restarts"] == 1


def test_port_in_use_stops_the_node_with_one_line_naming_hmi_endpoint(
    taught_config: Config, tmp_path: Path
) -> None:
    """``lineside run`` with the HMI port taken exits 2 with one line naming ``hmi.endpoint``
    and no traceback."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text(f"""
[node]
state_dir = "{tmp_path / "state"}"
[line]
counts_per_mm = 4.0
part_pitch_mm = 32.0
part_length_mm = 24.0
camera_position_mm = 100.0
reject_position_mm = 400.0
actuator_lead_mm = 6.0
[inspection.classical]
template = "{taught_config.inspection.classical.template}"
[hmi]
endpoint = "opc.tcp://127.0.0.1:{port}/lineside/"
nodeset = "{tmp_path / "absent.xml"}"
security_policies = []
[sim]
speed_mm_s = 320.0
""")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "node", "run", str(cfg_path), "--no-live"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        taken.close()
    assert done.returncode == 2, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("lineside: hmi.endpoint opc.tcp://127.0.0.1:")
    assert "Traceback" not in done.stderr


def test_sigterm_to_the_whole_group_stops_node_and_hmi_cleanly(
    taught_config: Config, tmp_path: Path
) -> None:
    """systemd signals every process of the service: with SIGTERM sent to the node and its
    HMI process together, the node drains and exits 0, its HMI stops with it, and no
    ``hmi_process_died`` is logged."""
    port = free_port()
    cfg_path = tmp_path / "node.toml"
    cfg_path.write_text(f"""
[node]
state_dir = "{tmp_path / "state"}"
[line]
counts_per_mm = 4.0
part_pitch_mm = 32.0
part_length_mm = 24.0
camera_position_mm = 100.0
reject_position_mm = 400.0
actuator_lead_mm = 6.0
[inspection.classical]
template = "{taught_config.inspection.classical.template}"
[hmi]
endpoint = "opc.tcp://127.0.0.1:{port}/lineside/"
nodeset = "{tmp_path / "absent.xml"}"
security_policies = []
[sim]
speed_mm_s = 320.0
""")
    proc = subprocess.Popen(
        [sys.executable, "-m", "node", "--json-logs", "run", str(cfg_path), "--no-live"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"node_started"' in line:
                break
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "hmi_process_died" not in out
    assert '"hmi_server_stopped"' in out
