"""Export a trained ``DefectNet`` to the two ONNX graphs of a model package.

The graphs' inputs, outputs and file names are the package format's and are
described in ``models.graphs``; the batch axis is dynamic in both.

The detect graph is exported from a folded copy of the encoder: a convolution
over ``[features, coordinate channels]`` is the convolution over the features
plus a constant map (the coordinates never change), so the constant is
computed once here and the graph convolves only the features. Same outputs to
float rounding, and the channel counts stay multiples of 8, which ONNX
Runtime's blocked convolutions need.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from models.graphs import (
    DETECT_FILE,
    DETECT_INPUTS,
    DETECT_OUTPUTS,
    EXPLAIN_FILE,
    EXPLAIN_INPUTS,
    EXPLAIN_OUTPUTS,
)
from models.net.encoder import Encoder
from models.net.model import DefectNet

OPSET = 17


class _ConvPlusMap(nn.Module):
    """``conv([x, coords])`` as a convolution over ``x`` plus a constant map.

    Raises ``ValueError`` for a convolution with a bias or a non-integer stride or padding.
    """

    constant: torch.Tensor

    def __init__(self, conv: nn.Conv2d, coords: torch.Tensor) -> None:
        super().__init__()
        if conv.bias is not None or isinstance(conv.padding, str):
            raise ValueError("only a bias-free convolution with numeric padding folds")
        keep = conv.in_channels - coords.shape[1]
        self.stride, self.padding = int(conv.stride[0]), int(conv.padding[0])
        self.weight = nn.Parameter(conv.weight[:, :keep].detach().clone())
        full = torch.cat([torch.zeros(1, keep, *coords.shape[2:]), coords], dim=1)
        constant = F.conv2d(full, conv.weight, None, self.stride, self.padding)
        self.register_buffer("constant", constant.detach())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``conv([x, coords])``."""
        return F.conv2d(x, self.weight, None, self.stride, self.padding) + self.constant


class FoldedEncoder(nn.Module):
    """``Encoder`` with its coordinate channels folded into constant maps (inference only)."""

    coords4: torch.Tensor
    coords16: torch.Tensor

    def __init__(self, enc: Encoder) -> None:
        super().__init__()
        enc = copy.deepcopy(enc)
        self.stem, self.stage2, self.stage4 = enc.stem, enc.stage2, enc.stage4
        self.stage3, self.stage4b = enc.stage3, enc.stage4b
        for stage, coords in ((self.stage3, enc.coords4), (self.stage4b, enc.coords16)):
            first = cast(nn.Sequential, stage[0])  # conv_bn: Conv2d, BatchNorm2d, ReLU
            first[0] = _ConvPlusMap(cast(nn.Conv2d, first[0]), coords)
        self.register_buffer("coords4", enc.coords4, persistent=False)
        self.register_buffer("coords16", enc.coords16, persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Same as ``Encoder.forward``."""
        f4 = self.stage2(self.stem(x))
        f8 = self.stage3(f4)
        f16 = self.stage4(f8)
        f16 = self.stage4b(f16) + f16
        return f4, f8, f16


class DetectGraph(nn.Module):
    """``DefectNet.detect`` with the map upsampled to the input and the types as probabilities.

    ``fold=True`` (the default) runs it on a ``FoldedEncoder`` copy; ``net`` is not changed.
    """

    def __init__(self, net: DefectNet, fold: bool = True) -> None:
        super().__init__()
        if fold:
            net = copy.deepcopy(net)
            net.encoder = FoldedEncoder(net.encoder)  # type: ignore[assignment]
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The detect graph's outputs (see ``models.graphs``)."""
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
            input_names=list(DETECT_INPUTS),
            output_names=list(DETECT_OUTPUTS),
            dynamic_axes={k: {0: "batch"} for k in DETECT_INPUTS + DETECT_OUTPUTS},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            ExplainStepGraph(net),
            (memory, tokens, facts),
            str(paths["explain"]),
            input_names=list(EXPLAIN_INPUTS),
            output_names=list(EXPLAIN_OUTPUTS),
            dynamic_axes={k: {0: "batch"} for k in EXPLAIN_INPUTS + EXPLAIN_OUTPUTS},
            opset_version=OPSET,
            dynamo=False,
        )
    net.train(was_training)
    return paths
