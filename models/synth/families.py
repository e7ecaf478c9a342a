"""The part families: a random material texture under a fixed layout of designed features.

Layouts are drawn on a 28 mm reference part and scale with ``part_size_mm``;
textures keep their physical scale (mm). Every family has removable features,
so ``missing_feature`` applies to all of them:

===================  ==========================================  ===============================
family               texture                                     removable features
===================  ==========================================  ===============================
``brushed_metal``    horizontal brushing streaks, soft sheen      4 chamfered mounting holes
``textile``          plain weave (registered to the cut), slub    a run of 4 seam stitches
``moulded_plastic``  fine matte grain, mottling                   centre boss, either of two ribs
``printed_board``    solder mask with glass-fibre weave           8 SOIC pads, 6 two-pad parts
``cast_aluminium``   sand-cast grain, mottling                    3 bolt bosses
===================  ==========================================  ===============================

Gray levels are before the per-instance lighting, optics and sensor noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from models.synth import raster
from models.synth.layout import Layout, LayoutCanvas, Removable
from models.synth.raster import FloatImage, f32
from models.synth.textures import low_frequency, smooth_field

_LIGHT = np.array([-1.0, -1.0]) / np.sqrt(2.0)  # light from the upper left (image y grows down)


@dataclass(frozen=True, slots=True)
class Family:
    """How one family is drawn.

    ``texture(rng, size_px, mm_per_px)`` returns the random material (gray
    levels); ``layout(canvas)`` paints the fixed features and returns the
    removable groups; ``scratch_bright_p`` is the chance a scratch shows bright.
    """

    texture: Callable[[np.random.Generator, int, float], FloatImage]
    layout: Callable[[LayoutCanvas], Removable]
    scratch_bright_p: float


def _weave(size_px: int, mm_per_px: float, period_mm: float) -> tuple[FloatImage, FloatImage]:
    u = (2.0 * np.pi * (np.arange(size_px) + 0.5) * mm_per_px / period_mm).astype(np.float32)
    return np.sin(u), np.cos(2.0 * u)


def _white(rng: np.random.Generator, s: int) -> FloatImage:
    return rng.standard_normal((s, s), dtype=np.float32)


def _metal_texture(rng: np.random.Generator, s: int, m: float) -> FloatImage:
    streak = smooth_field(rng, s, 0.03 / m, 1.5 / m)
    return f32(150.0 + 4.0 * streak + 1.5 * _white(rng, s) + 3.0 * low_frequency(rng, s, 3))


def _metal_layout(c: LayoutCanvas) -> Removable:
    groups = []
    for k, (x, y) in enumerate([(4.5, 4.5), (23.5, 4.5), (4.5, 23.5), (23.5, 23.5)]):
        cx, cy = c.at(x, y)
        c.paint(*raster.disk(c.size_px, cx, cy, c.px(1.7)), 205.0, f"hole_{k}")
        c.paint(*raster.disk(c.size_px, cx, cy, c.px(1.3)), 45.0, f"hole_{k}")
        groups.append((f"hole_{k}",))
    return tuple(groups)


def _textile_texture(rng: np.random.Generator, s: int, m: float) -> FloatImage:
    sn, cs = _weave(s, m, 1.0)
    weave = 0.6 * sn[None, :] * sn[:, None] + 0.2 * (cs[None, :] + cs[:, None])
    warp = smooth_field(rng, s, 2.0 / m, 0.05 / m)
    weft = smooth_field(rng, s, 0.05 / m, 2.0 / m)
    return f32(
        120.0
        + 9.0 * weave
        + 2.0 * (warp + weft)
        + 1.5 * _white(rng, s)
        + 2.0 * low_frequency(rng, s, 3)
    )


def _textile_layout(c: LayoutCanvas) -> Removable:
    stitch, gap, lo, hi = 1.2, 0.6, 2.5, 25.5
    removable: list[tuple[str, ...]] = []
    for side in range(4):
        names: list[str] = []
        t = lo + 0.5
        while t + stitch <= hi - 0.5:
            a, b = t, t + stitch
            ends = [[(a, lo), (b, lo)], [(hi, a), (hi, b)], [(b, hi), (a, hi)], [(lo, b), (lo, a)]]
            pts = np.array([c.at(x, y) for x, y in ends[side]], dtype=np.float64)
            names.append(f"stitch_{side}_{len(names)}")
            c.paint(*raster.stroke(c.size_px, pts, c.px(0.18)), 178.0, names[-1])
            t += stitch + gap
        removable += [tuple(names[i : i + 4]) for i in range(len(names) - 3)]
    return tuple(removable)


def _plastic_texture(rng: np.random.Generator, s: int, m: float) -> FloatImage:
    grain = smooth_field(rng, s, 0.08 / m, 0.08 / m)
    return f32(170.0 + 3.0 * grain + 1.5 * _white(rng, s) + 2.5 * low_frequency(rng, s, 5))


def _rim(
    c: LayoutCanvas, cx: float, cy: float, r_out: float, r_in: float, amount: float, group: str
) -> None:
    """Shade the annulus ``r_in..r_out`` as lit from the upper left (``amount`` at full light)."""
    win, outer = raster.disk(c.size_px, cx, cy, r_out)
    inner = np.zeros_like(outer)
    # The inner disk has a smaller window; paste it into the outer one before subtracting.
    iw, iv = raster.disk(c.size_px, cx, cy, r_in)
    r0, c0 = iw.rows.start - win.rows.start, iw.cols.start - win.cols.start
    inner[r0 : r0 + iv.shape[0], c0 : c0 + iv.shape[1]] = iv
    d = np.sqrt((win.xs - cx) ** 2 + (win.ys - cy) ** 2) + 1e-6
    lit = ((win.xs - cx) * _LIGHT[0] + (win.ys - cy) * _LIGHT[1]) / d
    c.add(win, ((outer - inner) * lit).astype(np.float32), amount, group)


def _plastic_layout(c: LayoutCanvas) -> Removable:
    s = c.size_px
    for x, y in [(6.0, 6.0), (22.0, 22.0)]:  # ejector pin marks: faint, never removable
        c.add(*raster.disk(s, *c.at(x, y), c.px(0.8)), -8.0)
    cx, cy = c.at(14.0, 14.0)
    c.add(*raster.disk(s, cx, cy, c.px(3.5)), 12.0, "boss")
    _rim(c, cx, cy, c.px(3.5), c.px(3.1), 35.0, "boss")
    c.paint(*raster.disk(s, cx, cy, c.px(1.4)), 60.0, "boss")
    # The cored hole's wall faces away from the light on the lit side, so it is dark there.
    _rim(c, cx, cy, c.px(1.4), c.px(1.0), -20.0, "boss")
    for name, (x0, y0, x1, y1), horizontal in [
        ("rib_a", (6.0, 21.6, 22.0, 22.8), True),
        ("rib_b", (21.6, 5.0, 22.8, 17.0), False),
    ]:
        (px0, py0), (px1, py1) = c.at(x0, y0), c.at(x1, y1)
        c.add(*raster.rect(s, px0, py0, px1, py1), 10.0, name)
        e = c.px(0.4)
        lit_edge = (px0, py0, px1, py0 + e) if horizontal else (px0, py0, px0 + e, py1)
        dark_edge = (px0, py1, px1, py1 + e) if horizontal else (px1, py0, px1 + e, py1)
        c.add(*raster.rect(s, *lit_edge), 40.0, name)
        c.add(*raster.rect(s, *dark_edge), -40.0, name)
    return (("boss",), ("rib_a",), ("rib_b",))


def _board_texture(rng: np.random.Generator, s: int, m: float) -> FloatImage:
    sn, _ = _weave(s, m, 0.5)
    return f32(
        95.0
        + 2.0 * sn[None, :] * sn[:, None]
        + 2.0 * smooth_field(rng, s, 0.1 / m, 0.1 / m)
        + 1.5 * _white(rng, s)
        + 2.0 * low_frequency(rng, s, 3)
    )


def _board_layout(c: LayoutCanvas) -> Removable:
    s = c.size_px
    left = [
        [(10.5, 12.095), (8.5, 12.095), (6.8, 10.4), (6.8, 7.0)],
        [(10.5, 15.905), (8.5, 15.905), (6.8, 17.6), (6.8, 21.0)],
        [(10.5, 13.365), (2.0, 13.365)],
        [(10.5, 14.635), (2.0, 14.635)],
        [(13.2, 5.5), (9.0, 5.5), (9.0, 3.0)],
        [(13.2, 22.5), (9.0, 22.5), (9.0, 25.0)],
    ]
    for line in left + [[(28.0 - x, y) for x, y in line] for line in left]:
        pts = np.array([c.at(x, y) for x, y in line], dtype=np.float64)
        c.paint(*raster.stroke(s, pts, c.px(0.15)), 110.0)
    removable: list[tuple[str, ...]] = []
    offsets = [(dx, dy) for dx in (-2.7, 2.7) for dy in (-1.905, -0.635, 0.635, 1.905)]
    for k, (dx, dy) in enumerate(offsets):
        x, y = 14.0 + dx, 14.0 + dy
        c.paint(
            *raster.rect(s, *c.at(x - 0.8, y - 0.3), *c.at(x + 0.8, y + 0.3)), 200.0, f"pad_{k}"
        )
        removable.append((f"pad_{k}",))
    for k, (x, y) in enumerate([(6, 7), (22, 7), (6, 21), (22, 21), (14, 5.5), (14, 22.5)]):
        for sx in (-0.8, 0.8):
            corners = (*c.at(x + sx - 0.5, y - 0.55), *c.at(x + sx + 0.5, y + 0.55))
            c.paint(*raster.rect(s, *corners), 200.0, f"comp_{k}")
        removable.append((f"comp_{k}",))
    for x, y in [(3.0, 25.0), (25.0, 3.0)]:  # fiducials: copper dot in a mask clearance
        c.paint(*raster.disk(s, *c.at(x, y), c.px(1.0)), 80.0)
        c.paint(*raster.disk(s, *c.at(x, y), c.px(0.5)), 205.0)
    outline = [(12.2, 11.2), (15.8, 11.2), (15.8, 16.8), (12.2, 16.8), (12.2, 11.2)]
    pts = np.array([c.at(x, y) for x, y in outline], dtype=np.float64)
    c.paint(*raster.stroke(s, pts, c.px(0.08)), 220.0)
    c.paint(*raster.disk(s, *c.at(12.8, 11.8), c.px(0.2)), 220.0)
    return tuple(removable)


def _cast_texture(rng: np.random.Generator, s: int, m: float) -> FloatImage:
    sand = smooth_field(rng, s, 0.04 / m, 0.04 / m)
    mottle = smooth_field(rng, s, 0.5 / m, 0.5 / m)
    return f32(
        140.0 + 5.0 * sand + 3.0 * mottle + 1.5 * _white(rng, s) + 3.0 * low_frequency(rng, s, 4)
    )


def _cast_layout(c: LayoutCanvas) -> Removable:
    s = c.size_px
    cx, cy = c.at(14.0, 14.0)
    c.paint(*raster.disk(s, cx, cy, c.px(4.0)), 185.0)  # machined spot face
    c.paint(*raster.disk(s, cx, cy, c.px(2.2)), 40.0)  # the bore through it
    removable: list[tuple[str, ...]] = []
    for k, angle in enumerate(np.deg2rad([90.0, 210.0, 330.0])):
        name = f"boss_{k}"
        bx, by = c.at(14.0 + 9.0 * np.cos(angle), 14.0 - 9.0 * np.sin(angle))
        c.add(*raster.disk(s, bx, by, c.px(2.0)), 14.0, name)
        _rim(c, bx, by, c.px(2.0), c.px(1.6), 30.0, name)
        removable.append((name,))
    return tuple(removable)


FAMILIES: dict[str, Family] = {
    "brushed_metal": Family(_metal_texture, _metal_layout, 0.7),
    "textile": Family(_textile_texture, _textile_layout, 0.5),
    "moulded_plastic": Family(_plastic_texture, _plastic_layout, 0.75),
    "printed_board": Family(_board_texture, _board_layout, 0.8),
    "cast_aluminium": Family(_cast_texture, _cast_layout, 0.7),
}
"""Every part family by name."""


@lru_cache(maxsize=64)
def layout_for(
    family: str, size_px: int, mm_per_px: float, scale: float, skip: frozenset[str] = frozenset()
) -> Layout:
    """The cached, read-only layout of ``family`` with the feature groups in ``skip`` left out."""
    canvas = LayoutCanvas(size_px, mm_per_px, scale, skip)
    removable = FAMILIES[family].layout(canvas)
    canvas.gain.setflags(write=False)
    canvas.offset.setflags(write=False)
    return Layout(canvas.gain, canvas.offset, canvas.footprints, removable)
