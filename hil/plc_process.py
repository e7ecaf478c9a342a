"""A PLC emulator in a process of its own, as a real PLC is a box of its own.

Run in the node's process, the emulator's server would share the node's event
loop and GIL: every request it serves would delay the node, and every busy
moment of the node would delay the "PLC". :class:`EmulatorProcess` starts the
emulator in a spawned process that rebuilds the same simulated line from the
same config (parts are deterministic from ``sim.seed``); both processes read
``time.monotonic_ns()``, one clock for the whole machine, so their belts agree.
At the end the actuator hits are brought back into the parent's ``SimWorld`` for
scoring. Commands go over a pipe, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import multiprocessing
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Literal

import structlog

from drivers.plc.settings import ModbusSettings
from drivers.sim.world import ActuatorHit, SimWorld

Transport = Literal["modbus", "opcua"]
_PARKED_NS = 3600 * 10**9


def _child(
    conn: Connection,
    cfg_data: dict[str, Any],
    transport: Transport,
    overrides: dict[str, Any],
    port: int,
    max_parts: int | None,
) -> None:
    _quiet_logs()
    asyncio.run(_child_main(conn, cfg_data, transport, overrides, port, max_parts))


def _quiet_logs() -> None:
    """Warnings and errors of the emulator to stderr; its stdout stays clean (a bench
    prints its JSON there) and per-strike debug lines would slow the "PLC" down."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="%H:%M:%S.%f"),
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    logging.basicConfig(level=logging.ERROR)  # asyncua/pymodbus notices


async def _cpu_scan(program: Any, period_s: float = 0.002) -> None:
    """Advance the PLC program every ``period_s`` (like a PLC's cyclic task)."""
    while True:
        program.sync()
        await asyncio.sleep(period_s)


async def _child_main(
    conn: Connection,
    cfg_data: dict[str, Any],
    transport: Transport,
    overrides: dict[str, Any],
    port: int,
    max_parts: int | None,
) -> None:
    from hil.plc_logic import program_for
    from hil.plc_modbus import ModbusPlcEmulator
    from hil.plc_opcua import OpcUaPlcEmulator
    from node.config import parse_config
    from node.sim.line import build_sim_line

    cfg = parse_config(cfg_data, "<emulator>")
    sim = build_sim_line(cfg)
    sim.world.max_parts = max_parts
    sim.world.start(time.monotonic_ns() + _PARKED_NS)
    program = program_for(cfg, sim.world, **overrides)
    emulator: ModbusPlcEmulator | OpcUaPlcEmulator
    if transport == "modbus":
        ms = cfg.plc.modbus if cfg.plc is not None and cfg.plc.modbus is not None else None
        ms = ms or ModbusSettings()  # the node's own I/O map, or the default one
        emulator = ModbusPlcEmulator(program, ms.io, device_id=ms.device_id, port=port)
    else:
        emulator = OpcUaPlcEmulator(program, port=port)
    await emulator.start()
    # The OPC UA server's standard address space is ~400,000 objects that live as long as
    # the emulator: left in the collector's sight, each full collection walked them all
    # (pauses of 0.2-0.4 s mid-run in which the "PLC" answered nothing, and the node rightly
    # declared the link lost). A real PLC has no such pauses; frozen, they are not walked.
    gc.collect()
    gc.freeze()
    # The PLC's CPU scans whether or not its communication side is up: heartbeat watch,
    # fail-safe rejects and compare outputs must go on through a network outage.
    cpu = asyncio.get_running_loop().create_task(_cpu_scan(program), name="plc-cpu")
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, Any, int]] = asyncio.Queue()

    def receive() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):  # the rig is gone (killed): stop, do not spin on EOF
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("parent_gone", None, 0))

    loop.add_reader(conn.fileno(), receive)
    conn.send(("ready", None, 0))
    while True:
        cmd, arg, seq = await inbox.get()
        reply: Any = None
        if cmd == "parent_gone":
            cpu.cancel()
            await emulator.stop()
            return
        if cmd == "start_belt":
            sim.world.start(arg)
        elif cmd == "stop_server":
            await emulator.stop()
        elif cmd == "start_server":
            await emulator.start()
        elif cmd == "refuse":
            if isinstance(emulator, ModbusPlcEmulator):
                emulator.refuse = set(arg)
            else:
                for name in arg:
                    await emulator.refuse_writes(name)
        elif cmd == "count_override":
            program.count_override = arg
        elif cmd == "count_glitches":
            program.count_glitches = list(arg)
        elif cmd == "set_speed":
            sim.world.set_speed(*arg)
        elif cmd == "count_fault":
            program.count_fault = arg
        elif cmd == "restart_program":
            program.restart()
        elif cmd == "stats":
            reply = dataclasses.asdict(program.stats) | {
                "outputs": dict(program.outputs),
                "heartbeat_ok": program.heartbeat_ok,
                "line_running": program.line_running,
            }
        elif cmd == "shutdown":
            cpu.cancel()
            await emulator.stop()
            loop.remove_reader(conn.fileno())
            conn.send(("done", (list(sim.world.hits), dataclasses.asdict(program.stats)), seq))
            return
        conn.send(("ok", reply, seq))


