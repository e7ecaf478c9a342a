"""Export a trained ``DefectNet`` to the two ONNX graphs of a model package.

- ``detect.onnx``: ``image`` float32 ``(N, 1, S, S)`` (normalized, see the
  manifest) -> ``anomaly_map`` float32 ``(N, S, S)`` pixel probabilities,
  ``score`` float32 ``(N,)`` image score in 0..1, ``type_probs`` float32
  ``(N, T)``, ``memory`` float32 ``(N, L, d)`` for the explanation,
  ``length_px`` float32 ``(N,)`` the size head's length of the main defect (pixels).
- ``explain.onnx``: one decoder step over a fixed window, ``memory``,
  ``tokens`` int32 ``(N, max_len)`` and ``facts`` int32 ``(N, 3)`` (the heads'
  type, the region's grid cell and size class; see ``models.net.decoder``)
  -> ``logits`` float32 ``(N, max_len, V)``;
  the logits at position ``t`` give token ``t + 1``. Greedy decoding calls it
  up to ``max_len - 1`` times (the window is fixed so TensorRT can build one
  static-length engine).

The batch axis is dynamic in both.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.net import DefectNet

DETECT_FILE = "detect.onnx"
EXPLAIN_FILE = "explain.onnx"
OPSET = 17
DETECT_OUTPUTS = ("anomaly_map", "score", "type_probs", "memory", "length_px")
EXPLAIN_INPUTS = ("memory", "tokens", "facts")


class DetectGraph(nn.Module):
    """``DefectNet.detect`` with the map upsampled to the input and the types as probabilities."""

    def __init__(self, net: DefectNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """See the module docstring."""
        out = self.net.detect(image)
        size = (self.net.cfg.input_size_px, self.net.cfg.input_size_px)
        amap = torch.sigmoid(
            F.interpolate(out.map_logits, size=size, mode="bilinear", align_corners=False)
        )[:, 0]
        probs = torch.softmax(out.type_logits, dim=1)
        return amap, out.score, probs, out.memory, torch.exp(out.log_length)


class ExplainStepGraph(nn.Module):
    """The decoder over a fixed ``max_len`` window of int32 tokens."""

    def __init__(self, net: DefectNet) -> None:
        super().__init__()
        self.decoder = net.decoder

    def forward(
        self, memory: torch.Tensor, tokens: torch.Tensor, facts: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits at every position."""
        out: torch.Tensor = self.decoder(tokens.to(torch.int64), memory, facts.to(torch.int64))
        return out


def export_onnx(net: DefectNet, out_dir: str | Path) -> dict[str, Path]:
    """Write ``detect.onnx`` and ``explain.onnx`` into ``out_dir``; returns their paths.

    Raises ``OSError`` when the files cannot be written and
    ``RuntimeError`` when torch cannot export the graph.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = net.cfg
    was_training = net.training
    net.eval()
    image = torch.zeros(1, 1, cfg.input_size_px, cfg.input_size_px)
    memory = torch.zeros(1, cfg.memory_len, cfg.d_model)
    tokens = torch.zeros(1, cfg.max_len, dtype=torch.int32)
    facts = torch.zeros(1, 3, dtype=torch.int32)
    paths = {"detect": out / DETECT_FILE, "explain": out / EXPLAIN_FILE}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter is deprecated in favour of dynamo; it is
        # still the one that handles these small static graphs without onnxscript.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            DetectGraph(net),
            (image,),
            str(paths["detect"]),
            input_names=["image"],
            output_names=list(DETECT_OUTPUTS),
            dynamic_axes={"image": {0: "batch"}, **{k: {0: "batch"} for k in DETECT_OUTPUTS}},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            ExplainStepGraph(net),
            (memory, tokens, facts),
            str(paths["explain"]),
            input_names=list(EXPLAIN_INPUTS),
            output_names=["logits"],
            dynamic_axes={**{k: {0: "batch"} for k in EXPLAIN_INPUTS}, "logits": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    net.train(was_training)
    return paths
