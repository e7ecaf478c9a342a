"""The shape of the defect network, stored in the model package so a loader rebuilds it exactly."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True, slots=True)
class NetConfig:
    """Sizes of ``DefectNet``.

    ``input_size_px`` is the square input side (pixels, a multiple of 16);
    ``widths`` the channels of the encoder's patch stem (stride 4) and of its
    stages at strides 4, 8 and 16;
    ``d_model``, ``n_heads``, ``n_layers``, ``ff_dim`` size the explanation
    decoder; ``vocab_size`` and ``max_len`` (tokens, BOS and EOS included) its
    vocabulary and sentences; ``n_types`` the defect-type classes; ``top_k``
    the number of anomaly-map pixels (at stride 4) averaged into the image score.
    """

    input_size_px: int = 256
    widths: tuple[int, int, int, int] = (16, 24, 48, 96)
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 2
    ff_dim: int = 256
    vocab_size: int = 64
    max_len: int = 16
    n_types: int = 6
    top_k: int = 16

    def __post_init__(self) -> None:
        if self.input_size_px % 16 or self.input_size_px < 32:
            raise ValueError(f"input_size_px must be a multiple of 16, >= 32: {self.input_size_px}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.vocab_size, self.max_len, self.n_types, self.top_k, *self.widths) < 1:
            raise ValueError(f"every size must be >= 1: {self}")

    @property
    def memory_len(self) -> int:
        """Tokens the decoder cross-attends to: one per stride-16 cell plus one global token."""
        side = self.input_size_px // 16
        return side * side + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Rebuild from ``to_dict``'s output. Raises ``ValueError`` for unknown or bad keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network keys {sorted(unknown)}")
        values = dict(data)
        if "widths" in values:
            values["widths"] = tuple(int(w) for w in values["widths"])
        return cls(**values)
