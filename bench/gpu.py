"""Benchmark the GPU runtimes: detect and explain latency at batch 1, 8 and 32, and the parity gate.

For each GPU runtime (``cuda``: torch with CUDA; ``tensorrt``) it opens the
package as the node does (the parity gate runs at load and chooses the
precision; its figures are reported), then times, per batch size, after
warm-up runs (the first call of a batch size captures its CUDA graph):

- ``graph_ms``: the detect graph alone as the runtime runs it, numpy in and
  out: the copy to the device, the graph, the copies back, the synchronise;
- ``detect_ms``: the node's in-cycle call (``backend.detect``): normalising
  the crops, the graph with its copies, the output checks and the regions;
- ``explain_ms``: the sentences of a batch of defective parts
  (``backend.explain``: greedy decoding and the grounding guard).

ONNX Runtime on the CPU is timed the same way beside them (``--threads``
threads, a quarter of the runs), the reference the gate compares with. Runtimes that cannot run are
listed with the reason (no GPU, TensorRT not installed, a package missing
from this Python); the run still exits 0 with the JSON saying so.

    python bench/gpu.py [--package models/demo] [--runs 200] [--explain-runs 50]
                        [--batches 1,8,32] [--threads 1] [--out FILE]
    python bench/gpu.py --device cpu --runs 3 --explain-runs 2 --batches 1,8   # smoke run

``--device cpu`` runs the cuda runtime's code eagerly on the CPU (no CUDA
graphs): it checks the bench end to end, its times say nothing about a GPU.
It needs only the repository and a Python with the project's runtime
packages (numpy, scipy, pydantic, structlog, pillow, onnxruntime, torch); it
installs nothing. See docs/gpu.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a plain checkout, without an install
    sys.path.insert(0, str(ROOT))

NEEDED = ("numpy", "scipy", "pydantic", "structlog", "PIL", "onnxruntime", "torch")
GPU_RUNTIMES = ("cuda", "tensorrt")


def _missing() -> list[str]:
    """The packages the runtimes need that this Python lacks."""
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def _pct(ms: list[float]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(ms)
    return {
        "p50": round(float(np.percentile(a, 50)), 4),
        "p99": round(float(np.percentile(a, 99)), 4),
        "max": round(float(a.max()), 4),
        "n": len(ms),
    }


def _timed(call: Any, runs: int, warmup: int) -> dict[str, float]:
    for _ in range(warmup):
        call()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    return _pct(ms)


def measure(
    backend: Any, images: list[Any], defective: list[Any], args: Any, runs: int
) -> dict[str, Any]:
    """Per batch size: the graph alone, the node's detect call and the explanations."""
    pipe = backend.pipeline
    warmup = max(2, runs // 10)
    out: dict[str, Any] = {}
    for n in args.batches:
        batch = [images[i % len(images)] for i in range(n)]
        bad = [defective[i % len(defective)] for i in range(n)]
        x = pipe.prepare(batch)
        row: dict[str, Any] = {
            "graph_ms": _timed(lambda x=x: pipe._detect(x), runs, warmup),
            "detect_ms": _timed(lambda b=batch: backend.detect(b), runs, warmup),
        }
        dets = backend.detect(bad)
        if args.explain_runs > 0 and all(d.anomalous for d in dets):
            row["explain_ms"] = _timed(
                lambda d=dets: backend.explain(d), args.explain_runs, min(2, args.explain_runs)
            )
        elif args.explain_runs > 0:
            row["explain_ms"] = {"skipped": "not every defective check image is anomalous here"}
        out[str(n)] = row
    return out


def _describe(backend: Any) -> dict[str, Any]:
    """The backend's describe(), each parity report without its per-image rows."""
    desc: dict[str, Any] = backend.describe()
    for report in desc.get("parity", {}).values():
        report.pop("per_image", None)
    return desc


def run(args: Any) -> dict[str, Any]:
    """Open and time every runtime that can run here; the JSON result."""
    import torch

    from models.backend import BackendError
    from models.package import check_images, load_package
    from models.runtime import open_runtime

    torch.set_num_threads(args.threads)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    pkg = load_package(args.package)
    checks = check_images(pkg)
    result: dict[str, Any] = {
        "package": str(args.package),
        "package_sha256": pkg.sha256,
        "check_images": len(checks),
        "device": args.device,
        "gpu": gpu,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "batches": args.batches,
        "runs": args.runs,
        "explain_runs": args.explain_runs,
        "threads": args.threads,
        "ran": [],
        "not_run": {},
        "backends": {},
    }
    if not checks:
        result["note"] = "the package has no check images: fp16 cannot be proven"
    images = [img for _, img in checks]
    defective = [img for name, img in checks if not name.endswith("-good.png")] or images
    if args.device != "cpu" and gpu is None:
        result["note"] = "no GPU: torch sees no CUDA device; nothing measured on a GPU"
    runtimes: list[str] = [*GPU_RUNTIMES, "onnxruntime"]
    for name in runtimes:
        if name == "onnxruntime" and not result["ran"]:
            result["not_run"][name] = "no GPU runtime ran: nothing to compare with"
            continue
        if name == "tensorrt" and args.device == "cpu":
            result["not_run"][name] = "--device cpu: TensorRT runs on a GPU only"
            continue
        t0 = time.perf_counter()
        try:
            backend = open_runtime(
                name,  # type: ignore[arg-type]
                pkg,
                args.threads,
                max(args.batches),
                device=args.device,
            )
        except (BackendError, ValueError) as exc:
            result["not_run"][name] = f"{type(exc).__name__}: {exc}"
            continue
        entry: dict[str, Any] = {"open_s": round(time.perf_counter() - t0, 3)}
        # The CPU reference is slow at batch 32: a quarter of the runs bounds its p99 well
        # enough to compare and keeps the GPU machine's time for the GPU runtimes.
        runs = args.runs if name in GPU_RUNTIMES else max(1, args.runs // 4)
        entry["latency"] = measure(backend, images, defective, args, runs)
        entry["describe"] = _describe(backend)  # after: the CUDA graphs captured
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        result["backends"][name] = entry
        result["ran"].append(name)
    return result


def main() -> int:
    """Command line entry; prints the JSON (and writes ``--out``); exit 0 unless misused."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--package", type=Path, default=ROOT / "models" / "demo")
    p.add_argument("--device", default="cuda", help="the cuda runtime's device; cpu: smoke run")
    p.add_argument("--runs", type=int, default=200, help="timed detect runs per batch size")
    p.add_argument("--explain-runs", type=int, default=50, help="timed explain runs per batch")
    p.add_argument("--batches", default="1,8,32", help="batch sizes, comma-separated")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (ONNX Runtime, torch)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        p.error("--batches: comma-separated integers, e.g. 1,8,32")
    if min(args.batches) < 1 or args.runs < 1 or args.explain_runs < 0 or args.threads < 1:
        p.error("--batches, --runs and --threads must be >= 1, --explain-runs >= 0")
    missing = _missing()
    if missing:
        result: dict[str, Any] = {
            "ran": [],
            "not_run": {
                n: f"this Python lacks {', '.join(missing)} (carry wheels: docs/gpu.md)"
                for n in GPU_RUNTIMES
            },
            "python": platform.python_version(),
        }
    else:
        import structlog

        # The runtimes' info logs would drown the JSON; warnings (a refused precision) stay.
        structlog.configure(
            wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
        result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
