"""Real photographed surfaces: train and score a package per surface, nothing seen twice.

The photographs ship inside scikit-image (no download): ``gravel`` and
``immunohistochemistry`` (tissue) are the surfaces we develop on; ``grass`` and
``brick`` are held out from all tuning and only reported. Each 512 px photograph
is cut into three regions that share no pixel: test crops come from the bottom
half, training crops (good images and ``--labels`` labelled defects per type) from
the left 320 columns of the top half, and the good images training validates and
calibrates its operating point on (``validation/good``) from the right 192 columns.
A crop is 128 photograph pixels enlarged 2x to the network's 256 (a 256 px crop
would leave no room for three regions), in one of the eight mirrorings and quarter
turns. Crops of one region overlap each other; without the validation region the
good images validated on were shifted copies of training pixels, scored lower than
any new surface, and the calibrated threshold called 73 % of new good gravel crops
defective.

The defects are painted by this script, not by lineside's synthesis, in kinds
lineside's synthesis does not have: ``cut`` (a thin dark slit with a bright
lip), ``hole`` (a dark pit with a soft rim), ``stain`` (a soft, low-contrast
blot) and ``fold`` (a crease: light on one side, shadow on the other).

    .venv/bin/python bench/surfaces.py [--surfaces gravel immunohistochemistry]
        [--labels 20] [--minutes 7] [--scratch] [--out state/surfaces-bench]

Prints one JSON object (a row per surface with 95 % intervals) and writes it
with a markdown table to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _packages import save_report, started_from, train_and_score
from PIL import Image
from scipy import ndimage

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]

DEVELOPMENT = ("gravel", "immunohistochemistry")
"""Surfaces tuned on."""
HELD_OUT = ("grass", "brick")
"""Surfaces never tuned on: reported only."""
KINDS = ("cut", "hole", "stain", "fold")
SIDE = 256
MM_PER_PX = 0.125
_GOOD_TRAIN = 200
_GOOD_TEST = 40
_GOOD_VAL = 100
_TEST_PER_KIND = 40


def photograph(name: str) -> npt.NDArray[np.uint8]:
    """The named scikit-image photograph in gray, uint8."""
    from skimage import data
    from skimage.color import rgb2gray

    image = np.asarray(getattr(data, name)())
    if image.ndim == 3:
        image = np.rint(rgb2gray(image[..., :3]) * 255.0).astype(np.uint8)
    return image.astype(np.uint8)


CROP = 128
"""Photograph pixels per crop side (enlarged to ``SIDE``)."""
REGIONS = {
    "train": (slice(0, 256), slice(0, 320)),
    "validation": (slice(0, 256), slice(320, 512)),
    "test": (slice(256, 512), slice(0, 512)),
}
"""Where in the 512 x 512 photograph each part's crops come from: no pixel in two."""


def _resize(image: F32, side: int) -> F32:
    return np.asarray(
        Image.fromarray(image.astype(np.float32), mode="F").resize(
            (side, side), Image.Resampling.LANCZOS
        ),
        dtype=np.float32,
    )


def crop(rng: np.random.Generator, region: npt.NDArray[np.uint8]) -> F32:
    """A random ``CROP`` crop of ``region`` in a random one of the eight orientations,
    enlarged to ``SIDE``."""
    h, w = region.shape
    y, x = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
    out = region[y : y + CROP, x : x + CROP]
    out = np.rot90(out, int(rng.integers(4)))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    return _resize(np.ascontiguousarray(out, dtype=np.float32), SIDE)


def band_limited(image: F32) -> F32:
    """``image`` through the photograph's resolution and back: a defect painted on an
    enlarged crop is no sharper than the enlarged surface around it."""
    return _resize(_resize(image, CROP), SIDE)


