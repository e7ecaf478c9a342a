"""The harvesters driver against the ``viky.cti`` GenTL producer shipped in the genicam wheel.

viky offers three devices (serials 0, 1, 2: red, green, blue), free-runs at
``AcquisitionFrameRate`` and has no trigger features, so the driver
associates frames with parts by arrival time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import structlog

from drivers.camera.base import Frame, FrameStatus
from drivers.camera.cli import viky_cti
from drivers.camera.settings import HarvestersSettings
from drivers.errors import CameraDriverError, FeatureError

harvesters = pytest.importorskip("drivers.camera.harvesters")
try:
    harvesters._harvesters()
except CameraDriverError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(str(exc), allow_module_level=True)
VIKY = viky_cti()
if VIKY is None:  # pragma: no cover
    pytest.skip("viky.cti not found in the genicam wheel", allow_module_level=True)

HarvestersCamera = harvesters.HarvestersCamera
FAST = {"PixelFormat": "Mono8", "Width": 320, "Height": 240, "AcquisitionFrameRate": 100.0}


def settings(**kw: object) -> HarvestersSettings:
    base: dict[str, object] = {"cti_files": (VIKY,), "features": FAST}
    base.update(kw)
    return HarvestersSettings.model_validate(base)


async def test_viky_free_runs_says_so_and_delivers_configured_frames() -> None:
    """viky has no trigger: the driver logs camera_free_running and frames have the set size."""
    with structlog.testing.capture_logs() as logs:
        async with HarvestersCamera(
            settings(serial="1", chunk_features=("ChunkNrBounces",))
        ) as cam:
            assert cam.free_running
            frames = cam.frames()
            got: list[Frame] = []
            for part in range(5):
                t_trigger = time.monotonic_ns()
                await cam.trigger(part, 10 * part)
                f = await asyncio.wait_for(anext(frames), 2.0)
                assert f.t_ns >= t_trigger
                got.append(f)
    free = [e for e in logs if e["event"] == "camera_free_running"]
    assert free and free[0]["reason"] == "device has no software trigger"
    assert [(f.part_id, f.encoder_count) for f in got] == [(p, 10 * p) for p in range(5)]
    for f in got:
        assert f.status is FrameStatus.COMPLETE
        assert f.pixels.shape == (240, 320) and f.pixels.dtype == np.uint8
        assert f.pixel_format == "Mono8"
        assert "ChunkNrBounces" in f.chunks
    ids = [f.device_frame_id or 0 for f in got]
    assert all(i > 0 for i in ids)
    assert ids == sorted(set(ids)), "a free-run frame was given to two parts"


async def test_free_run_triggers_faster_than_frames_never_share_a_frame() -> None:
    """Triggers twice as fast as the frame rate: each part gets its own later frame, in order."""
    fast = {**FAST, "AcquisitionFrameRate": 50.0}
    async with HarvestersCamera(settings(features=fast, timeout_ms=2000, queue_size=32)) as cam:
        for part in range(20):
            await cam.trigger(part, part)
            await asyncio.sleep(0.01)
        frames = cam.frames()
        got = [await asyncio.wait_for(anext(frames), 3.0) for _ in range(20)]
    assert [f.part_id for f in got] == list(range(20))
    assert all(f.status is FrameStatus.COMPLETE for f in got)
    ids = [f.device_frame_id or 0 for f in got]
    assert all(i > 0 for i in ids) and ids == sorted(set(ids))


async def test_rgba8_is_converted_to_rgb_of_the_device_colour() -> None:
    """viky 'red' (serial 0) in RGBa8 arrives as RGB8 with a red ball on white."""
    async with HarvestersCamera(settings(serial="0", features={"PixelFormat": "RGBa8"})) as cam:
        frames = cam.frames()
        await cam.trigger(0, 0)
        f = await asyncio.wait_for(anext(frames), 2.0)
    assert f.pixel_format == "RGB8" and f.pixels.shape == (400, 400, 3)
    colours = {tuple(c) for c in f.pixels.reshape(-1, 3).tolist()}
    assert (255, 0, 0) in colours and (255, 255, 255) in colours


async def test_missing_feature_and_out_of_range_value_name_the_feature() -> None:
    """A missing feature, an out-of-range value, a read-only node: each named; no thread left."""
    bad = {"ExposureTime": 100.0, "Width": 5000, "PixelFormat": "Mono16", "PayloadSize": 1}
    with pytest.raises(FeatureError) as err:
        async with HarvestersCamera(settings(features=bad)):
            pass
    assert not [t.name for t in threading.enumerate() if t.name.startswith("harvesters-")]
    problems = err.value.problems
    assert problems == [
        "ExposureTime: the device has no such feature",
        "Width: 5000 is out of range [100, 800]",
        "PixelFormat: 'Mono16' is not an available entry; choose one of RGBa8, Mono8",
        "PayloadSize: is not writable on this device now (read-only, or locked while acquiring)",
    ]


async def test_software_trigger_on_viky_is_a_clear_error() -> None:
    """Asking for the software trigger on a device without one fails, naming TriggerSoftware."""
    with pytest.raises(CameraDriverError, match="TriggerSoftware"):
        async with HarvestersCamera(settings(trigger="software")):
            pass


async def test_unknown_serial_lists_the_serials_found() -> None:
    """Opening a serial that is not there fails with the serials that are."""
    with pytest.raises(CameraDriverError, match=r"serial 9.*'0', '1', '2'"):
        async with HarvestersCamera(settings(serial="9")):
            pass


def test_producers_come_from_genicam_gentl64_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no cti_files, GENICAM_GENTL64_PATH folders are searched and discover() lists viky."""
    assert VIKY is not None
    monkeypatch.setenv("GENICAM_GENTL64_PATH", f"/nonexistent:{VIKY.parent}")
    assert HarvestersSettings().resolved_cti_files() == (VIKY,)
    found = harvesters.discover()
    assert [(d.vendor, d.model, d.serial, d.address) for d in found] == [
        ("Machine Vision Games Ltd.", "Viky", s, f"VikyTL_DEV_{c}")
        for s, c in (("0", "red"), ("1", "green"), ("2", "blue"))
    ]


def test_no_producer_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cti_files and nothing on GENICAM_GENTL64_PATH: the error says where to configure one."""
    monkeypatch.setenv("GENICAM_GENTL64_PATH", str(tmp_path))
    with pytest.raises(CameraDriverError, match="GENICAM_GENTL64_PATH"):
        harvesters.discover()


def test_settings_choose_at_most_one_device_selector() -> None:
    """HarvestersSettings rejects two selectors at once."""
    with pytest.raises(ValueError, match="one of serial, user_defined_name, index"):
        HarvestersSettings(serial="1", index=0)
