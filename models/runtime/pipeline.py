"""What every runtime shares: input checks, post-processing into ``Findings``, greedy decoding.

A runtime supplies two functions over arrays, ``detect`` and ``step`` (see
``models.graphs`` for their inputs and outputs); ``Pipeline`` does the rest,
so ONNX Runtime, TensorRT and torch differ only in how they run the graphs.

Units of the returned ``Findings``: ``anomaly_score`` is the image score
divided by the calibrated image threshold (1.0 = the threshold, so a recipe's
``reject_score = 1.0`` rejects what calibration calls anomalous);
``anomaly_map`` is the pixel probability divided by the calibrated pixel
threshold (1.0 = where regions start). Regions are reported only for images
at or above the image threshold. The explanation facts' ``size_mm`` is the main
defect's length: the size head's (learned against true defect lengths) combined
with the main region's measured length and area by the package's size
calibration (``models.sizing``, fitted on validation data; the head's alone
where the package has none); each region keeps the map's own measured
``length_mm``. The facts' location is the main region's grid cell, their type
the type head's.

Nothing is judged from numbers the contract does not allow: the normalized
input, every detect output and the decoder's logits are checked
(``models.outputs``) and a batch with a NaN, an infinity or a value out of its
range raises ``ModelOutputError``, which the node turns into fail-safe rejects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.backend import Image, Staged
from models.captions import Vocabulary
from models.data.geometry import (
    ALL_LOCATIONS,
    SIZE_CLASSES,
    PartGeometry,
    hysteresis,
    measure_regions,
    size_class,
)
from models.explain_text import NO_DEFECT_TYPE, Language, render_explanation
from models.findings import UNKNOWN_TYPE, Explanation, ExplanationFacts, Findings, Region
from models.graphs import NO_LOCATION
from models.guard import GroundingGuard, grounding_for
from models.outputs import ANY_FINITE, NON_NEGATIVE, PROBABILITY, check_arrays
from models.package import ModelPackage, load_package
from models.runtime.parity import Fallback, ParityReport, describe_state

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
DetectFn = Callable[[F32], tuple[F32, F32, F32, F32, F32]]
"""``image (N, 1, S, S)`` -> ``(anomaly_map (N, S, S), score (N,), type_probs (N, T),
memory (N, L, d), length_px (N,))``."""
StepFn = Callable[[F32, I32, I32], F32]
"""``(memory (N, L, d), tokens (N, max_len), facts (N, 3))`` -> ``logits (N, max_len, V)``."""

UNKNOWN_MIN_PROB = 0.75
"""A defect is called "unknown anomaly" only when the type head gives that class more than
this probability; otherwise the likeliest taught type. The class learns from synthetic
anomalies as well as from types too rare to teach, and real defects of a taught type that
look like a pasted blob (spots) drew it with probabilities between 0.5 and 0.9. Chosen on
the tuning family (brushed_metal, 5 labels, seed 1): type accuracy 0.855 at 0.5 (plain
argmax), 0.89 at 0.75, 0.915 at 0.9; and a type too rare to teach (spot, 2 labels) stayed
"unknown anomaly" in 40, 39 and 36 of its 40 test images. 0.75 keeps that within one in
forty."""

_NO_FACTS = ExplanationFacts(NO_DEFECT_TYPE, "", 0.0, False, 0)
_DIAMOND3 = ndimage.iterate_structure(ndimage.generate_binary_structure(2, 1), 3)
"""Three 4-neighbour dilations in one pass."""


@dataclass(frozen=True, slots=True)
class Detection:
    """One image after the detect graph and post-processing (before any explanation).

    ``score`` is in threshold units (see the module docstring); ``regions``
    are empty below the threshold; ``part`` is the part found in the image
    (only measured for anomalous images).
    """

    anomaly_map: F32
    score: float
    defect_type: str
    type_confidence: float
    regions: tuple[Region, ...]
    facts: ExplanationFacts
    part: PartGeometry | None
    memory: F32
    head_type: str = ""
    """The type head's choice whether or not the image is anomalous (for evaluation)."""
    main: Region | None = None
    """The region the facts describe: the largest one."""
    length_mm: float = 0.0
    """The main defect's calibrated length (mm; see the module docstring), whether or not the
    image is anomalous (then from the size head alone)."""
    fact_ids: tuple[int, int, int] = (0, NO_LOCATION, 0)
    """The facts as the decoder takes them: type index, grid cell (9: none), size class."""
    head_length_mm: float = 0.0
    """The size head's own length of the main defect (mm), before calibration."""

    @property
    def anomalous(self) -> bool:
        """True at or above the calibrated image threshold."""
        return self.score >= 1.0


