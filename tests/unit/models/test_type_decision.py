"""Which type the pipeline names: "unknown anomaly" needs the head's confidence
(``UNKNOWN_MIN_PROB``), otherwise the likeliest taught type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data.mvtec import load_gray, read_mvtec
from models.findings import UNKNOWN_TYPE
from models.package import ModelPackage
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.pipeline import F32, UNKNOWN_MIN_PROB


def _head_type(package: ModelPackage, image: np.ndarray, probs: dict[str, float]) -> str:
    """The type the pipeline names when the detect graph's type head says ``probs``
    (fault injection on the graph's type output; the rest is the real graph's)."""
    backend = OnnxRuntimeBackend(package, threads=1)
    types = package.manifest.types
    real = backend.pipeline._detect
    row = np.array([probs.get(t, 0.0) for t in types], dtype=np.float32)

    def detect(x: F32) -> tuple[F32, ...]:
        outs = [a.copy() for a in real(x)]
        outs[2][:] = row
        return tuple(outs)

    backend.pipeline._detect = detect  # type: ignore[assignment]
    (d,) = backend.detect([image])
    return d.head_type


@pytest.mark.parametrize(
    ("unknown", "expected"),
    [
        (0.55, "crack"),  # the likeliest, but not sure: the likeliest taught type
        (UNKNOWN_MIN_PROB, "crack"),
        (UNKNOWN_MIN_PROB + 0.05, UNKNOWN_TYPE),  # sure enough
        (0.99, UNKNOWN_TYPE),
    ],
)
def test_unknown_anomaly_is_named_only_when_the_head_is_sure(
    tiny_package: ModelPackage, tiny_dataset: Path, unknown: float, expected: str
) -> None:
    """With "unknown anomaly" the head's likeliest class at ``unknown`` and crack second
    (spot third), the pipeline names "unknown anomaly" only above ``UNKNOWN_MIN_PROB``,
    else crack; a taught type that is the likeliest is always named."""
    image = load_gray(read_mvtec(tiny_dataset).select("test")[0].path)
    rest = 1.0 - unknown
    probs = {UNKNOWN_TYPE: unknown, "crack": 0.7 * rest, "spot": 0.3 * rest}
    assert _head_type(tiny_package, image, probs) == expected
    assert _head_type(tiny_package, image, {UNKNOWN_TYPE: 0.3, "spot": 0.7}) == "spot"
