"""Builds the node's edges from config: one lazily imported class per choice.

Only the chosen driver or backend is imported, so torch, TensorRT or PyGObject
load only when a config asks for them. The simulated line is assembled here
because its three drivers must share one world and the camera needs the part
renderer from ``models.synth`` (drivers import nothing of ours).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import structlog

from drivers.camera.base import Camera
from drivers.errors import CameraDriverError
from drivers.plc.base import EncoderSource, RejectOutput
from drivers.sim.plc import SimEncoder
from models.backend import Backend, BackendError
from node.app import Components
from node.config import Config
from node.errors import CameraError, ModelError
from node.line.actuation import Acted, ActuationFactory
from node.line.actuation.node_timed import NodeTimedActuation
from node.line.actuation.plc_tracked import PlcTrackedActuation
from node.line.judge import Judge
from node.line.tracker import Tracker
from node.plc import NodePlc
from node.shadow import Shadow, shadow_dir
from node.sim.line import SimLine, build_sim_line

if TYPE_CHECKING:
    from models.package import ModelPackage

log = structlog.get_logger(__name__)

_MM_PER_PX_TOLERANCE = 0.1
"""A model runs at a scale within 10 % of the one it was trained at, or not at all."""


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
    return load_model_backend(cfg)


@dataclass(frozen=True, slots=True)
class ModelPackageCheck:
    """``[inspection.model]``'s package as this config would load it.

    ``package`` is None when it cannot be loaded; ``problems`` are the reasons it would be
    refused, one line each naming the config key; ``signature`` says who signed it.
    """

    package: ModelPackage | None
    problems: list[str]
    signature: str = ""


def check_model_package(cfg: Config, *, shadow: bool = False) -> ModelPackageCheck:
    """Open and verify the configured package (``shadow``: the shadow candidate,
    ``[inspection.shadow]``) without running it.

    Checks that it loads (its files and its manifest match their hashes), that its digest
    is the one ``inspection.model.sha256`` pins, that its signature is sound and by one
    of ``inspection.model.trusted_keys`` (when keys are configured or
    ``inspection.model.require_signature`` is set; unsigned is refused only when
    required), and that it was trained for this ROI size and scale.
    """
    from models.package import PackageError, load_package
    from models.signing import SigningError, load_public_key, verify_signature

    insp = cfg.inspection
    m = insp.model
    section = "inspection.shadow" if shadow else "inspection.model"
    key = f"{section}.package"
    path, pin = (insp.shadow.package, insp.shadow.sha256) if shadow else (m.package, m.sha256)
    if path is None:
        return ModelPackageCheck(None, [f"{key}: not set"])
    problems: list[str] = []
    trusted = []
    for i, key_file in enumerate(m.trusted_keys):
        try:
            trusted.append((key_file, load_public_key(key_file)))
        except SigningError as exc:
            problems.append(f"inspection.model.trusted_keys[{i}]: {exc}")
    try:
        package = load_package(path)
    except PackageError as exc:
        return ModelPackageCheck(None, [f"{key}: {exc}", *problems])
    except OSError as exc:
        return ModelPackageCheck(None, [f"{key}: {path}: {exc}", *problems])
    if pin is not None and package.sha256 != pin:
        problems.append(
            f"{section}.sha256: pins {pin}, but {path} has package_sha256 "
            f"{package.sha256} (another package, or this one changed since it was pinned)"
        )
    sig = verify_signature(package, trusted)
    if sig.state == "invalid":
        problems.append(f"{key}: {path}: {sig.detail}")
    elif sig.state == "untrusted" and (m.trusted_keys or m.require_signature):
        problems.append(
            f"inspection.model.trusted_keys: {path} is signed by key {sig.key_id}, "
            "which is not among them"
        )
    elif sig.state == "unsigned" and m.require_signature:
        problems.append(
            f"inspection.model.require_signature: {path} is not signed "
            "(sign it with `lineside model sign PACKAGE --key PRIVATE_KEY`)"
        )
    size = package.manifest.input.size_px
    if size != insp.roi_size_px:
        problems.append(
            f"{key}: {path} takes {size}x{size} px images, "
            f"but inspection.roi_size_px is {insp.roi_size_px}"
        )
    trained = package.manifest.input.mm_per_px
    if abs(insp.mm_per_px - trained) > _MM_PER_PX_TOLERANCE * trained:
        problems.append(
            f"{key}: {path} was trained at {trained} mm/px, "
            f"but inspection.mm_per_px is {insp.mm_per_px}; retrain it at this scale"
        )
    problems += recipe_type_problems(cfg, package.manifest.types)
    return ModelPackageCheck(package, problems, sig.detail)


def recipe_type_problems(cfg: Config, types: Sequence[str]) -> list[str]:
    """The recipe's rules and causes naming a defect type the model does not report."""
    from models.findings import UNKNOWN_TYPE

    known = {*types, UNKNOWN_TYPE}
    recipe = cfg.inspection.recipe
    problems: list[str] = []
    named = [("rules", i, r.types) for i, r in enumerate(recipe.rules)]
    named += [("causes", i, c.types) for i, c in enumerate(recipe.causes)]
    for kind, i, item_types in named:
        for t in item_types:
            if t not in known:
                problems.append(
                    f"inspection.recipe.{kind}.{i}.types: the model reports no type {t!r} "
                    f"(it knows {', '.join(sorted(known))})"
                )
    return problems


