"""The emulated PLC's program, independent of the protocol it is reached by.

A real line PLC counts the encoder in a high-speed counter (HSC), latches the
counter at each rising edge of the part-present sensor (capture input), pulses
the reject valve, and runs the lineside handshake. :class:`PlcProgram` does
the same against a :class:`drivers.sim.world.SimWorld`:

- **counter**: ``world.raw_count(t)`` at the instant of each read;
- **capture**: every part-present rising edge (``world.edges_between``) goes
  into a ring of ``slots`` counts with a 16-bit latch counter;
- **node-timed fire**: when the node's ``fire_seq`` changes, the valve starts
  at that instant (``world.strike``), plus an optional output delay;
- **PLC-tracked**: on ResultValid's rising edge the result is copied into a
  shift register and Ack set; Ack drops when ResultValid drops. A reject is
  loaded as an HSC *compare value* (origin + reject distance − lead): like the
  compare output of a real HSC it switches at the exact count, so the strike is
  recorded at the instant the belt reached it, even if the emulator notices a
  little later. A result that arrives after its count has passed fires at once
  and is counted as late;
- **node watch**: the node is trusted while its heartbeat toggles, and — once it
  has said Ready — while Ready is on and Error off. No change of the heartbeat
  for ``heartbeat_timeout_s``, Ready dropped or Error raised → ``on_heartbeat_loss``:
  ``"stop_line"`` stops the belt, ``"reject_all"`` fires for every part latched
  at the sensor until the node is trusted again and, with ``reject_in_flight``,
  also for every part already between the sensor and its fire point when trust
  is lost (their node-timed pulses or PLC-tracked results may have died with the
  link, or the node no longer knows where they are). Ready and Error act at once;
  through the heartbeat alone every part is covered only if
  ``heartbeat_timeout_s`` is shorter than the travel from the sensor to the fire
  point at top speed.

Everything here runs on the emulator's event loop; ``sync(t_ns)`` advances
the program to time ``t_ns`` and is called before every read and by the scan.
"""

from __future__ import annotations

import bisect
import random
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from drivers.sim.world import SimWorld
from node.config import Config
from node.line.geometry import LineGeometry

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlcProgramConfig:
    """The PLC's own configuration, in encoder counts.

    ``fire_offset_counts`` is the distance the shift register adds to a
    result's origin count: reject station − actuator lead. ``part_length_counts``
    turns a latched leading edge into a part centre (for ``reject_all``).
    """

    fire_offset_counts: int
    part_length_counts: int
    slots: int = 8
    heartbeat_timeout_s: float = 1.5
    on_heartbeat_loss: Literal["stop_line", "reject_all", "nothing"] = "reject_all"
    output_delay_ms: float = 0.0
    plc_heartbeat_period_s: float = 0.5
    reject_in_flight: bool = True
    """``reject_all``: on heartbeat loss also reject the parts already past the sensor."""


@dataclass
class ProgramStats:
    """What the emulated PLC saw; read by tests and the bench."""

    fires_node_timed: int = 0
    results: int = 0
    results_rejected: int = 0
    late_results: int = 0
    """PLC-tracked results whose fire count had already passed when they arrived."""
    strikes: int = 0
    heartbeat_losses: int = 0
    """Times the node lost the PLC's trust (heartbeat stopped, Ready dropped, Error raised)."""
    failsafe_strikes: int = 0
    """Strikes done by ``reject_all`` while the heartbeat was lost."""
    fire_t_ns: dict[int, int] = field(default_factory=dict)
    """part_id → when the valve started (node-timed and PLC-tracked)."""
    result_origins: dict[int, int] = field(default_factory=dict)
    """part_id → origin raw count received by the handshake."""


