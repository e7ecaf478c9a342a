"""Read a data set in the MVTec AD folder layout, with an optional captions file.

::

    <category>/train/good/*.png
    <category>/validation/good/*.png                  (optional)
    <category>/test/good/*.png
    <category>/test/<type>/*.png
    <category>/ground_truth/<type>/<stem>_mask.png    (optional per type)
    <category>/captions.jsonl                         (optional)

A defect type without a ``ground_truth/<type>`` folder is read with
``mask_path=None`` (image-level labels only). ``validation/good`` (as MVTec AD 2
and LOCO have it) holds good images kept apart from training: when present they,
and only they, are the good images training validates and calibrates on, for data
sets whose other good images are not independent of each other (crops of one
photograph; several images of one part). ``captions.jsonl`` holds one
JSON object per line, ``{"image": "test/crack/000.png", "text": "..."}``,
paths relative to the category. ``root`` may be the category itself or a
folder of categories (as ``lineside synth`` writes), then ``category`` picks one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

GOOD = "good"
IMAGE_SUFFIXES = frozenset({".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff"})
CAPTIONS_FILE = "captions.jsonl"


@dataclass(frozen=True, slots=True)
class Sample:
    """One image of the data set.

    ``split`` is ``"train"``, ``"validation"`` or ``"test"``; ``defect_type`` is ``"good"`` or the
    test folder's name; ``mask_path`` is ``None`` for good images and for types
    without ground truth; ``caption`` is the user's caption, if any.
    """

    path: Path
    split: str
    defect_type: str
    mask_path: Path | None
    caption: str | None

    @property
    def is_good(self) -> bool:
        """True for an image of a good part."""
        return self.defect_type == GOOD


@dataclass(frozen=True, slots=True)
class MvtecDataset:
    """The samples of one category, sorted by split, type and file name."""

    root: Path
    samples: tuple[Sample, ...]

    @property
    def defect_types(self) -> tuple[str, ...]:
        """The defect types (test folder names other than ``good``), sorted."""
        return tuple(sorted({s.defect_type for s in self.samples if not s.is_good}))

    def select(self, split: str, defect_type: str | None = None) -> list[Sample]:
        """Samples of ``split`` (and of ``defect_type`` when given)."""
        return [
            s
            for s in self.samples
            if s.split == split and (defect_type is None or s.defect_type == defect_type)
        ]

    def content_hash(self) -> str:
        """sha256 over every file's relative path and bytes: changes when any file does."""
        h = hashlib.sha256()
        files = {s.path for s in self.samples} | {s.mask_path for s in self.samples if s.mask_path}
        captions = self.root / CAPTIONS_FILE
        if captions.is_file():
            files.add(captions)
        for path in sorted(files):
            h.update(str(path.relative_to(self.root)).encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
        return h.hexdigest()


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def resolve_category(root: str | Path, category: str | None = None) -> Path:
    """The category folder: ``root`` itself if it has ``train/``, else ``root/category``.

    With ``category=None`` and a root holding exactly one category, that one.
    Raises ``FileNotFoundError`` naming what is missing, ``ValueError`` when
    the choice is ambiguous.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such data set folder")
    if category is not None:
        base = base / category
        if not (base / "train").is_dir():
            raise FileNotFoundError(f"{base}: no train/ folder (not an MVTec AD category)")
        return base
    if (base / "train").is_dir():
        return base
    found = sorted(p.name for p in base.iterdir() if (p / "train").is_dir())
    if len(found) == 1:
        return base / found[0]
    if not found:
        raise FileNotFoundError(f"{base}: neither train/ nor any category folder holding one")
    raise ValueError(f"{base}: holds several categories {found}; name one")


def read_mvtec(root: str | Path, category: str | None = None) -> MvtecDataset:
    """List the category's images, masks and captions (images are not loaded).

    Raises ``FileNotFoundError`` for a missing ``train/good`` or a mask folder
    that lacks an image's mask, ``ValueError`` for a malformed captions file
    (naming its line) or an empty training set.
    """
    cat = resolve_category(root, category)
    captions = _read_captions(cat / CAPTIONS_FILE)
    good_dir = cat / "train" / GOOD
    if not good_dir.is_dir():
        raise FileNotFoundError(f"{good_dir}: missing (MVTec AD needs train/good)")
    samples = [
        Sample(p, "train", GOOD, None, captions.get(_rel(cat, p))) for p in _images(good_dir)
    ]
    if not samples:
        raise ValueError(f"{good_dir}: no images")
    val_dir = cat / "validation" / GOOD
    if val_dir.is_dir():
        samples += [
            Sample(p, "validation", GOOD, None, captions.get(_rel(cat, p)))
            for p in _images(val_dir)
        ]
    test_dir = cat / "test"
    if test_dir.is_dir():
        for tdir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
            gt = cat / "ground_truth" / tdir.name
            for p in _images(tdir):
                mask: Path | None = None
                if tdir.name != GOOD and gt.is_dir():
                    mask = _mask_for(gt, p)
                samples.append(Sample(p, "test", tdir.name, mask, captions.get(_rel(cat, p))))
    return MvtecDataset(cat, tuple(samples))


def _rel(cat: Path, p: Path) -> str:
    return p.relative_to(cat).as_posix()


def _mask_for(gt_dir: Path, image: Path) -> Path:
    for suffix in (".png", image.suffix):
        cand = gt_dir / f"{image.stem}_mask{suffix}"
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"{gt_dir}: no mask {image.stem}_mask.png for {image}")


def _read_captions(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("image"), str):
            raise ValueError(f"{path}:{n}: expected {{'image': str, 'text': str}}")
        if not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise ValueError(f"{path}:{n}: 'text' must be a non-empty string")
        out[obj["image"]] = obj["text"]
    return out


def load_gray(path: Path) -> npt.NDArray[np.uint8]:
    """The image at ``path`` as uint8 grayscale ``(H, W)``. Raises ``OSError`` if unreadable."""
    with Image.open(path) as im:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()


def load_mask(path: Path | None, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """The mask at ``path`` (non-zero = defect) or all False; raises ``ValueError`` on a shape
    mismatch with its image."""
    if path is None:
        return np.zeros(shape, dtype=bool)
    m = load_gray(path) > 127
    if m.shape != shape:
        raise ValueError(f"{path}: mask {m.shape} does not match its image {shape}")
    return m
