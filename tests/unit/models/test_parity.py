"""The parity gate admits a GPU precision only where it judges like ONNX Runtime fp32.

The cuda runtime runs here on the CPU (``device="cpu"``: the same code, eager,
fp16 convolutions included). Perturbed packages are real packages whose torch
weights no longer match their ONNX graphs (rewritten and re-hashed by the
packaging code), so the gate sees what a broken GPU build would give it.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models.package import (
    ModelPackage,
    PackageError,
    check_images,
    load_package,
    write_manifest,
)
from models.runtime import open_runtime
from models.runtime.cuda import CudaBackend
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.parity import (
    MAX_SCORE_REL_ERROR,
    MIN_MASK_IOU,
    ParityRefusedError,
    mask_iou,
)
from models.train.build import add_check_images, synth_check_images

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"

State = dict[str, torch.Tensor]


def _repackage(tmp: Path, change: Callable[[State], None]) -> Path:
    """A copy of the demo package whose weights ``change`` altered, hashed anew (valid)."""
    root = tmp / "pkg"
    shutil.copytree(DEMO, root)
    pkg = load_package(root)
    state = torch.load(pkg.weights_path, weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    change(state)
    torch.save(state, pkg.weights_path)
    fields = pkg.manifest.model_dump(mode="json", exclude={"format", "format_version", "files"})
    write_manifest(root, fields)
    return root


def _overflow_fp16(state: State) -> None:
    """The stem convolution's weights times 2^20 and its batch norm's statistics to match:
    the same function in fp32 (exact powers of two), infinities in fp16 (max 65504)."""
    k = 2.0**20
    state["encoder.stem.0.weight"] *= k
    state["encoder.stem.1.running_mean"] *= k
    state["encoder.stem.1.running_var"] *= k * k


def _noise(state: State) -> None:
    """Noise of 0.2 standard deviations on every encoder weight: maps and scores move."""
    g = torch.Generator().manual_seed(0)
    for name, v in state.items():
        weight = name.startswith("encoder.") and "running" not in name
        if weight and v.is_floating_point() and v.numel() > 1:
            v += 0.2 * v.std() * torch.randn(v.shape, generator=g)


def _swap_types(state: State) -> None:
    """The type head's first two classes swapped: the same maps and scores, other types."""
    for name in ("type_head.2.weight", "type_head.2.bias"):
        state[name][[0, 1]] = state[name][[1, 0]]


@pytest.fixture(scope="module")
def overflow_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo package with weights that overflow in fp16 only."""
    return _repackage(tmp_path_factory.mktemp("overflow"), _overflow_fp16)


@pytest.fixture(scope="module")
def noised_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo package with weights that disagree with its graphs in any precision."""
    return _repackage(tmp_path_factory.mktemp("noised"), _noise)


def test_mask_iou_of_two_empty_masks_is_agreement() -> None:
    """Two good parts without a mask agree; disjoint masks do not."""
    empty = np.zeros((4, 4), dtype=bool)
    one = empty.copy()
    one[0, 0] = True
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(one, empty) == 0.0
    assert mask_iou(one, one) == 1.0


def test_the_cuda_runtime_on_the_cpu_passes_the_gate_and_judges_like_onnxruntime() -> None:
    """On the demo's own check images the cuda runtime's fp16 (tried first) passes the gate
    with its figures inside the limits, and fp32 alone passes too; both give the reference's
    verdicts and types on every check image."""
    fp16 = CudaBackend(DEMO, device="cpu")
    desc = fp16.describe()
    assert (desc["runtime"], desc["device"], desc["precision"]) == ("cuda", "cpu", "fp16")
    assert desc["fallbacks"] == [] and desc["parity_checked"] is True
    report = desc["parity"]["cuda fp16"]
    assert report["passed"] and report["images"] == 8
    assert report["min_mask_iou"] >= MIN_MASK_IOU
    assert report["max_score_rel_error"] <= MAX_SCORE_REL_ERROR
    assert report["type_disagreements"] == 0

    fp32 = CudaBackend(DEMO, device="cpu", precisions=("fp32",), explain=False)
    assert fp32.precision == "fp32" and fp32.parity[0].passed
    assert fp32.parity[0].min_mask_iou is not None and fp32.parity[0].min_mask_iou >= 0.999

    images = [img for _, img in check_images(load_package(DEMO))]
    ref = OnnxRuntimeBackend(DEMO, explain=False).infer(images)
    for backend in (fp16, fp32):
        got = backend.infer(images)
        assert [f.anomaly_score >= 1.0 for f in got] == [f.anomaly_score >= 1.0 for f in ref]
        assert [f.defect_type for f in got] == [f.defect_type for f in ref]
        assert all(f.backend == "cuda" for f in got)
    assert sum(f.anomaly_score >= 1.0 for f in ref) == 5  # the five defective check parts


