"""Write a synthetic data set in the MVTec AD folder layout.

::

    <out_dir>/<family>/train/good/000.png
    <out_dir>/<family>/test/good/000.png
    <out_dir>/<family>/test/<kind>/000.png
    <out_dir>/<family>/ground_truth/<kind>/000_mask.png   (255 = defect, 0 = not)
    <out_dir>/manifest.jsonl          (one JSON line per image: spec, truth in image pixels)

Images are 8-bit grayscale PNGs of ``size_px x size_px``: the part centred on
the belt (so the corners show belt, as a camera crop would). Only defects
that pass the ``visible`` criterion are written (a spec is redrawn until one
does), so every test image labelled defective really shows its defect.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.synth.defects import DEFECT_KINDS, DefectKind
from models.synth.families import FAMILIES
from models.synth.parts import PartSpec, render_part, sample_part_spec
from models.synth.scene import part_origin, render_scene

_MAX_REDRAWS = 50


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """What ``write_dataset`` wrote: its root and the image count per family and folder."""

    root: Path
    counts: dict[str, dict[str, int]]


def write_dataset(
    out_dir: str | Path,
    seed: int,
    families: Sequence[str],
    n_train_good: int,
    n_test_good: int,
    n_test_per_kind: int,
    mm_per_px: float,
    size_px: int,
    kinds: Sequence[DefectKind] | None = None,
) -> DatasetSummary:
    """Render and write the data set; the same arguments always give the same files.

    ``kinds`` defaults to every defect kind. Raises ``ValueError`` for an
    unknown family or kind, a negative count, ``size_px`` below 32, or a scale
    at which a part cannot be rendered; ``OSError`` when files cannot be written.
    """
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown part family {family!r}; expected one of {sorted(FAMILIES)}")
    if min(n_train_good, n_test_good, n_test_per_kind) < 0:
        raise ValueError("image counts must be >= 0")
    if size_px < 32:
        raise ValueError(f"size_px must be >= 32, got {size_px}")
    chosen = tuple(DEFECT_KINDS if kinds is None else kinds)
    if any(k not in DEFECT_KINDS for k in chosen):
        raise ValueError(f"kinds must be a subset of {DEFECT_KINDS}, got {kinds}")

    root = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    root.mkdir(parents=True, exist_ok=True)
    with (root / "manifest.jsonl").open("w", encoding="utf-8") as manifest:
        for family in families:
            rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
            plan: list[tuple[str, DefectKind | None, int]] = [
                ("train/good", None, n_train_good),
                ("test/good", None, n_test_good),
                *((f"test/{k}", k, n_test_per_kind) for k in chosen),
            ]
            counts[family] = {}
            for folder, kind, n in plan:
                (root / family / folder).mkdir(parents=True, exist_ok=True)
                if kind is not None:
                    (root / family / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    spec = _draw(rng, family, kind, mm_per_px)
                    record = _write_one(root, family, folder, kind, i, spec, mm_per_px, size_px)
                    manifest.write(json.dumps(record) + "\n")
                counts[family][folder] = n
    return DatasetSummary(root, counts)


def _draw(
    rng: np.random.Generator, family: str, kind: DefectKind | None, mm_per_px: float
) -> PartSpec:
    if kind is None:
        return sample_part_spec(rng, family, 0.0)
    for _ in range(_MAX_REDRAWS):
        spec = sample_part_spec(rng, family, 1.0, [kind])
        truth = render_part(spec, mm_per_px).truth
        if truth is not None and truth.visible:
            return spec
    raise ValueError(
        f"no visible {kind} on {family} in {_MAX_REDRAWS} draws at {mm_per_px} mm/px; "
        "the resolution is too coarse for this defect"
    )


def _write_one(
    root: Path,
    family: str,
    folder: str,
    kind: DefectKind | None,
    index: int,
    spec: PartSpec,
    mm_per_px: float,
    size_px: int,
) -> dict[str, object]:
    part = render_part(spec, mm_per_px)
    centre = ((size_px - 1) / 2.0, (size_px - 1) / 2.0)
    image, mask = render_scene(part, (size_px, size_px), centre, noise_seed=spec.seed)
    x0, y0 = part_origin(part.image.shape[0], centre)
    name = f"{index:03d}"
    rel_image = f"{family}/{folder}/{name}.png"
    _save(root / rel_image, image)
    record: dict[str, object] = {"image": rel_image, "spec": asdict(spec), "mm_per_px": mm_per_px}
    if kind is not None:
        rel_mask = f"{family}/ground_truth/{kind}/{name}_mask.png"
        _save(root / rel_mask, np.where(mask, 255, 0).astype(np.uint8))
        record["mask"] = rel_mask
        if part.truth is not None:
            # The manifest speaks image coordinates, not the part's own.
            t = part.truth
            bx0, by0, bx1, by1 = t.bbox_px
            moved = replace(
                t,
                bbox_px=(bx0 + x0, by0 + y0, bx1 + x0, by1 + y0),
                centroid_px=(t.centroid_px[0] + x0, t.centroid_px[1] + y0),
            )
            record["truth"] = asdict(moved)
    return record


def _save(path: Path, pixels: npt.NDArray[np.uint8]) -> None:
    # Fast compression: these sets are regenerated, not archived.
    Image.fromarray(pixels).save(path, compress_level=1)
