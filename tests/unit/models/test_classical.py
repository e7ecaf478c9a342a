"""The golden-template backend: finds and names synthetic defects, passes good parts."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from models.backend import Backend
from models.classical import LOCATIONS, TemplateBackend, TemplateModel
from models.findings import Findings
from models.synth import DEFECT_KINDS, PartSpec, render_part, render_scene, sample_part_spec

MPP = 0.125  # 28 mm parts are 224 px
CROP = 240  # the part plus an 8 px belt margin, as a ROI crop would give
CENTRE = (CROP - 1) / 2.0
FAMILIES = ("moulded_plastic", "printed_board")
PER_KIND = 12  # defective samples per family and kind
Image = npt.NDArray[np.uint8]


def crop_of(
    spec: PartSpec, rng: np.random.Generator, jitter_px: int = 1
) -> tuple[Image, npt.NDArray[np.bool_]]:
    """A ROI-sized crop of ``spec`` on the belt, off-centre by up to ``jitter_px``."""
    dx, dy = rng.integers(-jitter_px, jitter_px + 1, size=2)
    seed = int(rng.integers(2**31))
    return render_scene(
        render_part(spec, MPP), (CROP, CROP), (CENTRE + dx, CENTRE + dy), noise_seed=seed
    )


@dataclass
class Taught:
    """A backend taught on one family, with the rng state its samples continue from."""

    family: str
    model: TemplateModel
    backend: TemplateBackend


@pytest.fixture(scope="module")
def taught() -> dict[str, Taught]:
    """One template per family, fitted on 60 good parts with ROI-like misregistration."""
    out = {}
    for family in FAMILIES:
        rng = np.random.default_rng([1, len(family)])
        goods = [crop_of(sample_part_spec(rng, family, 0.0), rng)[0] for _ in range(60)]
        model = TemplateModel.fit(goods, shift_px=2)
        out[family] = Taught(family, model, TemplateBackend(model, MPP, 6.0, 0.3))
    return out


@dataclass
class Sample:
    family: str
    kind: str
    mask: npt.NDArray[np.bool_]
    visible: bool
    findings: Findings


@pytest.fixture(scope="module")
def defective(taught: dict[str, Taught]) -> list[Sample]:
    """PER_KIND defective parts of every kind per family, inspected in batches."""
    samples = []
    for family, t in taught.items():
        rng = np.random.default_rng([2, len(family)])
        for kind in DEFECT_KINDS:
            specs = [sample_part_spec(rng, family, 1.0, [kind]) for _ in range(PER_KIND)]
            crops = [crop_of(s, rng) for s in specs]
            found = t.backend.infer([c[0] for c in crops])
            for spec, (_, mask), f in zip(specs, crops, found, strict=True):
                truth = render_part(spec, MPP).truth
                assert truth is not None
                samples.append(Sample(family, kind, mask, truth.visible, f))
    return samples


def _located(s: Sample) -> bool:
    """True when some reported region's box covers pixels of the true defect mask."""
    return any(
        s.mask[y0:y1, x0:x1].any() for x0, y0, x1, y1 in (r.bbox_px for r in s.findings.regions)
    )


def test_finds_every_kind_of_visible_defect(defective: list[Sample]) -> None:
    """At least 95 % of visible defects get a region on the true defect, and every kind is found."""
    found: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    for s in (s for s in defective if s.visible):
        total[s.kind] += 1
        found[s.kind] += _located(s)
    rates = {k: f"{found[k]}/{total[k]}" for k in DEFECT_KINDS}
    assert sum(found.values()) >= 0.95 * sum(total.values()), rates
    assert all(found[k] >= 0.75 * total[k] for k in DEFECT_KINDS), rates


def test_names_the_defect_type_mostly_right(defective: list[Sample]) -> None:
    """The top region's type is the true kind for at least 80 % of the defective parts."""
    right = sum(s.findings.defect_type == s.kind for s in defective)
    wrong = collections.Counter(
        (s.kind, s.findings.defect_type) for s in defective if s.findings.defect_type != s.kind
    )
    assert right >= 0.8 * len(defective), wrong
    assert all(0.0 <= s.findings.type_confidence <= 1.0 for s in defective)


