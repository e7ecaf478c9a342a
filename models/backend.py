"""The Backend contract every defect model implementation satisfies, and its error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from models.findings import Findings

Image = npt.NDArray[np.uint8]
"""A grayscale ``(H, W)`` or colour ``(H, W, 3)`` uint8 image of one part."""


@runtime_checkable
class Backend(Protocol):
    """A defect model: images of parts in, findings out.

    ``infer`` is blocking and CPU/GPU bound; the node calls it on its inference
    worker thread, never on the event loop. It raises ``ValueError`` for an
    image whose shape or dtype the backend cannot take.
    """

    name: str

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        """Inspect a batch of part images and return one ``Findings`` each."""
        ...


@dataclass(frozen=True, slots=True)
class Staged:
    """A batch after a backend's in-cycle stage: findings to judge now, sentences to come.

    ``findings`` (one per image) carry the facts rendered plainly as their explanation;
    ``pending`` are the indexes of the images whose sentence the model still writes
    (``StagedBackend.explain_later``); ``detections`` is the backend's own state for it.
    """

    findings: list[Findings]
    pending: tuple[int, ...]
    detections: Sequence[object]


@runtime_checkable
class StagedBackend(Backend, Protocol):
    """A backend whose verdict need not wait for its prose (the design's rule 3).

    ``detect_first`` runs the detect graph and returns findings a judge can decide on;
    ``explain_later`` writes the sentences of ``staged.pending`` afterwards and returns
    their findings (the same detection, the model's guarded sentence), in that order.
    Both are blocking; the node runs them on its inference worker, detection first.
    """

    def detect_first(self, images: Sequence[Image]) -> Staged:
        """The in-cycle stage of ``infer`` for a batch."""
        ...

    def explain_later(self, staged: Staged) -> list[Findings]:
        """The sentences of ``staged.pending``, as findings."""
        ...


class BackendError(Exception):
    """A model backend cannot be opened or its runtime failed; the message says why.

    Raised by ``models.runtime.open_runtime`` for a bad package
    (``models.package.PackageError``), a runtime whose libraries are missing
    (the ``ImportError`` is the cause) and a missing GPU or failed engine build
    (``models.runtime.tensorrt.TensorRTError``).
    """
