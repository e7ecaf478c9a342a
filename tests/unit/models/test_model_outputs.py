"""A model's numbers are checked before anything judges them: NaN, infinity or a value
outside the package format's range raises ``ModelOutputError`` instead of findings."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.backend import BackendError
from models.classical import TemplateBackend, TemplateModel
from models.data.mvtec import load_gray, read_mvtec
from models.outputs import ModelOutputError
from models.package import ModelPackage, load_package, write_manifest
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.pipeline import F32
from models.synth import render_part, render_scene, sample_part_spec


@pytest.fixture(scope="module")
def images(tiny_dataset: Path) -> list[np.ndarray]:
    """Three test crops of the tiny data set."""
    return [load_gray(s.path) for s in read_mvtec(tiny_dataset).select("test")[:3]]


def _poisoned(
    backend: OnnxRuntimeBackend, output: int, index: tuple[int, ...], value: float
) -> None:
    """Fault injection: the detect graph's ``output`` gets ``value`` at ``index``."""
    real = backend.pipeline._detect

    def detect(x: F32) -> tuple[F32, ...]:
        outs = [a.copy() for a in real(x)]
        outs[output][index] = value
        return tuple(outs)

    backend.pipeline._detect = detect  # type: ignore[assignment]


@pytest.mark.parametrize(
    ("output", "index", "value", "message"),
    [
        (1, (0,), float("nan"), r"score: 1 of 3 values not finite"),
        (1, (2,), 1.5, r"score: range .*1\.5 outside 0\.\.1"),
        (0, (1, 5, 7), float("inf"), r"anomaly_map: 1 of \d+ values not finite"),
        (0, (0, 0, 0), -0.25, r"anomaly_map: range -0\.25"),
        (2, (0, 1), float("nan"), r"type_probs: 1 of \d+ values not finite"),
        (3, (1, 0, 0), float("-inf"), r"memory: 1 of \d+ values not finite"),
        (4, (0,), -3.0, r"length_px: range -3"),
    ],
)
def test_bad_detect_outputs_are_refused_not_judged(
    tiny_package: ModelPackage,
    images: list[np.ndarray],
    output: int,
    index: tuple[int, ...],
    value: float,
    message: str,
) -> None:
    """One NaN, infinity or out-of-range value in any detect output refuses the whole batch
    with a ModelOutputError (a BackendError) naming the output."""
    backend = OnnxRuntimeBackend(tiny_package, threads=1)
    backend.infer(images)  # the real graph's outputs pass the check
    _poisoned(backend, output, index, value)
    with pytest.raises(ModelOutputError, match=message) as info:
        backend.infer(images)
    assert isinstance(info.value, BackendError)
    assert "detect graph output" in str(info.value)


def test_nan_decoder_logits_are_refused(
    tiny_package: ModelPackage, images: list[np.ndarray]
) -> None:
    """Non-finite logits from the explanation decoder are refused, not decoded into words."""
    backend = OnnxRuntimeBackend(tiny_package, threads=1)
    real = backend.pipeline._step

    def step(memory: F32, tokens: np.ndarray, facts: np.ndarray) -> F32:
        logits = real(memory, tokens, facts).copy()
        logits[0, 0, 0] = np.nan
        return logits

    backend.pipeline._step = step  # type: ignore[assignment]
    memory = np.zeros((1, tiny_package.net.memory_len, tiny_package.net.d_model), np.float32)
    with pytest.raises(ModelOutputError, match="explain graph output: logits: 1 of"):
        backend.pipeline.decode(memory, np.zeros((1, 3), np.int32))


def test_a_package_whose_normalization_overflows_is_refused_at_inference(
    tiny_package: ModelPackage, images: list[np.ndarray], tmp_path: Path
) -> None:
    """A well-formed package with ``normalization.std = 1e-40`` (NaN scores on main) loads,
    but every inference raises ModelOutputError naming the normalization."""
    root = tmp_path / "tiny"
    shutil.copytree(tiny_package.root, root)
    fields = load_package(root).manifest.model_dump(mode="json")
    fields["input"]["normalization"]["std"] = 1e-40
    write_manifest(root, fields)
    backend = OnnxRuntimeBackend(load_package(root), threads=1)
    with pytest.raises(ModelOutputError, match=r"input\.normalization .*std 1e-40"):
        backend.infer(images)


def test_classical_backend_refuses_a_template_that_yields_nan() -> None:
    """A golden template with a NaN in its spread gives NaN deviations: the classical backend
    raises ModelOutputError instead of returning a NaN score."""
    rng = np.random.default_rng(3)
    size = 240

    def crop() -> np.ndarray:
        spec = sample_part_spec(rng, "moulded_plastic", 0.0)
        centre = ((size - 1) / 2, (size - 1) / 2)
        return render_scene(render_part(spec, 0.125), (size, size), centre)[0]

    model = TemplateModel.fit([crop() for _ in range(10)], shift_px=2)
    good = crop()
    backend = TemplateBackend(model, 0.125, 6.0, 0.3)
    assert np.isfinite(backend.infer([good])[0].anomaly_score)
    spread = model.spread.copy()
    spread[size // 2, size // 2] = np.nan
    broken = TemplateBackend(dataclasses.replace(model, spread=spread), 0.125, 6.0, 0.3)
    with pytest.raises(ModelOutputError, match="image 0: anomaly"):
        broken.infer([good])