class EmulatorProcess:
    """The emulator for ``cfg``'s line in a spawned process (async context manager).

    ``port`` is where it listens; ``url`` is the OPC UA endpoint. ``stats``
    after exit holds the program's final statistics.

    Commands for :meth:`call`: ``start_belt`` (t0_ns), ``stop_server`` and
    ``start_server`` (the network side restarts; the program, its counter and
    shift register live on), ``refuse`` (output names whose writes are refused;
    ``[]`` accepts all again — Modbus; OPC UA makes them read-only for the rest
    of the run), ``count_override`` (raw value or None), ``count_glitches``
    (raw values served by the next counter reads, one each), ``count_fault``
    (``"none"``, ``"garbage"`` or ``"word_swap"``), ``restart_program`` (the PLC's CPU
    restarts: counter, edge latch and shift register start over) and ``stats``.
    """

    def __init__(
        self,
        cfg_data: dict[str, Any],
        transport: Transport,
        port: int,
        program_overrides: dict[str, Any] | None = None,
        max_parts: int | None = None,
    ) -> None:
        self.transport = transport
        self.port = port
        self.url = f"opc.tcp://127.0.0.1:{port}/lineside/plc"
        self.stats: dict[str, Any] = {}
        self.hits: list[ActuatorHit] = []
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child,
            args=(child, cfg_data, transport, program_overrides or {}, port, max_parts),
            name=f"plc-emulator-{transport}",
            daemon=True,
        )
        self._child_conn = child
        self._lock = asyncio.Lock()
        self._launched = False
        self._ready = False
        self._seq = 0

    async def __aenter__(self) -> EmulatorProcess:
        self.launch()
        await self.ready()
        return self

    def launch(self) -> None:
        """Start the emulator's process without waiting for it (``ready`` waits): a rig
        lets the node start meanwhile, as a line's PLC is up long before its node."""
        if self._launched:
            return
        self._launched = True
        self._proc.start()
        self._child_conn.close()

    async def ready(self) -> None:
        """Wait until the emulator serves (at most 60 s); at once if it already does.

        Raises:
            RuntimeError: the process reported something else than ready.
            TimeoutError: it did not answer.
        """
        async with self._lock:
            if self._ready:
                return
            tag, _, _ = await self._recv(60.0)
            if tag != "ready":
                raise RuntimeError(f"emulator process did not start: {tag}")
            self._ready = True

    async def __aexit__(self, *exc: object) -> None:
        try:
            if self._launched and not self._ready:
                # shut down as always, also when nobody waited for it (the node refused
                # to start first); one that never came up is killed below
                with contextlib.suppress(RuntimeError, TimeoutError, EOFError, OSError):
                    await self.ready()
            if self._ready:
                async with self._lock:
                    tag, payload = await self._ask("shutdown", None)
                    if tag == "done":
                        self.hits, self.stats = payload
        finally:
            await asyncio.to_thread(self._proc.join, 10.0)
            if self._proc.is_alive():
                self._proc.kill()
            self._conn.close()

    async def _recv(self, timeout_s: float) -> tuple[str, Any, int]:
        ready = await asyncio.to_thread(self._conn.poll, timeout_s)
        if not ready:
            raise TimeoutError("emulator process did not answer")
        tag, payload, seq = self._conn.recv()
        return str(tag), payload, int(seq)

    async def call(self, cmd: str, arg: Any = None) -> Any:
        """Run one command in the emulator; return its reply. Raises ``TimeoutError``."""
        async with self._lock:
            _, payload = await self._ask(cmd, arg)
            return payload

    async def _ask(self, cmd: str, arg: Any) -> tuple[str, Any]:
        """Send one numbered command and wait for the reply with its number; replies to
        calls whose caller was cancelled while it waited are read and dropped."""
        self._seq += 1
        self._conn.send((cmd, arg, self._seq))
        while True:
            tag, payload, seq = await self._recv(20.0)
            if seq == self._seq:
                return tag, payload

    def merge_hits(self, world: SimWorld) -> None:
        """Put the emulator's actuator hits into ``world`` (for scoring)."""
        world.hits.extend(self.hits)
