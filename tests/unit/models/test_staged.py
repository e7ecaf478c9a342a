"""A staged backend judges first and explains later, and that changes nothing but the timing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.backend import StagedBackend
from models.runtime import open_runtime
from models.synth import PartSpec, render_part, render_scene
from node.config import DEFAULT_CONFIG, RecipeSection, load_config
from node.line.judge import Judge
from node.line.roi import crop_part
from node.sim.render import BELT_LEVEL

DEMO = Path(__file__).resolve().parents[3] / "models" / "demo"


def _parts() -> list[np.ndarray]:
    """The sim line's parts as the node cuts them out: three good, one of each defect kind."""
    cfg = load_config(DEFAULT_CONFIG).inspection
    kinds = [None, None, None, "scratch", "crack", "spot", "contamination", "missing_feature"]
    crops = []
    for i, kind in enumerate(kinds):
        part = render_part(PartSpec("moulded_plastic", 900 + i, kind, 24.0), cfg.mm_per_px)
        frame, _ = render_scene(part, (320, 320), (160.0, 160.0), BELT_LEVEL, i)
        crops.append(crop_part(frame, cfg.roi_size_px, cfg.belt_threshold)[0])
    return crops


def test_staged_findings_decide_as_the_whole_inference_and_the_sentence_is_the_same() -> None:
    """On ONNX Runtime with the demo package: ``detect_first`` gives findings that the judge
    decides exactly as it decides ``infer``'s (verdict, rule, type, score, regions) with the
    facts said plainly; the sentences ``explain_later`` then writes are ``infer``'s own, for
    the anomalous images only."""
    backend = open_runtime("onnxruntime", DEMO)
    assert isinstance(backend, StagedBackend)
    images = _parts()
    whole = backend.infer(images)
    staged = backend.detect_first(images)
    judge = Judge(RecipeSection(reject_score=1.0), 0.125)
    for i, (a, b) in enumerate(zip(whole, staged.findings, strict=True)):
        va, vb = judge.judge(i, a), judge.judge(i, b)
        assert (va.reject, va.rule, va.defect_type) == (vb.reject, vb.rule, vb.defect_type)
        assert a.anomaly_score == b.anomaly_score and a.regions == b.regions
        assert a.explanation.facts == b.explanation.facts and b.explanation.source == "facts"
    assert staged.pending == tuple(i for i, f in enumerate(whole) if f.anomaly_score >= 1.0)
    assert len(staged.pending) >= 4
    later = backend.explain_later(staged)
    assert [f.explanation for f in later] == [whole[i].explanation for i in staged.pending]
    assert all(f.explanation.source == "model" for f in later)


def test_without_the_decoder_nothing_is_left_to_write() -> None:
    """A backend opened with ``explain=False`` stages no sentence."""
    backend = open_runtime("onnxruntime", DEMO, explain=False)
    assert isinstance(backend, StagedBackend)
    assert backend.detect_first(_parts()).pending == ()
