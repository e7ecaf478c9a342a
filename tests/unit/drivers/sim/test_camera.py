"""The simulated camera: what it saw, kept for scoring — bounded on an endless belt."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from drivers.sim.camera import SimCamera, SimCameraSettings
from drivers.sim.world import SimWorld


def _world(**kw: object) -> SimWorld:
    w = SimWorld(
        counts_per_mm=4.0,
        encoder_bits=32,
        pitch_mm=30.0,
        part_length_mm=28.0,
        speed_profile=[(0.0, 1000.0)],
        part_factory=lambda i: i,
        **kw,  # type: ignore[arg-type]
    )
    w.start(time.monotonic_ns())
    return w


async def _shoot(world: SimWorld, n: int) -> SimCamera:
    frame = np.zeros((8, 8), np.uint8)
    cam = SimCamera(
        world,
        SimCameraSettings(width_px=8, height_px=8, mm_per_px=4.0, position_mm=0.0, latency_s=0.0),
        lambda payload, x, y: frame,
        lambda: frame,
    )
    async with cam:
        frames = cam.frames()
        for part_id in range(n):
            await cam.trigger(part_id, 0)
            got = await asyncio.wait_for(anext(frames), 5.0)
            assert got.part_id == part_id
    return cam


async def test_an_endless_belt_keeps_only_the_recent_frames_record() -> None:
    """Without max_parts the camera remembers at most 2 × keep_parts triggers (the newest),
    so the node's own sim line does not grow in memory; a finite run remembers all."""
    endless = await _shoot(_world(keep_parts=10), 60)
    assert len(endless.rendered) < 20 and 59 in endless.rendered and 0 not in endless.rendered
    finite = await _shoot(_world(keep_parts=10, max_parts=1000), 60)
    assert sorted(finite.rendered) == list(range(60))
