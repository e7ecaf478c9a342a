"""Name a region's defect type from its shape and appearance.

Hand-set rules over the cues ``regions.Blob`` measures, tuned on the synthetic
families (``models.synth``) at 0.125 mm/px and written in millimetres so they
carry to other scales. The names are the synthetic defect kinds; anything the
rules do not recognise is ``UNKNOWN_TYPE``. In order:

1. **missing_feature**: the region lies mostly on a designed feature of the
   template, and the image there shows little of that feature's contrast.
2. **scratch**: thin (mean width at most ~0.8 mm), at least 1.5 mm long,
   narrow across its main axis (under 0.3 of its length) and following one
   smooth curve (pixels within ~0.2 mm RMS of a parabola along the axis).
3. **crack**: darker than good, thin on average, but jagged or branching: it
   fills little of the ellipse its extents span, or zigzags off any curve.
4. **contamination**: a compact blob larger than a spot (>= 7.5 mm² or
   >= 4.2 mm long), or of spot size (>= 4.5 mm²) with a ragged outline.
5. **spot**: a compact, smoothly outlined blob (the ellipse of its extents
   well filled).

``confidence`` is 0.5 at a rule's boundary rising to 0.95 well inside it;
``UNKNOWN_TYPE`` comes with the confidence 0.
"""

from __future__ import annotations

from models.classical.regions import Blob
from models.findings import UNKNOWN_TYPE

_MISSING_OVERLAP = 0.5
_MISSING_PRESENCE = 0.4
_THIN_MM, _THIN_PX = 0.8, 6.0  # regions widen by the smoothing and hysteresis: a few px
_WANDER_MM, _WANDER_PX = 0.21, 1.7
_STRAIGHT_RATIO = 0.3
_CRACK_FILL, _CRACK_RATIO = 0.7, 0.6
_COMPACT_RATIO = 0.4
_RAGGED_FILL = 0.8
_RAGGED_AREA_MM2, _LARGE_AREA_MM2, _LARGE_LENGTH_MM = 4.5, 7.5, 4.2
_SPOT_FILL = 0.7


def _confidence(margin: float) -> float:
    """Map a margin into a rule (0 at its boundary, 1 far inside) to 0.5..0.95."""
    return 0.5 + 0.45 * min(1.0, max(0.0, margin))


def classify(blob: Blob, mm_per_px: float) -> tuple[str, float]:
    """The defect type of ``blob`` and the confidence in it (0..1)."""
    r = blob.region
    if blob.feature_overlap >= _MISSING_OVERLAP and blob.feature_presence <= _MISSING_PRESENCE:
        margin = min(
            (blob.feature_overlap - _MISSING_OVERLAP) / (1.0 - _MISSING_OVERLAP),
            (_MISSING_PRESENCE - blob.feature_presence) / _MISSING_PRESENCE,
        )
        return "missing_feature", _confidence(margin)

    thin = max(_THIN_MM, _THIN_PX * mm_per_px)
    wander = max(_WANDER_MM, _WANDER_PX * mm_per_px)
    ratio = blob.minor_mm / r.length_mm
    long_thin = r.width_mm <= thin and r.length_mm >= 1.5
    if long_thin and ratio <= _STRAIGHT_RATIO and blob.wander_mm <= wander:
        margin = min(1.0 - blob.wander_mm / wander, 1.0 - r.width_mm / thin)
        return "scratch", _confidence(3.0 * margin)
    jagged = blob.fill <= _CRACK_FILL or ratio <= _CRACK_RATIO
    if r.contrast < 0 and r.width_mm <= 1.4 * thin and jagged:
        margin = max(_CRACK_FILL - blob.fill, _CRACK_RATIO - ratio, blob.wander_mm / wander - 1)
        return "crack", _confidence(3.0 * margin)
    if ratio >= _COMPACT_RATIO:
        large = r.area_mm2 >= _LARGE_AREA_MM2 or r.length_mm >= _LARGE_LENGTH_MM
        ragged = blob.fill < _RAGGED_FILL and r.area_mm2 >= _RAGGED_AREA_MM2
        if large or ragged:
            margin = max(r.area_mm2 / _LARGE_AREA_MM2 - 1.0, r.length_mm / _LARGE_LENGTH_MM - 1.0)
            return "contamination", _confidence(3.0 * max(margin, _RAGGED_FILL - blob.fill))
        if blob.fill >= _SPOT_FILL:
            margin = min((blob.fill - _SPOT_FILL) / 0.2, 1.0 - r.area_mm2 / _LARGE_AREA_MM2)
            return "spot", _confidence(margin)
    return UNKNOWN_TYPE, 0.0