class PlcProgram:
    """The emulated PLC (see module docstring). ``bits`` is the counter width."""

    def __init__(self, world: SimWorld, cfg: PlcProgramConfig, bits: int) -> None:
        self.world = world
        self.cfg = cfg
        self.bits = bits
        self._mod = 1 << bits
        self.stats = ProgramStats()
        # inputs as the node sees them
        self.latch_seq = 0
        self.latch_slots = [0] * cfg.slots
        self.result_ack = False
        self.reject_confirm = 0
        self.line_running = True
        # outputs as the node wrote them
        self.outputs: dict[str, int] = {}
        self._last_sync_ns: int | None = None
        self._fire_seq: int | None = None
        self._valid = False
        self._compare: list[tuple[int, int]] = []  # (unwrapped count, part_id), sorted
        self._hb_value: int | None = None
        self._hb_t_ns = 0
        self.heartbeat_ok = True
        """The node is trusted (heartbeat toggling; Ready on and Error off once it was Ready)."""
        self._hb_seen = False
        self._ready_seen = False
        self._recent_edges: list[int] = []  # unwrapped edges whose fire point may be ahead
        self.count_override: int | None = None
        """Fault injection: the counter reads this raw value instead of the belt's."""
        self.count_glitches: list[int] = []
        """Fault injection: the next reads of the counter return these raw values, one each."""
        self.count_fault: Literal["none", "garbage", "word_swap"] = "none"
        """Fault injection while set: ``garbage`` serves random counts, ``word_swap`` the
        count with its two 16-bit words swapped (a word-order error in the I/O map)."""
        self._garbage = random.Random(7)

    # -- counter ------------------------------------------------------------
    def unwrapped(self, t_ns: int) -> int:
        """The HSC at ``t_ns`` without wrapping (the emulator knows the true travel)."""
        return (
            int(self.world.displacement_mm(t_ns) * self.world.counts_per_mm)
            + self.world.count_offset
        )

    def raw_count(self, t_ns: int) -> int:
        """The counter as the node reads it at ``t_ns`` (wrapped to ``bits``)."""
        if self.count_glitches:
            return self.count_glitches.pop(0)
        if self.count_override is not None:
            return self.count_override
        count = self.unwrapped(t_ns) % self._mod
        if self.count_fault == "garbage":
            return self._garbage.randrange(self._mod)
        if self.count_fault == "word_swap":
            return ((count & 0xFFFF) << 16 | count >> 16) % self._mod
        return count

    def plc_heartbeat(self, t_ns: int) -> bool:
        """The PLC's own heartbeat bit: toggles every ``plc_heartbeat_period_s``."""
        return int(t_ns / 1e9 / self.cfg.plc_heartbeat_period_s) % 2 == 1

    def part_present(self, t_ns: int) -> bool:
        """The part-present sensor."""
        return self.world.part_present(t_ns)

    def _time_of_count(self, target: int, lo_ns: int, hi_ns: int) -> int:
        """Earliest t in [lo, hi] with ``unwrapped(t) >= target`` (``unwrapped(hi) >= target``)."""
        while hi_ns - lo_ns > 200:
            mid = (lo_ns + hi_ns) // 2
            if self.unwrapped(mid) >= target:
                hi_ns = mid
            else:
                lo_ns = mid
        return hi_ns

    def restart(self, t_ns: int | None = None) -> None:
        """Fault injection: the PLC's CPU restarts (a power dip, a program download). Its
        high-speed counter starts again from 0, its edge latch from sequence 0 with empty
        slots, and its shift register forgets the parts it held."""
        now = time.monotonic_ns() if t_ns is None else t_ns
        self.sync(now)
        self.world.count_offset -= self.unwrapped(now)
        self.latch_seq = 0
        self.latch_slots = [0] * self.cfg.slots
        self._compare.clear()
        self._recent_edges.clear()

    # -- the scan -------------------------------------------------------------
    def sync(self, t_ns: int | None = None) -> None:
        """Advance the program to ``t_ns`` (default: now): latch edges, fire due compares,
        watch the heartbeat."""
        now = time.monotonic_ns() if t_ns is None else t_ns
        if not self.world.started:
            return
        last = self._last_sync_ns
        if last is None:
            self._last_sync_ns = now
            self._hb_t_ns = now
            return
        if now <= last:
            return
        for edge in self.world.edges_between(last, now):
            self.latch_seq = (self.latch_seq + 1) & 0xFFFF
            self.latch_slots[(self.latch_seq - 1) % self.cfg.slots] = edge
            unwrapped = self._unwrap_raw(edge, now)
            self._remember_edge(unwrapped, now)
            if not self.heartbeat_ok and self.cfg.on_heartbeat_loss == "reject_all":
                self._failsafe_load(unwrapped)
        self._fire_due(last, now)
        self._watch_heartbeat(now)
        self._last_sync_ns = now

    def _fire_due(self, last: int, now: int) -> None:
        reached = self.unwrapped(now)
        while self._compare and self._compare[0][0] <= reached:
            target, part_id = self._compare.pop(0)
            t = self._time_of_count(target, last, now) if self.unwrapped(last) < target else last
            self._strike(part_id, t)

    def _strike(self, part_id: int, t_ns: int) -> None:
        t = t_ns + int(self.cfg.output_delay_ms * 1e6)
        hit = self.world.strike(part_id, t)
        self.stats.strikes += 1
        self.stats.fire_t_ns[part_id] = t
        self.reject_confirm = (self.reject_confirm + 1) & 0xFFFF
        log.debug("plc_valve_fired", part_id=part_id, hit=hit.part_index, error_mm=hit.error_mm)

    def _unwrap_raw(self, raw: int, t_ns: int) -> int:
        cur = self.unwrapped(t_ns)
        step = (raw - cur) % self._mod
        if step >= self._mod // 2:
            step -= self._mod
        return cur + step

    def _load_compare(self, target: int, part_id: int, t_ns: int) -> None:
        if self.unwrapped(t_ns) >= target:
            self.stats.late_results += 1
            log.warning(
                "plc_result_late", part_id=part_id, behind_counts=self.unwrapped(t_ns) - target
            )
            self._strike(part_id, t_ns)
            return
        bisect.insort(self._compare, (target, part_id))

    def _fire_target(self, edge_unwrapped: int) -> int:
        return edge_unwrapped + self.cfg.part_length_counts // 2 + self.cfg.fire_offset_counts

    def _remember_edge(self, edge_unwrapped: int, now: int) -> None:
        reached = self.unwrapped(now)
        keep = [e for e in self._recent_edges if self._fire_target(e) > reached]
        keep.append(edge_unwrapped)
        self._recent_edges = keep

    def _failsafe_load(self, edge_unwrapped: int) -> None:
        origin = edge_unwrapped + self.cfg.part_length_counts // 2
        self.stats.failsafe_strikes += 1
        part_id = -(self.stats.failsafe_strikes)  # no node part id: mark as PLC fail-safe
        target = origin + self.cfg.fire_offset_counts
        bisect.insort(self._compare, (target, part_id))

    # -- heartbeat ------------------------------------------------------------
    def _watch_heartbeat(self, now: int) -> None:
        if not self._hb_seen or not self.heartbeat_ok:
            return
        if now - self._hb_t_ns > self.cfg.heartbeat_timeout_s * 1e9:
            self._distrust(now, "heartbeat")

    def _node_says_ready(self) -> bool:
        out = self.outputs
        return bool(out.get("node_ready", 1)) and not bool(out.get("node_error", 0))

    def _distrust(self, now: int, why: str) -> None:
        self.heartbeat_ok = False
        self.stats.heartbeat_losses += 1
        log.warning("plc_node_heartbeat_lost", action=self.cfg.on_heartbeat_loss, cause=why)
        if self.cfg.on_heartbeat_loss == "stop_line":
            self.stop_belt(now)
        elif self.cfg.on_heartbeat_loss == "reject_all" and self.cfg.reject_in_flight:
            reached = self.unwrapped(now)
            for edge in self._recent_edges:
                if self._fire_target(edge) > reached:
                    self._failsafe_load(edge)

    def stop_belt(self, t_ns: int) -> None:
        """Stop the conveyor at ``t_ns`` (line_running goes false, the counter freezes)."""
        self.world.set_speed(t_ns, 0.0)
        self.line_running = False

    # -- outputs written by the node ---------------------------------------------
    def write(self, values: dict[str, int], t_ns: int | None = None) -> None:
        """The node wrote ``values`` (output name → value) in one request at ``t_ns``."""
        now = time.monotonic_ns() if t_ns is None else t_ns
        self.sync(now)
        self.outputs.update(values)
        if "node_ready" in values and bool(values["node_ready"]):
            self._ready_seen = True
        ready = self._node_says_ready() or not self._ready_seen
        if "heartbeat" in values:
            hb = values["heartbeat"]
            if hb != self._hb_value:
                self._hb_value = hb
                self._hb_t_ns = now
                if self._hb_seen and not self.heartbeat_ok and ready:
                    self.heartbeat_ok = True
                    log.info("plc_node_heartbeat_back")
                self._hb_seen = True
        if self._ready_seen and not ready and self.heartbeat_ok and self.world.started:
            self._distrust(now, "not ready")
        if "fire_seq" in values:
            seq = values["fire_seq"]
            if self._fire_seq is not None and seq != self._fire_seq:
                self.stats.fires_node_timed += 1
                self._strike(int(self.outputs.get("fire_part_id", -1)), now)
            self._fire_seq = seq
        if "result_valid" in values:
            valid = bool(values["result_valid"])
            if valid and not self._valid:
                self._accept_result(now)
            elif not valid and self._valid:
                self.result_ack = False
            self._valid = valid

    def _accept_result(self, now: int) -> None:
        out = self.outputs
        part_id = int(out.get("result_part_id", -1))
        self.stats.results += 1
        origin_raw = int(out.get("result_origin_count", 0))
        self.stats.result_origins[part_id] = origin_raw
        if out.get("result_reject"):
            self.stats.results_rejected += 1
            target = self._unwrap_raw(origin_raw, now) + self.cfg.fire_offset_counts
            self._load_compare(target, part_id, now)
        self.result_ack = True

    def init_fire_seq(self, value: int) -> None:
        """The fire sequence register's value at PLC start (no pulse for the first write)."""
        self._fire_seq = value


def program_for(cfg: Config, world: SimWorld, **overrides: Any) -> PlcProgram:
    """The emulated PLC configured for ``cfg``'s line geometry."""
    g = LineGeometry.from_config(cfg)
    pc = PlcProgramConfig(
        fire_offset_counts=g.fire_offset_counts,
        part_length_counts=g.part_length_counts,
        **overrides,
    )
    return PlcProgram(world, pc, cfg.line.encoder_bits)