def test_an_fp16_overflow_is_refused_and_fp32_runs(overflow_package: Path) -> None:
    """A graph that overflows in half precision: fp16 is refused (its outputs are not finite),
    the fallback to fp32 is logged in describe() with the reason, and fp32 passes."""
    backend = CudaBackend(overflow_package, device="cpu", explain=False)
    desc = backend.describe()
    assert desc["precision"] == "fp32"
    [step] = desc["fallbacks"]
    assert (step["from"], step["to"]) == ("cuda fp16", "cuda fp32")
    assert "not finite" in step["reason"]
    assert desc["parity"]["cuda fp16"]["failed"] == ["output"]
    assert desc["parity"]["cuda fp32"]["passed"] is True


def test_a_perturbed_graph_is_refused_in_every_precision_and_the_cpu_judges(
    noised_package: Path,
) -> None:
    """Weights that no longer compute the package's graphs: fp16 and fp32 are both refused
    (masks and scores out of their limits); without a fallback the runtime refuses to open,
    with one the factory opens ONNX Runtime on the CPU, whose describe() shows both steps
    and both reports, and which judges like ONNX Runtime opened directly."""
    with pytest.raises(ParityRefusedError, match="cuda fp32: refused") as err:
        open_runtime("cuda", noised_package, device="cpu", explain=False)
    assert [r.failed for r in err.value.reports] == [("mask_iou", "score")] * 2

    backend = open_runtime("cuda", noised_package, device="cpu", explain=False, fallback=True)
    assert isinstance(backend, OnnxRuntimeBackend)
    desc = backend.describe()
    assert (desc["runtime"], desc["requested"], desc["device"]) == ("onnxruntime", "cuda", "cpu")
    assert [(s["from"], s["to"]) for s in desc["fallbacks"]] == [
        ("cuda fp16", "cuda fp32"),
        ("cuda fp32", "onnxruntime cpu"),
    ]
    assert all("mask IoU" in s["reason"] for s in desc["fallbacks"])
    assert [r["passed"] for r in desc["parity"].values()] == [False, False]
    assert desc["parity"]["cuda fp32"]["min_mask_iou"] < MIN_MASK_IOU

    images = [img for _, img in check_images(load_package(noised_package))]
    direct = OnnxRuntimeBackend(noised_package, explain=False).infer(images)
    got = backend.infer(images)
    assert [f.anomaly_score for f in got] == [f.anomaly_score for f in direct]


def test_a_type_disagreement_alone_is_refused(tmp_path: Path) -> None:
    """Maps and scores unchanged but two types swapped: refused for the types alone."""
    root = _repackage(tmp_path, _swap_types)
    with pytest.raises(ParityRefusedError) as err:
        CudaBackend(root, device="cpu", precisions=("fp32",), explain=False)
    [report] = err.value.reports
    assert report.failed == ("type",)
    assert report.min_mask_iou is not None and report.min_mask_iou >= MIN_MASK_IOU
    assert report.type_disagreements == 2  # the crack and the contamination check parts


