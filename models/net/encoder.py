"""The shared image encoder and the anomaly segmentation head.

A plain conv net, from scratch: a 4 x 4 patch stem to stride 4 (cheap on a
CPU: no full-resolution feature maps), then stages at strides 4, 8 and 16.
Coordinate channels are concatenated at strides 4 and 16 so the network knows
where on the part it looks (a missing boss is only missing at the centre).
The segmentation head fuses strides 16, 8 and 4 (a small feature pyramid)
into anomaly logits at stride 4.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin: int, cout: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    """Conv ``k x k`` -> BatchNorm -> ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _coords(side: int) -> torch.Tensor:
    lin = torch.linspace(-1.0, 1.0, side)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([xx, yy])[None]


class Encoder(nn.Module):
    """Image ``(N, 1, S, S)`` (normalized) -> features at strides 4, 8 and 16."""

    coords4: torch.Tensor
    coords16: torch.Tensor

    def __init__(self, input_size_px: int, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(1, w1, 4, 4, 0, bias=False), nn.BatchNorm2d(w1), nn.ReLU(inplace=True)
        )
        self.stage2 = conv_bn(w1, w2)
        self.stage3 = nn.Sequential(conv_bn(w2 + 2, w3, 2), conv_bn(w3, w3))
        self.stage4 = nn.Sequential(conv_bn(w3, w4, 2), conv_bn(w4, w4))
        self.stage4b = nn.Sequential(conv_bn(w4 + 2, w4), conv_bn(w4, w4))
        self.register_buffer("coords4", _coords(input_size_px // 4), persistent=False)
        self.register_buffer("coords16", _coords(input_size_px // 16), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Features ``(f4, f8, f16)`` of shapes ``(N, w2, S/4, S/4)``, ``(N, w3, S/8, S/8)``,
        ``(N, w4, S/16, S/16)``."""
        n = x.shape[0]
        f4 = self.stage2(self.stem(x))
        c4 = self.coords4.expand(n, -1, -1, -1)
        f8 = self.stage3(torch.cat([f4, c4], dim=1))
        f16 = self.stage4(f8)
        c16 = self.coords16.expand(n, -1, -1, -1)
        f16 = self.stage4b(torch.cat([f16, c16], dim=1)) + f16
        return f4, f8, f16


class SegHead(nn.Module):
    """Features at strides 4, 8, 16 -> anomaly logits ``(N, 1, S/4, S/4)``."""

    def __init__(self, widths: tuple[int, int, int, int]) -> None:
        super().__init__()
        _, w2, w3, w4 = widths
        self.lat16 = nn.Conv2d(w4, w2, 1)
        self.lat8 = nn.Conv2d(w3, w2, 1)
        self.fuse = conv_bn(w2, w2, 1, k=1)  # 1 x 1: a 3 x 3 at stride 4 is the costliest layer
        self.out = nn.Conv2d(w2, 1, 1)

    def forward(self, f4: torch.Tensor, f8: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
        """Anomaly logits at stride 4."""
        up16 = F.interpolate(
            self.lat16(f16), scale_factor=2.0, mode="bilinear", align_corners=False
        )
        up8 = F.interpolate(
            self.lat8(f8) + up16, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        out: torch.Tensor = self.out(self.fuse(f4 + up8))
        return out
