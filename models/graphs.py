"""The two graphs of a model package: their files, input and output names and the facts encoding.

- ``detect.onnx``: ``image`` float32 ``(N, 1, S, S)`` (normalized, see the
  manifest) -> ``anomaly_map`` float32 ``(N, S, S)`` pixel probabilities,
  ``score`` float32 ``(N,)`` image score in 0..1, ``type_probs`` float32
  ``(N, T)``, ``memory`` float32 ``(N, L, d)`` for the explanation,
  ``length_px`` float32 ``(N,)`` the size head's length of the main defect (pixels).
- ``explain.onnx``: one decoder step over a fixed window, ``memory``,
  ``tokens`` int32 ``(N, max_len)`` and ``facts`` int32 ``(N, 3)``
  -> ``logits`` float32 ``(N, max_len, V)``;
  the logits at position ``t`` give token ``t + 1``. Greedy decoding calls it
  up to ``max_len - 1`` times (the window is fixed so TensorRT can build one
  static-length engine).

The batch axis is dynamic in both. ``facts`` holds per image the type head's
type index (``T``: none), the main region's grid cell (an index into
``models.data.geometry.ALL_LOCATIONS``, ``NO_LOCATION``: none) and its size
class (an index into ``SIZE_CLASSES``, ``NO_SIZE``: none).

``models.export`` writes the graphs, ``models.runtime`` runs and checks them
and ``models.net`` builds the network behind them. This module imports
nothing, so a runtime can check a package's graphs without loading torch.
"""

from __future__ import annotations

DETECT_FILE = "detect.onnx"
EXPLAIN_FILE = "explain.onnx"
DETECT_INPUTS = ("image",)
DETECT_OUTPUTS = ("anomaly_map", "score", "type_probs", "memory", "length_px")
EXPLAIN_INPUTS = ("memory", "tokens", "facts")
EXPLAIN_OUTPUTS = ("logits",)

NO_LOCATION, NO_SIZE = 9, 3
"""The fact ids meaning "no region": after the 9 grid cells and the 3 size classes."""
