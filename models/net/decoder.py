"""The explanation decoder: a tiny pre-norm transformer over a controlled vocabulary.

It reads token ids and cross-attends to a memory of image tokens (encoder
features plus the anomaly map, one token per stride-16 cell, plus a global
token) and of three fact tokens: the structured heads' defect type, the main
region's grid cell and the size class (``facts``, ids; see ``ExplainDecoder``),
so the sentence is grounded in what the verdict rests on. Attention is written
with plain matmuls so it exports to ONNX and TensorRT without special operators.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from models.graphs import NO_LOCATION, NO_SIZE


class Attention(nn.Module):
    """Multi-head attention of ``(N, Tq, d)`` queries over ``(N, Tk, d)`` keys/values."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def forward(
        self, x: torch.Tensor, ctx: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``bias`` (``(Tq, Tk)``, added to the scores) masks with ``-inf``-like values."""
        n, tq, d = x.shape
        tk = ctx.shape[1]
        h, dh = self.n_heads, d // self.n_heads
        q = self.q(x).reshape(n, tq, h, dh).transpose(1, 2)
        k, v = self.kv(ctx).reshape(n, tk, 2, h, dh).permute(2, 0, 3, 1, 4)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(dh))
        if bias is not None:
            scores = scores + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        result: torch.Tensor = self.proj(out.transpose(1, 2).reshape(n, tq, d))
        return result


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the memory, feed-forward; each pre-norm."""

    def __init__(self, d_model: int, n_heads: int, ff_dim: int) -> None:
        super().__init__()
        self.n1, self.n2, self.n3 = (
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
            nn.LayerNorm(d_model),
        )
        self.self_attn = Attention(d_model, n_heads)
        self.cross_attn = Attention(d_model, n_heads)
        self.ff = nn.Sequential(nn.Linear(d_model, ff_dim), nn.GELU(), nn.Linear(ff_dim, d_model))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
        """One layer over ``x`` ``(N, T, d)``."""
        h = self.n1(x)
        x = x + self.self_attn(h, h, causal)
        x = x + self.cross_attn(self.n2(x), memory)
        out: torch.Tensor = x + self.ff(self.n3(x))
        return out


class ExplainDecoder(nn.Module):
    """Token ids ``(N, T)`` + memory ``(N, L, d)`` + facts ``(N, 3)`` -> logits ``(N, T, V)``.

    ``facts`` holds per image the structured heads' type index (``n_types``:
    none), the main region's grid cell (``ALL_LOCATIONS`` index, 9: none) and
    its size class (``SIZE_CLASSES`` index, 3: none); each becomes one memory token.
    """

    causal: torch.Tensor

    def __init__(
        self,
        vocab_size: int,
        max_len: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        ff_dim: int,
        n_types: int,
    ) -> None:
        super().__init__()
        self.fact_type = nn.Embedding(n_types + 1, d_model)
        self.fact_location = nn.Embedding(NO_LOCATION + 1, d_model)
        self.fact_size = nn.Embedding(NO_SIZE + 1, d_model)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.zeros(1, max_len, d_model))
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, ff_dim) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        causal = torch.triu(torch.full((max_len, max_len), -1e4), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)
        nn.init.normal_(self.pos, std=0.02)

    def with_facts(self, memory: torch.Tensor, facts: torch.Tensor) -> torch.Tensor:
        """``memory`` with the three fact tokens of ``facts`` (int ``(N, 3)``) appended."""
        f = facts.to(torch.int64)
        tokens = torch.stack(
            [self.fact_type(f[:, 0]), self.fact_location(f[:, 1]), self.fact_size(f[:, 2])], dim=1
        )
        return torch.cat([memory, tokens], dim=1)

    def forward(
        self, tokens: torch.Tensor, memory: torch.Tensor, facts: torch.Tensor
    ) -> torch.Tensor:
        """Logits for the token after each position (position ``t`` predicts ``t + 1``)."""
        memory = self.with_facts(memory, facts)
        t = tokens.shape[1]
        x = self.embed(tokens) + self.pos[:, :t]
        causal = self.causal[:t, :t]
        for layer in self.layers:
            x = layer(x, memory, causal)
        out: torch.Tensor = self.head(self.norm(x))
        return out

    def loss(
        self, tokens: torch.Tensor, memory: torch.Tensor, facts: torch.Tensor, pad_id: int = 0
    ) -> torch.Tensor:
        """Teacher-forced cross-entropy of ``tokens`` (``BOS ... EOS PAD*``), padding ignored."""
        logits = self.forward(tokens[:, :-1], memory, facts)
        target = tokens[:, 1:]
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=pad_id
        )
