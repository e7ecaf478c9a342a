"""The whole node behind the PLC emulators, with its PLC link built from the config.

Each emulator runs in its own process and takes its counter from the same
simulated belt the sim camera renders; the node reads the count and part-present
edges over the transport and fires rejects in both modes. These tests prove the
rejects strike the right parts; timing precision is measured by ``bench/plc.py``.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from hil.line import sim_config
from hil.plc_modbus import free_port
from hil.plc_rig import PlcRig, Transport, plc_config, run_on_emulator, run_plc_line
from models.backend import Backend
from models.synth import render_part
from node.config import Config
from node.errors import ModelError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("mode", ["node_timed", "plc_tracked"])
async def test_node_over_modbus_rejects_on_target(taught_config: Config, mode: str) -> None:
    """The node over Modbus: 200 parts, 30% defective; every reject strikes its own part.

    The belt runs at 400 mm/s: this test proves the rejects land on their parts through
    the real transport in one test process beside the rest of the suite; timing precision
    at 1 and 3 m/s is measured by ``bench/plc.py``.
    """
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 5, "speed_mm_s": 400.0})
    report, rig = await run_plc_line(cfg, 200, transport="modbus", mode=mode)  # type: ignore[arg-type]
    assert report["parts"] == 200
    assert report["missed_rejects"] == 0, report
    assert report["wrong_part_hits"] == 0
    assert report["reject_fire_failures"] == 0
    assert report["strike_error"]["n"] > 30
    if mode == "plc_tracked":
        # exact in counts: within the one-count quantisation of the PLC counter
        assert report["strike_error"]["max_abs_mm"] <= 1 / cfg.line.counts_per_mm + 1e-6
        assert report["plc_program"]["late_results"] == 0
    assert rig.node.status()["plc"]["state"] == "closed"


@pytest.mark.parametrize("mode", ["node_timed", "plc_tracked"])
async def test_node_over_opcua_rejects_on_target(taught_config: Config, mode: str) -> None:
    """The node over OPC UA: 200 parts, 30% defective; every reject strikes its own part.

    A node-timed pulse over OPC UA is a Write whose round trip on this loopback varies by
    tens of milliseconds when both processes share two busy cores, so that mode runs the
    belt at 240 mm/s (a 24 mm part is under the actuator for 100 ms).
    """
    speed = 240.0 if mode == "node_timed" else 480.0
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 6, "speed_mm_s": speed})
    report, rig = await run_plc_line(
        cfg,
        200,
        transport="opcua",
        mode=mode,  # type: ignore[arg-type]
    )
    assert report["parts"] == 200
    assert report["missed_rejects"] == 0, report
    assert report["wrong_part_hits"] == 0
    assert report["reject_fire_failures"] == 0
    if mode == "plc_tracked":
        assert report["strike_error"]["max_abs_mm"] <= 1 / cfg.line.counts_per_mm + 1e-6
        assert report["plc_program"]["late_results"] == 0
    status = rig.node.status()["plc"]
    assert status["state"] == "closed" and status["losses"] == 0


async def test_a_node_that_fails_at_start_leaves_no_emulator_behind(
    taught_config: Config,
) -> None:
    """The rig starts the PLC emulator while the node starts (the node opens its PLC link
    once the emulator serves): a node whose model fails to load before that raises its
    error, and the emulator, never waited for, is shut down all the same."""

    def broken(_: Backend) -> Backend:
        raise ModelError("model: the package cannot be loaded")

    node_cfg = plc_config(taught_config, "modbus", "node_timed", free_port())
    assert node_cfg.plc is not None and node_cfg.plc.modbus is not None
    with pytest.raises(ExceptionGroup) as failed:  # from the rig's task group
        await run_on_emulator(
            node_cfg, 10, port=node_cfg.plc.modbus.port, timeout_s=30, backend_wrapper=broken
        )
    assert failed.group_contains(ModelError, match="cannot be loaded")
    assert not [p.name for p in multiprocessing.active_children() if "emulator" in p.name]


# -- link loss and bad data ----------------------------------------------------------


async def _until(check: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``check`` every 20 ms for at most ``timeout_s``; whether it became true."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _unrecorded_escapes(rig: PlcRig, until_ns: int) -> list[int]:
    """Defective parts that passed the reject station by ``until_ns`` unstruck with no record.

    A part counts as recorded when the node published it as a reject it could not
    deliver (``not_fired``: logged with its part id and counted). Every other
    defective part must have been struck, by the node's command or the PLC's fail-safe.
    """
    world = rig.sim.world
    line = rig.cfg.line
    travelled = world.displacement_mm(until_ns)
    world.parts_near(0.0, until_ns, 1.0)  # make every part that has entered the belt
    struck = {h.part_index for h in world.hits if h.part_index is not None}
    seen = rig.sim.camera.rendered
    not_fired = {
        seen[pid] for pid, r in rig.results.items() if r.action == "not_fired" and seen.get(pid)
    }
    mm_per_px = rig.cfg.camera.sim.mm_per_px
    out = []
    for part in world.parts:
        passed = part.cross_mm + line.reject_position_mm + line.part_length_mm < travelled
        if not passed or part.index in struck or part.index in not_fired:
            continue
        spec = rig.sim.spec(part.index)
        assert spec is not None
        truth = render_part(spec, mm_per_px).truth if spec.defect is not None else None
        if truth is not None and truth.visible:
            out.append(part.index)
    return out


@pytest.mark.parametrize(
    ("transport", "mode"), [("modbus", "node_timed"), ("opcua", "plc_tracked")]
)
async def test_link_loss_mid_run_fails_safe_and_recovers(
    taught_config: Config, transport: Transport, mode: str
) -> None:
    """The PLC's server restarts mid-run (2 s outage): the node's status shows the link lost,
    then up again; the PLC saw the heartbeat stop and rejected every part in flight; no
    defective part passed the reject station unstruck without a not_fired record; the
    edges the PLC's latch overwrote meanwhile are counted as parts the node never saw."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.3, "seed": 7, "speed_mm_s": 240.0})
    seen: dict[str, Any] = {}

    async def outage(rig: PlcRig) -> None:
        def plc_state() -> str:
            return str(rig.node.status()["plc"]["state"])

        await asyncio.sleep(2.5)
        assert plc_state() == "up"
        await rig.emulator.call("stop_server")
        t_drop = time.monotonic()
        seen["down"] = await _until(lambda: plc_state() == "down", 8.0)
        seen["down_after_s"] = time.monotonic() - t_drop
        await asyncio.sleep(0.1)
        seen["down_status"] = rig.node.status()
        await asyncio.sleep(max(0.0, 2.0 - (time.monotonic() - t_drop)))
        await rig.emulator.call("start_server")
        seen["up"] = await _until(lambda: plc_state() == "up", 10.0)
        seen["status"] = rig.node.status()["plc"]
        await asyncio.sleep(3.0)  # parts after the outage are inspected and acted on again
        seen["stop_ns"] = time.monotonic_ns()
        rig.stop.set()

    report, rig = await run_plc_line(
        cfg,
        400,
        transport=transport,
        mode=mode,  # type: ignore[arg-type]
        during=outage,
        # A PLC covers every part only if it declares the node lost before a part that
        # passed the sensor after the last heartbeat reaches its fire point (1.6 s here).
        program_overrides={"heartbeat_timeout_s": 0.9},
        driver_settings={"backoff": {"initial_s": 0.1, "max_s": 0.5}},
    )
    assert seen["down"] and seen["up"], seen
    # the link down is a fault: Error, not healthy, the reason named
    down = seen["down_status"]
    assert down["state"] == "Error" and not down["healthy"], down
    assert "PLC link down" in down["faults"]["plc"]
    assert seen["status"]["losses"] >= 1 and seen["status"]["state"] == "up"
    assert report["plc"]["connects"] >= 2
    assert report["plc_program"]["heartbeat_losses"] >= 1
    assert report["plc_program"]["failsafe_strikes"] >= 1
    assert _unrecorded_escapes(rig, seen["stop_ns"]) == []
    # every reject the node could not hand over is on record as such
    assert report["reject_fire_failures"] == sum(
        r.action == "not_fired" for r in rig.results.values()
    )
    # after the outage the node inspects and rejects on target again
    late = [r for r in rig.results.values() if r.t_ns > seen["stop_ns"] - 2_000_000_000]
    assert len(late) >= 5 and all(r.action != "not_fired" for r in late)
    assert rig.node.summary.task_restarts == 0
    # the outage outlasted the PLC's eight latch slots: the parts it overwrote are counted,
    # not silently gone
    assert report["plc"]["edges_lost"] > 0
    assert rig.node.summary.parts_unseen == report["plc"]["edges_lost"]


