"""Fleet bench: simulated edge nodes, one Mosquitto, one primary host; one JSON object.

    python bench/fleet.py --nodes 20 --rate 50 --seconds 30
    python bench/fleet.py --nodes 20 --rate 50 --seconds 30 --broker-restart-at 15

Each edge node is what a lineside node runs north of its line: an audit store that
commits every result, and the Sparkplug publisher (``node.north``) that follows the store
and sends one DDATA per committed record. A feeder thread per node records ``--rate``
results a second (nodes out of phase, as separate lines are). The nodes run in
``--workers`` processes (default: one per node, as on a real fleet where every node is a
machine of its own; ``--workers 1`` puts them all in one process, under one GIL). The
broker is Debian's Mosquitto on a free loopback port; the primary host is
:class:`node.fleet.host.FleetHost` in this process.

The JSON has:

- ``latency_ms``: a result's publication (its ``Result/Time``, the record's wall time)
  until the host applied it, p50/p99/max, outside a broker outage; ``latency_ms_all``
  with every result;
- ``results``: written by the nodes, taken by the host, ``missing`` (record seqs the host
  skipped over), ``duplicates``, ``seq_gaps`` (Sparkplug ``seq`` out of order), summed
  over the nodes, and the nodes whose host view is short of their store;
- ``cpu_s``: CPU seconds over the run of the nodes (all processes, and per node; ``north``
  is the publisher threads alone), the broker, the host (this process), the terminal
  table (``--screenshot``), everything else on the machine, and the machine's busy time;
  ``loadavg`` at the end;
- ``restart`` (with ``--broker-restart-at T``): the broker is stopped at T s and started
  again ``--down-s`` later; ``recovery_s`` runs from the broker being back until every
  node was born again and the host had taken every result written until then (None when
  it never did); ``host_back_s`` until the host had reconnected, ``nodes_reborn_s`` until
  the first and the last node was born again.

``--screenshot FILE`` runs ``lineside fleet`` (the terminal table) in a detached tmux
session of 160×30 and saves its text at the end of the run. Progress goes to stderr.
Exit status 1, with a one-line reason on stderr, when the host missed a result or did
not take every one (the JSON still prints).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from hil.mosquitto import Mosquitto, MosquittoMissing
from hil.procstat import cpu_seconds, machine_busy_s, thread_cpu_seconds
from hil.sample_results import RECIPE, sample_findings, sample_result
from hil.score import machine
from node.audit.build import record_from_result
from node.audit.record import AuditRecord
from node.audit.settings import AuditSettings
from node.audit.store import AuditStore
from node.fleet.host import Broker, FleetHost
from node.fleet.state import Kind, Message, NodeView
from node.line.judge import Judge
from node.line.results import percentiles
from node.north import metrics as M
from node.north.publisher import NorthPublisher
from node.north.settings import NorthSettings

REPO = Path(__file__).resolve().parents[1]
GROUP = "lineside"
IDENTITY = M.Identity("bench", "1", "0" * 64, "bench-recipe", "1" * 64)
SCREEN = (160, 30)
REJECT_EVERY = 10
"""Every tenth part is a reject (a region, its sentence), the rest pass."""


# -- the edge nodes (worker processes) ----------------------------------------------------


class _Line:
    """One node's results, built as the node builds them when it publishes a part."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.judge = Judge(RECIPE)
        self.findings = (sample_findings(False), sample_findings(True))
        self.thresholds = RECIPE.model_dump()

    def record(self, part_id: int) -> AuditRecord:
        result = sample_result(part_id, self.findings[part_id % REJECT_EVERY == 0], self.judge)
        return record_from_result(
            result,
            run_id=self.run_id,
            model_name=IDENTITY.model_name,
            model_version=IDENTITY.model_version,
            model_sha256=IDENTITY.model_sha256,
            thresholds=self.thresholds,
            actuator_confirmed=True,
        )


def _feed(store: AuditStore, line: _Line, rate: float, start: float, end: float) -> None:
    """``rate`` results a second into ``store`` from wall time ``start`` until ``end``."""
    part = 0
    while True:
        due = start + part / rate
        if due >= end:
            break
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        store.record(line.record(part), None)
        part += 1