def test_good_parts_pass(taught: dict[str, Taught]) -> None:
    """Of 50 good parts at most one gets a region, and their scores stay under the threshold."""
    flagged, scores = 0, []
    for family, t in taught.items():
        rng = np.random.default_rng([3, len(family)])
        crops = [crop_of(sample_part_spec(rng, family, 0.0), rng)[0] for _ in range(25)]
        for f in t.backend.infer(crops):
            flagged += f.is_anomalous
            scores.append(f.anomaly_score)
            if not f.is_anomalous:
                assert f.defect_type == "none" and f.explanation.text == "no defect found"
    assert flagged <= 1
    assert sorted(scores)[-2] < 6.0


@pytest.mark.parametrize("shift", [(1, 0), (0, -2), (2, 2), (-2, 1)])
def test_small_misregistration_is_not_a_defect(
    taught: dict[str, Taught], shift: tuple[int, int]
) -> None:
    """A good part 1-2 px off the taught position gives no region (alignment takes it out)."""
    for t in taught.values():
        part = render_part(PartSpec(t.family, 31337), MPP)
        centre = (CENTRE + shift[0], CENTRE + shift[1])
        image, _ = render_scene(part, (CROP, CROP), centre, noise_seed=5)
        (f,) = t.backend.infer([image])
        assert not f.regions, (t.family, shift, f.regions)


def _paint(image: Image, x0: int, y0: int, x1: int, y1: int, value: int) -> Image:
    out = image.copy()
    out[y0:y1, x0:x1] = value
    return out


def test_regions_are_measured_and_placed_on_the_part(taught: dict[str, Taught]) -> None:
    """A painted blob and line get the right size, grid place, edge flag and type."""
    t = taught["moulded_plastic"]
    good, _ = render_scene(
        render_part(PartSpec(t.family, 4242), MPP), (CROP, CROP), (CENTRE, CENTRE), noise_seed=1
    )
    # The part spans ~8..232 px. A 16 x 16 px (2 x 2 mm) dark blob at 40..56: upper left, 4 mm in.
    blob = _paint(good, 40, 40, 56, 56, 90)
    # A 2 px wide, 80 px (10 mm) long bright line 1.25 mm from the right edge, vertically central.
    line = _paint(good, 220, 80, 222, 160, 230)
    f_blob, f_line = t.backend.infer([blob, line])
    (r,) = f_blob.regions
    assert r.location == "upper left" and not r.near_edge
    assert r.area_mm2 == pytest.approx(4.0, rel=0.5) and r.contrast < 0
    assert f_blob.defect_type == "spot"
    top = f_line.regions[0]
    assert top.location == "centre right" and top.near_edge
    assert top.length_mm == pytest.approx(10.0, abs=1.0) and top.contrast > 0
    assert f_line.defect_type == "scratch"
    assert f_line.explanation.text.startswith("scratch, 10 mm, centre right, near the edge")


def test_findings_keep_the_contract(taught: dict[str, Taught], defective: list[Sample]) -> None:
    """The backend is a Backend; findings carry a float32 map, sorted regions and grounded text."""
    t = taught["printed_board"]
    assert isinstance(t.backend, Backend) and t.backend.name == "classical"
    for s in defective[:10]:
        f = s.findings
        assert f.anomaly_map.dtype == np.float32 and f.anomaly_map.shape == (CROP, CROP)
        assert f.anomaly_score == pytest.approx(float(f.anomaly_map.max()))
        assert [r.score for r in f.regions] == sorted((r.score for r in f.regions), reverse=True)
        assert all(r.location in {p for row in LOCATIONS for p in row} for r in f.regions)
        facts = f.explanation.facts
        assert (
            facts is not None and facts.region_count == len(f.regions) and f.backend == "classical"
        )
        assert f.defect_type.replace("_", " ") in f.explanation.text
        assert (
            f"{facts.size_mm:.0f}" in f.explanation.text
            or f"{facts.size_mm:.1f}" in f.explanation.text
        )


