"""The verdict does not wait for prose: on the sim line with the shipped model, each part is
judged from the detect graph and the model's sentence follows; a sentence that comes too late
or not at all leaves the verdict, the strike and the timing as they were."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from hil.line import run_line, sim_config
from models.backend import Backend, Image, Staged, StagedBackend
from models.findings import Findings
from models.outputs import ModelOutputError
from node.config import DEFAULT_CONFIG, Config, load_config
from node.line.results import PartResult


def _config(tmp_path: Path) -> Config:
    return sim_config(
        load_config(DEFAULT_CONFIG),
        node={"state_dir": tmp_path},
        hmi={"enabled": False},
        sim={"defect_rate": 0.4, "seed": 23},
    )


def _judged_rejects(results: list[PartResult]) -> list[PartResult]:
    return [r for r in results if r.verdict.reject and not r.verdict.fail_safe]


class _Wrapped:
    """Fault injection around the real staged backend: its detection untouched, its
    sentences ``late_s`` late or failing."""

    def __init__(self, inner: Backend, late_s: float = 0.0, fail: bool = False) -> None:
        assert isinstance(inner, StagedBackend)
        self.inner = inner
        self.name = inner.name
        self.late_s = late_s
        self.fail = fail
        self.explained = 0

    def infer(self, images: Sequence[Image]) -> list[Findings]:
        return self.inner.infer(images)

    def detect_first(self, images: Sequence[Image]) -> Staged:
        return self.inner.detect_first(images)

    def explain_later(self, staged: Staged) -> list[Findings]:
        self.explained += len(staged.pending)
        if self.fail:
            raise ModelOutputError("explain graph output: logits: 1 of 9 values not finite")
        time.sleep(self.late_s)
        return self.inner.explain_later(staged)


async def test_each_reject_is_judged_before_its_sentence_and_published_with_it(
    tmp_path: Path,
) -> None:
    """60 parts, 40 % defective: every judged reject's sentence came after its verdict
    (trigger→sentence longer than trigger→verdict) and before its result, so the published
    explanation is the recipe's sentence in the model's words; none was late or failed."""
    results: list[PartResult] = []
    report, node, _ = await run_line(_config(tmp_path), 60, on_result=results.append)
    judged = _judged_rejects(results)
    assert len(judged) >= 10, report
    for r in judged:
        f = r.verdict.findings
        assert f is not None and f.explanation.source == "model", r.verdict
        assert r.latency_ms is not None and r.sentence_ms is not None
        assert r.sentence_ms > r.latency_ms
        assert r.verdict.explanation == r.verdict.recipe.sentences["en"]  # type: ignore[union-attr]
    assert node.summary.sentences_late == 0 and node.summary.sentence_failures == 0
    assert report["sentence_ms"]["parts"] >= len(judged)
    assert report["missed_rejects"] == 0 and report["budget_misses"] == 0, report
    model = node.status()["model"]  # the live status names what judged
    assert (model["runtime"], model["precision"], model["fallbacks"]) == ("onnxruntime", "fp32", [])


async def test_a_sentence_too_slow_for_its_part_leaves_the_verdict_and_says_the_facts(
    tmp_path: Path,
) -> None:
    """The decoder takes 1.5 s a sentence, far past every part's decision point: the rejects
    still strike their parts on time from the detect graph (no deadline missed, no
    fail-safe), their results say the facts, and the late sentences are counted."""
    wrappers: list[_Wrapped] = []

    def slow(inner: Backend) -> Backend:
        wrappers.append(_Wrapped(inner, late_s=1.5))
        return wrappers[-1]

    results: list[PartResult] = []
    report, node, _ = await run_line(
        _config(tmp_path), 30, backend_wrapper=slow, on_result=results.append
    )
    judged = _judged_rejects(results)
    assert len(judged) >= 5, report
    assert report["failsafe_rejects"] == 0 and report["budget_misses"] == 0, report
    assert report["missed_rejects"] == 0, report
    for r in judged:
        assert r.sentence_ms is None and r.latency_ms is not None
        f = r.verdict.findings
        assert f is not None and f.explanation.source == "facts" and not f.explanation.model_text
    assert node.summary.sentences_late >= 1 and node.summary.sentence_failures == 0


async def test_a_failing_decoder_costs_the_sentence_not_the_verdict(tmp_path: Path) -> None:
    """Every sentence fails (non-finite logits): the part it was for keeps the verdict its
    detection gave (no model fail-safe for it, its facts said), but the node shows the model
    fault (Error, detail naming the sentence) — never healthy — so the parts after it are
    rejected fail-safe until a Reset; no defect escapes and every failure is counted."""
    wrappers: list[_Wrapped] = []

    def failing(inner: Backend) -> Backend:
        wrappers.append(_Wrapped(inner, fail=True))
        return wrappers[-1]

    results: list[PartResult] = []
    report, node, _ = await run_line(
        _config(tmp_path), 30, backend_wrapper=failing, on_result=results.append
    )
    judged = _judged_rejects(results)
    assert judged and report["missed_rejects"] == 0 and report["escapes"] == 0, report
    assert "model_error" not in report["failsafe_reasons"], report
    assert all(r.verdict.findings.explanation.source == "facts" for r in judged)  # type: ignore[union-attr]
    assert node.summary.sentence_failures == wrappers[0].explained >= 1
    assert node.operation.fault == "model"
    assert node.operation.machine.detail.startswith("model: sentence: ModelOutputError")
    assert not node.status()["healthy"]
