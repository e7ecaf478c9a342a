"""The parity gate: a GPU runtime's precision is used only if it judges like the CPU reference.

A GPU runtime (``cuda``, ``tensorrt``) computes the detect graph in fp16 where
it can: twice as fast, but a half-precision map can move a mask edge, a score
near the threshold or the type head's choice. So at load it runs the
package's own check images (``models.package.check_images``) through itself
and through ONNX Runtime in fp32 on the CPU (the production reference) and
compares, per image, what the verdict is made of (both sides post-processed by
the same ``Pipeline``):

- the anomaly mask (the map at or above the calibrated pixel threshold):
  intersection over union at least ``MIN_MASK_IOU`` (two empty masks agree);
- the image score (threshold units): relative error at most
  ``MAX_SCORE_REL_ERROR``, measured against ``max(|reference|, SCORE_FLOOR)``;
- the type: the type head's choice and the reported defect type agree.

Each image runs alone (batch 1, the node's usual batch) and all of them as one
batch, and the worse figure counts. A candidate that raises on the images (a
NaN or infinity from an fp16 overflow is refused by ``models.outputs``) fails
as ``output``. A runtime tries its precisions in order (fp16, then fp32);
each refusal is a ``Fallback``; when the last is refused it raises
``ParityRefusedError`` and ``models.runtime.open_runtime(fallback=True)``
opens ONNX Runtime on the CPU instead. Every step is logged and kept for the
backend's ``describe()``.

This module imports no GPU library: the TensorRT runtime uses it too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import structlog

from models.backend import BackendError

if TYPE_CHECKING:
    from models.runtime.pipeline import Detection

log = structlog.get_logger(__name__)

MIN_MASK_IOU = 0.99
"""Every check image's anomaly mask must overlap the reference's by at least this IoU."""
MAX_SCORE_REL_ERROR = 0.01
"""Every check image's score may differ from the reference's by at most this fraction."""
SCORE_FLOOR = 0.05
"""Scores are compared relative to ``max(|reference|, SCORE_FLOOR)`` (threshold units): a
good part's score of 0.001 decides nothing, and 1 % of it is below what any float format
promises; 1 % of 0.05 is 0.0005 of the threshold."""

CHECKS = ("mask_iou", "score", "type", "output", "no_images")
"""The names a report's ``failed`` uses: a figure out of its limit, the candidate raising on
the images, or a package without check images (nothing to prove a precision with)."""

DetectCall = Callable[[Sequence[npt.NDArray[np.uint8]]], "list[Detection]"]
CheckImage = tuple[str, npt.NDArray[np.uint8]]


@dataclass(frozen=True, slots=True)
class ImageParity:
    """One check image's figures: candidate against reference (worse of batch 1 and batched)."""

    image: str
    mask_iou: float
    score_rel_error: float
    types_agree: bool
    score: float
    reference_score: float
    head_type: str
    reference_head_type: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "image": self.image,
            "mask_iou": round(self.mask_iou, 6),
            "score_rel_error": round(self.score_rel_error, 6),
            "types_agree": self.types_agree,
            "score": round(self.score, 6),
            "reference_score": round(self.reference_score, 6),
            "head_type": self.head_type,
            "reference_head_type": self.reference_head_type,
        }


@dataclass(frozen=True, slots=True)
class ParityReport:
    """The gate's verdict on one runtime and precision (``label``, e.g. ``"cuda fp16"``).

    ``failed`` names the checks that failed (``CHECKS``), empty when it passed;
    ``error`` is the candidate's own error when it raised.
    """

    label: str
    images: tuple[ImageParity, ...]
    failed: tuple[str, ...]
    error: str | None = None

    @property
    def passed(self) -> bool:
        """True when no check failed."""
        return not self.failed

    @property
    def min_mask_iou(self) -> float | None:
        """The worst mask IoU (None: no image compared)."""
        return min((i.mask_iou for i in self.images), default=None)

    @property
    def max_score_rel_error(self) -> float | None:
        """The worst score relative error (None: no image compared)."""
        return max((i.score_rel_error for i in self.images), default=None)

    @property
    def type_disagreements(self) -> int:
        """Images whose type differs from the reference's."""
        return sum(not i.types_agree for i in self.images)

    def reason(self) -> str:
        """One line saying why it was refused (or that it passed), with the figures."""
        if "no_images" in self.failed:
            return f"{self.label}: the package has no check images to prove it on"
        if "output" in self.failed:
            return f"{self.label}: failed on the check images: {self.error}"
        figures = (
            f"min mask IoU {self.min_mask_iou:.4f} (>= {MIN_MASK_IOU}), "
            f"max score error {100 * (self.max_score_rel_error or 0.0):.3f} % "
            f"(<= {100 * MAX_SCORE_REL_ERROR:g} %), "
            f"{self.type_disagreements} type disagreements (0) over {len(self.images)} images"
        )
        verdict = "passed" if self.passed else "refused (" + ", ".join(self.failed) + ")"
        return f"{self.label}: {verdict}: {figures}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the verdict, the worst figures and each image's."""
        iou, err = self.min_mask_iou, self.max_score_rel_error
        return {
            "label": self.label,
            "passed": self.passed,
            "failed": list(self.failed),
            "error": self.error,
            "images": len(self.images),
            "min_mask_iou": None if iou is None else round(iou, 6),
            "max_score_rel_error": None if err is None else round(err, 6),
            "type_disagreements": self.type_disagreements,
            "per_image": [i.as_dict() for i in self.images],
        }


