"""Training and validation samples held in memory, and the batches drawn from them.

A batch mixes three sources: good images (an all-clear mask), labelled
defect images (their real masks, types and captions), and good images with a
pasted synthetic anomaly (``models.data.anomalies``; type "unknown anomaly").
Captions are each type's canonical slotted caption (``models.captions.canonical``),
unless the data set gives a user caption for the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.captions import Vocabulary, canonical
from models.data.anomalies import jitter, orient, paste_anomaly, transplant
from models.data.geometry import (
    ALL_LOCATIONS,
    SIZE_CLASSES,
    PartGeometry,
    SizeClass,
    measure_regions,
    size_class,
)
from models.data.mvtec import MvtecDataset, Sample, load_gray, load_mask
from models.findings import UNKNOWN_TYPE

U8 = npt.NDArray[np.uint8]
BoolArr = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class CaptionFacts:
    """The facts a composed caption states: type, location and size class; with the
    length (mm) the size class was read from."""

    defect_type: str
    location: str
    size: SizeClass
    length_mm: float = 0.0


def facts_of_mask(
    image: U8, mask: BoolArr, defect_type: str, mm_per_px: float, part_threshold: int
) -> CaptionFacts | None:
    """The caption facts of ``mask``'s main (largest) region; ``None`` for an empty mask."""
    part = PartGeometry.of(image, mm_per_px, part_threshold, edges=False)
    regions = measure_regions(mask, None, part, mm_per_px)
    if not regions:
        return None
    main = regions[0]
    return CaptionFacts(defect_type, main.location, size_class(main.length_mm), main.length_mm)


@dataclass(slots=True)
class Item:
    """One labelled image in memory; ``mask`` is ``None`` where the data set has none."""

    image: U8
    mask: BoolArr | None
    type_index: int
    facts: CaptionFacts | None
    caption: str | None


@dataclass(frozen=True, slots=True)
class Batch:
    """Arrays of one batch: ``images`` uint8 ``(B, S, S)``, ``masks`` bool ``(B, S, S)``,
    ``has_mask``/``anomalous`` bool ``(B,)``, ``types`` int64 ``(B,)`` (-1: no type),
    ``tokens`` int64 ``(B, max_len)`` (all padding: no caption), ``locations`` and ``sizes``
    int64 ``(B,)``: the caption facts' grid cell (``ALL_LOCATIONS`` index) and size class
    (``SIZE_CLASSES`` index), -1 where unknown; ``lengths_px`` float32 ``(B,)`` the main
    region's length in pixels, 0 where unknown."""

    images: U8
    masks: BoolArr
    has_mask: BoolArr
    anomalous: BoolArr
    types: npt.NDArray[np.int64]
    tokens: npt.NDArray[np.int64]
    locations: npt.NDArray[np.int64]
    sizes: npt.NDArray[np.int64]
    lengths_px: npt.NDArray[np.float32]


