"""``models.runtime.open_runtime``: the one way a package is opened on a runtime."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from models.backend import BackendError
from models.package import ModelPackage, PackageError
from models.runtime import open_runtime
from models.runtime.onnxruntime import OnnxRuntimeBackend
from models.runtime.torch import TorchBackend


def test_open_runtime_passes_the_settings_to_the_backend(tiny_package: ModelPackage) -> None:
    """Scale, smallest region and the explain switch reach the pipeline; unset, the package's."""
    backend = open_runtime(
        "onnxruntime", tiny_package, explain=False, mm_per_px=0.2, min_region_area_mm2=0.7
    )
    assert isinstance(backend, OnnxRuntimeBackend)
    assert backend.pipeline.mm_per_px == 0.2
    assert backend.pipeline.min_region_area_mm2 == 0.7
    assert not backend.pipeline.explain_enabled
    default = open_runtime("torch", tiny_package.root, 1)
    assert isinstance(default, TorchBackend)
    thresholds = tiny_package.manifest.thresholds
    assert default.pipeline.mm_per_px == tiny_package.manifest.input.mm_per_px
    assert default.pipeline.min_region_area_mm2 == thresholds.min_region_area_mm2
    assert default.pipeline.explain_enabled


def test_a_bad_package_is_a_backend_error(tmp_path: Path) -> None:
    """A folder that is no package raises PackageError, which is a BackendError."""
    with pytest.raises(BackendError, match="not a model package") as info:
        open_runtime("onnxruntime", tmp_path)
    assert isinstance(info.value, PackageError)


def test_a_missing_runtime_library_is_a_backend_error(
    tiny_package: ModelPackage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runtime whose library cannot be imported raises BackendError caused by the ImportError."""
    # Fault injection: make `import onnxruntime` fail as it would where it is not installed.
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    monkeypatch.delitem(sys.modules, "models.runtime.onnxruntime")
    with pytest.raises(BackendError, match="onnxruntime") as info:
        open_runtime("onnxruntime", tiny_package)
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here"
)
def test_tensorrt_without_tensorrt_is_a_backend_error(tiny_package: ModelPackage) -> None:
    """Without the tensorrt package the TensorRT runtime raises a BackendError saying so."""
    with pytest.raises(BackendError, match="needs the tensorrt package"):
        open_runtime("tensorrt", tiny_package, max_batch=4)


def test_bad_arguments_are_value_errors(tiny_package: ModelPackage) -> None:
    """An unknown runtime or a thread count below 1 is the caller's mistake: ValueError."""
    with pytest.raises(ValueError, match="unknown runtime 'openvino'"):
        open_runtime("openvino", tiny_package)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads must be >= 1, got 0") as info:
        open_runtime("onnxruntime", tiny_package, 0)
    assert not isinstance(info.value, BackendError)