def load_model_backend(cfg: Config, *, shadow: bool = False) -> Backend:
    """Load ``[inspection.model]`` (``shadow``: the ``[inspection.shadow]`` candidate, on one
    thread) on the configured runtime (``models.runtime.open_runtime``).

    The package is verified first (``check_model_package``). Raises ``ModelError``
    naming the config key for a missing, corrupt, edited, unpinned, untrusted or
    mismatched package and for a runtime that cannot start (e.g. TensorRT or cuda without a
    GPU). A GPU runtime whose parity gate refuses every precision falls back to ONNX Runtime
    on the CPU (``models.runtime.open_runtime``).
    """
    return _open_model(cfg, shadow=shadow)[0]


def _open_model(cfg: Config, *, shadow: bool) -> tuple[Backend, ModelPackage]:
    """``load_model_backend``, with the verified package it runs."""
    insp = cfg.inspection
    m = insp.model
    from models.runtime import RUNTIMES, open_runtime

    check = check_model_package(cfg, shadow=shadow)
    if check.problems or check.package is None:
        raise ModelError("; ".join(check.problems))
    package = check.package
    log.info(
        "model_package_verified",
        role="shadow" if shadow else "active",
        package=str(insp.shadow.package if shadow else m.package),
        sha256=package.sha256,
        pinned=(insp.shadow.sha256 if shadow else m.sha256) is not None,
        signature=check.signature,
    )
    if insp.backend not in RUNTIMES:
        raise ModelError(f"inspection.backend: unknown backend {insp.backend!r}")
    cache = m.engine_cache
    if not cache.is_absolute():
        cache = cfg.node.state_dir / cache
    try:
        backend = open_runtime(
            insp.backend,
            package,
            1 if shadow else m.threads,
            m.max_batch,
            engine_cache=cache,
            explain=m.explain,
            mm_per_px=insp.mm_per_px,
            min_region_area_mm2=insp.recipe.min_region_area_mm2,
            # A GPU whose every precision fails the parity gate: judge on the CPU
            # (logged as runtime_fallback; the backend's describe() lists each step).
            fallback=True,
        )
    except (BackendError, ValueError) as exc:
        raise ModelError(f"inspection.backend = {insp.backend!r}: {exc}") from exc
    return backend, package


def build_components(cfg: Config, sim: SimLine | None = None) -> tuple[Components, SimLine | None]:
    """The node's edges for ``cfg``; returns the sim line too when any edge is simulated.

    With ``encoder.driver`` or ``reject.driver`` = ``plc`` both PLC edges are one
    :class:`NodePlc` (one link, opened once).
    """
    uses_sim = "sim" in (cfg.camera.driver, cfg.encoder.driver, cfg.reject.driver)
    if uses_sim and sim is None:
        sim = build_sim_line(cfg)
    plc = NodePlc.from_config(cfg) if cfg.plc is not None else None
    camera: AbstractAsyncContextManager[Camera]
    if cfg.camera.driver == "sim":
        assert sim is not None
        camera = sim.camera_resource()
    else:
        camera = open_camera(cfg)
    encoder: AbstractAsyncContextManager[EncoderSource]
    if cfg.encoder.driver == "plc":
        assert plc is not None  # the config requires [plc]
        encoder = plc
    else:
        assert sim is not None
        encoder = SimEncoder(
            sim.world,
            cfg.encoder.sim.sample_interval_ms / 1000,
            with_part_present=cfg.line.tracking == "sensor",
            latch_edges=cfg.encoder.sim.latch_edges,
        )
    reject: AbstractAsyncContextManager[RejectOutput]
    if cfg.reject.driver == "plc":
        assert plc is not None
        reject = plc
    else:
        assert sim is not None
        reject = sim.output
    return (
        Components(
            encoder=encoder,
            camera=camera,
            reject=reject,
            backend=lambda: load_backend(cfg),
            actuation=actuation_for(cfg, plc),
            plc=plc,
            shadow=(lambda: open_shadow(cfg)) if cfg.inspection.shadow.package else None,
        ),
        sim,
    )