def _fact_indices(
    items: list[Item], mm_per_px: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    locs = [ALL_LOCATIONS.index(it.facts.location) if it.facts else -1 for it in items]
    sizes = [SIZE_CLASSES.index(it.facts.size) if it.facts else -1 for it in items]
    lengths = [it.facts.length_mm / mm_per_px if it.facts else 0.0 for it in items]
    return (
        np.array(locs, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
        np.array(lengths, dtype=np.float32),
    )


SYNTHETIC_VAL = 24
"""Synthetic anomalies added to validation when it has no labelled defect."""


class TrainingData:
    """Good and labelled images of one data set, split into training and validation.

    ``types`` are the type names the type head predicts (``learned``, by default
    the data set's defect types, then "unknown anomaly"); a labelled image of a
    type not learned (too few examples to tell it apart) is trained as an
    anomaly of unknown type. A ``val_fraction`` of the good training images and
    of each defect type goes to validation, chosen by ``seed``. With no labelled
    defects at all the model learns from good images and synthetic anomalies
    alone; validation then gets synthetic anomalies too (``SYNTHETIC_VAL``), so
    the thresholds are calibrated against something. ``fixed_place`` names the types
    that belong to a place on the part (``draw``'s transplants keep them there). A
    ``surface`` (a material that fills the frame, with no up or down) has its good
    images drawn in any of their eight mirrorings and quarter turns.
    Raises ``ValueError`` for images of different sizes.
    """

    def __init__(
        self,
        dataset: MvtecDataset,
        vocab: Vocabulary,
        max_len: int,
        mm_per_px: float,
        part_threshold: int,
        val_fraction: float,
        seed: int,
        learned: tuple[str, ...] | None = None,
        fixed_place: tuple[str, ...] = ("missing_feature",),
        surface: bool = False,
    ) -> None:
        kinds = dataset.defect_types if learned is None else learned
        self.types: tuple[str, ...] = (*kinds, UNKNOWN_TYPE)
        self.vocab = vocab
        self.max_len = max_len
        self.mm_per_px = mm_per_px
        self.part_threshold = part_threshold
        self.fixed_place = frozenset(fixed_place)
        self.surface = surface
        split = split_dataset(dataset, val_fraction, seed)
        self.good = np.stack([load_gray(s.path) for s in split.train_good])
        self.allowed = np.stack([self._part(img) for img in self.good])
        self.items: list[Item] = [self._item(s) for s in split.train_defects]
        self.val: list[Item] = [self._item(s) for s in (*split.val_good, *split.val_defects)]
        shapes = {img.shape for img in self.good} | {it.image.shape for it in self.items}
        shapes |= {it.image.shape for it in self.val}
        if len(shapes) != 1:
            raise ValueError(f"images differ in size: {sorted(shapes)}")
        if not split.val_defects:
            self.val += self._synthetic_val(np.random.default_rng([seed, 0x5A]))

    def _synthetic_val(self, rng: np.random.Generator) -> list[Item]:
        """``SYNTHETIC_VAL`` anomalies pasted on the validation goods (or on training goods
        when there are none), deterministic for the seed."""
        bases = [it.image for it in self.val if it.type_index < 0] or list(self.good)
        unknown = self.types.index(UNKNOWN_TYPE)
        out: list[Item] = []
        for k in range(SYNTHETIC_VAL):
            base = bases[k % len(bases)]
            part = self._part(base)
            donors = self.good[rng.integers(len(self.good), size=1)]
            img, mask = paste_anomaly(rng, base, part, donors)
            if mask.sum() >= 12:
                facts = facts_of_mask_fast(mask, part, self.mm_per_px)
                out.append(Item(img, mask, unknown, facts, None))
        return out

    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every image."""
        h, w = self.good.shape[1:]
        return int(h), int(w)

    def _part(self, image: U8) -> BoolArr:
        return PartGeometry.of(image, self.mm_per_px, self.part_threshold, edges=False).mask

    def _item(self, s: Sample) -> Item:
        image = load_gray(s.path)
        if s.is_good:
            return Item(image, np.zeros(image.shape, dtype=bool), -1, None, s.caption)
        mask = load_mask(s.mask_path, image.shape) if s.mask_path is not None else None
        # a type with too few examples to learn is an anomaly of unknown type here
        kind = s.defect_type if s.defect_type in self.types else UNKNOWN_TYPE
        facts = None
        if mask is not None:
            facts = facts_of_mask(image, mask, kind, self.mm_per_px, self.part_threshold)
        caption = s.caption if kind == s.defect_type else None
        return Item(image, mask, self.types.index(kind), facts, caption)

    def caption_tokens(self, item: Item, rng: np.random.Generator | None) -> list[int]:
        """The item's caption as token ids (user caption first), or all padding if it has none."""
        text = item.caption
        if text is None and item.facts is not None:
            text = canonical(item.facts.defect_type)
        if text is None:
            return [self.vocab.pad_id] * self.max_len
        try:
            return self.vocab.encode(text, self.max_len)
        except ValueError:
            return [self.vocab.pad_id] * self.max_len

    def _a_good(self, rng: np.random.Generator) -> tuple[U8, BoolArr]:
        """A random good training image and its part mask (turned or mirrored for a surface)."""
        k = int(rng.integers(len(self.good)))
        if not self.surface:
            return self.good[k], self.allowed[k]
        turn = int(rng.integers(8))
        return orient(self.good[k], turn), orient(self.allowed[k], turn)

    def _transplanted(self, rng: np.random.Generator, item: Item) -> Item:
        """``item``'s defect moved onto a random good image (``models.data.anomalies``)."""
        assert item.mask is not None
        target, allowed = self._a_good(rng)
        kind = self.types[item.type_index]
        movable = kind not in self.fixed_place
        img, mask = transplant(rng, item.image, item.mask, target, allowed, movable)
        if not mask.any():
            return item
        facts = item.facts
        if movable:  # the place (and the grid cell) changed: measure again, compose the caption
            ys, xs = np.nonzero(allowed)
            bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
            regions = measure_regions(mask, None, PartGeometry(allowed, bbox, None), self.mm_per_px)
            main = regions[0]
            facts = CaptionFacts(kind, main.location, size_class(main.length_mm), main.length_mm)
        return Item(img, mask, item.type_index, facts, None if movable else item.caption)

    def draw(
        self,
        rng: np.random.Generator,
        size: int,
        p_good: float,
        p_paste: float,
        shift_px: int,
        p_transplant: float = 0.0,
    ) -> Batch:
        """A random training batch of ``size``: good with ``p_good``, pasted with ``p_paste``,
        else a labelled defect, which with ``p_transplant`` is moved onto another good
        image first; every image jittered by up to ``shift_px`` pixels."""
        images, masks, has_mask, anomalous, types, tokens = [], [], [], [], [], []
        drawn: list[Item] = []
        unknown = self.types.index(UNKNOWN_TYPE)
        if not self.items:  # good images only: the labelled share is pasted too
            p_paste = 1.0 - p_good
        for _ in range(size):
            u = rng.random()
            if u < p_good + p_paste:
                img, allowed = self._a_good(rng)
                mask = np.zeros(self.image_shape, dtype=bool)
                item = Item(img, mask, -1, None, None)
                if u >= p_good:
                    donors = self.good[rng.integers(len(self.good), size=1)]
                    img, mask = paste_anomaly(rng, img, allowed, donors)
                    if mask.sum() >= 12:
                        facts = facts_of_mask_fast(mask, allowed, self.mm_per_px)
                        item = Item(img, mask, unknown, facts, None)
            else:
                item = self.items[int(rng.integers(len(self.items)))]
                if item.mask is not None and rng.random() < p_transplant:
                    item = self._transplanted(rng, item)
            m = item.mask if item.mask is not None else np.zeros(self.image_shape, dtype=bool)
            img, m = jitter(rng, item.image, m, shift_px)
            images.append(img)
            masks.append(m)
            has_mask.append(item.mask is not None)
            anomalous.append(item.type_index >= 0)
            types.append(item.type_index)
            tokens.append(self.caption_tokens(item, rng))
            drawn.append(item)
        return Batch(
            np.stack(images),
            np.stack(masks),
            np.array(has_mask),
            np.array(anomalous),
            np.array(types, dtype=np.int64),
            np.array(tokens, dtype=np.int64),
            *_fact_indices(drawn, self.mm_per_px),
        )

    def validation_batches(self, size: int) -> list[Batch]:
        """The validation items in fixed batches (canonical captions, no jitter)."""
        out = []
        for i in range(0, len(self.val), size):
            chunk = self.val[i : i + size]
            shape = self.image_shape
            out.append(
                Batch(
                    np.stack([it.image for it in chunk]),
                    np.stack(
                        [it.mask if it.mask is not None else np.zeros(shape, bool) for it in chunk]
                    ),
                    np.array([it.mask is not None for it in chunk]),
                    np.array([it.type_index >= 0 for it in chunk]),
                    np.array([it.type_index for it in chunk], dtype=np.int64),
                    np.array([self.caption_tokens(it, None) for it in chunk], dtype=np.int64),
                    *_fact_indices(chunk, self.mm_per_px),
                )
            )
        return out


def facts_of_mask_fast(mask: BoolArr, allowed: BoolArr, mm_per_px: float) -> CaptionFacts:
    """Caption facts of a pasted blob on the part whose mask is ``allowed``."""
    ys, xs = np.nonzero(allowed)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    part = PartGeometry(allowed, bbox, None)
    main = measure_regions(mask, None, part, mm_per_px, bridge_px=0)[0]
    return CaptionFacts(UNKNOWN_TYPE, main.location, size_class(main.length_mm), main.length_mm)


@dataclass(frozen=True, slots=True)
class Split:
    """A data set's samples split into training and validation (defects type by type)."""

    train_good: tuple[Sample, ...]
    val_good: tuple[Sample, ...]
    train_defects: tuple[Sample, ...]
    val_defects: tuple[Sample, ...]


def split_dataset(dataset: MvtecDataset, val_fraction: float, seed: int) -> Split:
    """Hold out ``val_fraction`` of the good images and of each defect type, chosen by
    ``seed``; the same arguments give the same split (calibration after training relies on it).
    A data set with ``validation/good`` images validates on exactly those and trains on all
    its other good images."""
    rng = np.random.default_rng(seed)
    goods = dataset.select("train") + dataset.select("test", "good")
    given = dataset.select("validation")
    if given:
        train_good, val_good = goods, given
    else:
        train_good, val_good = _split(rng, goods, val_fraction)
    train_defects: list[Sample] = []
    val_defects: list[Sample] = []
    for t in dataset.defect_types:
        tr, va = _split(rng, dataset.select("test", t), val_fraction)
        train_defects += tr
        val_defects += va
    return Split(tuple(train_good), tuple(val_good), tuple(train_defects), tuple(val_defects))


def _split(
    rng: np.random.Generator, samples: Sequence[Sample], fraction: float
) -> tuple[list[Sample], list[Sample]]:
    order = rng.permutation(len(samples))
    n_val = round(fraction * len(samples))
    if len(samples) >= 2 and fraction > 0:
        n_val = min(max(1, n_val), len(samples) - 1)
    val = [samples[i] for i in sorted(order[:n_val])]
    train = [samples[i] for i in sorted(order[n_val:])]
    return train, val


__all__ = [
    "Batch",
    "CaptionFacts",
    "Item",
    "Split",
    "TrainingData",
    "facts_of_mask",
    "split_dataset",
]
