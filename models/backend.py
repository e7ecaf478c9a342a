"""The Backend contract every defect model implementation satisfies, and its error."""

from __future__ import annotations

from collections.abc import Sequence
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


class BackendError(Exception):
    """A model backend cannot be opened or its runtime failed; the message says why.

    Raised by ``models.runtime.open_runtime`` for a bad package
    (``models.package.PackageError``), a runtime whose libraries are missing
    (the ``ImportError`` is the cause) and a missing GPU or failed engine build
    (``models.runtime.tensorrt.TensorRTError``).
    """
