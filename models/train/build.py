"""From a data set folder to a verified model package: train, export, write the manifest."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
import torch

from models.data.holdout import Holdout, hold_out
from models.data.mvtec import MvtecDataset, load_gray, read_mvtec
from models.export import export_onnx
from models.package import (
    CHECK_DIR,
    WEIGHTS_FILE,
    ModelPackage,
    load_package,
    write_check_images,
    write_manifest,
)
from models.synth import (
    DEFECT_KINDS,
    FAMILIES,
    DefectKind,
    render_part,
    render_scene,
    sample_part_spec,
)
from models.train.loop import NORM_MEAN, NORM_STD, FitResult, TrainConfig, fit
from models.train.size_fit import calibrate_sizes

log = structlog.get_logger(__name__)

DEFAULT_MIN_REGION_AREA_MM2 = 0.3
"""Smallest region a package reports by default (mm²), as the classical detector."""
CHECK_GOOD = 3
CHECK_DEFECTIVE = 5
"""How many good and defective check images a package ships (``models.runtime.parity``):
enough that a precision which moves a mask edge, a score or a type shows on one of them,
few enough that the gate costs well under a second at load."""

CheckImages = Sequence[tuple[str, npt.NDArray[np.uint8]]]
"""``(label, uint8 (S, S))`` pairs: the label names the file (``good``, a defect type)."""


def dataset_check_images(ds: MvtecDataset) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """Check images drawn from the data set a package is trained on (never a held-out one:
    ``ds`` is what training kept): the first ``CHECK_GOOD`` good test images (train images
    when the test split has too few) and ``CHECK_DEFECTIVE`` defective ones, one type after
    the other. The same data set always gives the same images.

    The gate compares two runtimes on them, not the model with the truth, so images the
    model has seen serve as well as new ones.
    """
    good = [s for s in (*ds.select("test"), *ds.select("train")) if s.is_good][:CHECK_GOOD]
    by_type = [ds.select("test", t) for t in ds.defect_types]
    defective = []
    for i in range(max((len(b) for b in by_type), default=0)):
        defective += [b[i] for b in by_type if i < len(b)]
    chosen = [*good, *defective[:CHECK_DEFECTIVE]]
    return [(s.defect_type, load_gray(s.path)) for s in chosen]


def synth_check_images(
    family: str,
    seed: int,
    *,
    mm_per_px: float,
    size_px: int,
    part_size_mm: float,
    belt_level: int = 30,
) -> list[tuple[str, npt.NDArray[np.uint8]]]:
    """Check images rendered by the part simulator (``models.synth``) as ``lineside synth``
    renders a data set: ``CHECK_GOOD`` good parts and ``CHECK_DEFECTIVE`` defective ones, one
    defect kind after the other, centred on the belt. ``seed`` must not be the seed of the
    package's training data, so the check parts are parts it has not seen.
    Raises ``ValueError`` for an unknown family or a part that does not fit the crop.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown part family {family!r}; expected one of {sorted(FAMILIES)}")
    if part_size_mm / mm_per_px > size_px:
        raise ValueError(f"a {part_size_mm} mm part does not fit a {size_px} px crop")
    rng = np.random.default_rng([seed, 7])
    centre = ((size_px - 1) / 2.0, (size_px - 1) / 2.0)
    out: list[tuple[str, npt.NDArray[np.uint8]]] = []
    kinds: list[DefectKind | None] = [None] * CHECK_GOOD
    kinds += [DEFECT_KINDS[i % len(DEFECT_KINDS)] for i in range(CHECK_DEFECTIVE)]
    for kind in kinds:
        spec = sample_part_spec(rng, family, 0.0, part_size_mm=part_size_mm)
        for _ in range(50):  # redraw until the defect is visible, as the data sets do
            if kind is None:
                break
            spec = sample_part_spec(rng, family, 1.0, [kind], part_size_mm=part_size_mm)
            truth = render_part(spec, mm_per_px).truth
            if truth is not None and truth.visible:
                break
        part = render_part(spec, mm_per_px)
        image, _ = render_scene(part, (size_px, size_px), centre, belt_level, spec.seed)
        out.append((kind or "good", image))
    return out


