"""The ONNX Runtime backend (the CPU default): the package's graphs on ``CPUExecutionProvider``.

``threads`` sets ONNX Runtime's intra-op threads for each graph (default 1: on a
shared two-core machine a second thread spins more than it helps; the node
runs one inference worker, so inter-op parallelism stays at 1). Blocking:
call ``infer`` from the inference worker thread, never the event loop.

It imports no torch (the graphs' names come from ``models.graphs``), so a CPU
node never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import structlog

from models.explain_text import Language
from models.graphs import DETECT_OUTPUTS, EXPLAIN_INPUTS
from models.package import ModelPackage, PackageError
from models.runtime.pipeline import F32, I32, Pipeline, PipelineBackend

log = structlog.get_logger(__name__)


def _session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise PackageError(f"{path}: ONNX Runtime cannot load it: {exc}") from exc


def check_graphs(detect: Any, explain: Any, package: ModelPackage) -> None:
    """Refuse graphs whose inputs and outputs do not match the manifest (``PackageError``)."""
    problems = []
    net = package.net
    d_in = [(i.name, i.shape[1:]) for i in detect.get_inputs()]
    if d_in != [("image", [1, net.input_size_px, net.input_size_px])]:
        problems.append(
            f"detect graph takes {d_in}, the manifest says image 1x{net.input_size_px}²"
        )
    d_out = tuple(o.name for o in detect.get_outputs())
    if d_out != DETECT_OUTPUTS:
        problems.append(f"detect graph gives {d_out}, expected {DETECT_OUTPUTS}")
    type_shape = detect.get_outputs()[2].shape[1:] if len(d_out) > 2 else None
    if type_shape != [net.n_types]:
        problems.append(
            f"detect graph gives {type_shape} type probabilities, manifest {net.n_types}"
        )
    e_in = tuple(i.name for i in explain.get_inputs())
    if e_in != EXPLAIN_INPUTS:
        problems.append(f"explain graph takes {e_in}, expected {EXPLAIN_INPUTS}")
    logits = explain.get_outputs()[0].shape[1:]
    if logits != [net.max_len, net.vocab_size]:
        problems.append(
            f"explain graph gives logits {logits}, manifest {[net.max_len, net.vocab_size]}"
        )
    if problems:
        raise PackageError(
            f"{package.root}: graphs do not match the manifest: " + "; ".join(problems)
        )


class OnnxRuntimeBackend(PipelineBackend):
    """A ``Backend`` over ONNX Runtime on the CPU.

    ``package`` is a verified ``ModelPackage`` or a package folder (verified
    here); ``threads`` is ONNX Runtime's intra-op thread count; ``explain``,
    ``mm_per_px``, ``min_region_area_mm2`` and ``language`` are passed to
    ``Pipeline``. Raises ``PackageError`` for a package that fails
    verification or whose graphs do not match its manifest, ``ValueError``
    for ``threads < 1``.
    """

    def __init__(
        self,
        package: ModelPackage | str | Path,
        threads: int = 1,
        *,
        explain: bool = True,
        mm_per_px: float | None = None,
        min_region_area_mm2: float | None = None,
        language: Language = "en",
        name: str = "onnxruntime",
    ) -> None:
        pkg = self.open_package(package, threads)
        self.name = name
        self.package = pkg
        self._detect_sess = _session(pkg.detect_path, threads)
        self._explain_sess = _session(pkg.explain_path, threads)
        check_graphs(self._detect_sess, self._explain_sess, pkg)
        self.pipeline = Pipeline(
            pkg,
            self._detect,
            self._step,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
            language=language,
        )
        log.info("backend_loaded", backend=name, package=str(pkg.root), threads=threads)

    def _detect(self, x: F32) -> tuple[F32, F32, F32, F32, F32]:
        amap, score, probs, memory, length = self._detect_sess.run(None, {"image": x})
        return amap, score, probs, memory, length

    def _step(self, memory: F32, tokens: I32, facts: I32) -> F32:
        feeds = {"memory": memory, "tokens": tokens, "facts": facts}
        (logits,) = self._explain_sess.run(None, feeds)
        out: F32 = logits
        return out
