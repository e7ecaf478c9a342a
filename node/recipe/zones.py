"""Where a finding lies on the part, in the recipe's zones and millimetres.

A backend measures regions in image pixels; the recipe speaks in part
millimetres from the part's upper-left corner (its bounding box as the camera
sees it, ``Findings.part_bbox_px``). ``ZoneMap.place`` turns one region into a
``Placement``: its centre in part millimetres, its length, width and area, every
zone its pixels touch (the one holding most of them first), and where it lies
along its main zone ("12 mm from the left end"). A region without its own
pixels (a backend that gives only a box) is tested by its box.

Polygons are tested with the even-odd rule on pixel centres, so a zone edge
that runs through a pixel counts that pixel on the side its centre lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.findings import Region
from node.errors import ConfigError
from node.recipe.settings import ZoneSettings

F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Placement:
    """One finding placed on the part.

    ``x_mm``/``y_mm`` is its centre from the part's upper-left corner;
    ``location`` the backend's coarse grid place ("upper left"), for findings
    outside every zone;
    ``zones`` the names of the zones it touches, the one holding most of its
    pixels first (empty: outside every zone); ``along_mm`` how far its centre
    lies from the ``along_from`` end of its main zone ("left end" of a zone
    wider than tall, else "top end"; 0 and "" outside every zone); ``alongs`` the
    same for every zone in ``zones``, in its order.
    """

    x_mm: float
    y_mm: float
    length_mm: float
    width_mm: float
    area_mm2: float
    location: str
    zones: tuple[str, ...]
    along_mm: float
    along_from: str
    alongs: tuple[tuple[float, str], ...] = ()

    @property
    def zone(self) -> str | None:
        """The main zone, or ``None`` outside every zone."""
        return self.zones[0] if self.zones else None

    def along(self, zone: str) -> tuple[float, str]:
        """``(along_mm, along_from)`` measured on ``zone`` (one it touches; else 0, "")."""
        for name, a in zip(self.zones, self.alongs, strict=False):
            if name == zone:
                return a
        return 0.0, ""


@dataclass(frozen=True, slots=True)
class _Zone:
    settings: ZoneSettings
    polygons: tuple[F64, ...]  # (n, 2) part millimetres; a pixel inside any is in the zone
    label: Bool | None  # the painted image's pixels of this zone (rows, cols)
    extent_mm: tuple[float, float, float, float]  # x0, y0, x1, y1 of the zone


def _inside(poly: F64, x: F64, y: F64) -> Bool:
    """Even-odd test of the points ``(x, y)`` against the closed polygon ``poly``."""
    inside = np.zeros(x.shape, dtype=bool)
    xs, ys = poly[:, 0], poly[:, 1]
    xj, yj = np.roll(xs, 1), np.roll(ys, 1)
    for x0, y0, x1, y1 in zip(xs, ys, xj, yj, strict=True):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (x < at)
    return inside


def _rect(r: tuple[float, float, float, float]) -> F64:
    x0, y0, x1, y1 = r
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


class ZoneMap:
    """The recipe's zones, ready to place regions; ``mm_per_px`` is the image scale.

    Raises ``ConfigError`` (key ``inspection.recipe.zone_image``) when the painted
    zone image cannot be read or lacks a zone's colour.
    """

    def __init__(
        self,
        zones: tuple[ZoneSettings, ...],
        mm_per_px: float,
        zone_image: Path | None = None,
    ) -> None:
        self.mm_per_px = mm_per_px
        labels = _read_labels(zone_image, zones) if zone_image is not None else {}
        built: list[_Zone] = []
        for z in zones:
            polys: list[F64] = []
            if z.rect_mm is not None:
                polys.append(_rect(z.rect_mm))
            for r in z.rects_mm or ():
                polys.append(_rect(r))
            if z.polygon_mm is not None:
                polys.append(np.array(z.polygon_mm, dtype=np.float64))
            label = labels.get(z.colour) if z.colour is not None else None
            if polys:
                pts = np.concatenate(polys)
                extent = (
                    float(pts[:, 0].min()),
                    float(pts[:, 1].min()),
                    float(pts[:, 0].max()),
                    float(pts[:, 1].max()),
                )
            else:
                extent = (0.0, 0.0, 0.0, 0.0)  # a painted zone: measured on the part
            built.append(_Zone(z, tuple(polys), label, extent))
        self._zones = tuple(built)

    @property
    def names(self) -> tuple[str, ...]:
        """Every zone's name, in recipe order."""
        return tuple(z.settings.name for z in self._zones)

    def settings(self, name: str) -> ZoneSettings | None:
        """The settings of the zone called ``name``."""
        for z in self._zones:
            if z.settings.name == name:
                return z.settings
        return None

    def place(self, region: Region, part_bbox_px: tuple[int, int, int, int] | None) -> Placement:
        """Where ``region`` lies on the part whose box in the image is ``part_bbox_px``
        (``None``: the image's own corner is the origin)."""
        mpp = self.mm_per_px
        px0, py0, px1, py1 = part_bbox_px if part_bbox_px is not None else (0, 0, 0, 0)
        x0, y0, x1, y1 = region.bbox_px
        if region.mask_px is not None and region.mask_px.shape == (y1 - y0, x1 - x0):
            ly, lx = np.nonzero(region.mask_px)
            ys, xs = ly + y0, lx + x0
        else:
            yy, xx = np.mgrid[y0:y1, x0:x1]
            ys, xs = yy.ravel(), xx.ravel()
        x_mm = (xs.astype(np.float64) + 0.5 - px0) * mpp
        y_mm = (ys.astype(np.float64) + 0.5 - py0) * mpp
        cx = (region.centroid_px[0] + 0.5 - px0) * mpp
        cy = (region.centroid_px[1] + 0.5 - py0) * mpp
        part_w = (px1 - px0) * mpp if part_bbox_px is not None else 0.0
        part_h = (py1 - py0) * mpp if part_bbox_px is not None else 0.0
        counts: list[tuple[int, int, _Zone]] = []
        for k, z in enumerate(self._zones):
            n = int(self._members(z, x_mm, y_mm, part_w, part_h).sum()) if x_mm.size else 0
            if n:
                counts.append((n, -k, z))
        counts.sort(key=lambda c: (c[0], c[1]), reverse=True)
        zones = tuple(c[2].settings.name for c in counts)
        alongs = tuple(_along(c[2], cx, cy, part_w, part_h) for c in counts)
        along_mm, along_from = alongs[0] if alongs else (0.0, "")
        return Placement(
            x_mm=float(cx),
            y_mm=float(cy),
            length_mm=region.length_mm,
            width_mm=region.width_mm,
            area_mm2=region.area_mm2,
            location=region.location,
            zones=zones,
            along_mm=float(along_mm),
            along_from=along_from,
            alongs=alongs,
        )

    def along_point(self, zone: str, x_mm: float, y_mm: float) -> tuple[float, str]:
        """How far the point ``(x_mm, y_mm)`` lies from the left or top end of the drawn
        zone ``zone`` (``(0, "")`` for an unknown or painted zone, whose extent needs the part)."""
        for z in self._zones:
            if z.settings.name == zone and z.polygons:
                return _along(z, x_mm, y_mm, 0.0, 0.0)
        return 0.0, ""

    @staticmethod
    def _members(z: _Zone, x_mm: F64, y_mm: F64, part_w: float, part_h: float) -> Bool:
        out = np.zeros(x_mm.shape, dtype=bool)
        for poly in z.polygons:
            out |= _inside(poly, x_mm, y_mm)
        if z.label is not None and part_w > 0 and part_h > 0:
            rows, cols = z.label.shape
            c = np.floor(x_mm / part_w * cols).astype(np.int64)
            r = np.floor(y_mm / part_h * rows).astype(np.int64)
            ok = (c >= 0) & (c < cols) & (r >= 0) & (r < rows)
            hit = np.zeros(x_mm.shape, dtype=bool)
            hit[ok] = z.label[r[ok], c[ok]]
            out |= hit
        return out


