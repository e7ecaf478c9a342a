"""The golden template: what a good part looks like, pixel by pixel, and how much it varies.

A template is learned from good part images that are already cropped to the
part (all the same size, the part roughly centred on a darker belt). Every
image is prepared the same way (``models.classical.align``: light smoothing,
gain, alignment within +-``shift_px``, slow shading removed), then per pixel the
template keeps

- ``mean``: the median over the good images (gray levels),
- ``low`` / ``high``: the minimum / maximum of ``mean`` within +-1 px, so the
  sub-pixel misregistration left after alignment stays inside the envelope at
  feature edges,
- ``spread``: 1.4826 x the median absolute deviation (a robust standard
  deviation), smoothed, widened over the same +-1 px and floored so flat,
  noise-free areas cannot make tiny differences look huge,
- ``part_mask``: where the part is (brighter than the belt, holes filled),
- ``feature_mask`` / ``background``: where the template has designed structure
  (holes, pads, ribs ...) and the level around it; used to recognise a
  missing feature.

Alignment replaces a wide envelope on purpose: a +-``shift_px`` envelope would
swallow every feature thinner than the shift (a 0.6 mm pad, a stitch, a rib's
edge), so its absence could not be seen.

Saved as ``.npz`` and loaded with ``allow_pickle=False``: a template file can
never run code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from models.classical import align
from models.classical.align import F32, Bool, Index

FORMAT_VERSION = 1
_SPREAD_FLOOR_GRAY = 1.0  # below this, differences are sensor noise whatever the statistics say
_FEATURE_SIGMA_PX = 24.0  # scale of the "surface without features" background
_FEATURE_MIN_GRAY = 12.0  # a feature differs from its surroundings by at least this much
_ENVELOPE = 3  # +-1 px: the residual misregistration after integer alignment


@dataclass(frozen=True, slots=True, eq=False)
class TemplateModel:
    """A learned golden template; see the module docstring for each array's meaning.

    All arrays are ``(H, W)``; gray-level arrays are float32. ``reference_level``
    is the part's median gray level every image is scaled to; ``smooth_sigma_px``
    the blur applied before comparing; ``shading_block_px`` the block size of
    the slow-shading removal (0: off).
    """

    mean: F32
    low: F32
    high: F32
    spread: F32
    part_mask: Bool
    feature_mask: Bool
    background: F32
    reference_level: float
    shift_px: int
    smooth_sigma_px: float
    shading_block_px: int
    n_images: int
    _points: tuple[Index, Index] = field(init=False, repr=False, compare=False)
    _part_f32: F32 = field(init=False, repr=False, compare=False)
    _level_px: Bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Derived, not stored: a loaded template recomputes exactly what fit used.
        object.__setattr__(self, "_points", align.align_points(self.mean, self.shift_px))
        object.__setattr__(self, "_part_f32", self.part_mask.astype(np.float32))
        object.__setattr__(self, "_level_px", align.level_sample(self.part_mask))

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(H, W)`` the template takes."""
        return (int(self.mean.shape[0]), int(self.mean.shape[1]))

    @classmethod
    def fit(
        cls,
        images: Sequence[npt.NDArray[np.uint8]],
        shift_px: int = 2,
        smooth_sigma_px: float = 0.7,
        shading_block_px: int = 8,
    ) -> TemplateModel:
        """Learn a template from good part images (uint8 ``(H, W)``, all one shape).

        ``shift_px`` is the misregistration (pixels) to align away. Use 20 or more
        images; at least 8 are required. Raises ``ValueError`` for fewer images,
        mixed shapes or a wrong dtype, no part brighter than the background, or
        ``shift_px`` outside 0..8.
        """
        if len(images) < 8:
            raise ValueError(f"need at least 8 good images to learn a template, got {len(images)}")
        if not 0 <= shift_px <= 8:
            raise ValueError(f"shift_px must be in 0..8, got {shift_px}")
        check_images(images, None)
        h, w = images[0].shape
        check_images(images, (int(h), int(w)))

        part_mask = _part_mask(np.median(np.stack(images[:15]), axis=0))
        sample = align.level_sample(part_mask)
        stack = np.empty((len(images), h, w), dtype=np.float32)
        levels = np.empty(len(images))
        for i, img in enumerate(images):
            stack[i] = ndimage.gaussian_filter(img.astype(np.float32), smooth_sigma_px)
            levels[i] = np.median(stack[i][sample])
        reference = float(np.median(levels))
        stack *= (reference / np.maximum(levels, 1.0)).astype(np.float32)[:, None, None]

        # Two passes: align to a provisional template, then take the shading out
        # against the aligned one, so the final statistics see neither.
        provisional = np.median(stack, axis=0).astype(np.float32)
        points = align.align_points(provisional, shift_px)
        for i in range(len(stack)):
            dx, dy = align.best_shift(stack[i], provisional, points, shift_px)
            stack[i] = align.shift_image(stack[i], dx, dy)
        aligned_mean = np.median(stack, axis=0).astype(np.float32)
        if shading_block_px > 0:
            part = part_mask.astype(np.float32)
            for i in range(len(stack)):
                stack[i] -= align.shading(stack[i] - aligned_mean, part, shading_block_px)

        mean = np.median(stack, axis=0).astype(np.float32)
        mad = np.median(np.abs(stack - mean), axis=0)
        spread = ndimage.gaussian_filter(1.4826 * mad, 2.0)
        floor = max(_SPREAD_FLOOR_GRAY, 0.5 * float(np.median(spread[part_mask])))
        spread = np.maximum(ndimage.maximum_filter(spread, _ENVELOPE), floor)
        background = ndimage.gaussian_filter(
            np.where(part_mask, mean, reference), _FEATURE_SIGMA_PX
        )
        structure = np.abs(mean - background)
        feature = (structure > max(_FEATURE_MIN_GRAY, 4.0 * floor)) & part_mask
        feature = ndimage.binary_dilation(feature, iterations=2) & part_mask
        return cls(
            mean=mean,
            low=ndimage.minimum_filter(mean, _ENVELOPE),
            high=ndimage.maximum_filter(mean, _ENVELOPE),
            spread=spread.astype(np.float32),
            part_mask=part_mask,
            feature_mask=feature,
            background=background.astype(np.float32),
            reference_level=reference,
            shift_px=shift_px,
            smooth_sigma_px=float(smooth_sigma_px),
            shading_block_px=int(shading_block_px),
            n_images=len(images),
        )

    def prepare(self, image: npt.NDArray[np.uint8]) -> tuple[F32, tuple[int, int]]:
        """Smooth, gain-correct, align and de-shade ``image`` like the training images.

        Returns the prepared float image and the shift ``(dx, dy)`` (pixels) that
        was taken out. The image must already have the template's shape and dtype.
        """
        x = ndimage.gaussian_filter(image.astype(np.float32), self.smooth_sigma_px)
        level = float(np.median(x[self._level_px]))
        x *= np.float32(self.reference_level / max(level, 1.0))
        dx, dy = align.best_shift(x, self.mean, self._points, self.shift_px)
        x = align.shift_image(x, dx, dy)
        if self.shading_block_px > 0:
            x = x - align.shading(x - self.mean, self._part_f32, self.shading_block_px)
        return x, (dx, dy)

    def deviation(self, prepared: F32) -> F32:
        """Signed deviation of a prepared image outside the envelope, in spread units."""
        above = prepared - self.high
        below = prepared - self.low
        dev = np.where(above > 0, above, np.minimum(below, 0.0)) / self.spread
        out: F32 = dev.astype(np.float32, copy=False)
        return out

    def save(self, path: str | Path) -> None:
        """Write the template to ``path`` as an uncompressed ``.npz`` (no pickles).

        Raises ``OSError`` when the file cannot be written.
        """
        np.savez(
            Path(path),
            format_version=np.int64(FORMAT_VERSION),
            mean=self.mean,
            low=self.low,
            high=self.high,
            spread=self.spread,
            part_mask=self.part_mask,
            feature_mask=self.feature_mask,
            background=self.background,
            reference_level=np.float64(self.reference_level),
            shift_px=np.int64(self.shift_px),
            smooth_sigma_px=np.float64(self.smooth_sigma_px),
            shading_block_px=np.int64(self.shading_block_px),
            n_images=np.int64(self.n_images),
        )

    @classmethod
    def load(cls, path: str | Path) -> TemplateModel:
        """Read a template written by ``save``.

        Raises ``ValueError`` naming the problem when the file is not a template
        npz, has another format version, or has missing or inconsistent arrays;
        ``OSError`` when it cannot be read.
        """
        try:
            loaded = np.load(Path(path), allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an npz archive")
            with loaded as z:
                arrays = {k: z[k] for k in z.files}
        except (ValueError, EOFError) as exc:  # np.load's word for "not an npz" / "needs pickle"
            raise ValueError(f"{path}: not a template file ({exc})") from exc
        return _from_arrays(arrays, str(path))


def check_images(images: Sequence[npt.NDArray[np.generic]], shape: tuple[int, int] | None) -> None:
    """Raise ``ValueError`` unless every image is uint8 ``(H, W)`` (of ``shape`` if given)."""
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2:
            got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
            raise ValueError(f"image {i}: expected a grayscale uint8 (H, W) array, got {got}")
        if shape is not None and img.shape != shape:
            raise ValueError(f"image {i}: expected shape {shape}, got {img.shape}")


_FLOATS = ("mean", "low", "high", "spread", "background")
_MASKS = ("part_mask", "feature_mask")
_SCALARS = (
    "format_version",
    "reference_level",
    "shift_px",
    "smooth_sigma_px",
    "shading_block_px",
    "n_images",
)


def _from_arrays(a: dict[str, npt.NDArray[np.generic]], where: str) -> TemplateModel:
    missing = [k for k in (*_FLOATS, *_MASKS, *_SCALARS) if k not in a]
    if missing:
        raise ValueError(f"{where}: not a template file, missing {', '.join(missing)}")
    for k in _SCALARS:
        if a[k].shape != () or a[k].dtype.kind not in "iuf":
            raise ValueError(f"{where}: {k} must be a numeric scalar")
    version = int(a["format_version"])
    if version != FORMAT_VERSION:
        raise ValueError(f"{where}: template format {version}, this build reads {FORMAT_VERSION}")
    shape = a["mean"].shape
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"{where}: mean has shape {shape}, expected (H, W) of at least 8 x 8")
    for k in (*_FLOATS, *_MASKS):
        if a[k].shape != shape:
            raise ValueError(f"{where}: {k} has shape {a[k].shape}, expected {shape}")
    for k in _FLOATS:
        if a[k].dtype.kind != "f" or not np.all(np.isfinite(a[k])):
            raise ValueError(f"{where}: {k} must hold finite floats")
    for k in _MASKS:
        if a[k].dtype != np.bool_:
            raise ValueError(f"{where}: {k} must be boolean, got {a[k].dtype}")
    if not np.all(a["spread"].astype(np.float64) > 0) or not a["part_mask"].any():
        raise ValueError(f"{where}: spread must be > 0 everywhere and part_mask not empty")
    shift = int(a["shift_px"])
    if not 0 <= shift <= 8 or int(a["shading_block_px"]) < 0:
        raise ValueError(f"{where}: shift_px {shift} outside 0..8 or negative shading_block_px")
    return TemplateModel(
        mean=a["mean"].astype(np.float32),
        low=a["low"].astype(np.float32),
        high=a["high"].astype(np.float32),
        spread=a["spread"].astype(np.float32),
        part_mask=a["part_mask"].astype(bool),
        feature_mask=a["feature_mask"].astype(bool),
        background=a["background"].astype(np.float32),
        reference_level=float(a["reference_level"]),
        shift_px=shift,
        smooth_sigma_px=float(a["smooth_sigma_px"]),
        shading_block_px=int(a["shading_block_px"]),
        n_images=int(a["n_images"]),
    )


def _otsu(values: npt.NDArray[np.floating]) -> float:
    hist, edges = np.histogram(values, bins=256, range=(0.0, 256.0))
    p = hist.astype(np.float64) / max(1, int(hist.sum()))
    w0 = np.cumsum(p)
    mu = np.cumsum(p * (edges[:-1] + 0.5))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu[-1] * w0 - mu) ** 2 / (w0 * (1.0 - w0))
    return float(edges[int(np.nanargmax(between))] + 1.0)


def _part_mask(median: npt.NDArray[np.floating]) -> Bool:
    """The largest bright blob of the median good image, holes filled."""
    if float(median.max()) - float(median.min()) < 10.0:
        raise ValueError("no part in the good images: they are (nearly) uniform")
    bright = median > _otsu(median)
    labels, n = ndimage.label(bright)
    if n == 0:
        raise ValueError("no part in the good images: nothing is brighter than the background")
    largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    mask: Bool = ndimage.binary_fill_holes(labels == largest)
    return mask