class Pipeline:
    """Turns a runtime's ``detect``/``step`` into a ``Backend``'s ``infer``.

    ``explain=False`` skips the decoder (the facts rendering is published);
    ``mm_per_px`` and ``min_region_area_mm2`` default to the package's.
    Raises ``ValueError`` for a non-positive scale.
    """

    def __init__(
        self,
        package: ModelPackage,
        detect: DetectFn,
        step: StepFn,
        *,
        explain: bool = True,
        mm_per_px: float | None = None,
        min_region_area_mm2: float | None = None,
        language: Language = "en",
    ) -> None:
        m = package.manifest
        self.package = package
        self._detect = detect
        self._step = step
        self.explain_enabled = explain
        self.mm_per_px = float(mm_per_px if mm_per_px is not None else m.input.mm_per_px)
        if not self.mm_per_px > 0:
            raise ValueError(f"mm_per_px must be > 0, got {mm_per_px}")
        self.min_region_area_mm2 = float(
            min_region_area_mm2
            if min_region_area_mm2 is not None
            else m.thresholds.min_region_area_mm2
        )
        self.language: Language = language
        self.size = m.input.size_px
        self.mean = m.input.normalization.mean
        self.std = m.input.normalization.std
        self.types = m.types
        self._unknown_index = self.types.index(UNKNOWN_TYPE) if UNKNOWN_TYPE in self.types else -1
        self.vocab = Vocabulary(m.vocabulary)
        self.max_len = package.net.max_len
        self.guard = GroundingGuard(m.types)
        self.size_calibration = m.size_calibration
        self._input_what = (
            f"{package.root}: input.normalization (mean {self.mean!r}, std {self.std!r})"
        )
        self._detect_what = f"{package.root}: detect graph output"
        self._step_what = f"{package.root}: explain graph output"

    def prepare(self, images: Sequence[Image]) -> F32:
        """Check every image, then stack them normalized as ``(N, 1, S, S)`` float32.

        Raises ``ValueError`` naming the first image that is not uint8 ``(S, S)``
        or ``(S, S, 3)``, or for an empty batch, and ``ModelOutputError`` when the
        package's normalization gives values that are not finite.
        """
        if len(images) == 0:
            raise ValueError("no images to inspect")
        batch = np.empty((len(images), 1, self.size, self.size), dtype=np.float32)
        for i, img in enumerate(images):
            if not isinstance(img, np.ndarray) or img.dtype != np.uint8:
                got = img.dtype if isinstance(img, np.ndarray) else type(img).__name__
                raise ValueError(f"image {i}: expected uint8 pixels, got {got}")
            if img.ndim == 3 and img.shape[2] == 3:
                img = img.mean(axis=2)
            if img.shape != (self.size, self.size):
                raise ValueError(
                    f"image {i}: expected ({self.size}, {self.size}) or "
                    f"({self.size}, {self.size}, 3), got {img.shape}; crop the part to the "
                    "package's input size"
                )
            batch[i, 0] = img
        # A normalization that overflows float32 is refused just below, by the check.
        with np.errstate(over="ignore", invalid="ignore"):
            batch *= 1.0 / 255.0
            batch -= self.mean
            batch *= 1.0 / self.std
        check_arrays({"normalized image": (batch, ANY_FINITE)}, self._input_what)
        return batch

    def detect(self, images: Sequence[Image]) -> list[Detection]:
        """The in-cycle path: run the detect graph, check its outputs and measure regions.

        Raises ``ModelOutputError`` (nothing is judged) when any output of the batch is
        not finite or out of its range (``models.outputs``).
        """
        x = self.prepare(images)
        amap, score, type_probs, memory, length_px = self._detect(x)
        check_arrays(
            {
                "score": (score, PROBABILITY),
                "anomaly_map": (amap, PROBABILITY),
                "type_probs": (type_probs, PROBABILITY),
                "length_px": (length_px, NON_NEGATIVE),
                "memory": (memory, ANY_FINITE),
            },
            self._detect_what,
        )
        thr = self.package.manifest.thresholds
        out = []
        for i, img in enumerate(images):
            gray = img if img.ndim == 2 else img.mean(axis=2).astype(np.uint8)
            length_mm = float(length_px[i]) * self.mm_per_px
            out.append(
                self._post(
                    gray,
                    amap[i],
                    float(score[i]) / thr.image_score,
                    type_probs[i],
                    memory[i],
                    length_mm,
                )
            )
        return out

    def _type_index(self, probs: F32) -> int:
        """The type head's answer: the likeliest type, but "unknown anomaly" only above
        ``UNKNOWN_MIN_PROB`` when some type was taught."""
        k = int(np.argmax(probs))
        unknown = self._unknown_index
        if k == unknown and len(self.types) > 1 and float(probs[k]) <= UNKNOWN_MIN_PROB:
            taught = np.delete(probs, unknown)
            best = int(np.argmax(taught))
            k = best if best < unknown else best + 1
        return k

    def _post(
        self, image: Image, prob: F32, score: float, probs: F32, memory: F32, length_mm: float
    ) -> Detection:
        thr = self.package.manifest.thresholds
        k = self._type_index(probs)
        head_mm = length_mm
        if score < 1.0:
            length_mm = self._length_mm(self.types[k], head_mm, None)
            return Detection(
                prob / thr.pixel,
                score,
                NO_DEFECT_TYPE,
                0.0,
                (),
                _NO_FACTS,
                None,
                memory,
                self.types[k],
                length_mm=length_mm,
                fact_ids=(k, NO_LOCATION, SIZE_CLASSES.index(size_class(length_mm))),
                head_length_mm=head_mm,
            )
        threshold = self.package.manifest.input.part_threshold
        part = PartGeometry.of(image, self.mm_per_px, threshold, edges=False)
        peak = float(prob.max())
        # Regions grow from seeds at the pixel threshold down to the region threshold;
        # an anomalous image whose map stays below both still gets its strongest spot.
        seeds = min(thr.pixel, 0.5 * peak)
        mask = hysteresis(prob, seeds, min(thr.region, seeds))
        area, merge = self.min_region_area_mm2, thr.merge_mm
        regions = measure_regions(mask, prob, part, self.mm_per_px, area, merge_mm=merge)
        if not regions:  # all below the minimum area: report the strongest anyway
            regions = measure_regions(mask, prob, part, self.mm_per_px, merge_mm=merge)[:1]
        regions = [_with_contrast(r, image, mask) for r in regions]
        top = max(regions, key=lambda r: r.area_px) if regions else None
        length_mm = self._length_mm(self.types[k], head_mm, top)
        size_id = SIZE_CLASSES.index(size_class(length_mm))
        facts = ExplanationFacts(
            self.types[k],
            top.location if top else "",
            round(length_mm, 1) if top else 0.0,
            top.near_edge if top else False,
            len(regions),
        )
        return Detection(
            prob / thr.pixel,
            score,
            self.types[k],
            float(probs[k]),
            tuple(regions),
            facts,
            part,
            memory,
            self.types[k],
            top,
            length_mm,
            (k, ALL_LOCATIONS.index(top.location) if top else NO_LOCATION, size_id),
            head_mm,
        )

    def _length_mm(self, defect_type: str, head_mm: float, region: Region | None) -> float:
        """The main defect's length (mm): the size calibration's, else the head's."""
        cal = self.size_calibration
        if cal is None:
            return head_mm
        if region is None:
            return cal.length_mm(defect_type, head_mm)
        return cal.length_mm(defect_type, head_mm, region.length_mm, region.area_mm2)

    def decode(self, memory: F32, facts: I32) -> list[str]:
        """Greedy sentences for a batch of memories ``(N, L, d)`` and fact ids ``(N, 3)``.

        Raises ``ModelOutputError`` when the decoder's logits are not finite.
        """
        n = memory.shape[0]
        tokens = np.zeros((n, self.max_len), dtype=np.int32)
        tokens[:, 0] = self.vocab.bos_id
        done = np.zeros(n, dtype=bool)
        for t in range(self.max_len - 1):
            logits = self._step(memory, tokens, facts)
            check_arrays({"logits": (logits, ANY_FINITE)}, self._step_what)
            nxt = np.argmax(logits[:, t], axis=1).astype(np.int32)
            tokens[:, t + 1] = np.where(done, self.vocab.pad_id, nxt)
            done |= nxt == self.vocab.eos_id
            if done.all():
                break
        return [self.vocab.decode(row[1:].tolist()) for row in tokens]

    def plain(self, d: Detection) -> Explanation:
        """The facts of ``d`` rendered plainly (no defect found below the threshold)."""
        return Explanation(
            render_explanation(d.facts if d.anomalous else None, self.language), d.facts
        )

    def explain(self, detections: Sequence[Detection]) -> list[Explanation]:
        """Explanations: the guarded model sentence for anomalous images, the facts otherwise."""
        out: list[Explanation] = [self.plain(d) for d in detections]
        todo = [i for i, d in enumerate(detections) if d.anomalous]
        if self.explain_enabled and todo:
            sentences = self.decode(
                np.stack([detections[i].memory for i in todo]), self.fact_ids(detections, todo)
            )
            for i, sentence in zip(todo, sentences, strict=True):
                d = detections[i]
                grounding = grounding_for(d.facts, d.main, d.part, length_mm=d.length_mm)
                out[i] = self.guard.ground(sentence, grounding, self.language)
        return out

    @staticmethod
    def fact_ids(detections: Sequence[Detection], which: Sequence[int]) -> I32:
        """The decoder's fact ids ``(len(which), 3)`` of ``detections[which]``."""
        return np.array([detections[i].fact_ids for i in which], dtype=np.int32).reshape(-1, 3)

    def findings(self, d: Detection, explanation: Explanation, backend: str) -> Findings:
        """The ``Findings`` of one detection."""
        return Findings(
            anomaly_score=d.score,
            anomaly_map=d.anomaly_map,
            defect_type=d.defect_type,
            type_confidence=d.type_confidence,
            regions=d.regions,
            explanation=explanation,
            backend=backend,
            part_bbox_px=d.part.bbox_px if d.part is not None else None,
        )

    def infer(self, images: Sequence[Image], backend: str) -> list[Findings]:
        """Detect, explain and package; one ``Findings`` per image."""
        dets = self.detect(images)
        return [self.findings(d, e, backend) for d, e in zip(dets, self.explain(dets), strict=True)]

    def first(self, detections: Sequence[Detection], backend: str) -> Staged:
        """``detections`` staged: findings with the plain facts now, the anomalous ones'
        sentences pending (none when the decoder is off)."""
        now = [self.findings(d, self.plain(d), backend) for d in detections]
        pending = tuple(i for i, d in enumerate(detections) if d.anomalous)
        return Staged(now, pending if self.explain_enabled else (), tuple(detections))

    def later(self, staged: Staged, backend: str) -> list[Findings]:
        """The findings of ``staged.pending`` with their guarded model sentences."""
        dets = [staged.detections[i] for i in staged.pending]
        assert all(isinstance(d, Detection) for d in dets), "staged by another backend"
        ds = cast("list[Detection]", dets)
        return [self.findings(d, e, backend) for d, e in zip(ds, self.explain(ds), strict=True)]