def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def worker(names: list[str], phases: list[float], args: argparse.Namespace) -> int:
    """Run the edge nodes ``names`` and talk to the bench on stdin/stdout (JSON lines):
    ``ready`` once every publisher runs; on ``go <wall time>`` feed for ``--seconds``,
    then say what each store committed (``written``); on ``stop`` say the publishers'
    CPU seconds and close them (each says NDEATH)."""
    structlog.configure(  # stdout is the bench's
        wrapper_class=structlog.make_filtering_bound_logger(40),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    settings = NorthSettings(
        enabled=True,
        port=args.port,
        poll_ms=args.poll_ms,
        primary_host_id=args.primary_host or None,
    )
    folder = Path(args.dir)
    with contextlib.ExitStack() as stack:
        stores: list[AuditStore] = []
        for name in names:
            store = stack.enter_context(AuditStore(AuditSettings(), folder / name / "audit"))
            pub = NorthPublisher(
                settings,
                audit_dir=store.directory,
                state_file=folder / name / "north.json",
                node_name=name,
                identity=IDENTITY,
            )
            stack.enter_context(pub)
            pub.set_state("ContinuousExecution", "started")
            stores.append(store)
        north = [t for t in threading.enumerate() if t.name == "north"]
        _say(ready=True)
        command = sys.stdin.readline().split()
        if command[:1] != ["go"]:
            return 2
        start = float(command[1])
        feeders = [
            threading.Thread(
                target=_feed,
                args=(s, _Line(n), args.rate, start + phase, start + args.seconds),
                name=f"feed-{n}",
            )
            for s, n, phase in zip(stores, names, phases, strict=True)
        ]
        for t in feeders:
            t.start()
        for t in feeders:
            t.join()
        for s in stores:
            s.flush(timeout_s=60)
        _say(written={n: s.committed for n, s in zip(names, stores, strict=True)})
        sys.stdin.readline()  # stop: the host has taken what it could
        _say(north_cpu_s=sum(thread_cpu_seconds(t.native_id or 0) for t in north))
    return 0


# -- the bench ----------------------------------------------------------------------------


class Worker:
    """One worker process and the JSON lines it says (read on a thread of their own)."""

    def __init__(self, names: list[str], phases: list[float], args: argparse.Namespace) -> None:
        cmd = [
            *(sys.executable, str(Path(__file__).resolve()), "--worker", ",".join(names)),
            *("--phases", ",".join(f"{p:.6f}" for p in phases)),
            *("--port", str(args.port), "--dir", args.dir, "--rate", str(args.rate)),
            *("--seconds", str(args.seconds), "--poll-ms", str(args.poll_ms)),
            *("--primary-host", args.primary_host),
        ]
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
        )
        self.names = names
        self._lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self._lines.put(json.loads(line))
        self._lines.put(None)

    def expect(self, key: str, timeout_s: float) -> Any:
        """The value of the next line's ``key``. Raises ``RuntimeError`` when the worker
        ends or says nothing in time."""
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(
                f"worker {self.names[0]}...: no {key!r} in {timeout_s:g} s"
            ) from None
        if line is None or key not in line:
            raise RuntimeError(f"worker {self.names[0]}... ended before {key!r}: {line}")
        return line[key]

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.send("stop")
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Probe:
    """What the host saw, result by result: latency, and when each node recovered."""

    taken: dict[tuple[str, str], int] = field(default_factory=dict)
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(result's wall time ms, latency ms) of every result taken."""
    back_wall_ms: float | None = None
    """When the broker came back (wall time ms), after a restart."""
    reborn: dict[tuple[str, str], float] = field(default_factory=dict)
    """Monotonic time of each node's first birth after the broker came back."""
    caught_up: dict[tuple[str, str], float] = field(default_factory=dict)
    """Monotonic time the host took each node's last result written before then."""

    def on_message(self, msg: Message, view: NodeView) -> None:
        back = self.back_wall_ms
        if msg.kind is Kind.NBIRTH and back is not None:
            self.reborn.setdefault(view.key, time.monotonic())
        if msg.kind is not Kind.DDATA:
            return
        t = msg.metrics.get(M.TIME)
        if not isinstance(t, int) or view.results == self.taken.get(view.key, 0):
            return  # no result, or a duplicate
        self.taken[view.key] = view.results
        self.samples.append((float(t), time.time() * 1000 - t))
        if back is not None and t < back:
            self.caught_up[view.key] = time.monotonic()

    def recovered(self, keys: list[tuple[str, str]]) -> float | None:
        """Monotonic time by which every node of ``keys`` was reborn and the host had
        taken all it wrote before the broker came back; None when one never was."""
        if any(k not in self.reborn for k in keys):
            return None
        return max(max(self.reborn[k], self.caught_up.get(k, 0.0)) for k in keys)


class Screen:
    """``lineside fleet`` (the terminal table) in a detached tmux session of its own
    server, so nothing of the user's tmux is touched."""

    def __init__(self, port: int) -> None:
        if shutil.which("tmux") is None:
            raise RuntimeError("--screenshot needs tmux")
        self.socket = f"lineside-fleet-bench-{os.getpid()}"
        command = shlex.join(
            [
                *(sys.executable, "-m", "node", "fleet", "--broker", f"127.0.0.1:{port}"),
                *("--host-id", "lineside-fleet-screen"),  # the bench's own is lineside-fleet
            ]
        )
        self._tmux(
            *("new-session", "-d", "-s", "fleet", "-x", str(SCREEN[0]), "-y", str(SCREEN[1])),
            *("-c", str(REPO), "-e", f"PYTHONPATH={REPO}", command),
        )
        self.pid = int(self._tmux("display-message", "-p", "-t", "fleet", "#{pane_pid}"))

    def _tmux(self, *args: str) -> str:
        run = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        )
        return run.stdout.strip()

    def capture(self, path: Path) -> None:
        text = subprocess.run(
            ["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "fleet"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        path.write_text(text)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._tmux("kill-server")


def _progress(text: str) -> None:
    print(f"fleet bench: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _cleanup(broker: Mosquitto, host: FleetHost, workers: list[Worker]) -> Iterator[None]:
    try:
        yield
    finally:
        for w in workers:
            w.stop()
        host.stop()
        broker.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole bench; the report. Raises ``RuntimeError`` when a part of it fails to
    start, ``MosquittoMissing`` without a broker."""
    names = [f"bench-{i + 1:02d}" for i in range(args.nodes)]
    folder = Path(args.dir)
    (folder / "broker").mkdir(parents=True, exist_ok=True)
    # the broker holds at most this many QoS 1 messages for a client that is behind (the
    # host after a restart): sized as docs/north.md says, not Mosquitto's default 1000
    queue = f"allow_anonymous true\nmax_queued_messages {args.broker_queue}"
    broker = Mosquitto(folder / "broker", extra=queue)
    broker.start()
    args.port = broker.port
    probe = Probe()
    host = FleetHost(
        Broker("127.0.0.1", broker.port),
        host_id=args.primary_host or "lineside-fleet",
        on_message=probe.on_message,
    )
    workers: list[Worker] = []
    screen: Screen | None = None
    with _cleanup(broker, host, workers), contextlib.ExitStack() as stack:
        host.start()
        end = time.monotonic() + 10
        while not host.connected:
            if time.monotonic() > end:
                raise RuntimeError("the host did not connect to the broker")
            host.drain(0.05)
        if args.screenshot:
            screen = Screen(broker.port)
            stack.callback(screen.close)
        groups = max(1, min(args.workers or args.nodes, args.nodes))
        for g in range(groups):
            mine = names[g::groups]
            phases = [(names.index(n) / args.nodes) / args.rate for n in mine]
            workers.append(Worker(mine, phases, args))
        for w in workers:
            w.expect("ready", 60)
        _progress(f"{args.nodes} nodes in {groups} processes ready, broker :{broker.port}")

        pids = [w.proc.pid for w in workers]
        nodes0, host0, busy0 = cpu_seconds(pids), time.process_time(), machine_busy_s()
        broker_s = -cpu_seconds([broker.pid]) if broker.pid else 0.0
        screen0 = cpu_seconds([screen.pid]) if screen else 0.0
        t0 = time.monotonic()
        start_wall = time.time() + 0.2
        for w in workers:
            w.send(f"go {start_wall:.6f}")
        restart: dict[str, Any] | None = None
        restart_at = args.broker_restart_at
        feed_end = t0 + 0.2 + args.seconds
        next_note = t0 + 5
        while time.monotonic() < feed_end:
            host.drain(0.05)
            now = time.monotonic()
            if restart_at is not None and restart is None and now - t0 >= restart_at:
                restart = _restart(broker, host, probe, args.down_s)
                broker_s += restart.pop("broker_cpu_s")
            _host_back(restart, host)
            if now >= next_note:
                taken = sum(v.results for v in host.fleet.nodes.values())
                _progress(f"{now - t0:.0f}/{args.seconds:g} s, {taken} results taken")
                next_note += 5

        written: dict[str, int] = {}
        for w in workers:
            written.update(w.expect("written", 60))
        _progress(f"feeding done, {sum(written.values())} results written; the host catches up")
        # the host catches up: every result taken, and (after a restart) every node recovered
        deadline = time.monotonic() + args.settle_s
        while time.monotonic() < deadline:
            host.drain(0.05)
            _host_back(restart, host)
            seen = host.fleet.nodes
            caught_up = all(
                (v := seen.get((GROUP, n))) is not None and v.results + v.missing >= written[n]
                for n in names
            )
            if caught_up and (restart is None or len(probe.reborn) == len(names)):
                break
        wall_s = time.monotonic() - t0
        nodes_s = cpu_seconds(pids) - nodes0
        host_s = time.process_time() - host0
        broker_s += cpu_seconds([broker.pid]) if broker.pid else 0.0
        screen_s = cpu_seconds([screen.pid]) - screen0 if screen else 0.0
        busy_s = machine_busy_s() - busy0
        if screen is not None:
            time.sleep(2.0)  # the table refreshes once a second
            screen.capture(Path(args.screenshot))
        north_s = 0.0
        for w in workers:
            w.send("stop")
            north_s += float(w.expect("north_cpu_s", 30))

    views = [host.fleet.nodes.get((GROUP, n)) or NodeView(GROUP, n) for n in names]
    everything = all(v.results >= written[v.edge_node] and not v.missing for v in views)
    steady = [lat for _, lat in probe.samples]
    if restart is not None:
        back = restart.pop("back_monotonic")
        stopped_ms = restart.pop("stop_wall_ms")
        done = probe.recovered([(GROUP, n) for n in names])
        restart["nodes_reborn"] = len(probe.reborn)
        restart["recovery_s"] = round(done - back, 3) if done is not None and everything else None
        # results on their way when the broker stopped, or written before the fleet had
        # recovered, waited for it: left out of the steady latency (in latency_ms_all)
        until_ms = (probe.back_wall_ms or 0.0) + 1000 * ((done or back) - back)
        steady = [lat for t, lat in probe.samples if t + lat < stopped_ms or t > until_ms]
        if probe.reborn:
            restart["nodes_reborn_s"] = [
                round(min(probe.reborn.values()) - back, 3),
                round(max(probe.reborn.values()) - back, 3),
            ]
    others = busy_s - nodes_s - host_s - broker_s - screen_s
    return {
        "bench": "fleet",
        "nodes": args.nodes,
        "rate_per_node": args.rate,
        "seconds": args.seconds,
        "workers": groups,
        "poll_ms": args.poll_ms,
        "primary_host_id": args.primary_host or None,
        "broker_max_queued_messages": args.broker_queue,
        "wall_s": round(wall_s, 1),
        "machine": machine(),
        "latency_ms": percentiles(steady),
        "latency_ms_all": percentiles(lat for _, lat in probe.samples),
        "results": {
            "written": sum(written.values()),
            "taken": sum(v.results for v in views),
            "missing": sum(v.missing for v in views),
            "duplicates": sum(v.duplicates for v in views),
            "seq_gaps": sum(v.gaps for v in views),
            "untrusted": sum(v.untrusted for v in views),
            "births": sum(v.births for v in views),
            "short": sorted(v.edge_node for v in views if v.results < written[v.edge_node]),
        },
        "restart": restart,
        "rebirths_asked": host.rebirths_asked,
        "resends_asked": host.resends_asked,
        "bad_messages": host.bad_messages,
        "cpu_s": {
            "nodes": round(nodes_s, 2),
            "per_node": round(nodes_s / args.nodes, 3),
            "north_per_node": round(north_s / args.nodes, 3),
            "broker": round(broker_s, 2),
            "host": round(host_s, 2),
            "screen": round(screen_s, 2),
            "others": round(max(0.0, others), 2),
            "machine_busy": round(busy_s, 2),
        },
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _host_back(restart: dict[str, Any] | None, host: FleetHost) -> None:
    """Note when the host's new session began (its own clock, not when the bench looked)."""
    if restart is None or "host_back_s" in restart or host.connected_at is None:
        return
    if host.connected_at >= restart["back_monotonic"]:
        restart["host_back_s"] = round(host.connected_at - restart["back_monotonic"], 3)


def _restart(broker: Mosquitto, host: FleetHost, probe: Probe, down_s: float) -> dict[str, Any]:
    """Stop the broker, keep the host draining for ``down_s``, start it again."""
    cpu = cpu_seconds([broker.pid]) if broker.pid else 0.0
    stop_wall_ms = time.time() * 1000
    broker.stop()
    _progress(f"broker stopped for {down_s:g} s")
    back_at = time.monotonic() + down_s
    while time.monotonic() < back_at:
        host.drain(0.05)
    broker.start()
    probe.back_wall_ms = time.time() * 1000
    back = time.monotonic()
    _progress("broker back")
    return {
        "at_s": None,
        "down_s": down_s,
        "broker_cpu_s": cpu,
        "stop_wall_ms": stop_wall_ms,
        "back_monotonic": back,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nodes", type=int, default=20, help="simulated edge nodes")
    p.add_argument("--rate", type=float, default=50.0, help="results per second per node")
    p.add_argument("--seconds", type=float, default=30.0, help="how long the nodes feed")
    p.add_argument("--workers", type=int, default=0, help="node processes (default: one each)")
    p.add_argument("--broker-restart-at", type=float, help="stop the broker at this second")
    p.add_argument("--down-s", type=float, default=3.0, help="how long the broker stays down")
    p.add_argument("--poll-ms", type=float, default=NorthSettings().poll_ms, help="north.poll_ms")
    p.add_argument(
        "--primary-host",
        default="lineside-fleet",
        help="the host id the nodes wait for (north.primary_host_id; '' for none)",
    )
    p.add_argument(
        "--broker-queue",
        type=int,
        default=100_000,
        help="Mosquitto's max_queued_messages, as docs/north.md sizes it (Mosquitto's own "
        "default: 1000)",
    )
    p.add_argument("--settle-s", type=float, default=30.0, help="most wait for the host after")
    p.add_argument("--screenshot", help="save the text of `lineside fleet`'s table here")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--phases", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        phases = [float(x) for x in args.phases.split(",")]
        return worker(args.worker.split(","), phases, args)
    if args.nodes < 1 or args.rate <= 0 or args.seconds <= 0:
        p.error("--nodes, --rate and --seconds must be positive")
    if args.broker_restart_at is not None and not 0 < args.broker_restart_at < args.seconds:
        p.error("--broker-restart-at must fall inside --seconds")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    with tempfile.TemporaryDirectory(prefix="lineside-fleet-bench-") as tmp:
        args.dir = tmp
        try:
            report = run(args)
        except (RuntimeError, MosquittoMissing) as exc:
            print(f"fleet bench: {exc}", file=sys.stderr)
            return 2
    if report["restart"] is not None:
        report["restart"]["at_s"] = args.broker_restart_at
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    r = report["results"]
    if r["missing"] or r["short"]:
        print(
            f"fleet bench: the host missed {r['missing']} results and is short on "
            f"{len(r['short'])} nodes ({r['taken']} of {r['written']} taken)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
