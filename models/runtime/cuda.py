"""The CUDA runtime: the detect graph in torch on a GPU as CUDA graphs; the decoder on the CPU.

Detect: the network is rebuilt from the manifest and ``weights.pt`` as the
torch reference does (``models.runtime.torch.load_net``: ``weights_only``, no
pickled code) and wrapped as the exported detect graph (``DetectGraph``,
folded like the ONNX graph). Batches run in sizes rounded up to a power of
two (1, 2, 4, 8, ...; the padding rows are computed and dropped), so at most
seven graphs exist for the node's largest batch of 64. For each such size
the node actually uses, the first call captures the graph (a few warm-up runs
on a side stream, then ``torch.cuda.graph``) with its own static device input
and outputs and pinned host buffers; every later call of that size is one
host-to-device copy, one replay, the copies back and one stream synchronise.
``capture_up_to`` (``open_runtime`` passes ``max_batch``) captures the sizes up
to it at load, so no capture (tens of milliseconds) lands in a part's cycle. A kernel launch costs
about as much as this small network's kernels, so replaying the whole graph
as one launch is what makes it fast (an H200 measured eager fp32 p50 1.8 ms,
replay p50 0.42 ms at batch 1, copies included; ``torch.compile`` 0.83 ms).

Precision: fp16 first, then fp32, each admitted only by the parity gate
(``models.runtime.parity``: the package's check images against ONNX Runtime
fp32 on the CPU). fp32 runs with TF32 off (``torch.backends``, process-wide),
so it computes what the CPU computes up to summation order. When both are
refused the backend raises ``ParityRefusedError`` and
``open_runtime(..., fallback=True)`` opens ONNX Runtime on the CPU. A package
without check images cannot prove fp16: it runs in fp32, unchecked, and
``describe()`` says so.

Decoder: the greedy explanation loop stays on the CPU, on the package's
``explain.onnx`` in ONNX Runtime. Its steps are tiny (batch of a few, 16
tokens), so on a GPU each step is kernel launches and a device-to-host copy
for the argmax: measured on an H200, 15 steps took p50 13.3 ms on the GPU,
slower than ONNX Runtime on one CPU core. Capturing the whole loop as one
CUDA graph would need the argmax and the end-of-sentence test on the device
and a fixed step count; not done, since the sentence is off the verdict's
path anyway (``explain_later``) and nothing measured says it would beat the CPU.

``device="cpu"`` runs the same code eagerly (no CUDA graphs, no pinned
memory): fp16 convolutions run on the CPU in torch 2.x, so tests exercise the
gate, both precisions and the fallbacks without a GPU. torch itself is imported
only when this runtime is opened (``open_runtime``); a torch without CUDA or a
machine without a GPU gives ``CudaError``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
import torch

from models.backend import BackendError
from models.explain_text import Language
from models.export import DetectGraph
from models.package import ModelPackage, check_images
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.parity import (
    Fallback,
    ParityRefusedError,
    ParityReport,
    describe_state,
    run_gate,
)
from models.runtime.pipeline import F32, Pipeline, PipelineBackend
from models.runtime.torch import load_net

log = structlog.get_logger(__name__)

Precision = Literal["fp16", "fp32"]
PRECISIONS: tuple[Precision, ...] = ("fp16", "fp32")
"""Tried in this order; the first the parity gate admits runs."""
_DTYPES: dict[Precision, torch.dtype] = {"fp16": torch.float16, "fp32": torch.float32}
WARMUP_RUNS = 3
"""Eager runs on a side stream before a capture: cuDNN picks its kernels and every lazy
initialisation happens outside the captured graph."""


def graph_batch(n: int) -> int:
    """The captured batch size that runs a batch of ``n``: the next power of two."""
    return 1 << (n - 1).bit_length()


class CudaError(BackendError, RuntimeError):
    """No usable GPU: torch without CUDA, no device, or a CUDA failure."""


def _device(device: str) -> torch.device:
    """``device`` checked: ``"cpu"`` or a CUDA device torch can see. Raises ``CudaError``."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise CudaError(f"the cuda backend: device {device!r} is not a torch device") from exc
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise CudaError(f"the cuda backend runs on 'cuda' or 'cpu', not {device!r}")
    if not torch.cuda.is_available():
        raise CudaError(
            f"the cuda backend needs an NVIDIA GPU and a CUDA build of torch "
            f"(torch {torch.__version__} sees no GPU)"
        )
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise CudaError(f"the cuda backend: no GPU {index} ({torch.cuda.device_count()} found)")
    return torch.device("cuda", index)


