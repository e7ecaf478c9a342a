"""The TensorRT backend: engines built from the package's ONNX graphs, run on a CUDA stream.

``tensorrt`` and the CUDA runtime bindings (``cuda-python``) are imported
only here, when this backend is chosen. Engines are built once per package,
GPU and TensorRT version and cached as plan files under ``cache_dir``
(default: ``<package>/.engines``), named by the graph's sha256, the GPU name
and the TensorRT version, so a new driver stack or card rebuilds them and a
cached plan is never loaded into the wrong runtime. A plan is deserialised by
TensorRT itself (no pickling).

Precision: fp16 engines first, admitted only by the parity gate
(``models.runtime.parity``: the package's check images through the detect
engine and through ONNX Runtime fp32 on the CPU); refused, fp32 engines
(their own plan files); refused too, ``ParityRefusedError``, and
``open_runtime(..., fallback=True)`` opens ONNX Runtime on the CPU. A package
without check images gets fp32 engines, unchecked. Each step is logged and
kept for ``describe()``.

Each call copies the batch to the GPU, enqueues the engine with
``execute_async_v3`` on the backend's own stream, copies the outputs back and
synchronises the stream; buffers are sized for ``max_batch`` and reused.
Blocking: call it from the inference worker thread.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from models.backend import BackendError, Image, Staged
from models.explain_text import Language
from models.findings import Explanation, Findings
from models.package import ModelPackage, PackageError, check_images, load_package
from models.runtime.parity import (
    Fallback,
    ParityRefusedError,
    ParityReport,
    describe_state,
    run_gate,
)
from models.runtime.pipeline import F32, Detection, Pipeline

log = structlog.get_logger(__name__)

WORKSPACE_BYTES = 1 << 30


class TensorRTError(BackendError, RuntimeError):
    """TensorRT or CUDA failed (no GPU, engine build failure, CUDA error)."""


def _cudart() -> Any:
    """The CUDA runtime bindings of cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart``
    before cuda-python 12.6). Raises ``TensorRTError`` when neither is installed."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise TensorRTError("the TensorRT backend needs cuda-python (pip install cuda-python)")


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` result, raising ``TensorRTError`` on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise TensorRTError(f"CUDA {what} failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def engine_cache_key(
    onnx_sha256: str, gpu_name: str, trt_version: str, max_batch: int, precision: str = "fp16"
) -> str:
    """The plan file name for a graph on a GPU with a TensorRT version, in ``precision``."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-").lower()
    return f"{onnx_sha256[:16]}-{gpu}-trt{trt_version}-b{max_batch}-{precision}.plan"


@dataclass
class _Buffer:
    name: str
    is_input: bool
    dtype: np.dtype[Any]
    shape: tuple[int, ...]  # at max_batch
    device: int
    nbytes: int


class _Engine:
    """One deserialised engine with its context and device buffers for ``max_batch``."""

    def __init__(self, trt: Any, cudart: Any, plan: bytes, max_batch: int, name: str) -> None:
        self.trt, self.cudart, self.name = trt, cudart, name
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise TensorRTError(f"{name}: TensorRT could not deserialise the cached plan")
        self.context = self.engine.create_execution_context()
        self.buffers: dict[str, _Buffer] = {}
        for i in range(self.engine.num_io_tensors):
            tname = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(tname) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(tname)))
            dims = list(self.engine.get_tensor_shape(tname))
            shape = tuple(max_batch if d < 0 else int(d) for d in dims)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ptr = _check(cudart.cudaMalloc(nbytes), f"cudaMalloc {tname}")
            self.buffers[tname] = _Buffer(tname, is_input, dtype, shape, int(ptr), nbytes)
            self.context.set_tensor_address(tname, int(ptr))

    def run(self, stream: Any, inputs: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        """Copy ``inputs`` in, enqueue, copy every output out, synchronise; arrays by name."""
        cudart = self.cudart
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        batch = 0
        keep: list[npt.NDArray[Any]] = []
        for tname, array in inputs.items():
            buf = self.buffers[tname]
            host = np.ascontiguousarray(array, dtype=buf.dtype)
            if host.shape[1:] != buf.shape[1:] or host.shape[0] > buf.shape[0]:
                raise ValueError(f"{self.name}.{tname}: shape {host.shape} exceeds {buf.shape}")
            batch = host.shape[0]
            keep.append(host)
            if not self.context.set_input_shape(tname, host.shape):
                raise TensorRTError(f"{self.name}.{tname}: TensorRT refused shape {host.shape}")
            _check(
                cudart.cudaMemcpyAsync(buf.device, host.ctypes.data, host.nbytes, h2d, stream),
                "copy in",
            )
        if not self.context.execute_async_v3(int(stream)):
            raise TensorRTError(f"{self.name}: execute_async_v3 failed")
        out: dict[str, npt.NDArray[Any]] = {}
        for buf in self.buffers.values():
            if buf.is_input:
                continue
            host = np.empty((batch, *buf.shape[1:]), dtype=buf.dtype)
            _check(
                cudart.cudaMemcpyAsync(host.ctypes.data, buf.device, host.nbytes, d2h, stream),
                "copy out",
            )
            out[buf.name] = host
        _check(cudart.cudaStreamSynchronize(stream), "stream synchronise")
        del keep
        return out

    def close(self) -> None:
        """Free the device buffers."""
        for buf in self.buffers.values():
            self.cudart.cudaFree(buf.device)
        self.buffers.clear()


def build_plan(
    trt: Any,
    onnx_path: Path,
    shapes: dict[str, tuple[tuple[int, ...], ...]],
    fp16: bool = True,
) -> bytes:
    """Build an engine from ``onnx_path`` (fp16 kernels allowed when ``fp16``, else fp32 only);
    ``shapes`` maps each input to (min, opt, max).

    Raises ``TensorRTError`` when the graph does not parse or the build fails.
    """
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"{onnx_path}: TensorRT cannot parse it: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        # TensorRT 10's weakly typed fp16 mode; TensorRT 11 removed the flag (pin tensorrt<11).
        flag = getattr(trt.BuilderFlag, "FP16", None)
        if flag is None:
            raise TensorRTError(
                f"TensorRT {trt.__version__} has no FP16 builder flag; use TensorRT 10"
            )
        config.set_flag(flag)
    else:
        # fp32 means fp32: no TF32 rounding of convolutions and matrix products.
        tf32 = getattr(trt.BuilderFlag, "TF32", None)
        if tf32 is not None:
            config.clear_flag(tf32)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise TensorRTError(f"{onnx_path}: TensorRT engine build failed (see its log)")
    return bytes(plan)


class TensorRTBackend:
    """A ``Backend`` running the package's graphs as TensorRT engines on one GPU, fp16 or fp32
    as the parity gate admits (see the module docstring).

    ``max_batch`` bounds the batch (the node's ``inspection.batch_size``);
    ``device`` is the CUDA device index; ``cache_dir`` holds the engine plans.
    Other arguments as ``OnnxRuntimeBackend``. Raises ``TensorRTError`` when
    TensorRT, CUDA or a GPU is missing or a build fails, ``ParityRefusedError``
    when the gate refuses fp16 and fp32, ``PackageError`` for a bad package.
    """

    def __init__(
        self,
        package: ModelPackage | str | Path,
        max_batch: int = 8,
        *,
        device: int = 0,
        cache_dir: str | Path | None = None,
        explain: bool = True,
        mm_per_px: float | None = None,
        min_region_area_mm2: float | None = None,
        language: Language = "en",
        name: str = "tensorrt",
    ) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise TensorRTError(
                "the TensorRT backend needs the tensorrt package (extra 'gpu')"
            ) from exc
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        pkg = package if isinstance(package, ModelPackage) else load_package(package)
        self.name = name
        self.package = pkg
        cudart = _cudart()
        _check(cudart.cudaSetDevice(device), "set device")
        props = _check(cudart.cudaGetDeviceProperties(device), "device properties")
        raw_name = props.name
        gpu = (
            raw_name.decode(errors="replace").rstrip("\x00")
            if isinstance(raw_name, bytes)
            else str(raw_name)
        )
        self.gpu_name = gpu
        self._cudart = cudart
        self._stream = _check(cudart.cudaStreamCreate(), "stream create")
        # The sentences are written on another thread than the detection (the verdict does
        # not wait for them): a stream of their own, and their thread's device set there.
        self._explain_stream = _check(cudart.cudaStreamCreate(), "stream create")
        self._device_index = device
        self._on_device = threading.local()
        cache = Path(cache_dir) if cache_dir is not None else pkg.root / ".engines"
        cache.mkdir(parents=True, exist_ok=True)
        self._trt, self._cache = trt, cache
        self.max_batch = max_batch
        self.requested = name
        self.device = f"cuda:{device} ({gpu})"
        self._engines: tuple[_Engine, _Engine] | None = None
        self.pipeline = Pipeline(
            pkg,
            self._detect,
            self._step,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
            language=language,
        )
        # The gate's reference: ONNX Runtime fp32 on the CPU (detect only).
        from models.runtime.onnxruntime import OnnxRuntimeBackend

        reference = OnnxRuntimeBackend(pkg, 1, explain=False)
        images = check_images(pkg)
        reports: list[ParityReport] = []
        fallbacks: list[Fallback] = []
        precisions = ("fp16", "fp32")
        for i, precision in enumerate(precisions):
            if images or precision == "fp32":  # fp16 with nothing to prove it on: not built
                self._close_engines()
                self._engines = self._load_engines(precision)
            label = f"{name} {precision}"
            report = run_gate(label, self.detect, reference.detect, images)
            reports.append(report)
            unchecked = report.failed == ("no_images",) and precision == "fp32"
            if report.passed or unchecked:
                self.precision, self._checked = precision, report.passed
                break
            last = i + 1 == len(precisions)
            target = "onnxruntime cpu" if last else f"{name} {precisions[i + 1]}"
            fallbacks.append(Fallback(label, target, report.reason()))
            log.warning(
                "precision_refused",
                backend=name,
                precision=precision,
                to=target,
                reason=report.reason(),
            )
        else:
            self.close()
            raise ParityRefusedError(name, reports, fallbacks)
        self.fallbacks, self.parity = tuple(fallbacks), tuple(reports)
        log.info(
            "backend_loaded",
            backend=name,
            package=str(pkg.root),
            gpu=gpu,
            precision=self.precision,
            parity_checked=self._checked,
        )

    def _load_engines(self, precision: str) -> tuple[_Engine, _Engine]:
        """The detect and explain engines in ``precision``: from the cache, else built."""
        trt, pkg, max_batch = self._trt, self.package, self.max_batch
        net = pkg.net
        s = net.input_size_px
        detect_shapes: dict[str, tuple[tuple[int, ...], ...]] = {
            "image": ((1, 1, s, s), (1, 1, s, s), (max_batch, 1, s, s))
        }
        explain_shapes: dict[str, tuple[tuple[int, ...], ...]] = {
            "memory": ((1, net.memory_len, net.d_model),) * 2
            + ((max_batch, net.memory_len, net.d_model),),
            "tokens": ((1, net.max_len),) * 2 + ((max_batch, net.max_len),),
            "facts": ((1, 3),) * 2 + ((max_batch, 3),),
        }
        engines = []
        for graph, shapes in (("detect", detect_shapes), ("explain", explain_shapes)):
            onnx_path = pkg.root / pkg.manifest.graphs[graph]  # type: ignore[index]
            digest = pkg.manifest.files.get(pkg.manifest.graphs[graph])  # type: ignore[index]
            if digest is None:
                raise PackageError(f"{onnx_path}: not listed in the manifest")
            key = engine_cache_key(digest, self.gpu_name, trt.__version__, max_batch, precision)
            plan_path = self._cache / key
            if plan_path.is_file():
                plan = plan_path.read_bytes()
            else:
                log.info(
                    "tensorrt_engine_building",
                    graph=graph,
                    gpu=self.gpu_name,
                    trt=trt.__version__,
                    precision=precision,
                )
                plan = build_plan(trt, onnx_path, shapes, fp16=precision == "fp16")
                tmp = plan_path.with_suffix(".tmp")
                tmp.write_bytes(plan)
                tmp.replace(plan_path)
            engines.append(_Engine(trt, self._cudart, plan, max_batch, graph))
        return engines[0], engines[1]

    def _close_engines(self) -> None:
        """Free the engines' device buffers (before others are loaded)."""
        if self._engines is not None:
            for engine in self._engines:
                engine.close()
            self._engines = None

    def describe(self) -> dict[str, Any]:
        """What runs and why (``models.runtime.parity.describe_state``)."""
        return describe_state(
            runtime=self.name,
            requested=self.requested,
            device=self.device,
            precision=self.precision,
            fallbacks=self.fallbacks,
            parity=self.parity,
            parity_checked=self._checked,
            max_batch=self.max_batch,
            decoder=f"tensorrt {self.precision}",
        )

    def _detect(self, x: F32) -> tuple[F32, F32, F32, F32, F32]:
        assert self._engines is not None, "engines closed"
        out = self._engines[0].run(self._stream, {"image": x})
        return (
            out["anomaly_map"],
            out["score"],
            out["type_probs"],
            out["memory"],
            out["length_px"],
        )

    def _step(
        self, memory: F32, tokens: npt.NDArray[np.int32], facts: npt.NDArray[np.int32]
    ) -> F32:
        feeds = {"memory": memory, "tokens": tokens, "facts": facts}
        assert self._engines is not None, "engines closed"
        if not getattr(self._on_device, "set", False):  # the CUDA device is per thread
            _check(self._cudart.cudaSetDevice(self._device_index), "set device")
            self._on_device.set = True
        out = self._engines[1].run(self._explain_stream, feeds)
        logits: F32 = out["logits"].astype(np.float32, copy=False)
        return logits

    def detect(self, images: Sequence[Image]) -> list[Detection]:
        """The in-cycle part (see ``Pipeline.detect``); batches above ``max_batch`` are split."""
        out: list[Detection] = []
        for i in range(0, len(images), self.max_batch):
            out += self.pipeline.detect(images[i : i + self.max_batch])
        return out

    def explain(self, detections: Sequence[Detection]) -> list[Explanation]:
        """Explanations for detections (see ``Pipeline.explain``)."""
        out: list[Explanation] = []
        for i in range(0, len(detections), self.max_batch):
            out += self.pipeline.explain(detections[i : i + self.max_batch])
        return out

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        """As ``OnnxRuntimeBackend.infer``."""
        dets = self.detect(images)
        return [
            self.pipeline.findings(d, e, self.name)
            for d, e in zip(dets, self.explain(dets), strict=True)
        ]

    def detect_first(self, images: Sequence[Image]) -> Staged:
        """``infer``'s in-cycle stage (``models.backend.StagedBackend``)."""
        return self.pipeline.first(self.detect(images), self.name)

    def explain_later(self, staged: Staged) -> list[Findings]:
        """The pending sentences of ``staged``, ``max_batch`` at a time."""
        out: list[Findings] = []
        for i in range(0, len(staged.pending), self.max_batch):
            part = Staged(
                staged.findings, staged.pending[i : i + self.max_batch], staged.detections
            )
            out += self.pipeline.later(part, self.name)
        return out

    def close(self) -> None:
        """Free GPU buffers and the stream."""
        self._close_engines()
        self._cudart.cudaStreamDestroy(self._stream)
        self._cudart.cudaStreamDestroy(self._explain_stream)
