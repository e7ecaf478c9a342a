"""Evaluate a model package on the test split of an MVTec-layout data set.

Metrics (all on ``test/``):

- ``image_auroc``: image score against good/defective;
- ``pixel_auroc``: anomaly map against masks, over good images and the types
  that have masks;
- ``type_accuracy``: the type head's choice on defective images of known types;
  ``unknown_type_rate``: the share of defects of types the package was not taught
  (too few examples, or new) that it calls "unknown anomaly" rather than a guess;
- ``explanation_fact_accuracy``: the decoder's sentence for each defective
  image with a mask, parsed back; the mean over type, location and size class
  of agreement with the ground truth measured on the mask
  (``explanation_all_facts_accuracy``: all three right);
- ``guard_fallback_rate``: share of published model sentences the grounding
  guard replaced, over the images detected as anomalous;
- ``detection_rate`` and ``false_alarm_rate`` at the calibrated threshold.

``ci95`` holds 95% percentile-bootstrap intervals of the image AUROC, type and fact
accuracies and the two rates (a plant's own test set is small: 20 images of a type
give a type accuracy of 0.85 within about ±0.15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from rich.progress import Progress

from models.captions import parse
from models.data.mvtec import MvtecDataset, Sample, load_gray, load_mask
from models.findings import UNKNOWN_TYPE
from models.guard import filled, is_slotted
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.pipeline import Pipeline
from models.train.metrics import PixelAuroc, auroc, bootstrap_ci, roc_curve
from models.train.samples import facts_of_mask


@dataclass(frozen=True, slots=True)
class Example:
    """One image for the report: pixels, probability map, mask, truth and what the model said."""

    image: npt.NDArray[np.uint8]
    prob: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    true_type: str
    text: str
    source: str


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Metrics, curves, the type confusion (true -> predicted -> count) and report examples."""

    metrics: dict[str, float]
    image_roc: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]
    pixel_roc: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]
    confusion: dict[str, dict[str, int]]
    examples: list[Example] = field(default_factory=list)
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Outcomes:
    """What a package did on each test image of one run; runs pool (k-fold)."""

    scores: list[float] = field(default_factory=list)
    labels: list[bool] = field(default_factory=list)
    type_hits: list[bool] = field(default_factory=list)
    type_items: list[int] = field(default_factory=list)
    """For each of ``type_hits``: its image's place in ``scores`` (pairs two packages' runs)."""
    fact_hits: list[list[bool]] = field(default_factory=list)
    fact_items: list[int] = field(default_factory=list)
    unknown_hits: list[bool] = field(default_factory=list)
    """For defects of a type the package does not know: was it called an unknown anomaly?"""
    detected: list[bool] = field(default_factory=list)
    pix: PixelAuroc = field(default_factory=PixelAuroc)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: dict[str, Example] = field(default_factory=dict)
    guard_checked: int = 0
    guard_fallbacks: int = 0

    def merge(self, other: Outcomes) -> None:
        """Add ``other``'s images to these."""
        base = len(self.scores)
        self.type_items += [base + i for i in other.type_items]
        self.fact_items += [base + i for i in other.fact_items]
        self.scores += other.scores
        self.labels += other.labels
        self.type_hits += other.type_hits
        self.unknown_hits += other.unknown_hits
        self.fact_hits += other.fact_hits
        self.detected += other.detected
        self.pix.pos += other.pix.pos
        self.pix.neg += other.pix.neg
        for true, row in other.confusion.items():
            mine = self.confusion.setdefault(true, {})
            for got, n in row.items():
                mine[got] = mine.get(got, 0) + n
        for key, ex in other.examples.items():
            self.examples.setdefault(key, ex)
        self.guard_checked += other.guard_checked
        self.guard_fallbacks += other.guard_fallbacks


def evaluate(
    backend: OnnxRuntimeBackend | Any,
    dataset: MvtecDataset,
    batch_size: int = 8,
    progress: bool = True,
) -> Evaluation:
    """Run ``backend`` (any runtime with a ``pipeline``) over ``dataset``'s test split.

    Raises ``ValueError`` when the test split lacks good or defective images.
    """
    tests = dataset.select("test")
    if not any(s.is_good for s in tests) or all(s.is_good for s in tests):
        raise ValueError(f"{dataset.root}: the test split needs good and defective images")
    return summarise(collect(backend, dataset, batch_size, progress))


