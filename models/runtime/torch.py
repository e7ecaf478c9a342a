"""The torch backend: the reference the exported graphs are checked against.

It rebuilds ``DefectNet`` from the manifest and loads ``weights.pt`` with
``torch.load(weights_only=True)`` (no pickled code runs), in float32 on the
CPU. Slower than ONNX Runtime; used for parity tests and debugging.
"""

from __future__ import annotations

from pathlib import Path

import torch

from models.explain_text import Language
from models.export import DetectGraph
from models.net.model import DefectNet
from models.package import ModelPackage, PackageError
from models.runtime.pipeline import F32, I32, Pipeline, PipelineBackend


def load_net(package: ModelPackage) -> DefectNet:
    """The package's network with its weights, in eval mode.

    Raises ``PackageError`` when the weights do not fit the manifest's network.
    """
    net = DefectNet(package.net)
    try:
        state = torch.load(package.weights_path, map_location="cpu", weights_only=True)
        net.load_state_dict({k: v.to(torch.float32) for k, v in state.items()})
    except (RuntimeError, OSError, AttributeError) as exc:
        raise PackageError(f"{package.weights_path}: cannot load weights: {exc}") from exc
    return net.eval()


class TorchBackend(PipelineBackend):
    """A ``Backend`` running the network in torch (reference); arguments as ``OnnxRuntimeBackend``.

    Raises ``PackageError`` for a bad package or weights.
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
        name: str = "torch",
    ) -> None:
        pkg = self.open_package(package, threads)
        self.name = name
        self.package = pkg
        self.threads = threads
        self.net = load_net(pkg)
        self._graph = DetectGraph(self.net, fold=False).eval()
        self.pipeline = Pipeline(
            pkg,
            self._detect,
            self._step,
            explain=explain,
            mm_per_px=mm_per_px,
            min_region_area_mm2=min_region_area_mm2,
            language=language,
        )

    @torch.inference_mode()
    def _detect(self, x: F32) -> tuple[F32, F32, F32, F32, F32]:
        torch.set_num_threads(self.threads)
        amap, score, probs, memory, length = self._graph(torch.from_numpy(x))
        return amap.numpy(), score.numpy(), probs.numpy(), memory.numpy(), length.numpy()

    @torch.inference_mode()
    def _step(self, memory: F32, tokens: I32, facts: I32) -> F32:
        logits = self.net.decoder(
            torch.from_numpy(tokens).to(torch.int64),
            torch.from_numpy(memory),
            torch.from_numpy(facts).to(torch.int64),
        )
        out: F32 = logits.numpy()
        return out
