"""What the sim camera's render worker runs: one frame of a part on the belt.

The worker is a spawned process that imports this module to unpickle its calls, so the
module imports only what rendering needs (``models.synth``, NumPy). Kept in
``node.sim.line``, the worker also imported the config and, through it, the HMI's OPC UA
stack: about half a second of CPU on every start of a node on the sim line, spent
while the node itself starts.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import numpy.typing as npt

from models.synth import PartSpec, render_part, render_scene

BELT_LEVEL = 30
_PARENT_POLL_S = 0.5


def render_frame(
    spec: PartSpec,
    mm_per_px: float,
    hw: tuple[int, int],
    centre: tuple[float, float],
    noise_seed: int | None,
) -> npt.NDArray[np.uint8]:
    """One camera frame of ``spec`` centred at ``centre`` (runs in the render process)."""
    image, _ = render_scene(render_part(spec, mm_per_px), hw, centre, BELT_LEVEL, noise_seed)
    return image


def worker_init() -> None:
    """In the render worker: ignore Ctrl-C (it reaches the whole process group, but
    stopping is the node's to do: it drains the parts in flight, which still need frames),
    and exit when the node is gone. A node killed outright (SIGKILL, OOM) cannot shut its
    pool down, and the worker, which holds both ends of its own task pipe, would wait for
    work for ever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
