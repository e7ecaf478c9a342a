"""The CPU runtime and the package format load without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TORCH_FREE = (
    "models.runtime.onnxruntime",
    "models.runtime",
    "models.package",
    "models.graphs",
    "models.findings",
    "models.backend",
)


def test_onnxruntime_backend_and_package_format_import_no_torch() -> None:
    """Importing the ONNX Runtime backend, the runtime factory and the package format leaves
    torch unloaded."""
    # A fresh interpreter: this test session has torch loaded already (the fixtures train).
    code = f"import sys, {', '.join(TORCH_FREE)}; print('torch' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