async def test_bad_plc_data_is_refused_logged_and_survived(taught_config: Config) -> None:
    """Over Modbus with a 16-bit counter: readings far ahead, behind and out of range, and
    refused pulse writes, are each logged and counted; the node keeps running and rejects
    on target once the data is good again (a pulse it saw leave too late for its part,
    as a loaded machine can make one, is reported not_fired, never rejected)."""
    cfg = sim_config(
        taught_config,
        line={"encoder_bits": 16},
        sim={"defect_rate": 0.4, "seed": 8, "speed_mm_s": 480.0},
    )
    seen: dict[str, Any] = {}

    async def bad_data(rig: PlcRig) -> None:
        await asyncio.sleep(1.5)
        # one reading far ahead, one far behind, one no 16-bit counter can hold
        now = rig.node.tracker.unwrapped_count % 65536
        await rig.emulator.call("count_glitches", [(now + 20_000) % 65536])
        await asyncio.sleep(0.1)
        await rig.emulator.call("count_glitches", [(now - 20_000) % 65536])
        await asyncio.sleep(0.1)
        await rig.emulator.call("count_glitches", [70_000])
        await asyncio.sleep(0.1)
        fired_before = rig.node.summary.reject_fire_failures
        await rig.emulator.call("refuse", ["fire_seq"])
        seen["refused"] = await _until(
            lambda: rig.node.summary.reject_fire_failures > fired_before, 10.0
        )
        await rig.emulator.call("refuse", [])
        seen["accepting_ns"] = time.monotonic_ns()
        await asyncio.sleep(3.0)
        rig.stop.set()

    with capture_logs() as logs:
        report, rig = await run_plc_line(
            cfg, 400, transport="modbus", mode="node_timed", during=bad_data
        )
    events = {e["event"] for e in logs}
    reasons = {e.get("reason") for e in logs if e["event"] == "encoder_sample_rejected"}
    assert {"forward_jump", "backward_jump"} <= reasons, reasons
    assert "encoder_count_out_of_range" in events
    assert report["plc"]["bad_samples"] >= 1
    assert report["bad_encoder_samples"] >= 2
    assert seen["refused"] and "reject_fire_failed" in events
    assert report["plc"]["refused_writes"] >= 1
    assert report["reject_fire_failures"] == sum(
        r.action == "not_fired" for r in rig.results.values()
    )
    assert rig.node.summary.task_restarts == 0
    after = [
        r
        for r in rig.results.values()
        if r.verdict.reject and r.t_ns > seen["accepting_ns"] + 500_000_000
    ]
    # a pulse the node itself saw leave too late on a loaded machine is reported not_fired
    # (reject_fire_late); nothing else may keep a reject from its part any more
    late = {e["part_id"] for e in logs if e["event"] == "reject_fire_late"}
    assert any(r.action == "rejected" for r in after)
    assert all(r.action == "rejected" or r.part_id in late for r in after), [
        (r.part_id, r.action) for r in after if r.action != "rejected"
    ]
    assert report["wrong_part_hits"] == 0