@dataclass
class _Captured:
    """One batch size's CUDA graph and its buffers (device: static; host: pinned)."""

    graph: Any  # torch.cuda.CUDAGraph
    device_in: torch.Tensor
    device_out: tuple[torch.Tensor, ...]
    host_in: torch.Tensor
    host_out: tuple[torch.Tensor, ...]


class CudaBackend(PipelineBackend):
    """A ``Backend`` running the detect graph in torch on ``device`` (see the module docstring).

    ``threads`` is the CPU thread count of the decoder (ONNX Runtime) and, on
    ``device="cpu"``, of torch; ``precisions`` are tried in order (default fp16
    then fp32); ``cuda_graphs=False`` runs eagerly on the GPU too;
    ``capture_up_to`` captures the graphs for batches up to it at load. Other
    arguments as ``OnnxRuntimeBackend``. Raises ``CudaError`` without a usable
    GPU, ``ParityRefusedError`` when every precision fails the parity gate,
    ``PackageError`` for a bad package or weights.
    """

    def __init__(
        self,
        package: ModelPackage | str | Path,
        threads: int = 1,
        *,
        device: str = "cuda",
        precisions: Sequence[Precision] = PRECISIONS,
        cuda_graphs: bool = True,
        capture_up_to: int = 0,
        explain: bool = True,
        mm_per_px: float | None = None,
        min_region_area_mm2: float | None = None,
        language: Language = "en",
        name: str = "cuda",
    ) -> None:
        pkg = self.open_package(package, threads)
        dev = _device(device)
        self.name = name
        self.package = pkg
        self.threads = threads
        self._dev = dev
        self._graphs_on = cuda_graphs and dev.type == "cuda"
        self._captured: dict[int, _Captured] = {}
        self._stream: Any = None
        if dev.type == "cuda":
            # fp32 means fp32: TF32 would round convolutions and matmuls to 10 bits.
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
            self._stream = torch.cuda.Stream(dev)  # type: ignore[no-untyped-call]
            self.device = f"{dev} ({torch.cuda.get_device_name(dev)})"
        else:
            self.device = "cpu"
        # The CPU side: the decoder's steps, and the reference the gate compares with.
        self._cpu = OnnxRuntimeBackend(
            pkg,
            threads,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
            language=language,
        )
        self._fp32_graph = DetectGraph(load_net(pkg), fold=True).eval()
        self._model: torch.nn.Module = self._fp32_graph
        self._dtype = torch.float32
        self.pipeline = Pipeline(
            pkg,
            self._detect,
            self._cpu._step,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
            language=language,
        )
        self._checked = True
        self._choose(list(precisions), check_images(pkg))
        if self._graphs_on and capture_up_to > 0:
            with torch.no_grad(), torch.cuda.device(dev):
                size = 1
                while size <= graph_batch(capture_up_to):
                    if size not in self._captured:
                        self._capture(size)
                    size *= 2
        log.info(
            "backend_loaded",
            backend=name,
            package=str(pkg.root),
            device=self.device,
            precision=self.precision,
            parity_checked=self._checked,
        )

    def _choose(self, precisions: list[Precision], images: list[Any]) -> None:
        """Set the first precision the gate admits; raise ``ParityRefusedError`` if none."""
        reports: list[ParityReport] = []
        fallbacks: list[Fallback] = []
        for i, precision in enumerate(precisions):
            label = f"{self.name} {precision}"
            self._use(precision)
            report = run_gate(label, self.pipeline.detect, self._cpu.detect, images)
            reports.append(report)
            unchecked = report.failed == ("no_images",) and precision == "fp32"
            if report.passed or unchecked:
                self._checked = report.passed
                self.precision = precision
                self.fallbacks, self.parity = tuple(fallbacks), tuple(reports)
                if unchecked:
                    log.warning("parity_unchecked", backend=self.name, precision=precision)
                return
            last = i + 1 == len(precisions)
            target = "onnxruntime cpu" if last else f"{self.name} {precisions[i + 1]}"
            fallbacks.append(Fallback(label, target, report.reason()))
            log.warning(
                "precision_refused",
                backend=self.name,
                precision=precision,
                to=target,
                reason=report.reason(),
            )
        self._use(None)
        raise ParityRefusedError(self.name, reports, fallbacks)

    def _use(self, precision: Precision | None) -> None:
        """Put the detect graph on the device in ``precision`` (None: free it)."""
        self._captured.clear()
        if precision is None:
            self._model = self._fp32_graph
            if self._dev.type == "cuda":
                torch.cuda.empty_cache()
            return
        self._dtype = _DTYPES[precision]
        model = copy.deepcopy(self._fp32_graph) if precision != "fp32" else self._fp32_graph
        self._model = model.to(device=self._dev, dtype=self._dtype).eval()

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The graph on a float32 device batch; float32 outputs (casts happen on the device)."""
        out = self._model(x.to(self._dtype))
        return tuple(o.float() for o in out)

    @torch.no_grad()
    def _detect(self, x: F32) -> tuple[F32, F32, F32, F32, F32]:
        if not self._graphs_on:
            if self._dev.type == "cpu":
                torch.set_num_threads(self.threads)
            out = self._forward(torch.from_numpy(x).to(self._dev))
            a, s, p, m, n = (o.cpu().numpy() for o in out)
            return a, s, p, m, n
        n = x.shape[0]
        with torch.cuda.device(self._dev):
            size = graph_batch(n)
            cap = self._captured.get(size) or self._capture(size)
            cap.host_in.numpy()[:n] = x  # rows past n: an earlier batch's, dropped below
            with torch.cuda.stream(self._stream):
                cap.device_in.copy_(cap.host_in, non_blocking=True)
                cap.graph.replay()
                for host, dev in zip(cap.host_out, cap.device_out, strict=True):
                    host[:n].copy_(dev[:n], non_blocking=True)
            self._stream.synchronize()
        # Copies: the pinned buffers are overwritten by the next call, and a detection's
        # memory is read later by the decoder on another thread.
        a, s, p, m, k = (h.numpy()[:n].copy() for h in cap.host_out)
        return a, s, p, m, k

    def _capture(self, n: int) -> _Captured:
        """Capture the graph for batch ``n`` (on first use of that size)."""
        size = self.package.manifest.input.size_px
        device_in = torch.zeros((n, 1, size, size), dtype=torch.float32, device=self._dev)
        side = torch.cuda.Stream(self._dev)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(self._dev))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self._forward(device_in)
        torch.cuda.current_stream(self._dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: another thread's CUDA work (a shadow model) does not break the capture.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            device_out = self._forward(device_in)
        host_in = torch.zeros(device_in.shape, dtype=torch.float32, pin_memory=True)
        host_out = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in device_out)
        cap = _Captured(graph, device_in, device_out, host_in, host_out)
        self._captured[n] = cap
        log.info("cuda_graph_captured", backend=self.name, batch=n, precision=str(self._dtype))
        return cap

    def describe(self) -> dict[str, Any]:
        """What runs and why (``models.runtime.parity.describe_state``), plus the batch
        sizes captured as CUDA graphs and where the decoder runs."""
        return describe_state(
            runtime=self.name,
            requested=self.requested or self.name,
            device=self.device,
            precision=self.precision,
            fallbacks=self.fallbacks,
            parity=self.parity,
            parity_checked=self._checked,
            cuda_graphs=sorted(self._captured),
            decoder="onnxruntime cpu",
        )

    def close(self) -> None:
        """Drop the captured graphs and the device copy of the network."""
        self._use(None)