def add_check_images(package_dir: str | Path, images: CheckImages) -> ModelPackage:
    """Give the package in ``package_dir`` the check images ``images`` (replacing any) and
    rewrite its manifest (a new digest; a signature is removed: sign it again).

    For a package written before packages carried check images. Raises
    ``PackageError`` for a bad package, ``ValueError`` for no images or a wrong size,
    ``OSError`` when they cannot be written.
    """
    pkg = load_package(package_dir)
    size = pkg.manifest.input.size_px
    if not images:
        raise ValueError("no check images given")
    for label, pixels in images:
        if pixels.shape != (size, size):
            raise ValueError(f"check image {label!r}: {pixels.shape}, the package takes {size}²")
    fields = pkg.manifest.model_dump(mode="json", exclude={"format", "format_version", "files"})
    fields["check"] = write_check_images(pkg.root, images)
    write_manifest(pkg.root, fields)
    log.info("check_images_added", package=str(pkg.root), images=len(images))
    return load_package(pkg.root)


@dataclass(frozen=True, slots=True)
class BuildResult:
    """The package written and the training run behind it."""

    package: ModelPackage
    fit: FitResult


def save_package(
    result: FitResult,
    out_dir: str | Path,
    cfg: TrainConfig,
    dataset_name: str,
    dataset_sha256: str,
    dataset_images: int,
    holdout: Holdout | None = None,
    check_images: CheckImages = (),
) -> ModelPackage:
    """Write ``result`` as a package into ``out_dir`` (replacing its files) and verify it.

    ``check_images`` ship in it for the GPU runtimes' parity gate
    (``dataset_check_images``; none: those runtimes refuse fp16 for it).

    Raises ``OSError`` when it cannot be written, ``PackageError`` if the
    written package does not verify.
    """
    out = Path(out_dir)
    if out.exists():
        for name in ("manifest.json", "detect.onnx", "explain.onnx", WEIGHTS_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / ".engines", ignore_errors=True)
        shutil.rmtree(out / CHECK_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    # The weights ship in float16 (half the file); round the network to them
    # first so the ONNX graphs and the torch reference compute the same thing.
    state = {
        k: v.detach().to(torch.float16) if v.is_floating_point() else v
        for k, v in result.net.state_dict().items()
    }
    result.net.load_state_dict(
        {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    )
    paths = export_onnx(result.net, out)
    torch.save(state, out / WEIGHTS_FILE)
    data: dict[str, Any] = {}
    if holdout is not None:
        seen, held = holdout.hashes()
        data["data"] = {
            "holdout_fraction": holdout.fraction,
            "holdout_seed": holdout.seed,
            "seen_sha256": seen,
            "holdout_sha256": held,
        }
    if check_images:
        data["check"] = write_check_images(out, check_images)
    write_manifest(
        out,
        {
            "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "input": {
                "size_px": result.net.cfg.input_size_px,
                "channels": 1,
                "mm_per_px": cfg.mm_per_px,
                "part_threshold": cfg.part_threshold,
                "normalization": {"mean": NORM_MEAN, "std": NORM_STD},
            },
            "types": list(result.types),
            "vocabulary": list(result.vocab.tokens),
            "net": result.net.cfg.to_dict(),
            "thresholds": {
                "image_score": result.thresholds.image_score,
                "pixel": result.thresholds.pixel,
                "region": result.thresholds.region,
                "merge_mm": result.thresholds.merge_mm,
                "min_region_area_mm2": DEFAULT_MIN_REGION_AREA_MM2,
            },
            "metrics": {k: float(v) for k, v in result.metrics.items()},
            "dataset": {"name": dataset_name, "sha256": dataset_sha256, "images": dataset_images},
            **data,
            "training": {
                **cfg.to_dict(),
                **(
                    {"from_package_sha256": load_package(cfg.init_from).sha256}
                    if cfg.init_from is not None
                    else {}
                ),
                "steps_done": result.steps,
                "minutes": round(result.minutes, 2),
                "torch": torch.__version__,
            },
            "graphs": {"detect": paths["detect"].name, "explain": paths["explain"].name},
            "weights": WEIGHTS_FILE,
        },
    )
    return load_package(out)


def train_package(
    dataset: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig,
    category: str | None = None,
    holdout_list: Sequence[str] | None = None,
) -> BuildResult:
    """Train on the MVTec-layout ``dataset`` (``category`` if it holds several), write a
    package to ``out_dir`` and fit its size calibration on the validation defects
    (``models.train.size_fit``; skipped with a warning when there are too few).

    First ``cfg.holdout_fraction`` of the test images (or the images in
    ``holdout_list``, paths relative to the category) are set aside: nothing below
    reads them, and the manifest records the sha256 of every image on each side.
    Raises ``FileNotFoundError``/``ValueError`` for an unusable data set."""
    full = read_mvtec(dataset, category)
    holdout = hold_out(full, cfg.holdout_fraction, cfg.seed, holdout_list)
    ds = holdout.kept
    log.info(
        "training_started",
        dataset=str(ds.root),
        images=len(ds.samples),
        held_out=len(holdout.held),
        types=ds.defect_types,
    )
    result = fit(ds, cfg)
    pkg = save_package(
        result,
        out_dir,
        cfg,
        ds.root.name,
        ds.content_hash(),
        len(ds.samples),
        holdout,
        dataset_check_images(ds),
    )
    try:
        sizes = calibrate_sizes(pkg.root, ds, cfg.val_fraction, cfg.seed)
    except ValueError as exc:  # too few validation defects (a tiny data set): the head alone
        log.warning("size_calibration_skipped", reason=str(exc))
    else:
        result.metrics["val_size_accuracy_head"] = sizes.accuracy_before
        result.metrics["val_size_accuracy"] = sizes.accuracy_after
        pkg = load_package(pkg.root)
    log.info(
        "package_written",
        package=str(pkg.root),
        minutes=round(result.minutes, 2),
        steps=result.steps,
        **{k: round(v, 4) for k, v in result.metrics.items()},
    )
    return BuildResult(pkg, result)


def reexport_package(package_dir: str | Path) -> ModelPackage:
    """Export the graphs of the package in ``package_dir`` again from its own weights and
    rewrite the manifest's file hashes (everything else in it is kept).

    For when the export changes but the network does not. The graphs are exported
    beside the package first, so a failed export leaves it as it was. Raises
    ``PackageError`` for a bad package, ``OSError`` when the files cannot be written
    and ``RuntimeError`` when torch cannot export.
    """
    from models.runtime.torch import load_net  # the runtime imports the exporter

    pkg = load_package(package_dir)
    with tempfile.TemporaryDirectory(dir=pkg.root, prefix=".export-") as tmp:
        fresh = export_onnx(load_net(pkg), tmp)
        paths = {k: pkg.root / p.name for k, p in fresh.items()}
        for k, p in fresh.items():
            p.replace(paths[k])
    fields = pkg.manifest.model_dump(mode="json", exclude={"format", "format_version", "files"})
    fields["graphs"] = {"detect": paths["detect"].name, "explain": paths["explain"].name}
    write_manifest(pkg.root, fields)
    shutil.rmtree(pkg.root / ".engines", ignore_errors=True)  # built from the old graphs
    log.info("package_reexported", package=str(pkg.root))
    return load_package(pkg.root)


def _main(argv: Sequence[str]) -> int:
    """``python -m models.train.build PACKAGE`` re-exports the graphs;
    ``... PACKAGE --check-synth FAMILY [--check-seed N] [--part-size-mm MM]`` gives the
    package check images rendered by the simulator instead (its scale and size from the
    manifest, the part size from its training record unless given)."""
    import argparse
    import sys

    from models.package import PackageError

    p = argparse.ArgumentParser(prog="python -m models.train.build", description=_main.__doc__)
    p.add_argument("package", type=Path)
    p.add_argument("--check-synth", metavar="FAMILY", default=None)
    p.add_argument("--check-seed", type=int, default=20261208)
    p.add_argument("--part-size-mm", type=float, default=None)
    args = p.parse_args(argv)
    if args.check_synth is None:
        try:
            reexport_package(args.package)
        except (PackageError, OSError, RuntimeError) as exc:
            print(f"re-export failed, package unchanged: {exc}", file=sys.stderr)
            return 5
        return 0
    try:
        pkg = load_package(args.package)
        part_mm = args.part_size_mm or pkg.manifest.training.get("part_size_mm")
        if part_mm is None:
            p.error("--part-size-mm: the package does not record its part size")
        images = synth_check_images(
            args.check_synth,
            args.check_seed,
            mm_per_px=pkg.manifest.input.mm_per_px,
            size_px=pkg.manifest.input.size_px,
            part_size_mm=float(part_mm),
        )
        pkg = add_check_images(pkg.root, images)
    except (PackageError, OSError, ValueError) as exc:
        print(f"check images not added: {exc}", file=sys.stderr)
        return 5
    print(f"{pkg.root}: {len(pkg.manifest.check)} check images; package_sha256 {pkg.sha256}")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