def _along(z: _Zone, cx: float, cy: float, part_w: float, part_h: float) -> tuple[float, str]:
    """How far ``(cx, cy)`` lies from the left (a zone wider than tall) or top end of ``z``."""
    ex0, ey0, ex1, ey1 = z.extent_mm
    if z.label is not None:
        ex0, ey0, ex1, ey1 = _label_extent(z.label, part_w, part_h)
    if ex1 - ex0 >= ey1 - ey0:
        return float(max(0.0, cx - ex0)), "left end"
    return float(max(0.0, cy - ey0)), "top end"


def _label_extent(label: Bool, part_w: float, part_h: float) -> tuple[float, float, float, float]:
    rows, cols = label.shape
    ys, xs = np.nonzero(label)
    return (
        float(xs.min()) / cols * part_w,
        float(ys.min()) / rows * part_h,
        float(xs.max() + 1) / cols * part_w,
        float(ys.max() + 1) / rows * part_h,
    )


def _read_labels(path: Path, zones: tuple[ZoneSettings, ...]) -> dict[str, Bool]:
    """Each zone colour's pixels in the painted image ``path``."""
    key = "inspection.recipe.zone_image"
    try:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise ConfigError([f"{key}: cannot read {path}: {exc}"]) from exc
    out: dict[str, Bool] = {}
    problems: list[str] = []
    for z in zones:
        if z.colour is None:
            continue
        want = np.array([int(z.colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=np.uint8)
        mask = np.all(rgb == want, axis=2)
        if not mask.any():
            problems.append(f"{key}: no pixel of {z.colour} (zone {z.name!r}) in {path}")
        out[z.colour] = mask
    if problems:
        raise ConfigError(problems)
    return out
