"""The live terminal shows the last reject's sentence with its rule, and every repeat going on."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from node.app import model_status
from node.cli.status_view import render_status


def _snap(**extra: Any) -> dict[str, Any]:
    return {
        "latency_ms": {"p50": 10.0, "p99": 20.0},
        "budget_used": {"p50": 0.1, "p99": 0.2},
        "parts_per_s": 20.0,
        "inspected": 100,
        "rejected": 9,
        "fail_safe": 0,
        "budget_misses": 0,
        "belt_mm_s": 640.0,
        "in_flight": 3,
        "healthy": True,
        "draining": False,
        "defects_by_type": {"crack": 9},
        "fail_safe_by_reason": {},
        **extra,
    }


def _text(snap: dict[str, Any]) -> str:
    console = Console(width=200, record=True, force_terminal=False)
    console.print(render_status("station 1", snap))
    return console.export_text()


def test_the_last_reject_and_repeats_are_shown_in_words() -> None:
    """The last reject reads with its part, rule and sentence; each repeat on its own line."""
    text = _text(
        _snap(
            last_reject={
                "part_id": 41,
                "rule": "no cracks on the rim",
                "text": "Crack, 3.2 mm, on the rim — over the 0 mm crack limit there.",
            },
            repeats=[{"text": "Repeating scratch on the face on 5 of the last 20 parts."}],
        )
    )
    assert (
        "last reject, part 41 (no cracks on the rim): Crack, 3.2 mm, on the rim — over the 0 mm"
        in text
    )
    assert "⚠ Repeating scratch on the face on 5 of the last 20 parts." in text


def test_without_rejects_or_repeats_nothing_extra_is_shown() -> None:
    """A clean start shows neither line."""
    text = _text(_snap(last_reject=None, repeats=[]))
    assert "last reject" not in text and "Repeating" not in text


def test_the_model_runtime_and_its_fallbacks_are_shown() -> None:
    """The runtime that judges is named with its precision and device; a fallback taken at
    load (a refused parity gate) reads with each step and its reason, and the status keeps
    the parity figures without their per-image rows."""
    described = {
        "runtime": "onnxruntime",
        "requested": "cuda",
        "device": "cpu",
        "precision": "fp32",
        "fallbacks": [
            {"from": "cuda fp16", "to": "cuda fp32", "reason": "mask IoU 0.70 < 0.99"},
            {"from": "cuda fp32", "to": "onnxruntime", "reason": "score error 12.3 % > 1 %"},
        ],
        "parity": {"cuda fp16": {"passed": False, "min_mask_iou": 0.7, "per_image": [{}] * 8}},
    }
    snap = model_status(described)
    assert snap["parity"] == {"cuda fp16": {"passed": False, "min_mask_iou": 0.7}}
    assert "per_image" in described["parity"]["cuda fp16"]  # the backend's own copy is kept
    text = _text(_snap(model=snap))
    assert (
        "model: onnxruntime fp32 on cpu   fell back: cuda fp16 → cuda fp32: mask IoU 0.70" in text
    )
    assert "cuda fp32 → onnxruntime: score error 12.3 % > 1 %" in text
    plain = _text(_snap(model={**snap, "fallbacks": []}))
    assert "model: onnxruntime fp32 on cpu" in plain and "fell back" not in plain
