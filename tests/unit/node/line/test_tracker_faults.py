"""The tracker through the encoder faults of the campaign, against the emulated PLC.

Each episode runs the sim belt behind the emulated PLC program (its counter and its edge
latch, read through the driver's latch reader) at a random poll rhythm with stalls, and
serves a corrupted count for 2 s. Whatever the fault, every part whose leading edge
reached the sensor must be tracked exactly once, at its own count: a part never tracked
is never judged (a silent pass); a phantom is a verdict for nothing.
"""

from __future__ import annotations

import random
from typing import Final, Literal

import pytest

from drivers.plc.base import EncoderSample
from drivers.plc.transport import EdgeLatchReader, LinkCounters
from drivers.sim.world import SimWorld
from hil.plc_logic import program_for
from node.config import DEFAULT_CONFIG, load_config
from node.line.tracker import Tracker, TrackerConfig

_CFG = load_config(DEFAULT_CONFIG)
_BITS: Final = 32
_RUN_NS = 6_000_000_000
_FAULT_NS = 2_000_000_000


def _episode(seed: int, fault: Literal["garbage", "word_swap"]) -> tuple[list[int], list[int]]:
    """(part indices never tracked, part ids tracked at no part's count) for one run."""
    rnd = random.Random(seed)
    line = _CFG.line
    speed = rnd.choice([200.0, 640.0, 1200.0])
    offset = rnd.randrange(1 << _BITS)
    world = SimWorld(
        counts_per_mm=line.counts_per_mm,
        encoder_bits=_BITS,
        pitch_mm=line.part_pitch_mm,
        part_length_mm=line.part_length_mm,
        speed_profile=((0.0, speed),),
        part_factory=lambda i: None,
        placement_jitter_mm=lambda i: rnd.uniform(-1.0, 1.0),
        first_part_mm=line.first_part_mm + line.part_pitch_mm,
        count_offset=offset,
        max_parts=10_000,
        clock_ns=lambda: 0,
    )
    world.start(0)
    plc = program_for(_CFG, world)
    latch = EdgeLatchReader(plc.cfg.slots, LinkCounters())
    tracker = Tracker(TrackerConfig.from_config(_CFG), _BITS)
    fault_at = rnd.randrange(1_000_000_000, 3_000_000_000)
    plc.sync(0)
    tracked: list[tuple[int, int]] = []  # (part_id, origin as the PLC's raw count)
    t = first_t = rnd.randrange(1_000_000, 5_000_000)
    while t < _RUN_NS:
        plc.count_fault = fault if fault_at <= t < fault_at + _FAULT_NS else "none"
        plc.sync(t)
        edges = latch.new_edges(plc.latch_seq, list(plc.latch_slots))
        sample = EncoderSample(plc.raw_count(t), t + rnd.randrange(0, 300_000), None, edges)
        last_t = t
        tracked += [(p.part_id, tracker.raw_count(p.origin_count)) for p in tracker.update(sample)]
        stall = rnd.random() < 0.05
        t += rnd.randrange(20_000_000, 80_000_000) if stall else rnd.randrange(500_000, 6_000_000)
    modulus = 1 << _BITS
    cpm = line.counts_per_mm
    centre = {p.index: (int(p.cross_mm * cpm) + offset) % modulus for p in world.parts}
    half = line.part_length_mm / 2

    def at(raw: int) -> int | None:
        for index, c in centre.items():
            if min((raw - c) % modulus, (c - raw) % modulus) <= 8:  # edge interpolation
                return index
        return None

    seen: list[int] = []
    phantoms = []
    for part_id, raw in tracked:
        index = at(raw)
        if index is None or index in seen:
            phantoms.append(part_id)
        else:
            seen.append(index)
    # every part whose leading edge passed the sensor between the first and last reading
    d0, d1 = world.displacement_mm(first_t), world.displacement_mm(last_t)
    due = [p.index for p in world.parts if d0 + 1 < p.cross_mm - half < d1]
    return [i for i in due if i not in seen], phantoms


_SEEDS = [*range(150), 1379, 1630, 1840, 2136, 2536]
"""150 episodes, and five where a garbage count landing near the belt's position was once
believed: up to 110 parts went untracked behind it (held until confirmed since)."""


@pytest.mark.parametrize("fault", ["garbage", "word_swap"])
def test_every_part_is_tracked_once_through_a_corrupted_count(fault: str) -> None:
    """No part untracked, none tracked twice or at a wrong count, in any episode."""
    failures = {}
    for seed in _SEEDS:
        untracked, phantoms = _episode(seed, fault)  # type: ignore[arg-type]
        if untracked or phantoms:
            failures[seed] = (untracked, phantoms)
    assert failures == {}
