"""Deterministic synthetic parts and defects with exact ground truth.

The API, in the order a user meets it:

- ``PartSpec(family, seed, defect=None, part_size_mm=28.0)``: one part.
- ``sample_part_spec(rng, family, defect_rate, kinds=None, part_size_mm=28.0) -> PartSpec``.
- ``render_part(spec, mm_per_px) -> RenderedPart``: ``image`` uint8 ``(S, S)``,
  ``mask`` (defect pixels), ``part_mask``, ``truth: DefectTruth | None``;
  deterministic and cached.
- ``render_scene(part, frame_hw, center_px, belt_level=30, noise_seed=None)``
  ``-> (frame uint8 (H, W), defect mask (H, W))``: the part on the belt.

Families are listed in ``FAMILIES`` (see ``models.synth.families``), defect
kinds in ``DEFECT_KINDS`` (see ``models.synth.defects``). Only numpy and
scipy.ndimage are used, so the simulator runs anywhere the node does. Data
sets of these parts in the MVTec AD layout are written by
``models.data.synthset.write_synth``.
"""

from models.synth.defects import DEFECT_KINDS, DefectKind
from models.synth.families import FAMILIES
from models.synth.parts import (
    VISIBLE_MIN_AREA_MM2,
    VISIBLE_MIN_CONTRAST_GRAY,
    DefectTruth,
    PartSpec,
    RenderedPart,
    render_part,
    sample_part_spec,
)
from models.synth.scene import part_origin, render_scene

FAMILY_NAMES: tuple[str, ...] = tuple(FAMILIES)
"""The names of every part family."""

__all__ = [
    "DEFECT_KINDS",
    "FAMILIES",
    "FAMILY_NAMES",
    "VISIBLE_MIN_AREA_MM2",
    "VISIBLE_MIN_CONTRAST_GRAY",
    "DefectKind",
    "DefectTruth",
    "PartSpec",
    "RenderedPart",
    "part_origin",
    "render_part",
    "render_scene",
    "sample_part_spec",
]
