"""Runtimes for a model package, each a ``models.backend.Backend``, and the factory that opens them.

- ``onnxruntime``: ``models.runtime.onnxruntime.OnnxRuntimeBackend`` (CPU; onnxruntime)
- ``cuda``: ``models.runtime.cuda.CudaBackend`` (a GPU: torch with CUDA, CUDA graphs; the
  decoder on the CPU)
- ``tensorrt``: ``models.runtime.tensorrt.TensorRTBackend`` (a GPU; tensorrt, cuda-python)
- ``torch``: ``models.runtime.torch.TorchBackend`` (the reference; torch)

``open_runtime`` is the one factory: it imports only the chosen runtime's
module, so torch or TensorRT load only when asked for, and its failures are
``models.backend.BackendError``. The node, ``lineside eval|explain`` and the
model benchmark open packages with it.

The GPU runtimes admit a precision only through the parity gate
(``models.runtime.parity``); when every precision is refused they raise
``ParityRefusedError``, and with ``fallback=True`` the factory opens ONNX
Runtime on the CPU instead, its ``describe()`` listing the steps taken.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from models.backend import Backend, BackendError
from models.runtime.parity import ParityRefusedError

if TYPE_CHECKING:
    from models.package import ModelPackage

log = structlog.get_logger(__name__)

RuntimeName = Literal["onnxruntime", "cuda", "tensorrt", "torch"]
RUNTIMES: tuple[RuntimeName, ...] = ("onnxruntime", "cuda", "tensorrt", "torch")


def open_runtime(
    name: RuntimeName,
    package: ModelPackage | str | Path,
    threads: int = 1,
    max_batch: int = 8,
    *,
    engine_cache: str | Path | None = None,
    explain: bool = True,
    mm_per_px: float | None = None,
    min_region_area_mm2: float | None = None,
    fallback: bool = False,
    device: str = "cuda",
) -> Backend:
    """Open ``package`` (a verified ``ModelPackage`` or a package folder) on the runtime ``name``.

    ``threads`` is the CPU thread count (ONNX Runtime, torch); ``max_batch``
    the TensorRT engines' largest batch (cuda: the CUDA graphs captured at load
    cover batches up to it) and ``engine_cache`` the folder of their
    plans (default: ``<package>/.engines``); ``explain=False`` skips the
    explanation decoder; ``mm_per_px`` (mm per pixel) and
    ``min_region_area_mm2`` (mm²) default to the package's. ``fallback``: when a
    GPU runtime's parity gate refuses every precision, open ONNX Runtime on the
    CPU (``threads`` threads) instead of raising; logged as ``runtime_fallback``
    and kept in the returned backend's ``describe()``. ``device`` is the cuda
    runtime's torch device (``"cuda"``, ``"cuda:1"``; ``"cpu"`` runs its code
    eagerly on the CPU, for tests and the benchmark's smoke run).

    Raises ``BackendError`` when the backend cannot be opened: a
    ``PackageError`` for a bad package, a ``TensorRTError`` when TensorRT,
    CUDA or a GPU is missing or an engine build fails, a ``CudaError`` when
    torch has no CUDA or sees no GPU, a ``ParityRefusedError`` when the GPU
    runtime's every precision fails the parity gate (without ``fallback``), and a plain
    ``BackendError`` (caused by the ``ImportError``, ``OSError`` or
    ``RuntimeError``) when the runtime's libraries are missing or its files
    cannot be written. Raises ``ValueError`` for an unknown ``name`` or an
    argument out of range (``threads`` or ``max_batch`` below 1, ``mm_per_px``
    not above 0).
    """
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; expected one of {RUNTIMES}")
    opts: dict[str, Any] = {
        "explain": explain,
        "mm_per_px": mm_per_px,
        "min_region_area_mm2": min_region_area_mm2,
    }
    try:
        return _open(name, package, threads, max_batch, engine_cache, device, **opts)
    except ParityRefusedError as exc:
        if not fallback:
            raise
        from models.runtime.onnxruntime import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(package, threads, **opts)
        backend.requested = name
        backend.fallbacks = exc.fallbacks
        backend.parity = exc.reports
        log.warning("runtime_fallback", requested=name, to="onnxruntime", reason=str(exc))
        return backend


def _open(
    name: RuntimeName,
    package: ModelPackage | str | Path,
    threads: int,
    max_batch: int,
    engine_cache: str | Path | None,
    device: str,
    *,
    explain: bool,
    mm_per_px: float | None,
    min_region_area_mm2: float | None,
) -> Backend:
    """``open_runtime`` without the fallback."""
    try:
        if name == "onnxruntime":
            from models.runtime.onnxruntime import OnnxRuntimeBackend

            return OnnxRuntimeBackend(
                package,
                threads,
                explain=explain,
                mm_per_px=mm_per_px,
                min_region_area_mm2=min_region_area_mm2,
            )
        if name == "torch":
            from models.runtime.torch import TorchBackend

            return TorchBackend(
                package,
                threads,
                explain=explain,
                mm_per_px=mm_per_px,
                min_region_area_mm2=min_region_area_mm2,
            )
        if name == "cuda":
            from models.runtime.cuda import CudaBackend

            return CudaBackend(
                package,
                threads,
                device=device,
                capture_up_to=max_batch,
                explain=explain,
                mm_per_px=mm_per_px,
                min_region_area_mm2=min_region_area_mm2,
            )
        from models.runtime.tensorrt import TensorRTBackend

        return TensorRTBackend(
            package,
            max_batch,
            cache_dir=engine_cache,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
        )
    except BackendError:
        raise
    except (ImportError, OSError, RuntimeError) as exc:
        # One error type for callers; the cause keeps the runtime's own exception.
        raise BackendError(str(exc)) from exc
