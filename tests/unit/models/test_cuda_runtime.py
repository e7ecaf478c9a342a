"""The cuda runtime: selected like the others, a one-line error without a GPU, staged on the CPU."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from hil.line import sim_config
from models.package import check_images, load_package
from models.runtime import open_runtime
from models.runtime.cuda import CudaBackend, CudaError, graph_batch
from models.runtime.onnxruntime import OnnxRuntimeBackend
from node.config import DEFAULT_CONFIG, MODEL_BACKENDS, load_config
from node.errors import ModelError
from node.wiring import load_backend

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present here")


@NO_GPU
def test_cuda_without_a_gpu_is_a_one_line_backend_error() -> None:
    """Where torch sees no GPU, opening the cuda runtime says so in one line."""
    with pytest.raises(CudaError, match=r"needs an NVIDIA GPU .* sees no GPU\)$"):
        open_runtime("cuda", DEMO)


@NO_GPU
def test_the_node_names_the_key_when_the_cuda_backend_cannot_start() -> None:
    """``inspection.backend = "cuda"`` is a valid config; without a GPU loading it is a
    ModelError naming the key (no fallback: a GPU the config asks for is missing)."""
    assert "cuda" in MODEL_BACKENDS
    cfg = sim_config(
        load_config(DEFAULT_CONFIG), inspection={"backend": "cuda", "model": {"package": DEMO}}
    )
    want = "inspection.backend = 'cuda': the cuda backend needs an NVIDIA GPU"
    with pytest.raises(ModelError, match=re.escape(want)):
        load_backend(cfg)


def test_the_cuda_runtime_stages_the_sentence_after_the_verdict() -> None:
    """detect_first gives the findings at once with the defective part pending; explain_later
    adds the decoder's sentence (ONNX Runtime on the CPU), the same as ONNX Runtime's own."""
    images = [img for _, img in check_images(load_package(DEMO))][2:4]  # good, scratch
    backend = CudaBackend(DEMO, device="cpu", precisions=("fp32",))
    staged = backend.detect_first(images)
    assert staged.pending == (1,)
    [later] = backend.explain_later(staged)
    cpu = OnnxRuntimeBackend(DEMO)
    [ref] = cpu.explain_later(cpu.detect_first(images))
    assert later.explanation.text == ref.explanation.text != ""
    assert backend.describe()["decoder"] == "onnxruntime cpu"


def test_batches_run_in_power_of_two_graphs() -> None:
    """A batch runs in the captured graph of the next power of two: at most seven graphs
    cover the node's largest batch (64)."""
    assert [graph_batch(n) for n in (1, 2, 3, 4, 5, 8, 9, 33, 64)] == [1, 2, 4, 4, 8, 8, 16, 64, 64]
    assert len({graph_batch(n) for n in range(1, 65)}) == 7
