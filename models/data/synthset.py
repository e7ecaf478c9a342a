"""Write synthetic data sets in the MVTec AD layout at a chosen part size.

``models.synth.write_dataset`` renders parts at the synthetic default size;
the node sees parts of the line's size (24 mm on the simulated line) inside a
``size_px`` crop, so this writer takes ``part_size_mm`` too. The layout and
the ``manifest.jsonl`` are those of ``models.synth`` (see there); a
``captions.jsonl`` per category is optional and not written here (captions
are composed from the masks at training time).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from models.synth import (
    DEFECT_KINDS,
    FAMILIES,
    PartSpec,
    render_part,
    render_scene,
    sample_part_spec,
)
from models.synth.defects import DefectKind

DEFAULT_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
_MAX_REDRAWS = 50


def write_synth(
    out_dir: str | Path,
    seed: int,
    families: Sequence[str] = DEFAULT_FAMILIES,
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

    Returns the image count per family and folder. Raises ``ValueError`` for
    an unknown family, a negative count, ``size_px`` below 32 or a part that
    does not fit the crop; ``OSError`` when files cannot be written.
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
    centre = ((size_px - 1) / 2.0, (size_px - 1) / 2.0)
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
                    part = render_part(spec, mm_per_px)
                    image, mask = render_scene(
                        part, (size_px, size_px), centre, belt_level, noise_seed=spec.seed
                    )
                    rel = f"{family}/{folder}/{i:03d}.png"
                    Image.fromarray(image).save(root / rel, compress_level=1)
                    record: dict[str, object] = {
                        "image": rel,
                        "spec": asdict(spec),
                        "mm_per_px": mm_per_px,
                    }
                    if kind is not None:
                        mrel = f"{family}/ground_truth/{kind}/{i:03d}_mask.png"
                        Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(
                            root / mrel, compress_level=1
                        )
                        record["mask"] = mrel
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
