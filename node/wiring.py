"""Builds the node's edges from config: one lazily imported class per choice.

Only the chosen driver or backend is imported, so torch, TensorRT or PyGObject
load only when a config asks for them. The simulated line is assembled here
because its three drivers must share one world and the camera needs the part
renderer from ``models.synth`` (drivers import nothing of ours).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from drivers.camera.sim import SimCamera, SimCameraSettings
from drivers.plc.sim import SimEncoder, SimRejectOutput
from drivers.simworld import SimWorld
from models.backend import Backend
from models.synth import PartSpec, RenderedPart, render_part, render_scene, sample_part_spec
from node.app import Components
from node.config import Config
from node.errors import ModelError

_BELT_LEVEL = 30


@dataclass
class SimLine:
    """The simulated line behind the sim drivers, kept for scoring against ground truth."""

    world: SimWorld
    camera: SimCamera
    output: SimRejectOutput
    specs: dict[int, PartSpec] = field(default_factory=dict)


class _RenderCache:
    """Renders each part once (on the camera thread) and keeps the last few."""

    def __init__(self, mm_per_px: float, size: int = 64) -> None:
        self._mm_per_px = mm_per_px
        self._size = size
        self._cache: collections.OrderedDict[PartSpec, RenderedPart] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: PartSpec) -> RenderedPart:
        with self._lock:
            hit = self._cache.get(spec)
        if hit is not None:
            return hit
        rendered = render_part(spec, self._mm_per_px)
        with self._lock:
            self._cache[spec] = rendered
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return rendered


def part_spec_for(cfg: Config, index: int) -> PartSpec:
    """The sim line's part ``index``: deterministic from ``sim.seed`` and the index."""
    rng = np.random.default_rng([cfg.sim.seed, index])
    return sample_part_spec(
        rng, cfg.sim.family, cfg.sim.defect_rate, part_size_mm=cfg.line.part_length_mm
    )


def build_sim_line(cfg: Config) -> SimLine:
    """Assemble the simulated belt, camera and actuator described by ``[sim]``."""
    specs: dict[int, PartSpec] = {}

    def factory(index: int) -> object:
        spec = part_spec_for(cfg, index)
        specs[index] = spec
        return spec

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
        counts_per_mm=cfg.line.counts_per_mm,
        encoder_bits=cfg.line.encoder_bits,
        pitch_mm=cfg.line.part_pitch_mm,
        part_length_mm=cfg.line.part_length_mm,
        speed_profile=profile,
        part_factory=factory,
        placement_jitter_mm=jitter,
        first_part_mm=first_mm,
        count_offset=cfg.encoder.sim.count_offset,
        reject_position_mm=cfg.line.reject_position_mm,
        actuator_lead_mm=cfg.line.actuator_lead_mm,
    )
    cam = cfg.camera.sim
    cache = _RenderCache(cam.mm_per_px)
    hw = (cam.height_px, cam.width_px)
    noise = np.random.default_rng([cfg.sim.seed, 11])

    def render(payload: object, cx: float, cy: float) -> npt.NDArray[np.uint8]:
        assert isinstance(payload, PartSpec)
        seed = int(noise.integers(0, 2**31))
        image, _ = render_scene(cache.get(payload), hw, (cx, cy), _BELT_LEVEL, noise_seed=seed)
        return image

    blank_part = cache.get(PartSpec(cfg.sim.family, 0, None, cfg.line.part_length_mm))

    def render_blank() -> npt.NDArray[np.uint8]:
        # the part is placed far outside the frame: only belt and sensor noise remain
        image, _ = render_scene(blank_part, hw, (-10.0 * cam.width_px, cy_blank), _BELT_LEVEL)
        return image

    cy_blank = cam.height_px / 2
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
        render,
        render_blank,
    )
    return SimLine(world, camera, SimRejectOutput(world), specs)


def load_backend(cfg: Config) -> Backend:
    """Load the configured backend. Raises ``ModelError`` when it cannot be loaded."""
    insp = cfg.inspection
    if insp.backend == "classical":
        from models.classical import TemplateBackend, TemplateModel

        path = insp.classical.template
        if not path.is_file():
            raise ModelError(
                f"inspection.classical.template: {path} does not exist; "
                "teach it from good parts with `lineside teach CONFIG`"
            )
        try:
            model = TemplateModel.load(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"inspection.classical.template: {path}: {exc}") from exc
        if model.shape != (insp.roi_size_px, insp.roi_size_px):
            raise ModelError(
                f"inspection.classical.template: {path} was taught at {model.shape}, "
                f"but inspection.roi_size_px is {insp.roi_size_px}; teach it again"
            )
        return TemplateBackend(
            model,
            mm_per_px=insp.mm_per_px,
            pixel_threshold=insp.recipe.pixel_threshold,
            min_region_area_mm2=insp.recipe.min_region_area_mm2,
        )
    raise ModelError(f"inspection.backend: unknown backend {insp.backend!r}")


def build_components(cfg: Config, sim: SimLine | None = None) -> tuple[Components, SimLine | None]:
    """The node's edges for ``cfg``; returns the sim line too when the config uses it."""
    uses_sim = "sim" in (cfg.camera.driver, cfg.encoder.driver, cfg.reject.driver)
    if uses_sim and sim is None:
        sim = build_sim_line(cfg)
    if cfg.camera.driver == "sim" and cfg.encoder.driver == "sim" and cfg.reject.driver == "sim":
        assert sim is not None
        return (
            Components(
                encoder=SimEncoder(
                    sim.world,
                    cfg.encoder.sim.sample_interval_ms / 1000,
                    with_part_present=cfg.line.tracking == "sensor",
                ),
                camera=sim.camera,
                reject=sim.output,
                backend=lambda: load_backend(cfg),
            ),
            sim,
        )
    raise NotImplementedError("only the simulated drivers exist so far")


def teach_images_from_sim(cfg: Config, count: int) -> list[npt.NDArray[np.uint8]]:
    """Frames of good parts from the sim camera's renderer, for ``lineside teach``."""
    cam = cfg.camera.sim
    cache = _RenderCache(cam.mm_per_px, size=1)
    rng = np.random.default_rng([cfg.sim.seed, 99])
    frames = []
    for i in range(count):
        spec = PartSpec(cfg.sim.family, int(rng.integers(0, 2**31)), None, cfg.line.part_length_mm)
        dx = rng.uniform(-1.5, 1.5) / cam.mm_per_px
        image, _ = render_scene(
            cache.get(spec),
            (cam.height_px, cam.width_px),
            (cam.width_px / 2 + dx, cam.height_px / 2),
            _BELT_LEVEL,
            noise_seed=i,
        )
        frames.append(image)
    return frames


def read_teach_images(folder: Path) -> list[npt.NDArray[np.uint8]]:
    """Every PNG/BMP/TIFF in ``folder`` as grayscale. Raises ``ValueError`` when there are none."""
    from PIL import Image

    paths = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in {".png", ".bmp", ".tif", ".tiff"}
    )
    if not paths:
        raise ValueError(f"{folder}: no .png/.bmp/.tif images to teach from")
    return [np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in paths]
