"""Camera bench: the Aravis driver against the fake GigE Vision camera; one JSON object.

    python bench/camera.py --triggers 200 --rate 20 --seconds 10

Starts ``arv-fake-gv-camera-0.8 -i 127.0.0.1`` itself (and stops it), opens it
with the Aravis driver in software-trigger mode, then measures:

- ``latency_ms``: ``trigger()`` call → frame handed to the loop (``Frame.t_ns``),
  one trigger at a time at random phase, ``--triggers`` of them.
- ``sustained_fps``: frames per second when each trigger is sent as soon as the
  previous frame arrived, for ``--seconds``.
- ``open_loop``: triggers at a fixed ``--rate`` (Hz) for ``--seconds``, as the
  node sends them; ``frames_lost`` counts parts whose frame was not COMPLETE
  (missing, incomplete, error) plus frames dropped by the hand-off queue.

The fake camera serves software triggers on a 25 Hz clock, so latency is
uniform over 0–40 ms and the sustained rate is at most 25 fps: these numbers
measure the driver and the fake camera together, not a real camera.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import random
import sys
import time
from typing import Any

import numpy as np
import structlog

from drivers.camera.aravis import AravisCamera
from drivers.camera.base import Frame, FrameStatus
from drivers.camera.settings import AravisSettings
from drivers.sim.fakegv import FakeGvCamera


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:  # null, not NaN: NaN is not JSON
        return {"p50": None, "p99": None, "max": None, "n": 0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 2),
        "p99": round(float(np.percentile(a, 99)), 2),
        "max": round(float(a.max()), 2),
        "n": len(values),
    }


async def _latency(cam: AravisCamera, n: int, rng: random.Random) -> dict[str, float | None]:
    frames = cam.frames()
    lat: list[float] = []
    for i in range(n):
        await asyncio.sleep(rng.uniform(0.0, 0.045))  # random phase against the camera's clock
        t0 = time.monotonic_ns()
        await cam.trigger(i, i)
        frame = await anext(frames)
        if frame.status is FrameStatus.COMPLETE:
            lat.append((frame.t_ns - t0) / 1e6)
        if (i + 1) % 50 == 0:
            _progress(f"latency: {i + 1}/{n} triggers")
    return _pct(lat)


async def _closed_loop(cam: AravisCamera, seconds: float, first_id: int) -> dict[str, Any]:
    frames = cam.frames()
    complete = total = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        await cam.trigger(first_id + total, 0)
        frame = await anext(frames)
        total += 1
        complete += frame.status is FrameStatus.COMPLETE
    elapsed = time.monotonic() - t0
    _progress(f"closed loop: {complete} frames in {elapsed:.1f} s")
    return {
        "frames": complete,
        "triggers": total,
        "seconds": round(elapsed, 2),
        "fps": round(complete / elapsed, 2),
    }


async def _open_loop(
    cam: AravisCamera, rate: float, seconds: float, first_id: int
) -> dict[str, Any]:
    n = max(1, int(rate * seconds))
    got: list[Frame] = []
    dropped0 = cam.dropped

    async def consume() -> None:
        async for frame in cam.frames():
            got.append(frame)
            if len(got) == n:
                return

    consumer = asyncio.ensure_future(consume())
    t0 = time.monotonic()
    for i in range(n):
        await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        await cam.trigger(first_id + i, i)
    # frames dropped by the hand-off queue never arrive; they are counted below
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(consumer, cam_timeout_s(cam) + 2.0)
    by = {s: sum(f.status is s for f in got) for s in FrameStatus}
    ids = [f.part_id for f in got]
    dropped = cam.dropped - dropped0
    _progress(f"open loop at {rate:g} Hz: {by[FrameStatus.COMPLETE]}/{n} complete")
    return {
        "rate_hz": rate,
        "triggers": n,
        "complete": by[FrameStatus.COMPLETE],
        "incomplete": by[FrameStatus.INCOMPLETE],
        "missing": by[FrameStatus.MISSING],
        "error": by[FrameStatus.ERROR],
        "dropped": dropped,
        "in_order": ids == sorted(ids),
        "frames_lost": n - by[FrameStatus.COMPLETE],
    }


def cam_timeout_s(cam: AravisCamera) -> float:
    """The driver's frame timeout in seconds (the open-loop consumer waits this much longer)."""
    return cam.settings.timeout_ms / 1000


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = AravisSettings(
        address=args.address,
        features={"Width": args.width, "Height": args.height, "PixelFormat": args.pixel_format},
        timeout_ms=args.timeout_ms,
        max_trigger_delay_ms=args.max_trigger_delay_ms,
        queue_size=64,
    )
    rng = random.Random(args.seed)
    with FakeGvCamera(args.address, lost_per_mille=args.loss):
        _progress(f"fake camera up at {args.address}")
        async with AravisCamera(settings) as cam:
            latency = await _latency(cam, args.triggers, rng)
            closed = await _closed_loop(cam, args.seconds, 1_000_000)
            open_ = await _open_loop(cam, args.rate, args.seconds, 2_000_000)
            stats = cam.stats()
    return {
        "bench": "camera",
        "device": f"arv-fake-gv-camera-0.8 -i {args.address}"
        + (f" -r {args.loss}" if args.loss else ""),
        "driver": "aravis",
        "host": platform.node(),
        "image": {
            "width_px": args.width,
            "height_px": args.height,
            "pixel_format": args.pixel_format,
        },
        "latency_ms": latency,
        "sustained_fps": closed["fps"],
        "closed_loop": closed,
        "open_loop": open_,
        "frames_lost": open_["frames_lost"],
        "driver_stats": {
            "stale_frames": stats.stale_frames,
            "incomplete": stats.incomplete,
            "missing": stats.missing,
            "dropped": stats.dropped,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--triggers", type=int, default=200, help="latency samples")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each rate phase")
    p.add_argument("--rate", type=float, default=20.0, help="open-loop trigger rate, Hz")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--pixel-format", default="Mono8")
    p.add_argument("--loss", type=int, default=0, help="GVSP packets lost per thousand (-r)")
    p.add_argument("--timeout-ms", type=float, default=500.0)
    p.add_argument("--max-trigger-delay-ms", type=float, default=50.0)
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.triggers < 1 or args.seconds <= 0 or args.rate <= 0:
        p.error("--triggers must be ≥ 1, --seconds and --rate > 0")
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
    )
    print(json.dumps(asyncio.run(run(args)), indent=2))


if __name__ == "__main__":
    main()
