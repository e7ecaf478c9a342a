"""The model CLI functions write what they promise; geometry measures places and sizes in mm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from models import cli
from models.data.geometry import PartGeometry, measure_regions, size_class
from models.package import ModelPackage


def test_evaluate_writes_json_and_png_report(
    tiny_package: ModelPackage, tiny_dataset: Path, tmp_path: Path
) -> None:
    """``evaluate`` returns the metrics and writes them as JSON next to a PNG report."""
    out_json, out_png = tmp_path / "eval.json", tmp_path / "eval.png"
    out = cli.evaluate(tiny_package.root, tiny_dataset, out_json, out_png, progress=False)
    metrics = out["metrics"]
    saved = json.loads(out_json.read_text())
    assert saved == json.loads(json.dumps(out))
    assert saved["metrics"]["image_auroc"] == metrics["image_auroc"]
    assert 0.0 <= metrics["pixel_auroc"] <= 1.0 and "guard_fallback_rate" in metrics
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_explain_reports_one_image(tiny_package: ModelPackage, tiny_dataset: Path) -> None:
    """``explain`` gives the score, type, explanation and its facts in three languages."""
    image = next((tiny_dataset / "test" / "scratch").glob("*.png"))
    out = cli.explain(tiny_package.root, image)
    assert set(out["facts_text"]) == {"en", "de", "ja"}
    assert out["source"] in ("model", "facts") and isinstance(out["anomaly_score"], float)


def test_regions_are_placed_and_sized_on_the_part() -> None:
    """A 6 mm horizontal mark in the part's upper left is 'upper left', large, near the edge."""
    image = np.zeros((256, 256), dtype=np.uint8)
    image[32:224, 32:224] = 170
    part = PartGeometry.of(image, 0.125, 60, edges=False)
    mask = np.zeros_like(image, dtype=bool)
    mask[40:42, 40:88] = True  # 48 px = 6 mm long, 1 mm from the top edge
    (r,) = measure_regions(mask, None, part, 0.125)
    assert r.location == "upper left" and r.near_edge
    assert abs(r.length_mm - 6.0) < 0.2 and size_class(r.length_mm) == "large"


def test_near_edge_measured_locally_agrees_with_the_whole_part_distance_map() -> None:
    """The cheap local ``near_edge`` (window, early out when all on the part) gives the
    answer of the whole-image distance transform, for pieces anywhere on a holed part."""
    rng = np.random.default_rng(3)
    image = np.zeros((256, 256), dtype=np.uint8)
    image[40:216, 30:226] = 170
    image[110:140, 120:150] = 10  # a cored hole: its rim is an edge too
    local = PartGeometry.of(image, 0.125, 60, edges=False)
    full = PartGeometry.of(image, 0.125, 60, edges=True)
    answers = set()
    for _ in range(300):
        x, y = (int(v) for v in rng.integers(20, 236, size=2))
        xs = np.clip(x + rng.integers(-6, 7, size=5), 0, 255)
        ys = np.clip(y + rng.integers(-6, 7, size=5), 0, 255)
        got = local.near_edge(xs, ys, 0.125)
        assert got == full.near_edge(xs, ys, 0.125), (x, y)
        answers.add(got)
    assert answers == {True, False}