# -- the example configs, run by the launcher ---------------------------------------------


@pytest.mark.parametrize("name", ["modbus", "opcua"])
async def test_example_config_runs_with_the_launcher(
    name: str, tmp_path: Path, template_path: Path
) -> None:
    """``python -m hil.plc_line configs/<name>.toml --parts 40`` exits 0 and every reject it
    commanded struck its own part (the config unchanged but for a free port and the state).
    The processes it spawns (emulator, HMI server, render worker) do not import the rig's
    scorer again (``-X importtime``, passed on to them, lists every process's imports)."""
    text = (REPO / "configs" / f"{name}.toml").read_text(encoding="utf-8")
    port = free_port()
    text = text.replace("port = 5020", f"port = {port}").replace(":4841/", f":{port}/")
    text = text.replace('state_dir = "state"', f'state_dir = "{tmp_path}"')
    text = text.replace('template = "state/sim-template.npz"', f'template = "{template_path}"')
    cfg_file = tmp_path / f"{name}.toml"
    cfg_file.write_text(text, encoding="utf-8")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "hil.plc_line",
        str(cfg_file),
        "--parts",
        "40",
        "--no-live",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    imported = [x.rsplit("|", 1)[-1].strip() for x in err.decode().splitlines() if "|" in x]
    logged = "\n".join(x for x in err.decode().splitlines() if not x.startswith("import time:"))
    assert proc.returncode == 0, logged[-2000:]
    assert imported.count("hil.score") == 1  # the launcher's own, none in its children
    summary = json.loads(out)
    rig = summary["rig"]
    assert rig["parts"] == 40
    assert rig["missed_rejects"] == 0 and rig["wrong_part_hits"] == 0, rig
    assert rig["strike_error"]["n"] >= 1
    assert summary["plc"]["state"] == "closed" and summary["plc"]["losses"] == 0