def test_infer_refuses_wrong_images(taught: dict[str, Taught]) -> None:
    """Wrong shape, wrong dtype and colour images raise ValueError before any is inspected."""
    backend = taught["printed_board"].backend
    ok = np.zeros((CROP, CROP), np.uint8)
    with pytest.raises(ValueError, match="expected shape"):
        backend.infer([ok, np.zeros((CROP, CROP + 1), np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        backend.infer([ok.astype(np.float32)])  # a wrong dtype on purpose
    with pytest.raises(ValueError, match="grayscale"):
        backend.infer([np.zeros((CROP, CROP, 3), np.uint8)])


def test_save_load_round_trip(
    tmp_path: Path, taught: dict[str, Taught], defective: list[Sample]
) -> None:
    """A saved and reloaded template has the same arrays and gives the same findings."""
    t = taught["moulded_plastic"]
    path = tmp_path / "template.npz"
    t.model.save(path)
    loaded = TemplateModel.load(path)
    for name in ("mean", "low", "high", "spread", "part_mask", "feature_mask", "background"):
        assert np.array_equal(getattr(loaded, name), getattr(t.model, name)), name
    assert (loaded.shift_px, loaded.n_images, loaded.shape) == (t.model.shift_px, 60, (CROP, CROP))
    rng = np.random.default_rng(9)
    image, _ = crop_of(sample_part_spec(rng, t.family, 1.0, ["crack"]), rng)
    a = t.backend.infer([image])[0]
    b = TemplateBackend(loaded, MPP, 6.0, 0.3).infer([image])[0]
    assert a.regions == b.regions and a.anomaly_score == b.anomaly_score


def _arrays(model: TemplateModel) -> dict[str, object]:
    path_keys = ("mean", "low", "high", "spread", "part_mask", "feature_mask", "background")
    arrays: dict[str, object] = {k: getattr(model, k) for k in path_keys}
    arrays |= {
        "format_version": np.int64(1),
        "reference_level": np.float64(model.reference_level),
        "shift_px": np.int64(model.shift_px),
        "smooth_sigma_px": np.float64(model.smooth_sigma_px),
        "shading_block_px": np.int64(model.shading_block_px),
        "n_images": np.int64(model.n_images),
    }
    return arrays


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.pop("spread"), "missing spread"),
        (lambda a: a.update(low=np.zeros((5, 5), np.float32)), "low has shape"),
        (lambda a: a.update(format_version=np.int64(99)), "format 99"),
        (
            lambda a: a.update(part_mask=np.zeros((CROP, CROP), np.float32)),
            "part_mask must be boolean",
        ),
        (lambda a: a.update(spread=np.zeros((CROP, CROP), np.float32)), "spread must be > 0"),
        (
            lambda a: a.update(mean=np.array([["x"] * CROP] * CROP, dtype=object)),
            "not a template file",
        ),
    ],
)
def test_bad_template_files_are_refused(
    tmp_path: Path, taught: dict[str, Taught], change: object, message: str
) -> None:
    """A template npz with missing, misshapen, mistyped or pickled arrays raises ValueError."""
    arrays = _arrays(taught["printed_board"].model)
    change(arrays)  # type: ignore[operator]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        TemplateModel.load(path)


def test_files_that_are_not_npz_are_refused(tmp_path: Path) -> None:
    """Text, a pickle and a bare .npy are refused with ValueError, never unpickled."""
    text = tmp_path / "t.npz"
    text.write_text("not a template")
    npy = tmp_path / "a.npy"
    np.save(npy, np.zeros(3))
    pickled = tmp_path / "p.npz"
    with pickled.open("wb") as fh:  # an .npy holding a pickled object, named like a template
        np.save(fh, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    for path in (text, npy, pickled):
        with pytest.raises(ValueError, match="not a template file"):
            TemplateModel.load(path)


def test_fit_refuses_unusable_training_sets() -> None:
    """Too few images, mixed shapes, wrong dtypes and part-less images raise ValueError."""
    rng = np.random.default_rng(0)
    goods = [crop_of(sample_part_spec(rng, "textile", 0.0), rng)[0] for _ in range(8)]
    with pytest.raises(ValueError, match="at least 8"):
        TemplateModel.fit(goods[:7])
    with pytest.raises(ValueError, match="expected shape"):
        TemplateModel.fit([*goods[:7], goods[7][:-1]])
    with pytest.raises(ValueError, match="uint8"):
        TemplateModel.fit([g.astype(np.int16) for g in goods])  # a wrong dtype on purpose
    with pytest.raises(ValueError, match="no part"):
        TemplateModel.fit([np.full((64, 64), 30, np.uint8)] * 8)
