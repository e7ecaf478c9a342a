"""Training reduces the loss; packages round-trip through export and load; runtimes agree."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from models.captions import Vocabulary
from models.data.anomalies import orient
from models.data.mvtec import load_gray, read_mvtec
from models.findings import Findings
from models.net.model import DefectNet
from models.package import ModelPackage, PackageError, load_package, sha256_file
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.torch import TorchBackend
from models.train.build import reexport_package
from models.train.loop import train_step
from models.train.samples import TrainingData
from tests.unit.models.conftest import TINY_NET, TINY_TRAIN

PARITY_ATOL = 1e-4
"""ONNX Runtime and torch agree to this absolute tolerance on probabilities and scores (fp32)."""
LOGIT_ATOL = 1e-3
"""... and to this on decoder logits."""


def test_a_few_steps_on_a_tiny_model_reduce_the_loss(tiny_dataset: Path) -> None:
    """Twenty optimiser steps on one batch lower its total loss by at least a quarter."""
    torch.manual_seed(0)
    ds = read_mvtec(tiny_dataset)
    types = (*ds.defect_types, "unknown anomaly")
    vocab = Vocabulary.build(types)
    data = TrainingData(ds, vocab, TINY_NET.max_len, 0.125, 60, 0.2, seed=0)
    net = DefectNet(replace(TINY_NET, vocab_size=len(vocab.tokens), n_types=len(types)))
    batch = data.draw(np.random.default_rng(0), 6, 0.3, 0.2, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = train_step(net, opt, batch, TINY_TRAIN)["total"]
    for _ in range(19):
        last = train_step(net, opt, batch, TINY_TRAIN)["total"]
    assert last < 0.75 * first


def test_a_surface_trains_its_good_images_in_every_orientation(tiny_dataset: Path) -> None:
    """A part on a belt has an up: its good images are drawn as they are. A surface has
    none: its good images are drawn in several of the eight mirrorings and turns, and the
    part mask turns with the image. Transplanted defects keep their pixels and type."""
    ds = read_mvtec(tiny_dataset)
    types = (*ds.defect_types, "unknown anomaly")
    vocab = Vocabulary.build(types)
    rng = np.random.default_rng(0)

    def turns(surface: bool) -> set[int]:
        data = TrainingData(ds, vocab, TINY_NET.max_len, 0.125, 60, 0.2, 0, surface=surface)
        seen = set()
        for _ in range(48):
            image, allowed = data._a_good(rng)
            hits = [
                t
                for t in range(8)
                for k in range(len(data.good))
                if np.array_equal(orient(data.good[k], t), image)
                and np.array_equal(orient(data.allowed[k], t), allowed)
            ]
            assert hits
            seen.add(hits[0])
        return seen

    assert turns(False) == {0}
    assert len(turns(True)) >= 5
    data = TrainingData(ds, vocab, TINY_NET.max_len, 0.125, 60, 0.2, 0, surface=True)
    item = next(it for it in data.items if it.mask is not None and it.mask.sum() > 4)
    moved = data._transplanted(rng, item)
    assert moved.type_index == item.type_index
    assert moved.mask is not None and moved.mask.sum() == item.mask.sum()
    assert moved.facts is not None and moved.facts.defect_type == types[item.type_index]


def test_export_load_infer_round_trip(tiny_package: ModelPackage, tiny_dataset: Path) -> None:
    """A trained package loads, verifies and inspects images into complete Findings."""
    pkg = load_package(tiny_package.root)
    assert len(pkg.manifest.check) == 8  # the check images (models.runtime.parity)
    assert pkg.manifest.files.keys() == {"detect.onnx", "explain.onnx", "weights.pt"} | set(
        pkg.manifest.check
    )
    backend = OnnxRuntimeBackend(pkg, threads=1)
    images = [load_gray(s.path) for s in read_mvtec(tiny_dataset).select("test")[:3]]
    found = backend.infer(images)
    assert len(found) == 3 and all(isinstance(f, Findings) for f in found)
    for f in found:
        assert f.anomaly_map.shape == (128, 128) and f.anomaly_map.dtype == np.float32
        assert f.backend == "onnxruntime" and f.explanation.text
        assert (f.anomaly_score >= 1.0) == bool(f.regions) or f.anomaly_score >= 1.0


def test_onnxruntime_matches_torch(tiny_package: ModelPackage, tiny_dataset: Path) -> None:
    """ONNX Runtime's graphs reproduce the torch reference within the stated tolerances."""
    ort_b = OnnxRuntimeBackend(tiny_package, threads=1)
    torch_b = TorchBackend(tiny_package, threads=1)
    images = [load_gray(s.path) for s in read_mvtec(tiny_dataset).select("test")[::5]]
    x = ort_b.pipeline.prepare(images)
    a = ort_b._detect(x)
    b = torch_b._detect(x)
    for got, ref in zip(a, b, strict=True):
        np.testing.assert_allclose(got, ref, atol=PARITY_ATOL, rtol=1e-3)
    tokens = np.zeros((len(images), TINY_NET.max_len), dtype=np.int32)
    tokens[:, 0], tokens[:, 1:4] = 1, 5
    facts = np.tile(np.array([[1, 4, 2]], dtype=np.int32), (len(images), 1))
    np.testing.assert_allclose(
        ort_b._step(a[3], tokens, facts),
        torch_b._step(b[3], tokens, facts),
        atol=LOGIT_ATOL,
        rtol=1e-3,
    )


