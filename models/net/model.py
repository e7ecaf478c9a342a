"""``DefectNet``: encoder, anomaly segmentation, image score, defect type, explanation decoder.

Pure ``nn.Module``s only; training lives in ``models.train`` and export in
``models.export``. ``detect`` is the in-cycle path; ``decoder`` writes the
sentence from ``detect``'s memory, one token at a time.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from models.graphs import NO_LOCATION, NO_SIZE
from models.net.config import NetConfig
from models.net.decoder import ExplainDecoder
from models.net.encoder import Encoder, SegHead

FACT_LOCATIONS, FACT_SIZES = NO_LOCATION, NO_SIZE
"""Classes of the training-only fact probe: grid cells and size classes."""
MAP_STATS = 7
"""Summary numbers of the anomaly map given to the type head and the decoder (see map_stats)."""


def map_stats(prob: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Where the map's anomaly is and how big: ``(N, 7)`` from probabilities ``(N, 1, h, w)``.

    Pixels above half the map's peak weigh by how far above they are; the
    result is their weighted centroid ``(x, y)`` and spreads ``(sx, sy, sxy)``
    in the ``-1..1`` coordinates of ``coords`` ``(1, 2, h, w)``, the log of
    their weight and the peak. The decoder reads place and size from these as
    well as from the per-cell tokens.
    """
    n = prob.shape[0]
    p = prob.flatten(1)
    peak = p.max(dim=1, keepdim=True).values
    w = torch.relu(p - 0.5 * peak)
    total = w.sum(dim=1, keepdim=True) + 1e-6
    x, y = coords[:, 0].flatten(1), coords[:, 1].flatten(1)
    cx = (w * x).sum(dim=1, keepdim=True) / total
    cy = (w * y).sum(dim=1, keepdim=True) / total
    dx, dy = x - cx, y - cy
    sxx = (w * dx * dx).sum(dim=1, keepdim=True) / total
    syy = (w * dy * dy).sum(dim=1, keepdim=True) / total
    sxy = (w * dx * dy).sum(dim=1, keepdim=True) / total
    spread = [torch.sqrt(sxx + 1e-6), torch.sqrt(syy + 1e-6), sxy * 4.0]
    out = torch.cat([cx, cy, *spread, torch.log1p(total) * 0.25, peak], dim=1)
    return out.reshape(n, MAP_STATS)


class DetectOutput(NamedTuple):
    """What ``DefectNet.detect`` returns for a batch of ``N``.

    ``map_logits`` ``(N, 1, S/4, S/4)`` anomaly logits; ``score`` ``(N,)`` the
    image score in 0..1 (mean of the ``top_k`` highest pixel probabilities);
    ``type_logits`` ``(N, n_types)``; ``memory`` ``(N, L, d_model)`` for the decoder;
    ``log_length`` ``(N,)`` the size head's natural log of the main defect's length
    in pixels (along its principal axis, as ``models.data.geometry`` measures a mask).
    """

    map_logits: torch.Tensor
    score: torch.Tensor
    type_logits: torch.Tensor
    memory: torch.Tensor
    log_length: torch.Tensor


class DefectNet(nn.Module):
    """The whole defect model; see the module docstring."""

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        _, w2, w3, w4 = cfg.widths
        self.encoder = Encoder(cfg.input_size_px, cfg.widths)
        self.seg = SegHead(cfg.widths)
        # Region-pooled features at strides 16, 8 and 4 (the finer ones see a crack's
        # jagged branches against a scratch's smooth line), the mean features, score, map stats.
        pooled = 2 * w4 + w3 + w2 + 1 + MAP_STATS
        self.type_head = nn.Sequential(
            nn.Linear(pooled, 128), nn.ReLU(inplace=True), nn.Linear(128, cfg.n_types)
        )
        # The size head: the main defect's length, learned against the masks' lengths
        # (the map's thresholded extent runs short on thin lines and long on soft spots).
        size_out = nn.Linear(64, 1)
        nn.init.constant_(size_out.bias, 3.5)  # e^3.5 = 33 px: a typical defect's length
        self.size_head = nn.Sequential(nn.Linear(pooled, 64), nn.ReLU(inplace=True), size_out)
        self.to_memory = nn.Linear(w4 + 3, cfg.d_model)
        self.to_global = nn.Linear(pooled, cfg.d_model)
        self.memory_pos = nn.Parameter(torch.zeros(1, cfg.memory_len, cfg.d_model))
        self.memory_norm = nn.LayerNorm(cfg.d_model)
        # Training-only probe: the global memory token must tell the place (9 cells)
        # and size class (3) of the map's main anomaly, so the decoder can read them.
        self.fact_head = nn.Linear(cfg.d_model, FACT_LOCATIONS + FACT_SIZES)
        self.decoder = ExplainDecoder(
            cfg.vocab_size,
            cfg.max_len,
            cfg.d_model,
            cfg.n_heads,
            cfg.n_layers,
            cfg.ff_dim,
            cfg.n_types,
        )
        nn.init.normal_(self.memory_pos, std=0.02)

    def detect(self, x: torch.Tensor) -> DetectOutput:
        """Run the in-cycle heads on normalized images ``(N, 1, S, S)``."""
        f4, f8, f16 = self.encoder(x)
        logits = self.seg(f4, f8, f16)
        prob = torch.sigmoid(logits)
        n = x.shape[0]
        top = torch.topk(prob.reshape(n, -1), self.cfg.top_k, dim=1).values
        score = top.mean(dim=1)
        # The map steers the pooling and the memory but is not taught through them:
        # the segmentation head learns only from masks.
        cell_logits = F.max_pool2d(logits.detach(), 4)
        cell_prob = torch.sigmoid(cell_logits).flatten(1)
        feats = f16.flatten(2)  # (N, C, L)
        weights = torch.softmax(cell_logits.flatten(1), dim=1)
        attended = torch.einsum("ncl,nl->nc", feats, weights)
        weights8 = torch.softmax(F.max_pool2d(logits.detach(), 2).flatten(1), dim=1)
        att8 = torch.einsum("ncl,nl->nc", f8.flatten(2), weights8)
        weights4 = torch.softmax(logits.detach().flatten(1), dim=1)
        att4 = torch.einsum("ncl,nl->nc", f4.flatten(2), weights4)
        stats = map_stats(prob.detach(), self.encoder.coords4)
        pooled = torch.cat(
            [attended, att8, att4, feats.mean(dim=2), score.detach()[:, None], stats], dim=1
        )
        type_logits = self.type_head(pooled)
        log_length = self.size_head(pooled)[:, 0]
        coords = self.encoder.coords16.flatten(2).transpose(1, 2).expand(n, -1, -1)
        tokens = torch.cat([feats.transpose(1, 2), cell_prob[:, :, None], coords], dim=2)
        glob = self.to_global(pooled)[:, None]
        memory = torch.cat([glob, self.to_memory(tokens)], dim=1) + self.memory_pos
        return DetectOutput(logits, score, type_logits, self.memory_norm(memory), log_length)

    def forward(self, x: torch.Tensor) -> DetectOutput:
        """Same as ``detect``."""
        return self.detect(x)

    def upsampled_map(self, map_logits: torch.Tensor) -> torch.Tensor:
        """Anomaly probabilities at the input size ``(N, 1, S, S)`` from stride-4 logits."""
        size = (self.cfg.input_size_px, self.cfg.input_size_px)
        return torch.sigmoid(
            F.interpolate(map_logits, size=size, mode="bilinear", align_corners=False)
        )
