"""A varied corpus of surfaces, for pretraining the package ``lineside train --surface``
starts from (``models/surface``, built by ``make surface-model``).

Every image is a 256 px grayscale surface: procedural textures (fractal noise, stones
and cells, grain and rings, weaves, blobs, and mixtures of two) or a crop of one of the
photographs that ship inside scikit-image. The photographs ``bench/surfaces.py`` judges
the model on (``EXCLUDED_PHOTOS``) are never used, so the bench stays a test of surfaces
the model has not seen. Nothing is downloaded: scikit-image's legacy images are part of
its wheel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from rich.progress import Progress
from scipy import ndimage
from scipy.spatial import cKDTree

from models.synth.raster import FloatImage, f32
from models.synth.textures import smooth_field

SIZE_PX = 256
EXCLUDED_PHOTOS = frozenset({"gravel", "immunohistochemistry", "grass", "brick"})
"""The photographs of ``bench/surfaces.py``: never in the corpus."""
PHOTOS = (
    "camera",
    "coins",
    "moon",
    "text",
    "page",
    "astronaut",
    "coffee",
    "chelsea",
    "hubble_deep_field",
    "retina",
    "rocket",
    "cell",
    "logo",
    "horse",
    "clock",
)
"""scikit-image's bundled photographs the corpus crops (none of ``EXCLUDED_PHOTOS``)."""

Generator = Callable[[np.random.Generator], FloatImage]
GrayImage = npt.NDArray[np.uint8]


def _standard(a: FloatImage) -> FloatImage:
    a = a - a.mean()
    s = float(a.std())
    return f32(a / s) if s > 0 else f32(a)


def fractal_noise(rng: np.random.Generator) -> FloatImage:
    """Sum of smooth fields over octaves with a random spectral slope (sand, paper, cast)."""
    beta = rng.uniform(0.5, 2.0)
    out = np.zeros((SIZE_PX, SIZE_PX), np.float32)
    for k in range(int(rng.integers(3, 7))):
        sigma = 0.6 * 2**k
        out += smooth_field(rng, SIZE_PX, sigma, sigma) * sigma ** (beta - 1)
    return _standard(out)


def stones(rng: np.random.Generator) -> FloatImage:
    """Voronoi cells with their own tone, a lit slope and dark joints (gravel, grain,
    cells under a microscope), stretched along one axis at random."""
    n = int(rng.integers(15, 400))
    seeds = rng.uniform(-20, SIZE_PX + 20, size=(n, 2))
    stretch = np.array([1.0, rng.uniform(0.6, 1.6)])
    yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX]
    grid = np.stack([yy.ravel(), xx.ravel()], 1).astype(np.float32) * stretch
    dist, idx = cKDTree(seeds * stretch).query(grid, k=2)
    d1, d2 = dist[:, 0].reshape(SIZE_PX, SIZE_PX), dist[:, 1].reshape(SIZE_PX, SIZE_PX)
    owner = idx[:, 0].reshape(SIZE_PX, SIZE_PX)
    tone = rng.normal(0, 1, n)[owner]
    joint = np.clip((d2 - d1) / rng.uniform(1.5, 6), 0, 1)
    light = rng.uniform(0, 2 * np.pi)
    rel = grid.reshape(SIZE_PX, SIZE_PX, 2) - (seeds * stretch)[owner]
    slope = (rel[..., 0] * np.sin(light) + rel[..., 1] * np.cos(light)) / (
        np.sqrt(SIZE_PX * SIZE_PX / n) + 1
    )
    out = tone * rng.uniform(0.3, 1.0) + slope * rng.uniform(0, 2) + joint * rng.uniform(1, 3)
    out = out + smooth_field(rng, SIZE_PX, 1.0, 1.0) * rng.uniform(0, 0.5)
    return _standard(f32(out))


def grain(rng: np.random.Generator) -> FloatImage:
    """Streaks along one direction, half the time with warped rings (wood, brushed metal)."""
    a = smooth_field(rng, SIZE_PX, rng.uniform(0.5, 3), rng.uniform(8, 60))
    if rng.random() < 0.5:
        warp = smooth_field(rng, SIZE_PX, 30, 30) * rng.uniform(5, 30)
        rows = np.mgrid[0:SIZE_PX, 0:SIZE_PX][0] + warp
        a = a * rng.uniform(0.2, 1) + np.sin(rows * 2 * np.pi / rng.uniform(6, 40))
    a = ndimage.rotate(a, rng.uniform(0, 180), reshape=False, mode="reflect", order=1)
    return _standard(f32(a))


