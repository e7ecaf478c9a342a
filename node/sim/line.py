"""The simulated line behind the sim drivers, assembled from ``[sim]`` and ``[line]``.

Its three drivers share one ``SimWorld``; the camera renders parts with
``models.synth`` (drivers import nothing of ours, so the renderer is handed in
here). Rendering runs in a separate process: a real camera delivers frames
from a vendor thread that does not hold the GIL, and a renderer in this
process would, delaying the node's reject pulses in a way no real camera does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from drivers.sim.camera import SimCamera, SimCameraSettings
from drivers.sim.plc import SimRejectOutput
from drivers.sim.world import SimWorld
from models.synth import PartSpec, sample_part_spec
from node.config import Config
from node.sim.render import render_frame, worker_init

_RENDER_TIMEOUT_S = 10.0


class ProcessRenderer:
    """Renders sim camera frames in one worker process; call from the camera thread."""

    def __init__(self, mm_per_px: float, hw: tuple[int, int], blank: PartSpec, seed: int) -> None:
        self._mm_per_px = mm_per_px
        self._hw = hw
        self._blank = blank
        self._noise = np.random.default_rng([seed, 11])
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def open(self) -> None:
        """Start the worker and render one frame so its imports are done before parts come."""
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=worker_init,
        )
        self.blank()

    def close(self) -> None:
        """Stop the worker."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self, spec: PartSpec, centre: tuple[float, float]) -> npt.NDArray[np.uint8]:
        if self._pool is None:
            raise RuntimeError("ProcessRenderer used before open()")
        seed = int(self._noise.integers(0, 2**31))
        future = self._pool.submit(render_frame, spec, self._mm_per_px, self._hw, centre, seed)
        return future.result(timeout=_RENDER_TIMEOUT_S)

    def __call__(self, payload: object, cx: float, cy: float) -> npt.NDArray[np.uint8]:
        """The frame with part ``payload`` (a ``PartSpec``) centred at ``(cx, cy)``."""
        if not isinstance(payload, PartSpec):
            raise TypeError(f"sim part payload must be a PartSpec, got {type(payload).__name__}")
        return self._submit(payload, (cx, cy))

    def blank(self) -> npt.NDArray[np.uint8]:
        """The empty belt: the part is placed far outside the frame."""
        return self._submit(self._blank, (-10.0 * self._hw[1], self._hw[0] / 2))


@dataclass
class SimLine:
    """The simulated line behind the sim drivers, kept for scoring against ground truth."""

    world: SimWorld
    camera: SimCamera
    output: SimRejectOutput
    renderer: ProcessRenderer

    def spec(self, index: int) -> PartSpec | None:
        """What part ``index`` is (its defect, if any), or None if the world has no such part."""
        part = self.world.part(index)
        return part.payload if part is not None and isinstance(part.payload, PartSpec) else None

    @contextlib.asynccontextmanager
    async def camera_resource(self) -> AsyncIterator[SimCamera]:
        """The camera as the node opens it: render worker first, closed after the camera."""
        await asyncio.to_thread(self.renderer.open)
        try:
            async with self.camera as cam:
                yield cam
        finally:
            await asyncio.to_thread(self.renderer.close)


def part_spec_for(cfg: Config, index: int) -> PartSpec:
    """The sim line's part ``index``: deterministic from ``sim.seed`` and the index; within
    ``[sim.repeat]``'s parts, its repeating defect instead of the drawn one; of the others'
    defects, ``sim.multi_defect_rate`` come in twos."""
    rng = np.random.default_rng([cfg.sim.seed, index])
    spec = sample_part_spec(
        rng, cfg.sim.family, cfg.sim.defect_rate, part_size_mm=cfg.line.part_length_mm
    )
    r = cfg.sim.repeat
    if r is not None and r.from_part <= index < r.from_part + r.parts:
        return dataclasses.replace(spec, defect=r.defect, defect_seed=r.seed)
    multi = (
        spec.defect not in (None, "missing_feature") and rng.random() < cfg.sim.multi_defect_rate
    )
    return dataclasses.replace(spec, count=2) if multi else spec


def build_sim_line(cfg: Config) -> SimLine:
    """Assemble the simulated belt, camera and actuator described by ``[sim]``."""

    def factory(index: int) -> object:
        return part_spec_for(cfg, index)

    jitter_rng = np.random.default_rng([cfg.sim.seed, 7])
    jitter_mm = cfg.sim.placement_jitter_mm

    def jitter(index: int) -> float:
        return float(jitter_rng.uniform(-jitter_mm, jitter_mm)) if jitter_mm else 0.0

    profile = cfg.sim.speed_profile or ((0.0, cfg.sim.speed_mm_s),)
    cpm = cfg.line.counts_per_mm
    if cfg.line.tracking == "pitch":
        # Parts sit on the pitch grid of the counter, as on a line with flights or pockets.
        pitch_c = round(cfg.line.part_pitch_mm * cpm)
        first_c = round(cfg.line.first_part_mm * cpm)
        first_mm = ((first_c - cfg.encoder.sim.count_offset) % pitch_c) / cpm
    else:
        # the first part enters upstream of the sensor so the line starts empty
        first_mm = cfg.line.first_part_mm + cfg.line.part_pitch_mm
    world = SimWorld(
        counts_per_mm=cpm,
        encoder_bits=cfg.line.encoder_bits,
        pitch_mm=cfg.line.part_pitch_mm,
        part_length_mm=cfg.line.part_length_mm,
        speed_profile=profile,
        accel_mm_s2=cfg.sim.accel_mm_s2,
        part_factory=factory,
        placement_jitter_mm=jitter,
        first_part_mm=first_mm,
        count_offset=cfg.encoder.sim.count_offset,
        reject_position_mm=cfg.line.reject_position_mm,
        actuator_lead_mm=cfg.line.actuator_lead_mm,
    )
    cam = cfg.camera.sim
    renderer = ProcessRenderer(
        cam.mm_per_px,
        (cam.height_px, cam.width_px),
        PartSpec(cfg.sim.family, 0, None, cfg.line.part_length_mm),
        cfg.sim.seed,
    )
    camera = SimCamera(
        world,
        SimCameraSettings(
            width_px=cam.width_px,
            height_px=cam.height_px,
            mm_per_px=cam.mm_per_px,
            position_mm=cfg.line.camera_position_mm,
            latency_s=cam.latency_ms / 1000,
            drop_rate=cam.drop_rate,
            incomplete_rate=cam.incomplete_rate,
            queue_size=cfg.camera.queue_size,
            seed=cfg.sim.seed,
        ),
        renderer,
        renderer.blank,
    )
    return SimLine(world, camera, SimRejectOutput(world), renderer)


def teach_images_from_sim(cfg: Config, count: int) -> list[npt.NDArray[np.uint8]]:
    """Frames of good parts as the sim camera sees them, for ``lineside teach``."""
    cam = cfg.camera.sim
    rng = np.random.default_rng([cfg.sim.seed, 99])
    frames = []
    for i in range(count):
        spec = PartSpec(cfg.sim.family, int(rng.integers(0, 2**31)), None, cfg.line.part_length_mm)
        dx = rng.uniform(-1.5, 1.5) / cam.mm_per_px
        centre = (cam.width_px / 2 + dx, cam.height_px / 2)
        frames.append(render_frame(spec, cam.mm_per_px, (cam.height_px, cam.width_px), centre, i))
    return frames
