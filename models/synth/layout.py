"""The designed features of a part family, recorded as one per-pixel affine map.

Features (holes, pads, ribs, stitches) sit at the same place on every part of
a family; only the material texture under them is random. Painting a feature
is affine in the pixel it covers (``x -> x (1 - a) + v a`` to lay material
over it, ``x -> x + c`` to shade it), so the whole layout composes to
``surface = texture * gain + offset``. That map is computed once per family,
resolution and set of left-out features, and cached; rendering a part then
costs one multiply-add over the texture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.synth.raster import BoolImage, FloatImage, Window

Removable = tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class Footprint:
    """Pixels one stroke of a feature group covers by at least half, inside its window."""

    rows: slice
    cols: slice
    mask: BoolImage


@dataclass(slots=True)
class LayoutCanvas:
    """Records feature strokes as an affine map; strokes of ``skip`` groups are left out.

    Positions and lengths are given on the 28 mm reference layout and scaled by
    ``scale`` to the real part, then converted to pixels with ``mm_per_px``.
    """

    size_px: int
    mm_per_px: float
    scale: float
    skip: frozenset[str] = frozenset()
    gain: FloatImage = field(init=False)
    offset: FloatImage = field(init=False)
    footprints: dict[str, list[Footprint]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.gain = np.ones((self.size_px, self.size_px), dtype=np.float32)
        self.offset = np.zeros((self.size_px, self.size_px), dtype=np.float32)

    def px(self, value_mm: float) -> float:
        """A length on the 28 mm reference layout, in pixels of this canvas."""
        return value_mm * self.scale / self.mm_per_px

    def at(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """A position on the 28 mm reference layout, in pixel coordinates of this canvas."""
        return self.px(x_mm) - 0.5, self.px(y_mm) - 0.5

    def paint(
        self, win: Window, coverage: FloatImage, value: float, group: str | None = None
    ) -> None:
        """Lay material of gray level ``value`` over the window with ``coverage``."""
        if self._record(win, coverage, group):
            keep = 1.0 - coverage
            self.gain[win.rows, win.cols] *= keep
            off = self.offset[win.rows, win.cols]
            self.offset[win.rows, win.cols] = off * keep + value * coverage

    def add(
        self, win: Window, coverage: FloatImage, amount: float, group: str | None = None
    ) -> None:
        """Add ``amount * coverage`` gray levels (shading, highlights)."""
        if self._record(win, coverage, group):
            self.offset[win.rows, win.cols] += coverage * amount

    def _record(self, win: Window, coverage: FloatImage, group: str | None) -> bool:
        """Note the stroke's footprint; True when the stroke is to be painted."""
        if win.empty:
            return False
        if group is not None:
            fp = Footprint(win.rows, win.cols, np.abs(coverage) >= 0.5)
            self.footprints.setdefault(group, []).append(fp)
        return group not in self.skip


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """A family's features at one resolution: ``surface = texture * gain + offset``.

    ``removable`` lists the feature-group sets a ``missing_feature`` defect may
    take away (one set per defect: one pad, a run of four stitches ...).
    ``footprints`` maps each group to its strokes' footprints.
    """

    gain: FloatImage
    offset: FloatImage
    footprints: dict[str, list[Footprint]]
    removable: Removable

    def group_mask(self, groups: tuple[str, ...]) -> BoolImage:
        """Full-size boolean mask of the pixels covered by ``groups``."""
        mask = np.zeros(self.gain.shape, dtype=bool)
        for g in groups:
            for fp in self.footprints.get(g, []):
                mask[fp.rows, fp.cols] |= fp.mask
        return mask
