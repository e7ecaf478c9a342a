"""A repeating defect on the sim line is announced once near its place, cleared when it stops."""

from __future__ import annotations

import json
from pathlib import Path

from hil.line import run_line, sim_config
from models.synth.parts import render_part
from node.audit.reader import AuditReader
from node.config import DEFAULT_CONFIG, load_config
from node.line.results import PartResult
from node.sim.line import part_spec_for

FIRST, COUNT = 20, 25
"""The sim's parts 20..44 carry the same scratch at the same place."""


async def test_a_repeating_scratch_is_raised_at_its_place_and_cleared_when_it_stops(
    tmp_path: Path,
) -> None:
    """Parts 20..44 carry one scratch at one place among 10 % random defects: the node raises
    exactly one repeat, within the window of its start, within 2.5 mm of the scratch's true
    centre, in words, recorded in the audit store; and clears it within the window of its end."""
    cfg = sim_config(
        load_config(DEFAULT_CONFIG),
        node={"state_dir": tmp_path},
        hmi={"enabled": False},
        sim={
            "defect_rate": 0.1,
            "seed": 23,
            "repeat": {"defect": "scratch", "from_part": FIRST, "parts": COUNT, "seed": 5},
        },
        inspection={
            "recipe": {
                **load_config(DEFAULT_CONFIG).inspection.recipe.model_dump(),
                "repeats": {"window_parts": 10, "min_parts": 4, "distance_mm": 2.5},
            }
        },
    )
    results: list[PartResult] = []
    _, _, sim = await run_line(cfg, 70, on_result=results.append)
    index = {r.part_id: sim.camera.rendered.get(r.part_id) for r in results}
    notices = [(r.part_id, n) for r in results for n in r.repeats]
    raised = [(pid, n) for pid, n in notices if n.kind == "raised"]
    cleared = [(pid, n) for pid, n in notices if n.kind == "cleared"]
    assert len(raised) == 1 and len(cleared) == 1, notices
    (up_pid, up), (down_pid, down) = raised[0], cleared[0]
    assert up.key == down.key and up.defect_type == "scratch"
    up_index, down_index = index[up_pid], index[down_pid]
    assert up_index is not None and down_index is not None
    assert FIRST <= up_index < FIRST + 10
    assert FIRST + COUNT <= down_index < FIRST + COUNT + 10
    truth = render_part(part_spec_for(cfg, FIRST), cfg.inspection.mm_per_px).truth
    assert truth is not None
    tx, ty = (c * cfg.inspection.mm_per_px for c in truth.centroid_px)
    assert abs(up.x_mm - tx) < 2.5 and abs(up.y_mm - ty) < 2.5, (up, tx, ty)
    assert up.texts["en"].startswith("Repeating scratch ")
    assert "of the last 10 parts" in up.texts["en"] and "Kratzer" in up.texts["de"]
    assert down.texts["en"].endswith("has stopped (3 of the last 10 parts).")
    with AuditReader(tmp_path / "audit") as reader:
        stored = [
            n
            for rec in reader.query(limit=1000)
            for n in json.loads(rec.findings_json).get("repeats", [])
        ]
    assert sorted(n["kind"] for n in stored) == ["cleared", "raised"]
