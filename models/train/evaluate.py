"""Evaluate a model package on the test split of an MVTec-layout data set.

Metrics (all on ``test/``):

- ``image_auroc``: image score against good/defective;
- ``pixel_auroc``: anomaly map against masks, over good images and the types
  that have masks;
- ``type_accuracy``: the type head's choice on defective images of known types;
- ``explanation_fact_accuracy``: the decoder's sentence for each defective
  image with a mask, parsed back; the mean over type, location and size class
  of agreement with the ground truth measured on the mask
  (``explanation_all_facts_accuracy``: all three right);
- ``guard_fallback_rate``: share of published model sentences the grounding
  guard replaced, over the images detected as anomalous;
- ``detection_rate`` and ``false_alarm_rate`` at the calibrated threshold.
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
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.pipeline import Pipeline
from models.train.metrics import PixelAuroc, auroc, roc_curve
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


def evaluate(
    backend: OnnxRuntimeBackend | Any,
    dataset: MvtecDataset,
    batch_size: int = 8,
    progress: bool = True,
) -> Evaluation:
    """Run ``backend`` (any runtime with a ``pipeline``) over ``dataset``'s test split.

    Raises ``ValueError`` when the test split lacks good or defective images.
    """
    pipe: Pipeline = backend.pipeline
    manifest = pipe.package.manifest
    pixel_thr = manifest.thresholds.pixel
    tests = dataset.select("test")
    if not any(s.is_good for s in tests) or all(s.is_good for s in tests):
        raise ValueError(f"{dataset.root}: the test split needs good and defective images")
    checked0 = pipe.guard.stats()
    scores: list[float] = []
    labels: list[bool] = []
    pix = PixelAuroc()
    confusion: dict[str, dict[str, int]] = {}
    type_hits: list[bool] = []
    fact_hits: list[list[bool]] = []
    detected: list[bool] = []
    examples: dict[str, Example] = {}
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
                scores.append(d.score)
                labels.append(not s.is_good)
                prob = (d.anomaly_map * pixel_thr).astype(np.float32)
                mask = load_mask(s.mask_path, img.shape)
                if s.is_good or s.mask_path is not None:
                    pix.add(prob, mask)
                if not s.is_good:
                    detected.append(d.anomalous)
                    row = confusion.setdefault(s.defect_type, {})
                    row[d.head_type] = row.get(d.head_type, 0) + 1
                    if s.defect_type in manifest.types:
                        type_hits.append(d.head_type == s.defect_type)
                    if s.mask_path is not None:
                        truth = facts_of_mask(
                            img, mask, s.defect_type, pipe.mm_per_px, manifest.input.part_threshold
                        )
                        if truth is not None:
                            got = parse(said[k], manifest.types)
                            fact_hits.append(
                                [
                                    got.defect_type == truth.defect_type,
                                    got.location == truth.location,
                                    got.size == truth.size,
                                ]
                            )
                key = s.defect_type
                if key not in examples and (s.is_good or d.anomalous):
                    examples[key] = Example(img, prob, mask, key, e.text, e.source)
            bar.advance(task, len(chunk))
    guard = pipe.guard.stats()
    checked = guard.checked - checked0.checked
    fallbacks = guard.fallbacks - checked0.fallbacks
    y = np.array(labels)
    sc = np.array(scores)
    facts = np.array(fact_hits, dtype=bool) if fact_hits else np.zeros((0, 3), dtype=bool)
    metrics = {
        "image_auroc": auroc(sc, y),
        "pixel_auroc": pix.value(),
        "type_accuracy": float(np.mean(type_hits)) if type_hits else float("nan"),
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
    return Evaluation(metrics, roc_curve(sc, y), pix.curve(), confusion, list(examples.values()))
