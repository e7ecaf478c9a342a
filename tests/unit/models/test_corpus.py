"""The surface corpus ``make surface-model`` pretrains on: reproducible, varied, readable
as a data set, and never made of the photographs the surfaces bench judges on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.data.mvtec import load_gray, read_mvtec
from models.synth import corpus
from models.synth.corpus import EXCLUDED_PHOTOS, PHOTOS, surfaces, write_corpus


def test_the_same_seed_gives_the_same_corpus_and_another_seed_another() -> None:
    """Two runs of one seed are identical image for image; a second seed differs."""
    a, b, c = (list(surfaces(seed, 6)) for seed in (11, 11, 12))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_corpus_images_are_varied_textured_surfaces() -> None:
    """60 images: 256 px uint8, none flat, with spread-out gray levels and contrasts and
    fine structure (neighbouring pixels are not all alike), and no two the same."""
    imgs = list(surfaces(3, 60))
    assert all(i.shape == (256, 256) and i.dtype == np.uint8 for i in imgs)
    means = np.array([i.mean() for i in imgs])
    stds = np.array([i.std() for i in imgs])
    assert stds.min() > 3.0
    assert means.max() - means.min() > 60 and stds.max() - stds.min() > 20
    rough = [np.abs(np.diff(i.astype(np.float32), axis=1)).mean() for i in imgs]
    assert sum(r > 2.0 for r in rough) > 30
    flat = {i.tobytes() for i in imgs}
    assert len(flat) == len(imgs)


def test_every_kind_of_texture_is_drawn() -> None:
    """Over 300 images every generator is used, photograph crops included."""
    drawn: dict[str, int] = {}
    real = corpus.GENERATORS

    def counting(gen: corpus.Generator) -> corpus.Generator:
        def wrapped(rng: np.random.Generator) -> corpus.FloatImage:
            drawn[gen.__name__] = drawn.get(gen.__name__, 0) + 1
            return gen(rng)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(corpus, "GENERATORS", tuple(counting(g) for g in real))
        list(surfaces(5, 300))
    assert set(drawn) == {g.__name__ for g in real}
    assert drawn["photo_crop"] >= 20


def test_the_bench_photographs_never_enter_the_corpus() -> None:
    """The corpus crops only photographs outside the surfaces bench's set (that set is
    checked against the bench in tests/integration/test_bench_surfaces.py), and asking
    for a bench photograph is refused."""
    assert not EXCLUDED_PHOTOS & set(PHOTOS)
    with pytest.raises(ValueError, match="bench photograph"):
        corpus._photograph("gravel")


def test_the_written_corpus_reads_as_a_folder_of_good_images(tmp_path: Path) -> None:
    """``write_corpus`` writes ``train/good`` PNGs that ``read_mvtec`` reads as good
    training images, equal to the generated ones."""
    root = write_corpus(tmp_path / "corpus", 4, 5)
    ds = read_mvtec(root)
    train = ds.select("train")
    assert len(train) == 5 and all(s.is_good for s in train)
    expected = list(surfaces(4, 5))
    for s, img in zip(sorted(train, key=lambda s: s.path.name), expected, strict=True):
        assert np.array_equal(load_gray(s.path), img)
