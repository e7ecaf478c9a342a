"""``make surface-model``: the package a surface's training starts from is the demo
package trained, as a surface, on the seeded corpus."""

from __future__ import annotations

from pathlib import Path

from models.package import load_package
from models.train.surface import CORPUS_SEED, DEMO, build_surface_start


def test_the_surface_start_is_the_demo_package_trained_on_the_corpus(tmp_path: Path) -> None:
    """A short build writes a complete package whose manifest says it started from the
    demo package and trained as a surface (no part threshold) on the corpus of
    ``CORPUS_SEED``, all of it good images."""
    summary = build_surface_start(
        tmp_path / "pkg", tmp_path / "corpus", minutes=0.02, images=24, progress=False
    )
    pkg = load_package(tmp_path / "pkg")
    training = pkg.manifest.training
    assert training["from_package_sha256"] == load_package(DEMO).sha256
    assert training["surface"] is True and training["part_threshold"] == 0
    assert training["data_seed"] == CORPUS_SEED == summary["corpus_seed"]
    assert int(str(summary["steps"])) >= 1
    assert len(list((tmp_path / "corpus" / "train" / "good").glob("*.png"))) == 24