def collect(
    backend: OnnxRuntimeBackend | Any,
    dataset: MvtecDataset,
    batch_size: int = 8,
    progress: bool = True,
) -> Outcomes:
    """Run ``backend`` over ``dataset``'s test split; what it did on each image."""
    pipe: Pipeline = backend.pipeline
    manifest = pipe.package.manifest
    pixel_thr = manifest.thresholds.pixel
    tests = dataset.select("test")
    checked0 = pipe.guard.stats()
    o = Outcomes()
    with Progress(disable=not progress) as bar:
        task = bar.add_task("evaluate", total=len(tests))
        for i in range(0, len(tests), batch_size):
            chunk: Sequence[Sample] = tests[i : i + batch_size]
            images = [load_gray(s.path) for s in chunk]
            dets = pipe.detect(images)
            explanations = pipe.explain(dets)
            defective = [k for k, s in enumerate(chunk) if not s.is_good]
            sentences = (
                pipe.decode(
                    np.stack([dets[k].memory for k in defective]), pipe.fact_ids(dets, defective)
                )
                if defective
                else []
            )
            said = dict(zip(defective, sentences, strict=True))
            for k, (s, img, d, e) in enumerate(zip(chunk, images, dets, explanations, strict=True)):
                o.scores.append(d.score)
                o.labels.append(not s.is_good)
                prob = (d.anomaly_map * pixel_thr).astype(np.float32)
                mask = load_mask(s.mask_path, img.shape)
                if s.is_good or s.mask_path is not None:
                    o.pix.add(prob, mask)
                if not s.is_good:
                    o.detected.append(d.anomalous)
                    row = o.confusion.setdefault(s.defect_type, {})
                    row[d.head_type] = row.get(d.head_type, 0) + 1
                    if s.defect_type in manifest.types:
                        o.type_hits.append(d.head_type == s.defect_type)
                        o.type_items.append(len(o.scores) - 1)
                    else:
                        o.unknown_hits.append(d.head_type == UNKNOWN_TYPE)
                    if s.mask_path is not None:
                        truth = facts_of_mask(
                            img, mask, s.defect_type, pipe.mm_per_px, manifest.input.part_threshold
                        )
                        if truth is not None:
                            text = said[k]
                            if is_slotted(text):  # the facts fill what the model leaves open
                                text = filled(text, d.facts)
                            got = parse(text, manifest.types)
                            o.fact_items.append(len(o.scores) - 1)
                            o.fact_hits.append(
                                [
                                    got.defect_type == truth.defect_type,
                                    got.location == truth.location,
                                    got.size == truth.size,
                                ]
                            )
                key = s.defect_type
                if key not in o.examples and (s.is_good or d.anomalous):
                    o.examples[key] = Example(img, prob, mask, key, e.text, e.source)
            bar.advance(task, len(chunk))
    guard = pipe.guard.stats()
    o.guard_checked = guard.checked - checked0.checked
    o.guard_fallbacks = guard.fallbacks - checked0.fallbacks
    return o


def summarise(o: Outcomes) -> Evaluation:
    """The metrics, curves and 95% intervals of ``o``. Raises ``ValueError`` without both
    good and defective images."""
    y = np.array(o.labels, dtype=bool)
    sc = np.array(o.scores, dtype=np.float64)
    if not y.any() or y.all():
        raise ValueError("the test images need good and defective ones")
    facts = np.array(o.fact_hits, dtype=bool) if o.fact_hits else np.zeros((0, 3), dtype=bool)
    checked, fallbacks = o.guard_checked, o.guard_fallbacks
    type_hits = o.type_hits
    detected = o.detected
    metrics = {
        "image_auroc": auroc(sc, y),
        "pixel_auroc": o.pix.value(),
        "type_accuracy": float(np.mean(type_hits)) if type_hits else float("nan"),
        "unknown_type_rate": float(np.mean(o.unknown_hits)) if o.unknown_hits else float("nan"),
        "explanation_fact_accuracy": float(facts.mean()) if facts.size else float("nan"),
        "explanation_all_facts_accuracy": float(facts.all(axis=1).mean())
        if facts.size
        else float("nan"),
        "explanation_type_accuracy": float(facts[:, 0].mean()) if facts.size else float("nan"),
        "explanation_location_accuracy": float(facts[:, 1].mean()) if facts.size else float("nan"),
        "explanation_size_accuracy": float(facts[:, 2].mean()) if facts.size else float("nan"),
        "guard_fallback_rate": fallbacks / checked if checked else 0.0,
        "guard_checked": float(checked),
        "detection_rate": float(np.mean(detected)) if detected else float("nan"),
        "false_alarm_rate": float((sc[~y] >= 1.0).mean()),
        "test_images": float(y.size),
    }
    ci = _intervals(sc, y, np.array(type_hits, dtype=bool), facts, np.array(detected, dtype=bool))
    return Evaluation(
        metrics, roc_curve(sc, y), o.pix.curve(), o.confusion, list(o.examples.values()), ci
    )


def _intervals(
    scores: npt.NDArray[np.float64],
    labels: npt.NDArray[np.bool_],
    type_hits: npt.NDArray[np.bool_],
    facts: npt.NDArray[np.bool_],
    detected: npt.NDArray[np.bool_],
) -> dict[str, tuple[float, float]]:
    """95% bootstrap intervals of the headline metrics (those with data)."""
    goods, bads = scores[~labels], scores[labels]
    ranked = np.concatenate([goods, bads])
    truth = np.concatenate([np.zeros(goods.size, bool), np.ones(bads.size, bool)])
    out: dict[str, tuple[float, float] | None] = {
        "image_auroc": bootstrap_ci(lambda i: auroc(ranked[i], truth[i]), [goods.size, bads.size]),
        "false_alarm_rate": bootstrap_ci(lambda i: float((goods[i] >= 1.0).mean()), [goods.size]),
        "type_accuracy": bootstrap_ci(lambda i: float(type_hits[i].mean()), [type_hits.size]),
        "detection_rate": bootstrap_ci(lambda i: float(detected[i].mean()), [detected.size]),
        "explanation_fact_accuracy": bootstrap_ci(
            lambda i: float(facts[i].mean()), [facts.shape[0]]
        ),
        "explanation_all_facts_accuracy": bootstrap_ci(
            lambda i: float(facts[i].all(axis=1).mean()), [facts.shape[0]]
        ),
    }
    return {k: (round(v[0], 4), round(v[1], 4)) for k, v in out.items() if v is not None}
