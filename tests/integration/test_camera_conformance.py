"""One conformance test for every Camera: sim, Aravis (fake GigE camera), harvesters (viky)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import numpy as np
import numpy.typing as npt
import pytest

from drivers.camera.base import Camera, Frame, FrameStatus
from drivers.camera.cli import viky_cti
from drivers.camera.settings import AravisSettings, HarvestersSettings
from drivers.errors import CameraBackendUnavailable
from drivers.sim.camera import SimCamera, SimCameraSettings
from drivers.sim.fakegv import FakeGvCamera
from drivers.sim.world import SimWorld

W, H = 64, 48
N_TRIGGERS = 12
PERIOD_S = 0.06  # slower than the fake GigE camera's 25 Hz trigger clock


def sim_camera() -> AbstractAsyncContextManager[Camera]:
    """The shipped fake, built on a SimWorld with a flat renderer as node/wiring.py does."""
    world = SimWorld(
        counts_per_mm=10.0,
        encoder_bits=32,
        pitch_mm=50.0,
        part_length_mm=40.0,
        speed_profile=((0.0, 500.0),),
        part_factory=lambda i: i,
    )
    world.start()  # whoever builds the world starts its clock; the sim drivers only read it

    def render(payload: object, cx: float, cy: float) -> npt.NDArray[np.uint8]:
        return np.full((H, W), 200, dtype=np.uint8)

    def render_blank() -> npt.NDArray[np.uint8]:
        return np.full((H, W), 30, dtype=np.uint8)

    return SimCamera(
        world,
        SimCameraSettings(width_px=W, height_px=H, mm_per_px=0.5, position_mm=100.0),
        render,
        render_blank,
    )


@asynccontextmanager
async def aravis_camera() -> AsyncIterator[Camera]:
    """The Aravis driver on a fake GigE Vision camera started for the test."""
    try:
        from drivers.camera.aravis import AravisCamera, _gi

        _gi()
    except CameraBackendUnavailable as exc:  # pragma: no cover - depends on the machine
        pytest.skip(str(exc))
    if not FakeGvCamera.available():  # pragma: no cover
        pytest.skip("arv-fake-gv-camera-0.8 not installed (aravis-tools)")
    with FakeGvCamera("127.0.0.1"):
        s = AravisSettings(address="127.0.0.1", features={"Width": W, "Height": H})
        async with AravisCamera(s) as cam:
            yield cam


@asynccontextmanager
async def harvesters_camera() -> AsyncIterator[Camera]:
    """The harvesters driver on viky (free-running, associated by time)."""
    try:
        from drivers.camera.harvesters import HarvestersCamera, _harvesters

        _harvesters()
    except CameraBackendUnavailable as exc:  # pragma: no cover
        pytest.skip(str(exc))
    cti = viky_cti()
    if cti is None:  # pragma: no cover
        pytest.skip("viky.cti not found in the genicam wheel")
    features: dict[str, bool | int | float | str] = {
        "PixelFormat": "Mono8",
        "Width": 320,
        "Height": 240,
        "AcquisitionFrameRate": 100.0,
    }
    async with HarvestersCamera(HarvestersSettings(cti_files=(cti,), features=features)) as cam:
        yield cam


CAMERAS: dict[str, Callable[[], AbstractAsyncContextManager[Camera]]] = {
    "sim": sim_camera,
    "aravis": aravis_camera,
    "harvesters": harvesters_camera,
}


@pytest.fixture(params=sorted(CAMERAS))
def open_camera(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[], AbstractAsyncContextManager[Camera]]]:
    """Each Camera implementation, opened by the test."""
    yield CAMERAS[request.param]


async def test_camera_contract(
    open_camera: Callable[[], AbstractAsyncContextManager[Camera]],
) -> None:
    """N triggers give N frames in trigger order, each with its part_id, count, pixels, format."""
    async with open_camera() as cam:
        frames = cam.frames()
        got: list[tuple[int, Frame]] = []
        for part in range(N_TRIGGERS):
            t0 = time.monotonic_ns()
            await cam.trigger(100 + part, 5000 + part)
            assert time.monotonic_ns() - t0 < 20_000_000, "trigger() blocked the event loop"
            await asyncio.sleep(PERIOD_S)
            got.append((t0, await asyncio.wait_for(anext(frames), 3.0)))
        assert cam.dropped == 0
    assert [f.part_id for _, f in got] == [100 + p for p in range(N_TRIGGERS)]
    assert [f.encoder_count for _, f in got] == [5000 + p for p in range(N_TRIGGERS)]
    for t0, f in got:
        assert f.status is FrameStatus.COMPLETE, f.detail
        assert f.t_ns >= t0
        assert f.pixels.ndim in (2, 3) and f.pixels.size > 0
        assert f.pixels.dtype in (np.uint8, np.uint16)
        assert f.pixel_format in ("Mono8", "Mono10", "Mono12", "Mono16", "RGB8")


def test_driver_modules_import_no_vendor_library() -> None:
    """Importing the camera package and driver modules loads neither PyGObject nor harvesters."""
    code = (
        "import sys, drivers.camera, drivers.camera.aravis, drivers.camera.harvesters, "
        "drivers.camera.cli, drivers.sim.fakegv\n"
        "print(sorted(m for m in ('gi', 'harvesters', 'genicam') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
