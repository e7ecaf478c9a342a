"""Write a synthetic data set in the MVTec AD folder layout (``lineside synth``).

::

    <out_dir>/<family>/train/good/000.png
    <out_dir>/<family>/test/good/000.png
    <out_dir>/<family>/test/<kind>/000.png
    <out_dir>/<family>/ground_truth/<kind>/000_mask.png   (255 = defect, 0 = not)
    <out_dir>/manifest.jsonl      (one JSON line per image: its spec and scale; for a
                                   defect also its mask and truth in image pixels)

One category per part family (``models.synth.FAMILY_NAMES``) and one test
folder per defect kind (``models.synth.DEFECT_KINDS``), as
``models.data.mvtec`` reads them. Images are 8-bit grayscale PNGs of
``size_px x size_px``: a part of ``part_size_mm`` centred on the belt (so the
corners show belt, as a camera crop would; the simulated line's parts are
24 mm). Only defects that pass the ``visible`` criterion are written (a spec is
redrawn until one does), so every test image labelled defective really shows
its defect. A ``captions.jsonl`` per category is optional and not written here
(captions are composed from the masks at training time).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from rich.progress import Progress

from models.synth import (
    DEFECT_KINDS,
    FAMILIES,
    FAMILY_NAMES,
    DefectKind,
    PartSpec,
    part_origin,
    render_part,
    render_scene,
    sample_part_spec,
)

_MAX_REDRAWS = 50


def write_synth(
    out_dir: str | Path,
    seed: int,
    families: Sequence[str] = FAMILY_NAMES,
    *,
    n_train_good: int = 300,
    n_test_good: int = 100,
    n_test_per_kind: int = 100,
    mm_per_px: float = 0.125,
    size_px: int = 256,
    part_size_mm: float = 24.0,
    belt_level: int = 30,
    progress: bool = True,
) -> dict[str, dict[str, int]]:
    """Render and write the data set; the same arguments always give the same files.

    ``mm_per_px`` is the scale (mm per pixel), ``size_px`` the crop's side
    (pixels), ``part_size_mm`` the part's side (mm), ``belt_level`` the belt's
    gray level; ``progress`` shows a progress bar. Returns the image count per
    family and folder. Raises ``ValueError`` for an unknown family, a negative
    count, ``size_px`` below 32, a part that does not fit the crop or a defect
    that stays invisible at this scale; ``OSError`` when files cannot be written.
    """
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown part family {family!r}; expected one of {sorted(FAMILIES)}")
    if min(n_train_good, n_test_good, n_test_per_kind) < 0:
        raise ValueError("image counts must be >= 0")
    if size_px < 32 or part_size_mm / mm_per_px > size_px:
        raise ValueError(
            f"a {part_size_mm} mm part at {mm_per_px} mm/px does not fit a {size_px} px crop"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    per_family = n_train_good + n_test_good + n_test_per_kind * len(DEFECT_KINDS)
    counts: dict[str, dict[str, int]] = {}
    with (
        (root / "manifest.jsonl").open("w", encoding="utf-8") as manifest,
        Progress(disable=not progress) as bar,
    ):
        task = bar.add_task("synth", total=per_family * len(families))
        for family in families:
            rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
            plan: list[tuple[str, DefectKind | None, int]] = [
                ("train/good", None, n_train_good),
                ("test/good", None, n_test_good),
                *((f"test/{k}", k, n_test_per_kind) for k in DEFECT_KINDS),
            ]
            counts[family] = {}
            for folder, kind, n in plan:
                (root / family / folder).mkdir(parents=True, exist_ok=True)
                if kind is not None:
                    (root / family / "ground_truth" / kind).mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    spec = _draw(rng, family, kind, mm_per_px, part_size_mm)
                    record = _write_one(
                        root, family, folder, kind, i, spec, mm_per_px, size_px, belt_level
                    )
                    manifest.write(json.dumps(record) + "\n")
                    bar.advance(task)
                counts[family][folder] = n
    return counts


def _draw(
    rng: np.random.Generator,
    family: str,
    kind: DefectKind | None,
    mm_per_px: float,
    part_size_mm: float,
) -> PartSpec:
    if kind is None:
        return sample_part_spec(rng, family, 0.0, part_size_mm=part_size_mm)
    for _ in range(_MAX_REDRAWS):
        spec = sample_part_spec(rng, family, 1.0, [kind], part_size_mm=part_size_mm)
        truth = render_part(spec, mm_per_px).truth
        if truth is not None and truth.visible:
            return spec
    raise ValueError(f"no visible {kind} on {family} in {_MAX_REDRAWS} draws at {mm_per_px} mm/px")


def _write_one(
    root: Path,
    family: str,
    folder: str,
    kind: DefectKind | None,
    index: int,
    spec: PartSpec,
    mm_per_px: float,
    size_px: int,
    belt_level: int,
) -> dict[str, object]:
    """Write one image (and its mask for a defect); its manifest record."""
    part = render_part(spec, mm_per_px)
    centre = ((size_px - 1) / 2.0, (size_px - 1) / 2.0)
    image, mask = render_scene(part, (size_px, size_px), centre, belt_level, noise_seed=spec.seed)
    rel_image = f"{family}/{folder}/{index:03d}.png"
    _save(root / rel_image, image)
    record: dict[str, object] = {"image": rel_image, "spec": asdict(spec), "mm_per_px": mm_per_px}
    if kind is not None:
        rel_mask = f"{family}/ground_truth/{kind}/{index:03d}_mask.png"
        _save(root / rel_mask, np.where(mask, 255, 0).astype(np.uint8))
        record["mask"] = rel_mask
        if part.truth is not None:
            # The manifest speaks image coordinates, not the part's own.
            x0, y0 = part_origin(part.image.shape[0], centre)
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