@dataclass(frozen=True, slots=True)
class Fallback:
    """One step down: ``source`` was refused for ``reason`` and ``target`` runs instead."""

    source: str
    target: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        """JSON-ready."""
        return {"from": self.source, "to": self.target, "reason": self.reason}


class ParityRefusedError(BackendError, RuntimeError):
    """Every precision of a GPU runtime failed the gate: nothing on that GPU may judge.

    ``reports`` are the gate's reports, ``fallbacks`` the steps taken before; the message
    is the last refusal's reason.
    """

    def __init__(
        self, runtime: str, reports: Sequence[ParityReport], fallbacks: Sequence[Fallback]
    ) -> None:
        self.runtime = runtime
        self.reports = tuple(reports)
        self.fallbacks = tuple(fallbacks)
        last = self.reports[-1].reason() if self.reports else f"{runtime}: no precision to try"
        super().__init__(f"{runtime} refused by the parity gate: {last}")


def mask_iou(a: npt.NDArray[np.bool_], b: npt.NDArray[np.bool_]) -> float:
    """Intersection over union of two masks; 1.0 when both are empty."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def compare(name: str, got: Detection, ref: Detection) -> ImageParity:
    """The figures of one image (masks at the pixel threshold: the map's 1.0)."""
    iou = mask_iou(got.anomaly_map >= 1.0, ref.anomaly_map >= 1.0)
    err = abs(got.score - ref.score) / max(abs(ref.score), SCORE_FLOOR)
    agree = got.head_type == ref.head_type and got.defect_type == ref.defect_type
    return ImageParity(name, iou, err, agree, got.score, ref.score, got.head_type, ref.head_type)


def _worse(a: ImageParity, b: ImageParity) -> ImageParity:
    """The figures of one image run twice: the worse of each."""
    worst = b if b.score_rel_error > a.score_rel_error else a
    return ImageParity(
        a.image,
        min(a.mask_iou, b.mask_iou),
        max(a.score_rel_error, b.score_rel_error),
        a.types_agree and b.types_agree,
        worst.score,
        worst.reference_score,
        a.head_type if not a.types_agree else b.head_type,
        a.reference_head_type,
    )


def run_gate(
    label: str,
    candidate: DetectCall,
    reference: DetectCall,
    images: Sequence[CheckImage],
) -> ParityReport:
    """Compare ``candidate`` with ``reference`` on ``images`` (see the module docstring).

    ``candidate`` and ``reference`` are ``Pipeline.detect`` calls of the same package.
    Never raises for the candidate's failures: an exception from it (``BackendError``,
    ``ValueError``, ``RuntimeError``) is the report's ``output`` failure.
    """
    if not images:
        report = ParityReport(label, (), ("no_images",))
        log.warning("parity_gate", label=label, passed=False, reason=report.reason())
        return report
    pixels = [img for _, img in images]
    refs = reference(pixels)
    try:
        single = [candidate([img])[0] for img in pixels]
        batched = candidate(pixels) if len(pixels) > 1 else single
    except (BackendError, ValueError, RuntimeError) as exc:
        report = ParityReport(label, (), ("output",), f"{type(exc).__name__}: {exc}")
        log.warning("parity_gate", label=label, passed=False, reason=report.reason())
        return report
    figures = tuple(
        _worse(compare(name, s, r), compare(name, b, r))
        for (name, _), s, b, r in zip(images, single, batched, refs, strict=True)
    )
    failed = []
    if any(f.mask_iou < MIN_MASK_IOU for f in figures):
        failed.append("mask_iou")
    if any(f.score_rel_error > MAX_SCORE_REL_ERROR for f in figures):
        failed.append("score")
    if any(not f.types_agree for f in figures):
        failed.append("type")
    report = ParityReport(label, figures, tuple(failed))
    (log.info if report.passed else log.warning)(
        "parity_gate",
        label=label,
        passed=report.passed,
        failed=list(report.failed),
        min_mask_iou=report.min_mask_iou,
        max_score_rel_error=report.max_score_rel_error,
        type_disagreements=report.type_disagreements,
        images=len(figures),
    )
    return report


def describe_state(
    *,
    runtime: str,
    requested: str,
    device: str,
    precision: str,
    fallbacks: Sequence[Fallback],
    parity: Sequence[ParityReport],
    **extra: Any,
) -> dict[str, Any]:
    """What a backend's ``describe()`` returns (JSON-ready): see ``docs/gpu.md``."""
    return {
        "runtime": runtime,
        "requested": requested,
        "device": device,
        "precision": precision,
        "fallbacks": [f.as_dict() for f in fallbacks],
        "parity": {r.label: r.as_dict() for r in parity},
        **extra,
    }
