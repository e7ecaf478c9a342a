"""Runtimes for a model package, each a ``models.backend.Backend``, imported lazily by name.

- ``onnxruntime``: ``models.runtime.onnxruntime.OnnxRuntimeBackend`` (CPU; onnxruntime)
- ``tensorrt``: ``models.runtime.tensorrt.TensorRTBackend`` (a GPU; tensorrt, cuda-python)
- ``torch``: ``models.runtime.torch.TorchBackend`` (the reference; torch)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from models.backend import Backend

RuntimeName = Literal["onnxruntime", "tensorrt", "torch"]
RUNTIMES: tuple[RuntimeName, ...] = ("onnxruntime", "tensorrt", "torch")


def open_runtime(
    name: RuntimeName,
    package: str | Path,
    threads: int = 1,
    max_batch: int = 8,
    explain: bool = True,
) -> Backend:
    """Load ``package`` on the runtime ``name`` (only that runtime's libraries are imported).

    ``threads`` is the CPU thread count (ONNX Runtime, torch); ``max_batch``
    the TensorRT engines' largest batch. Raises ``ValueError`` for an unknown
    name, ``models.package.PackageError`` for a bad package, and the runtime's
    own error (e.g. ``TensorRTError``) when it cannot start.
    """
    if name == "onnxruntime":
        from models.runtime.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(package, threads, explain=explain)
    if name == "torch":
        from models.runtime.torch import TorchBackend

        return TorchBackend(package, threads, explain=explain)
    if name == "tensorrt":
        from models.runtime.tensorrt import TensorRTBackend

        return TensorRTBackend(package, max_batch, explain=explain)
    raise ValueError(f"unknown runtime {name!r}; expected one of {RUNTIMES}")