class PipelineBackend:
    """What the CPU runtimes share: the package check and the ``Backend`` calls over ``Pipeline``.

    A subclass sets ``name``, ``package`` and ``pipeline`` in its ``__init__``.
    """

    name: str
    package: ModelPackage
    pipeline: Pipeline
    requested: str | None = None
    """The runtime the caller asked for, when another runs instead (``describe``)."""
    device: str = "cpu"
    precision: str = "fp32"
    fallbacks: tuple[Fallback, ...] = ()
    """The steps down taken before this backend ran (``models.runtime.parity``)."""
    parity: tuple[ParityReport, ...] = ()
    """The parity gate's reports behind the choice (none for a CPU runtime asked for)."""

    @staticmethod
    def open_package(package: ModelPackage | str | Path, threads: int) -> ModelPackage:
        """``package`` verified (loaded when a folder is given). Raises ``ValueError`` for
        ``threads < 1`` and ``PackageError`` for a bad package."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return package if isinstance(package, ModelPackage) else load_package(package)

    def describe(self) -> dict[str, Any]:
        """What runs and why (JSON-ready; ``models.runtime.parity.describe_state``)."""
        return describe_state(
            runtime=self.name,
            requested=self.requested or self.name,
            device=self.device,
            precision=self.precision,
            fallbacks=self.fallbacks,
            parity=self.parity,
        )

    def detect(self, images: Sequence[Image]) -> list[Detection]:
        """The in-cycle part only (see ``Pipeline.detect``)."""
        return self.pipeline.detect(images)

    def explain(self, detections: Sequence[Detection]) -> list[Explanation]:
        """Explanations for detections (see ``Pipeline.explain``)."""
        return self.pipeline.explain(detections)

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        """Inspect a batch of uint8 crops of the package's input size; one ``Findings`` each.

        Raises ``ValueError`` for an image of the wrong dtype or shape.
        """
        return self.pipeline.infer(images, self.name)

    def detect_first(self, images: Sequence[Image]) -> Staged:
        """``infer``'s in-cycle stage (``models.backend.StagedBackend``)."""
        return self.pipeline.first(self.pipeline.detect(images), self.name)

    def explain_later(self, staged: Staged) -> list[Findings]:
        """The pending sentences of ``staged`` (``models.backend.StagedBackend``)."""
        return self.pipeline.later(staged, self.name)


def _with_contrast(r: Region, image: Image, mask: npt.NDArray[np.bool_]) -> Region:
    """``r`` with ``contrast``: its mean gray level against a ring around it, in the
    ring's spread."""
    from dataclasses import replace

    x0, y0, x1, y1 = r.bbox_px
    pad = 4
    sl = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
    inner = mask[sl]
    ring = ndimage.binary_dilation(inner, _DIAMOND3) & ~inner
    g = image[sl].astype(np.float32)
    if not ring.any() or not inner.any():
        return r
    spread = float(g[ring].std()) + 1.0
    return replace(r, contrast=float((g[inner].mean() - g[ring].mean()) / spread))