def _line(rng: np.random.Generator, length_px: float) -> tuple[F32, F32, Mask]:
    """Distance to a gently bent segment of ``length_px`` on the crop, and the signed side."""
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cx, cy = (float(v) for v in rng.uniform(48, SIDE - 48, size=2))
    angle = float(rng.uniform(0, np.pi))
    d = np.array([np.cos(angle), np.sin(angle)], dtype=np.float32)
    n = np.array([-d[1], d[0]], dtype=np.float32)
    u = (xx - cx) * d[0] + (yy - cy) * d[1]
    bend = float(rng.uniform(-0.004, 0.004))
    v = (xx - cx) * n[0] + (yy - cy) * n[1] - bend * u * u
    half = length_px / 2.0
    along = np.clip(np.abs(u) - half, 0.0, None)
    return np.sqrt(along * along + v * v), v, np.abs(u) <= half


def _cut(rng: np.random.Generator, img: F32) -> tuple[F32, Mask]:
    dist, side, within = _line(rng, float(rng.uniform(24, 90)))
    width = float(rng.uniform(0.8, 1.6))
    slit = np.clip(1.2 - dist / width, 0.0, 1.0)
    lip = np.clip(1.0 - np.abs(side - width - 1.2) / 1.0, 0.0, 1.0) * within
    out = img * (1.0 - 0.75 * slit) + 45.0 * lip * (side > 0)
    return out, (slit > 0.2) | ((lip > 0.5) & (side > 0))


def _hole(rng: np.random.Generator, img: F32) -> tuple[F32, Mask]:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cx, cy = (float(v) for v in rng.uniform(32, SIDE - 32, size=2))
    r = float(rng.uniform(4, 12))
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    pit = np.clip((r - d) / 1.5, 0.0, 1.0)
    rim = np.clip(1.0 - np.abs(d - r - 1.5) / 1.5, 0.0, 1.0)
    out = img * (1.0 - 0.85 * pit) + 30.0 * rim
    return out, d <= r + 2.0


def _stain(rng: np.random.Generator, img: F32) -> tuple[F32, Mask]:
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    cx, cy = (float(v) for v in rng.uniform(48, SIDE - 48, size=2))
    r = float(rng.uniform(10, 30))
    wobble = ndimage.zoom(rng.standard_normal((8, 8)).astype(np.float32), SIDE / 8, order=1)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) + 4.0 * wobble
    blot = np.clip((r - d) / 4.0, 0.0, 1.0)
    gain = float(rng.uniform(0.55, 0.8)) if rng.random() < 0.7 else float(rng.uniform(1.25, 1.5))
    out = img * (1.0 + (gain - 1.0) * blot)
    return out, blot > 0.5


def _fold(rng: np.random.Generator, img: F32) -> tuple[F32, Mask]:
    dist, side, within = _line(rng, float(rng.uniform(60, 160)))
    width = float(rng.uniform(3, 7))
    shade = np.clip(1.0 - dist / width, 0.0, 1.0) * np.sign(side)
    strength = float(rng.uniform(35, 60))
    out = img + strength * shade
    return out, (np.abs(shade) > 0.3) & within


PAINTERS: dict[str, Callable[[np.random.Generator, F32], tuple[F32, Mask]]] = {
    "cut": _cut,
    "hole": _hole,
    "stain": _stain,
    "fold": _fold,
}


def _save(path: Path, image: F32 | Mask) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.dtype == bool:
        Image.fromarray(np.where(image, 255, 0).astype(np.uint8)).save(path)
    else:
        Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8)).save(path)


def write_surface(
    out: Path,
    name: str,
    seed: int,
    part: str,
    n_good: int,
    n_per_kind: int,
    n_test_good: int = 0,
    n_val_good: int = 0,
) -> None:
    """An MVTec-layout category of ``name`` cut from its photograph's region ``part``
    (``"train"`` or ``"test"``; see ``REGIONS``): ``train/good``, ``test/good`` and
    ``test/<kind>`` painted crops with masks, and ``n_val_good`` ``validation/good`` crops
    from the validation region."""
    photo = photograph(name)
    region = photo[REGIONS[part]]
    rng = np.random.default_rng([seed, list(REGIONS).index(part)])
    for k in range(n_good):
        _save(out / "train" / "good" / f"{k:03d}.png", crop(rng, region))
    for k in range(n_test_good):
        _save(out / "test" / "good" / f"{k:03d}.png", crop(rng, region))
    for kind in KINDS:
        for k in range(n_per_kind):
            img, mask = PAINTERS[kind](rng, crop(rng, region))
            _save(out / "test" / kind / f"{k:03d}.png", band_limited(img))
            _save(out / "ground_truth" / kind / f"{k:03d}_mask.png", mask)
    validation = photo[REGIONS["validation"]]
    for k in range(n_val_good):
        _save(out / "validation" / "good" / f"{k:03d}.png", crop(rng, validation))