def test_reexport_keeps_the_package_and_its_detections(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """Exporting a package's graphs again from its weights keeps every manifest field but
    the file hashes and the digest, verifies, and detects as before (same scores and maps
    to 1e-5)."""
    root = tmp_path / "copy"
    shutil.copytree(tiny_package.root, root)
    before = json.loads((root / "manifest.json").read_text())
    images = [load_gray(s.path) for s in read_mvtec(tiny_dataset).select("test")[::7]]
    x = OnnxRuntimeBackend(root).pipeline.prepare(images)
    old = OnnxRuntimeBackend(root)._detect(x)
    pkg = reexport_package(root)
    after = json.loads((root / "manifest.json").read_text())
    hashes = ("files", "package_sha256")
    assert {k: v for k, v in after.items() if k not in hashes} == {
        k: v for k, v in before.items() if k not in hashes
    }
    assert after["package_sha256"] == pkg.sha256
    assert after["files"]["detect.onnx"] == sha256_file(root / "detect.onnx")
    for got, ref in zip(OnnxRuntimeBackend(pkg)._detect(x), old, strict=True):
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=1e-5)


def test_bad_images_are_refused_with_a_clear_error(tiny_package: ModelPackage) -> None:
    """A crop of the wrong size or dtype raises ValueError naming the image."""
    backend = OnnxRuntimeBackend(tiny_package, threads=1)
    with pytest.raises(ValueError, match=r"image 1: expected \(128, 128\)"):
        backend.infer([np.zeros((128, 128), np.uint8), np.zeros((100, 128), np.uint8)])
    with pytest.raises(ValueError, match="image 0: expected uint8"):
        backend.infer([np.zeros((128, 128), np.float32)])  # type: ignore[list-item]


def _copy(pkg: ModelPackage, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(pkg.root, dst)
    return dst


def test_a_corrupted_graph_is_refused(tiny_package: ModelPackage, tmp_path: Path) -> None:
    """One flipped byte in an ONNX graph fails the sha256 check with the file named."""
    root = _copy(tiny_package, tmp_path)
    data = bytearray((root / "detect.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "detect.onnx").write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"detect.onnx: sha256 mismatch"):
        load_package(root)
    with pytest.raises(PackageError):
        OnnxRuntimeBackend(root)


def test_a_mismatched_manifest_is_refused(tiny_package: ModelPackage, tmp_path: Path) -> None:
    """A missing file, a wrong format version or types that do not fit the net are refused."""
    root = _copy(tiny_package, tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "weights.pt").unlink()
    with pytest.raises(PackageError, match=r"weights\.pt: missing"):
        load_package(root)
    shutil.copy(tiny_package.root / "weights.pt", root / "weights.pt")
    bad = {**manifest, "types": manifest["types"][:-1]}
    (root / "manifest.json").write_text(json.dumps(bad))
    with pytest.raises(PackageError, match="n_types"):
        load_package(root)
    (root / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(PackageError, match="format_version 99"):
        load_package(root)
    (root / "manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        load_package(root)


def test_tensorrt_runs_where_a_gpu_exists(tiny_package: ModelPackage, tiny_dataset: Path) -> None:
    """Where TensorRT and a GPU exist, the fp16 engine agrees with ONNX Runtime on scores."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (no GPU on this machine)")
    from models.runtime.tensorrt import TensorRTBackend, TensorRTError

    try:
        trt_b = TensorRTBackend(tiny_package, max_batch=4)
    except TensorRTError as exc:
        pytest.skip(f"TensorRT cannot start here: {exc}")
    images = [load_gray(s.path) for s in read_mvtec(tiny_dataset).select("test")[:4]]
    ref = OnnxRuntimeBackend(tiny_package, threads=1).pipeline.prepare(images)
    got = trt_b._detect(ref)
    want = OnnxRuntimeBackend(tiny_package, threads=1)._detect(ref)
    np.testing.assert_allclose(got[1], want[1], atol=2e-2)  # fp16
    assert len(trt_b.infer(images)) == 4
    trt_b.close()


def test_reexport_command_refuses_a_missing_package_clearly(tmp_path: Path) -> None:
    """``python -m models.train.build DIR`` on a folder with no package exits 5 with the
    reason on stderr, and writes nothing there."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "models.train.build", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 5
    assert "not a model package" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