def open_shadow(cfg: Config) -> Shadow:
    """The ``[inspection.shadow]`` candidate, verified and loaded, not yet started.

    Raises ``ModelError`` naming the key, as for the active package.
    """
    backend, package = _open_model(cfg, shadow=True)  # verified once, as it is loaded
    settings = cfg.inspection.shadow
    return Shadow(
        backend,
        Judge(cfg.inspection.recipe, cfg.inspection.mm_per_px),
        shadow_dir(cfg.node.state_dir, package.sha256),
        package={"path": str(settings.package), "sha256": package.sha256},
        queue_size=settings.queue,
        keep_images=settings.keep_images,
    )


def actuation_for(cfg: Config, plc: NodePlc | None) -> ActuationFactory:
    """How rejects are struck: by the PLC's shift register when ``[plc]`` says
    ``reject_mode = "plc_tracked"`` and the PLC is the reject edge, else by the node's
    own pulse timer on the reject output."""
    if plc is not None and cfg.reject.driver == "plc" and plc.reject_mode == "plc_tracked":
        timeout_s = cfg.reject.timeout_ms / 1000 * 4  # the whole ResultValid/Ack handshake
        tracked_by: NodePlc = plc

        def plc_tracked(
            output: RejectOutput, tracker: Tracker, on_acted: Acted
        ) -> PlcTrackedActuation:
            return PlcTrackedActuation(tracked_by, tracker, on_acted, timeout_s=timeout_s)

        return plc_tracked

    def node_timed(output: RejectOutput, tracker: Tracker, on_acted: Acted) -> NodeTimedActuation:
        return NodeTimedActuation(
            output,
            tracker,
            on_acted,
            counts_per_mm=cfg.line.counts_per_mm,
            part_length_mm=cfg.line.part_length_mm,
        )

    return node_timed


@contextlib.asynccontextmanager
async def open_camera(cfg: Config) -> AsyncIterator[Camera]:
    """Open the configured GigE Vision camera (lazily imported driver).

    Raises ``CameraError`` when it cannot be opened or configured.
    """
    cam = cfg.camera
    shared = {"timeout_ms": cam.timeout_ms, "queue_size": cam.queue_size}
    driver: AbstractAsyncContextManager[Camera]
    opened: Camera
    if cam.driver == "aravis" and cam.aravis is not None:
        from drivers.camera.aravis import AravisCamera

        driver = AravisCamera(cam.aravis.model_copy(update=shared))
    elif cam.driver == "harvesters" and cam.harvesters is not None:
        from drivers.camera.harvesters import HarvestersCamera

        driver = HarvestersCamera(cam.harvesters.model_copy(update=shared))
    else:
        raise CameraError(f"camera.driver: no driver for {cam.driver!r}")
    async with contextlib.AsyncExitStack() as stack:
        try:
            opened = await stack.enter_async_context(driver)
        except CameraDriverError as exc:
            raise CameraError(f"camera ({cam.driver}): {exc}") from exc
        yield opened


def read_teach_images(folder: Path) -> list[npt.NDArray[np.uint8]]:
    """Every PNG/BMP/TIFF in ``folder`` as grayscale. Raises ``ValueError`` when there are none."""
    from PIL import Image

    paths = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in {".png", ".bmp", ".tif", ".tiff"}
    )
    if not paths:
        raise ValueError(f"{folder}: no .png/.bmp/.tif images to teach from")
    return [np.asarray(Image.open(p).convert("L"), dtype=np.uint8) for p in paths]