_FIGURES = (
    "image_auroc",
    "pixel_auroc",
    "false_alarm_rate",
    "detection_rate",
    "type_accuracy",
    "explanation_fact_accuracy",
    "explanation_all_facts_accuracy",
    "guard_fallback_rate",
)


def _row(name: str, built: Any, out: dict[str, Any]) -> dict[str, Any]:
    m, ci = out["metrics"], out["ci95"]
    return {
        "surface": name,
        "role": "development" if name in DEVELOPMENT else "held out",
        "train_minutes": round(built.fit.minutes, 2),
        "train_steps": built.fit.steps,
        "test_images": out["test_images"],
        "excluded_trained_images": out["excluded_trained_images"]["count"],
        **{
            k: {"value": None if m.get(k) != m.get(k) else round(m[k], 4), "ci95": ci.get(k)}
            for k in _FIGURES
        },
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| surface | role | image AUROC | pixel AUROC | false alarms | detection | type acc. "
        "| fact acc. | min |\n|---|---|---|---|---|---|---|---|---|\n"
    )

    def cell(f: dict[str, Any]) -> str:
        return "—" if f["value"] is None else f"{f['value']:.2f}"

    return head + "".join(
        f"| {r['surface']} | {r['role']} | "
        + " | ".join(cell(r[k]) for k in _FIGURES[:6])
        + f" | {r['train_minutes']} |\n"
        for r in rows
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--surfaces", nargs="+", default=list(DEVELOPMENT))
    p.add_argument("--labels", type=int, default=20)
    p.add_argument("--minutes", type=float, default=7.0)
    p.add_argument("--seed", type=int, default=9101)
    p.add_argument("--scratch", action="store_true", help="train from random weights")
    p.add_argument("--out", type=Path, default=Path("state") / "surfaces-bench")
    args = p.parse_args()
    known = (*DEVELOPMENT, *HELD_OUT)
    unknown = [s for s in args.surfaces if s not in known]
    if unknown or args.labels < 0 or args.minutes <= 0:
        why = f"--surfaces: unknown {unknown} (known: {', '.join(known)})" if unknown else ""
        print(why or "--labels >= 0; --minutes > 0", file=sys.stderr)
        sys.exit(2)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    rows: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for name in args.surfaces:
        train_dir, test_dir = work / "train" / name, work / "test" / name
        write_surface(
            train_dir, name, args.seed, "train", _GOOD_TRAIN, args.labels, n_val_good=_GOOD_VAL
        )
        write_surface(test_dir, name, args.seed, "test", 1, _TEST_PER_KIND, _GOOD_TEST)
        built, out = train_and_score(
            train_dir,
            test_dir,
            work / "pkg" / name,
            args.minutes,
            args.scratch,
            mm_per_px=MM_PER_PX,
            part_threshold=0,  # lineside train --surface
            surface=True,
        )
        rows.append(_row(name, built, out))
        print(json.dumps(rows[-1]), file=sys.stderr)
    report = {
        "bench": "surfaces",
        "seed": args.seed,
        "labels_per_type": args.labels,
        "minutes_per_package": args.minutes,
        "started_from": started_from(args.scratch),
        "total_minutes": round((time.monotonic() - t0) / 60, 1),
        "rows": rows,
    }
    save_report(args.out, "surfaces", report, _markdown(rows))


if __name__ == "__main__":
    main()
