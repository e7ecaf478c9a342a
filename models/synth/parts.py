"""One synthetic part: its spec, its deterministic rendering, and the defect's ground truth.

``render_part`` is a pure function of ``(spec, mm_per_px)``: the same inputs
always give the same pixels. Independent random streams are derived from the
seed for the texture, the defect geometry, the instance's lighting and the
sensor noise, so a part with a defect has exactly the texture of the same seed
without one. Results are cached (and read-only), because a simulated camera
renders the same part again every time it is triggered.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.synth.defects import DEFECT_KINDS, PAINTERS, DefectKind, Surface
from models.synth.families import FAMILIES, layout_for
from models.synth.raster import BoolImage, FloatImage, rounded_square_sdf

VISIBLE_MIN_AREA_MM2 = 0.2
"""A defect counts as visible when its mask covers at least this area ..."""
VISIBLE_MIN_CONTRAST_GRAY = 15.0
"""... and its mean absolute change over the mask is at least this many gray levels."""

_REFERENCE_MM = 28.0  # the family layouts are drawn on a part of this side
_CORNER_MM = 2.0
_BEVEL_MM = 0.4
_PSF_SIGMA_PX = 0.6


@dataclass(frozen=True, slots=True)
class PartSpec:
    """Everything that defines one synthetic part.

    ``family`` is a key of ``FAMILIES``; ``defect`` is ``None`` for a good part;
    ``part_size_mm`` is the side of the square part (its layout scales with it);
    ``defect_seed`` draws the defect apart from the texture (``None``: from ``seed``).
    """

    family: str
    seed: int
    defect: DefectKind | None = None
    part_size_mm: float = 28.0
    defect_seed: int | None = None
    """Draws the defect from its own seed: parts that share it carry the same defect at
    the same place on their own textures (a worn tool marking part after part)."""
    count: int = 1
    """How many defects of ``defect``'s kind the part carries (1 to 3; not
    ``missing_feature``); ``DefectTruth`` then measures their union."""


@dataclass(frozen=True, slots=True)
class DefectTruth:
    """Ground truth for the defect on a rendered part, measured on its mask.

    ``bbox_px`` is ``(x0, y0, x1, y1)`` with exclusive upper bounds and
    ``centroid_px`` is ``(x, y)``. ``length_mm`` is the mask's extent along its
    principal axis and ``width_mm`` its area divided by that length.
    ``contrast_gray`` is the mean signed change against the same part without the
    defect and ``abs_contrast_gray`` the mean absolute change (gray levels).
    ``visible`` is ``area_mm2 >= VISIBLE_MIN_AREA_MM2`` and
    ``abs_contrast_gray >= VISIBLE_MIN_CONTRAST_GRAY``.
    """

    kind: DefectKind
    bbox_px: tuple[int, int, int, int]
    centroid_px: tuple[float, float]
    area_px: int
    area_mm2: float
    length_mm: float
    width_mm: float
    contrast_gray: float
    abs_contrast_gray: float
    visible: bool


@dataclass(frozen=True, slots=True, eq=False)
class RenderedPart:
    """One rendered part with its masks and ground truth; arrays are read-only.

    ``image`` is uint8 ``(S, S)`` gray levels (0 outside the part), ``mask`` the
    bool ``(S, S)`` defect pixels, ``part_mask`` the bool ``(S, S)`` part itself
    (a rounded square), ``truth`` the defect's ground truth (``None`` when good).
    """

    spec: PartSpec
    mm_per_px: float
    image: npt.NDArray[np.uint8]
    mask: BoolImage
    part_mask: BoolImage
    truth: DefectTruth | None


def sample_part_spec(
    rng: np.random.Generator,
    family: str,
    defect_rate: float,
    kinds: Sequence[DefectKind] | None = None,
    part_size_mm: float = 28.0,
) -> PartSpec:
    """Draw a part of ``family`` that carries a defect with probability ``defect_rate``.

    The defect kind is drawn uniformly from ``kinds`` (default: all kinds).
    Raises ``ValueError`` for an unknown family or kind, a rate outside [0, 1]
    or an empty ``kinds``.
    """
    _check_family(family)
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate must be in [0, 1], got {defect_rate}")
    choices = tuple(DEFECT_KINDS if kinds is None else kinds)
    if not choices or any(k not in DEFECT_KINDS for k in choices):
        raise ValueError(f"kinds must be a non-empty subset of {DEFECT_KINDS}, got {kinds}")
    seed = int(rng.integers(0, 2**31 - 1))
    defect = choices[int(rng.integers(len(choices)))] if rng.random() < defect_rate else None
    return PartSpec(family=family, seed=seed, defect=defect, part_size_mm=part_size_mm)


def render_part(spec: PartSpec, mm_per_px: float) -> RenderedPart:
    """Render ``spec`` at ``mm_per_px`` into an ``S x S`` image, ``S = round(size / mm_per_px)``.

    Deterministic and cached. Raises ``ValueError`` for an unknown family or
    defect kind, a non-positive scale, or a part that would be smaller than
    32 px or larger than 4096 px.
    """
    _check_family(spec.family)
    if spec.defect is not None and spec.defect not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {spec.defect!r}; expected one of {DEFECT_KINDS}")
    if not 1 <= spec.count <= 3 or (spec.count > 1 and spec.defect == "missing_feature"):
        raise ValueError(f"count must be 1..3 (1 for missing_feature), got {spec.count}")
    if not mm_per_px > 0 or not spec.part_size_mm > 0:
        raise ValueError(
            f"mm_per_px and part_size_mm must be > 0, got {mm_per_px}, {spec.part_size_mm}"
        )
    size_px = round(spec.part_size_mm / mm_per_px)
    if not 32 <= size_px <= 4096:
        raise ValueError(f"part would be {size_px} px; expected 32..4096 px")
    return _render(spec, float(mm_per_px))


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown part family {family!r}; expected one of {sorted(FAMILIES)}")


def _streams(spec: PartSpec) -> list[np.random.Generator]:
    # crc32, not hash(): str hashes are salted per process and would break determinism.
    key = [spec.seed & 0xFFFFFFFF, spec.seed >> 32, zlib.crc32(spec.family.encode())]
    return [np.random.default_rng([*key, k]) for k in range(4)]


@lru_cache(maxsize=8)
def _geometry(size_px: int, mm_per_px: float, corner_mm: float) -> tuple[BoolImage, FloatImage]:
    """The part mask and the edge bevel's shading factor (dark rim where light misses)."""
    sdf = rounded_square_sdf(size_px, mm_per_px, corner_mm)
    inside = sdf < 0
    bevel = (1.0 - 0.25 * np.clip(1.0 + sdf / _BEVEL_MM, 0.0, 1.0)).astype(np.float32)
    inside.setflags(write=False)
    bevel.setflags(write=False)
    return inside, bevel


