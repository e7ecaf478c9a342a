"""The holdout: test images training never touches, so evaluation measures the model.

``lineside train`` sets a stratified, seeded share of ``test/good`` and of each
``test/<type>`` aside before anything else reads the data set (or takes an
explicit list of images), trains and validates on the rest, and writes the
sha256 of every image on each side into the package's manifest. ``lineside
eval`` then leaves out every image the package saw, whatever folder it is given.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.data.mvtec import MvtecDataset, Sample

DEFAULT_FRACTION = 0.3
"""Share of the good test images and of each defect type held out by default."""


def image_sha256(path: Path) -> str:
    """The sha256 of an image file's bytes (what the manifest records)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class Holdout:
    """A data set split into what training may read (``kept``) and what it may not."""

    kept: MvtecDataset
    held: tuple[Sample, ...]
    fraction: float
    """The share asked for (0 with an explicit list)."""
    seed: int

    def hashes(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(sha256 of every kept image, of every held-out image), each sorted."""
        return (
            tuple(sorted({image_sha256(s.path) for s in self.kept.samples})),
            tuple(sorted({image_sha256(s.path) for s in self.held})),
        )


def hold_out(
    dataset: MvtecDataset,
    fraction: float = DEFAULT_FRACTION,
    seed: int = 0,
    listed: Sequence[str] | None = None,
) -> Holdout:
    """Set aside ``fraction`` of ``test/good`` and of each ``test/<type>``, chosen by
    ``seed`` (at least one of a group of two or more when ``fraction`` > 0, never all of
    it: training must see each type); or, with ``listed``, exactly the images whose
    paths relative to the category folder are listed (``test/scratch/003.png``).

    An image whose bytes equal a held-out one's is held out too (a copy must not leak).
    Raises ``ValueError`` for a fraction outside [0, 0.9] or a listed image the data set
    does not have.
    """
    if listed is not None:
        return _listed(dataset, listed, seed)
    if not 0.0 <= fraction <= 0.9:
        raise ValueError(f"--holdout: the holdout fraction must be within [0, 0.9], got {fraction}")
    rng = np.random.default_rng([seed, 0x401D])
    held: list[Sample] = []
    groups = ["good", *dataset.defect_types]
    for group in groups:
        members = dataset.select("test", group)
        n = round(fraction * len(members))
        if fraction > 0 and len(members) >= 2:
            n = min(max(1, n), len(members) - 1)
        order = rng.permutation(len(members))
        held += [members[i] for i in sorted(order[:n])]
    return _split(dataset, held, fraction, seed)


def _listed(dataset: MvtecDataset, listed: Sequence[str], seed: int) -> Holdout:
    by_rel = {s.path.relative_to(dataset.root).as_posix(): s for s in dataset.samples}
    wanted = [p.strip().replace("\\", "/") for p in listed if p.strip()]
    missing = [p for p in wanted if p not in by_rel]
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise ValueError(f"--holdout-list: {len(missing)} images not in {dataset.root}: {shown}")
    return _split(dataset, [by_rel[p] for p in wanted], 0.0, seed)


def _split(dataset: MvtecDataset, held: Iterable[Sample], fraction: float, seed: int) -> Holdout:
    held_paths = {s.path for s in held}
    held_hashes = {image_sha256(p) for p in held_paths}
    kept: list[Sample] = []
    out: list[Sample] = []
    for s in dataset.samples:
        if s.path in held_paths or image_sha256(s.path) in held_hashes:
            out.append(s)
        else:
            kept.append(s)
    return Holdout(MvtecDataset(dataset.root, tuple(kept)), tuple(out), fraction, seed)


def unseen(dataset: MvtecDataset, seen_sha256: Iterable[str]) -> tuple[MvtecDataset, list[Sample]]:
    """``dataset`` without the test images whose sha256 is in ``seen_sha256`` (what a
    package trained or validated on), and those left out, in order."""
    seen = set(seen_sha256)
    kept: list[Sample] = []
    out: list[Sample] = []
    for s in dataset.samples:
        (out if s.split == "test" and image_sha256(s.path) in seen else kept).append(s)
    return MvtecDataset(dataset.root, tuple(kept)), out


def read_list(path: Path) -> list[str]:
    """The image paths listed in a holdout list file, one per line (``#`` comments)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return [line for line in lines if line]


__all__ = ["DEFAULT_FRACTION", "Holdout", "hold_out", "image_sha256", "read_list", "unseen"]