async def _last_look(rig: PlcRig, seen: dict[str, Any], settle_s: float) -> None:
    """After ``settle_s``: the node's status and the outputs the PLC holds, into ``seen``;
    then stop the run."""
    await asyncio.sleep(settle_s)
    seen["status"] = rig.node.status()
    seen["plc"] = (await rig.emulator.call("stats"))["outputs"]
    rig.stop.set()


async def test_a_latch_overrun_on_a_live_link_puts_the_node_in_error(
    taught_config: Config,
) -> None:
    """Nothing is down, but the node reads the PLC's edge latch too seldom (a 1 s poll,
    12.5 parts/s against eight slots): the parts whose edges were overwritten are counted
    and the node goes to Error naming them, instead of their passing unseen and silent."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.0, "seed": 3, "speed_mm_s": 400.0})
    seen: dict[str, Any] = {}

    async def watch(rig: PlcRig) -> None:
        seen["error"] = await _until(lambda: rig.node.summary.parts_unseen > 0, 10.0)
        await _last_look(rig, seen, 0.2)

    report, rig = await run_plc_line(
        cfg,
        100,
        transport="modbus",
        mode="node_timed",
        during=watch,
        driver_settings={"poll_interval_ms": 1000.0},
    )
    assert seen["error"], report["plc"]
    status = seen["status"]
    assert status["state"] == "Error" and not status["healthy"], status
    assert "passed the sensor unseen" in status["state_detail"], status
    # the PLC sees it: Ready dropped, Error raised, the encoder (tracking) code 6
    plc = seen["plc"]
    assert plc["node_ready"] == 0 and plc["node_error"] == 1 and plc["error_code"] == 6, plc
    # every overwritten edge the node learnt of while it ran is a part counted unseen
    assert 0 < rig.node.summary.parts_unseen <= report["plc"]["edges_lost"]


async def test_a_plc_restart_puts_the_parts_it_latched_meanwhile_on_record_as_unseen(
    taught_config: Config,
) -> None:
    """The PLC restarts during a link outage (its counter, edge latch and shift register
    start over) while parts keep passing the sensor. The edges the restarted PLC latched
    carry counts the node has not re-anchored on, so it cannot place them: the node counts
    them as parts that passed unseen (in its status) and stays in Error after the link is
    back, instead of re-baselining silently."""
    cfg = sim_config(taught_config, sim={"defect_rate": 0.0, "seed": 5, "speed_mm_s": 400.0})
    seen: dict[str, Any] = {}

    async def restart(rig: PlcRig) -> None:
        await asyncio.sleep(2.5)  # about 30 edges latched: the restarted latch counts fewer
        await rig.emulator.call("stop_server")
        await rig.emulator.call("restart_program")
        await asyncio.sleep(1.0)  # about 12 parts pass the sensor meanwhile
        await rig.emulator.call("start_server")
        seen["unseen"] = await _until(lambda: rig.node.summary.parts_unseen > 0, 10.0)
        seen["up"] = await _until(lambda: rig.node.status()["plc"]["state"] == "up", 10.0)
        await _last_look(rig, seen, 0.5)

    report, _ = await run_plc_line(
        cfg,
        200,
        transport="modbus",
        mode="node_timed",
        during=restart,
        driver_settings={"backoff": {"initial_s": 0.1, "max_s": 0.5}},
    )
    assert seen["unseen"] and seen["up"], report["plc"]
    status = seen["status"]
    # Error (entered with the outage, kept until an operator resets), the unseen parts
    # counted in the status whatever Error's first cause was
    assert status["state"] == "Error" and not status["healthy"], status
    # and the restarted PLC is told so: Ready dropped, Error raised
    plc = seen["plc"]
    assert plc["node_ready"] == 0 and plc["node_error"] == 1, plc
    # (an edge latched as the counter restarted may also be refused by the tracker: counted)
    assert status["parts_unseen"] >= report["plc"]["edges_lost"] >= 5, status
