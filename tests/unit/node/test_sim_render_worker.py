"""The sim camera's render worker loads only what rendering needs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hil.line import sim_config
from node.config import load_config
from node.sim.line import ProcessRenderer, build_sim_line

REPO = Path(__file__).resolve().parents[3]


def test_the_render_worker_renders_without_the_config_or_the_opc_ua_stack() -> None:
    """The worker process (spawned at every start of a node on the sim line) renders frames
    having imported neither the node's config nor asyncua: importing them cost each start
    about half a second of CPU beside the starting node."""
    cfg = sim_config(load_config(REPO / "configs" / "sim-classical.toml"))
    renderer = build_sim_line(cfg).renderer
    assert isinstance(renderer, ProcessRenderer)
    renderer.open()
    try:
        frame = renderer.blank()
        pool = renderer._pool
        assert pool is not None
        # eval is a builtin: the worker runs it without importing anything of the caller's
        loaded = pool.submit(eval, "sorted(__import__('sys').modules)").result(timeout=10)
    finally:
        renderer.close()
    cam = cfg.camera.sim
    assert frame.shape == (cam.height_px, cam.width_px) and frame.dtype == np.uint8
    assert "models.synth" in loaded
    assert "node.config" not in loaded and "asyncua" not in loaded, [
        m for m in loaded if m.startswith(("node", "asyncua"))
    ]