def weave(rng: np.random.Generator) -> FloatImage:
    """A periodic pattern at a random angle: a checker of sines, stripes or a basket."""
    p1, p2 = rng.uniform(4, 24, 2)
    yy, xx = np.mgrid[0:SIZE_PX, 0:SIZE_PX].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    kind = int(rng.integers(3))
    if kind == 0:
        a = np.sin(2 * np.pi * u / p1) * np.sin(2 * np.pi * v / p2)
    elif kind == 1:
        a = (np.sin(2 * np.pi * u / p1) > rng.uniform(-0.5, 0.5)).astype(np.float32)
    else:
        a = np.abs(np.sin(np.pi * u / p1)) + np.abs(np.sin(np.pi * v / p2))
    a = a + smooth_field(rng, SIZE_PX, 1, 1) * rng.uniform(0.1, 0.8)
    a = a + smooth_field(rng, SIZE_PX, 20, 20) * rng.uniform(0, 0.5)
    return _standard(f32(a))


def blobs(rng: np.random.Generator) -> FloatImage:
    """Soft-edged patches of two tones (mottled coatings, foam, cheese)."""
    sigma = rng.uniform(2, 12)
    field = smooth_field(rng, SIZE_PX, sigma, sigma)
    a = np.tanh((field - rng.uniform(-0.5, 1.5)) * rng.uniform(1, 6))
    a = a + smooth_field(rng, SIZE_PX, 1, 1) * rng.uniform(0, 0.4)
    return _standard(f32(a))


_photos: dict[str, FloatImage] = {}


def _photograph(name: str) -> FloatImage:
    if name in EXCLUDED_PHOTOS:
        raise ValueError(f"{name} is a bench photograph and never part of the corpus")
    if name not in _photos:
        try:
            from skimage import data
        except ImportError as e:  # the dev extra brings it
            raise RuntimeError("the surface corpus needs scikit-image (pip install .[dev])") from e
        im = np.asarray(getattr(data, name)(), dtype=np.float32)
        if im.ndim == 3:  # ITU-R 601 luma, as PIL's convert("L")
            im = im[..., 0] * 0.299 + im[..., 1] * 0.587 + im[..., 2] * 0.114
        _photos[name] = f32(im)
    return _photos[name]


def photo_crop(rng: np.random.Generator) -> FloatImage:
    """A square crop (30-100 % of the short side) of a bundled photograph, resized."""
    im = _photograph(PHOTOS[int(rng.integers(len(PHOTOS)))])
    short = min(im.shape)
    side = max(64, min(int(rng.uniform(0.3, 1.0) * short), short))
    y = int(rng.integers(0, im.shape[0] - side + 1))
    x = int(rng.integers(0, im.shape[1] - side + 1))
    crop = Image.fromarray(im[y : y + side, x : x + side], mode="F")
    crop = crop.resize((SIZE_PX, SIZE_PX), Image.Resampling.BILINEAR)
    return _standard(np.asarray(crop, dtype=np.float32))


GENERATORS: tuple[Generator, ...] = (
    fractal_noise,
    stones,
    stones,
    grain,
    weave,
    blobs,
    photo_crop,
)
"""Drawn uniformly (stones twice: irregular surfaces are what the shipped demo lacks)."""


def surface(rng: np.random.Generator) -> GrayImage:
    """One corpus image: a texture, mixed with a second procedural one 30 % of the time,
    at a random mean gray and contrast with slow shading, as uint8."""
    a = GENERATORS[int(rng.integers(len(GENERATORS)))](rng)
    if rng.random() < 0.3:
        b = GENERATORS[int(rng.integers(len(GENERATORS) - 1))](rng)  # not a photograph
        a = _standard(a + rng.uniform(0.2, 0.7) * b)
    mean, std = rng.uniform(60, 190), rng.uniform(10, 55)
    out = mean + std * a + smooth_field(rng, SIZE_PX, 60, 60) * rng.uniform(0, 12)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def surfaces(seed: int, n: int) -> Iterator[GrayImage]:
    """``n`` corpus images, the same for the same ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield surface(rng)


def write_corpus(out: Path, seed: int, n: int, progress: bool = False) -> Path:
    """``n`` corpus images as an MVTec-layout folder of good images
    (``out/train/good/00000.png`` …); returns ``out``."""
    good = out / "train" / "good"
    good.mkdir(parents=True, exist_ok=True)
    with Progress(disable=not progress) as bar:
        task = bar.add_task("surface corpus", total=n)
        for k, img in enumerate(surfaces(seed, n)):
            Image.fromarray(img).save(good / f"{k:05d}.png")
            bar.advance(task)
    return out