@lru_cache(maxsize=64)
def _render(spec: PartSpec, mm_per_px: float) -> RenderedPart:
    tex_rng, defect_rng, light_rng, noise_rng = _streams(spec)
    if spec.defect_seed is not None:
        key = [spec.defect_seed & 0xFFFFFFFF, zlib.crc32(spec.family.encode()), 1]
        defect_rng = np.random.default_rng(key)
    size_px = round(spec.part_size_mm / mm_per_px)
    scale = spec.part_size_mm / _REFERENCE_MM
    family = FAMILIES[spec.family]
    texture = family.texture(tex_rng, size_px, mm_per_px)
    layout = layout_for(spec.family, size_px, mm_per_px, scale)
    surface = Surface(spec.family, texture, layout, scale, family.scratch_bright_p)
    good = texture * layout.gain + layout.offset
    part_mask, bevel = _geometry(size_px, mm_per_px, _CORNER_MM * scale)

    img = good
    mask = np.zeros((size_px, size_px), dtype=bool)
    if spec.defect is not None:
        img = good.copy()
        for _ in range(spec.count):
            PAINTERS[spec.defect](defect_rng, img, surface, mm_per_px, spec.part_size_mm, mask)
        mask &= part_mask

    # Each instance is lit a little differently: gain, offset and a soft gradient.
    gain = light_rng.uniform(0.96, 1.04)
    offset = light_rng.uniform(-3.0, 3.0)
    gx, gy = light_rng.uniform(-3.0, 3.0, size=2)
    ramp = np.linspace(-1.0, 1.0, size_px, dtype=np.float32)
    shade = (gain * bevel).astype(np.float32)
    lit = img * shade + (offset + gx * ramp[None, :] + gy * ramp[:, None])
    lit = ndimage.gaussian_filter(lit, _PSF_SIGMA_PX)
    noise = noise_rng.standard_normal((size_px, size_px), dtype=np.float32)
    lit += noise * (1.0 + 0.005 * np.clip(lit, 0.0, None))
    image = np.clip(np.rint(lit), 0, 255).astype(np.uint8)
    image[~part_mask] = 0

    truth = None
    if spec.defect is not None:
        if not mask.any():  # pragma: no cover - placement keeps every defect on the part
            raise RuntimeError(f"defect of {spec} left no pixels on the part")
        change = ndimage.gaussian_filter((img - good) * shade, _PSF_SIGMA_PX)
        truth = _measure(spec.defect, mask, change, mm_per_px)
    image.setflags(write=False)
    mask.setflags(write=False)
    return RenderedPart(spec, mm_per_px, image, mask, part_mask, truth)


def _measure(
    kind: DefectKind, mask: BoolImage, change: FloatImage, mm_per_px: float
) -> DefectTruth:
    ys, xs = np.nonzero(mask)
    area_px = int(xs.size)
    cx, cy = float(xs.mean()), float(ys.mean())
    length_px = principal_extent_px(xs - cx, ys - cy)
    area_mm2 = area_px * mm_per_px**2
    length_mm = length_px * mm_per_px
    values = change[ys, xs]
    contrast = float(values.mean())
    abs_contrast = float(np.abs(values).mean())
    return DefectTruth(
        kind=kind,
        bbox_px=(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
        centroid_px=(cx, cy),
        area_px=area_px,
        area_mm2=area_mm2,
        length_mm=length_mm,
        width_mm=area_mm2 / length_mm,
        contrast_gray=contrast,
        abs_contrast_gray=abs_contrast,
        visible=area_mm2 >= VISIBLE_MIN_AREA_MM2 and abs_contrast >= VISIBLE_MIN_CONTRAST_GRAY,
    )


def principal_extent_px(dx: npt.NDArray[np.floating], dy: npt.NDArray[np.floating]) -> float:
    """Extent (pixels, end pixels included) of centred points along their principal axis."""
    cov = np.cov(np.stack([dx, dy])) if dx.size > 1 else np.zeros((2, 2))
    _, vecs = np.linalg.eigh(cov)
    major = vecs[:, -1]
    proj = dx * major[0] + dy * major[1]
    return float(proj.max() - proj.min()) + 1.0