def test_a_package_without_check_images_cannot_prove_fp16(tmp_path: Path) -> None:
    """A package written before check images shipped: fp16 is refused (nothing to prove it
    on), fp32 runs unchecked, and describe() says so."""
    root = tmp_path / "old"
    shutil.copytree(DEMO, root)
    shutil.rmtree(root / "check")
    pkg_fields = load_package(DEMO).manifest.model_dump(
        mode="json", exclude={"format", "format_version", "files", "check"}
    )
    write_manifest(root, pkg_fields)
    backend = CudaBackend(root, device="cpu", explain=False)
    desc = backend.describe()
    assert desc["precision"] == "fp32" and desc["parity_checked"] is False
    assert desc["parity"]["cuda fp16"]["failed"] == ["no_images"]
    assert "no check images" in desc["fallbacks"][0]["reason"]


def test_check_images_are_covered_by_the_package_digest(tmp_path: Path) -> None:
    """A check image altered or removed after packaging is refused at load, by any runtime:
    the gate never runs on images other than those the package was signed with."""
    root = tmp_path / "copy"
    shutil.copytree(DEMO, root)
    name = load_package(root).manifest.check[3]
    pixels = np.asarray(Image.open(root / name)).copy()
    pixels[100:140, 100:140] = 30  # a patch painted over the defect
    Image.fromarray(pixels).save(root / name)
    with pytest.raises(PackageError, match=f"{name}: sha256 mismatch"):
        load_package(root)
    with pytest.raises(PackageError, match=f"{name}: sha256 mismatch"):
        CudaBackend(root, device="cpu")
    (root / name).unlink()
    with pytest.raises(PackageError, match=f"{name}: missing"):
        load_package(root)


def test_a_check_image_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    """A check image the graphs cannot take (re-hashed on purpose) is a PackageError."""
    root = tmp_path / "copy"
    shutil.copytree(DEMO, root)
    pkg = load_package(root)
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(root / pkg.manifest.check[0])
    fields = pkg.manifest.model_dump(mode="json", exclude={"format", "format_version", "files"})
    write_manifest(root, fields)
    with pytest.raises(PackageError, match="must be 8-bit gray 256x256"):
        check_images(load_package(root))


def test_a_new_package_ships_check_images_from_its_data_set(tiny_package: ModelPackage) -> None:
    """Training writes three good and five defective check images into the package, hashed
    in its files, of the package's input size."""
    names = tiny_package.manifest.check
    assert len(names) == 8 and all(n in tiny_package.manifest.files for n in names)
    assert [n.split("-", 1)[1] for n in names[:3]] == ["good.png"] * 3
    assert not any(n.endswith("-good.png") for n in names[3:])
    images = check_images(tiny_package)
    assert {img.shape for _, img in images} == {(128, 128)}


def test_an_older_package_gains_check_images_and_a_new_digest(
    tiny_package: ModelPackage, tmp_path: Path
) -> None:
    """Check images rendered by the simulator are added to a package written without them:
    the manifest lists and hashes them, the digest changes and a signature of the old
    content is dropped; images of another size are refused."""
    root = tmp_path / "pkg"
    shutil.copytree(tiny_package.root, root)
    shutil.rmtree(root / "check")  # as written before packages carried them
    fields = tiny_package.manifest.model_dump(
        mode="json", exclude={"format", "format_version", "files", "check"}
    )
    old = write_manifest(root, fields)
    assert old.check == ()
    (root / "signature.json").write_text("{}")  # a signature of the former content
    size = tiny_package.manifest.input.size_px
    images = synth_check_images(
        "moulded_plastic", 20261208, mm_per_px=0.125, size_px=size, part_size_mm=14.0
    )
    assert [label for label, _ in images][:4] == ["good", "good", "good", "scratch"]
    pkg = add_check_images(root, images)
    assert pkg.sha256 != tiny_package.sha256 and not (root / "signature.json").exists()
    assert len(pkg.manifest.check) == 8 and set(pkg.manifest.check) <= set(pkg.manifest.files)
    got = check_images(load_package(root))
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, images, strict=True))
    with pytest.raises(ValueError, match="the package takes"):
        add_check_images(root, [("good", np.zeros((size + 1, size + 1), np.uint8))])
