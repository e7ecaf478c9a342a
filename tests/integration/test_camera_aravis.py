"""The Aravis driver against Aravis' fake GigE Vision camera on loopback (real GVCP/GVSP).

The fake camera fills Mono8 frames with a diagonal ramp whose offset is its
frame id: ``pixel[y, x] == (x + y + frame_id) % 255``; frame ids run 1..65535
and wrap to 1. That lets a test prove which device frame each part received.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest
import structlog

from drivers.camera.base import Frame, FrameStatus
from drivers.camera.settings import AravisSettings
from drivers.errors import CameraDriverError, FeatureError
from drivers.sim.fakegv import FakeGvCamera

aravis = pytest.importorskip("drivers.camera.aravis")
try:
    aravis._gi()
except CameraDriverError as exc:  # pragma: no cover - depends on the machine
    pytest.skip(str(exc), allow_module_level=True)
if not FakeGvCamera.available():  # pragma: no cover
    pytest.skip("arv-fake-gv-camera-0.8 not installed (aravis-tools)", allow_module_level=True)

AravisCamera = aravis.AravisCamera
ADDRESS = "127.0.0.1"
SMALL = {"Width": 64, "Height": 48, "PixelFormat": "Mono8"}


@pytest.fixture
def fake_camera() -> Iterator[FakeGvCamera]:
    """A fake GigE Vision camera on 127.0.0.1, killed at teardown."""
    with FakeGvCamera(ADDRESS) as fake:
        yield fake


@pytest.fixture
def lossy_camera() -> Iterator[FakeGvCamera]:
    """A fake camera that drops 50 of every 1000 GVSP packets (``-r 50``)."""
    with FakeGvCamera(ADDRESS, lost_per_mille=50) as fake:
        yield fake


def settings(**kw: object) -> AravisSettings:
    base: dict[str, object] = {"address": ADDRESS, "features": SMALL}
    base.update(kw)
    return AravisSettings.model_validate(base)


def ramp_offset(frame: Frame) -> int:
    """The fake camera's ramp offset, after checking the frame really is the ramp."""
    px = frame.pixels.astype(np.int64)
    h, w = px.shape
    offset = int(px[0, 0])
    expected = (offset + np.arange(w)[None, :] + np.arange(h)[:, None]) % 255
    assert (px == expected).all(), f"part {frame.part_id}: pixels are not the fake camera's ramp"
    return offset


def next_frame_id(frame_id: int) -> int:
    """GigE Vision 1.x block ids count 1..65535 and skip 0 when they wrap."""
    return frame_id % 65535 + 1


async def collect(cam: object, n: int, timeout_s: float) -> list[Frame]:
    assert isinstance(cam, AravisCamera)
    out: list[Frame] = []
    async with asyncio.timeout(timeout_s):
        async for frame in cam.frames():
            out.append(frame)
            if len(out) == n:
                break
    return out


async def test_software_trigger_gives_frames_of_the_configured_size_and_content(
    fake_camera: FakeGvCamera,
) -> None:
    """Each software trigger yields one COMPLETE 64x48 Mono8 frame showing its frame id's ramp."""
    async with AravisCamera(settings()) as cam:
        frames = cam.frames()
        for part in range(10):
            await cam.trigger(part, 1000 + part)
            f = await asyncio.wait_for(anext(frames), 2.0)
            assert (f.part_id, f.encoder_count, f.status) == (
                part,
                1000 + part,
                FrameStatus.COMPLETE,
            )
            assert f.pixels.shape == (48, 64) and f.pixels.dtype == np.uint8
            assert f.pixel_format == "Mono8"
            assert f.device_frame_id is not None and f.device_timestamp_ns
            assert ramp_offset(f) == f.device_frame_id % 255
        assert cam.stats().complete == 10 and cam.dropped == 0


@pytest.mark.slow
async def test_200_queued_triggers_get_consecutive_frames_in_order(
    fake_camera: FakeGvCamera,
) -> None:
    """200 triggers sent at once give 200 frames in trigger order, each the next device frame."""
    n = 200
    cam_settings = settings(
        features={"Width": 32, "Height": 8},
        timeout_ms=30_000,
        max_trigger_delay_ms=30_000,
        queue_size=n,
    )
    async with AravisCamera(cam_settings) as cam:
        for part in range(n):
            await cam.trigger(part, part * 7)
        frames = await collect(cam, n, timeout_s=30)
    assert [f.part_id for f in frames] == list(range(n))
    assert [f.encoder_count for f in frames] == [p * 7 for p in range(n)]
    assert all(f.status is FrameStatus.COMPLETE for f in frames)
    ids = [f.device_frame_id for f in frames]
    assert all(isinstance(i, int) for i in ids)
    for prev, cur in itertools.pairwise(frames):
        assert prev.device_frame_id is not None
        assert cur.device_frame_id == next_frame_id(prev.device_frame_id)
        assert ramp_offset(cur) == (ramp_offset(prev) + 1) % 255 or cur.device_frame_id == 1


async def test_packet_loss_flags_incomplete_frames_without_losing_order(
    lossy_camera: FakeGvCamera,
) -> None:
    """With 5% GVSP loss every part still gets its frame in order; damaged ones are INCOMPLETE."""
    n = 40
    # about 14 packets per frame: roughly half the frames lose one. The fake camera
    # ignores packet-resend requests, so resend cannot repair them; a frame whose
    # leader is lost may never be delivered, and that part gets MISSING.
    cam_settings = settings(
        features={"Width": 256, "Height": 64}, frame_retention_ms=30, timeout_ms=400
    )
    frames: list[Frame] = []
    async with AravisCamera(cam_settings) as cam:
        stream = cam.frames()
        for part in range(n):
            await cam.trigger(part, part)
            frames.append(await asyncio.wait_for(anext(stream), 2.0))
        stats = cam.stats()
    assert [f.part_id for f in frames] == list(range(n))
    incomplete = [f for f in frames if f.status is FrameStatus.INCOMPLETE]
    complete = [f for f in frames if f.status is FrameStatus.COMPLETE]
    missing = [f for f in frames if f.status is FrameStatus.MISSING]
    assert incomplete, "5% packet loss produced no incomplete frame"
    assert complete, "5% packet loss left no frame complete"
    assert len(incomplete) + len(complete) + len(missing) == n
    assert all("aravis buffer status" in f.detail for f in incomplete), [
        f.detail for f in incomplete
    ]
    assert (stats.incomplete, stats.missing) == (len(incomplete), len(missing))
    for f in complete:
        assert f.device_frame_id is not None
        assert ramp_offset(f) == f.device_frame_id % 255


@pytest.mark.slow
async def test_camera_killed_and_restarted_mid_run(fake_camera: FakeGvCamera) -> None:
    """A killed camera is reported, parts meanwhile get MISSING, it reconnects and resumes."""
    period_s, n, kill_at, restart_at = 0.05, 180, 20, 80
    cam_settings = settings(
        reconnect_backoff_s=0.2, reconnect_backoff_max_s=0.5, max_trigger_delay_ms=200
    )
    with structlog.testing.capture_logs() as logs:
        async with AravisCamera(cam_settings) as cam:
            frames: list[Frame] = []

            async def consume() -> None:
                async for f in cam.frames():
                    frames.append(f)
                    if len(frames) == n:
                        return

            async with asyncio.TaskGroup() as tg:
                tg.create_task(consume())
                t0 = time.monotonic()
                for part in range(n):
                    await asyncio.sleep(max(0.0, t0 + part * period_s - time.monotonic()))
                    if part == kill_at:
                        fake_camera.stop()
                    if part == restart_at:
                        await asyncio.to_thread(fake_camera.start)
                    await cam.trigger(part, part)
            stats = cam.stats()
    status = [f.status for f in frames]
    assert [f.part_id for f in frames] == list(range(n))
    assert all(s is FrameStatus.COMPLETE for s in status[:kill_at])
    outage = status[kill_at:restart_at]
    assert all(s is FrameStatus.MISSING for s in outage), (
        "a part got a frame while the camera was dead"
    )
    resumed = [i for i, s in enumerate(status) if s is FrameStatus.COMPLETE and i >= restart_at]
    assert resumed, "no frame after the camera came back"
    assert all(s is FrameStatus.COMPLETE for s in status[resumed[0] :])
    assert all(s is FrameStatus.MISSING for s in status[kill_at : resumed[0]])
    assert stats.reconnects >= 1 and stats.connected
    lost = [e for e in logs if e["event"] == "camera_connection_lost"]
    assert lost and lost[0]["log_level"] == "error"  # camera_reconnected is info: filtered in tests
    after = frames[resumed[0] :]
    for prev, cur in itertools.pairwise(after):
        assert ramp_offset(cur) == (ramp_offset(prev) + 1) % 255


async def test_missing_feature_and_out_of_range_value_name_the_feature(
    fake_camera: FakeGvCamera,
) -> None:
    """A missing feature, an out-of-range Width, a bad enum, a read-only node: each is named."""
    bad = {"ExposureTime": 5000.0, "Width": 100_000, "PixelFormat": "Mono12p", "SensorWidth": 8}
    with pytest.raises(FeatureError) as err:
        async with AravisCamera(settings(features=bad)):
            pass
    problems = err.value.problems
    assert len(problems) == 4
    assert problems[0] == "ExposureTime: the device has no such feature"
    assert problems[1].startswith("Width: 100000 is out of range [1, ")
    assert problems[2].startswith("PixelFormat: 'Mono12p' is not an available entry; choose one of")
    assert "Mono8" in problems[2]
    assert problems[3].startswith("SensorWidth: is not writable")


async def test_line_trigger_without_pulses_gives_each_part_missing_in_order(
    fake_camera: FakeGvCamera,
) -> None:
    """Line trigger with no wire pulse: each announced part gets a MISSING frame, in order."""
    async with AravisCamera(settings(trigger="line", timeout_ms=150)) as cam:
        for part in range(3):
            await cam.trigger(part, part)
        frames = await collect(cam, 3, timeout_s=3)
        assert cam.stats().unmatched_frames == 0
    assert [(f.part_id, f.status) for f in frames] == [(p, FrameStatus.MISSING) for p in range(3)]
    assert all("timeout_ms=150" in f.detail for f in frames)


async def test_unreachable_camera_fails_to_open_cleanly() -> None:
    """No camera at the address: entering raises CameraDriverError and leaves nothing running."""
    with pytest.raises(CameraDriverError, match=r"127\.0\.0\.9"):
        async with AravisCamera(settings(address="127.0.0.9")):
            pass
    assert not [t.name for t in threading.enumerate() if t.name.startswith("aravis-")]


async def test_open_timeout_unwinds_and_the_late_open_is_closed(fake_camera: FakeGvCamera) -> None:
    """Giving up on a slow open raises at once; the thread closes the camera it opened late."""
    cam = AravisCamera(settings(open_timeout_s=0.001))
    with pytest.raises(CameraDriverError, match="not open after open_timeout_s"):
        async with cam:
            pass
    await asyncio.to_thread(_join_camera_threads, 5.0)
    assert not cam.connected
    async with AravisCamera(settings()) as again:  # the device was released: it opens again
        assert again.connected


def _join_camera_threads(timeout_s: float) -> None:
    for t in threading.enumerate():
        if t.name.startswith("aravis-"):
            t.join(timeout_s)


def test_settings_need_exactly_one_selector_and_keep_trigger_features() -> None:
    """AravisSettings rejects zero or two device selectors and trigger features in features."""
    with pytest.raises(ValueError, match="exactly one of address, device_id, serial"):
        AravisSettings()
    with pytest.raises(ValueError, match="exactly one"):
        AravisSettings(address=ADDRESS, serial="GV01")
    with pytest.raises(ValueError, match="TriggerMode set by the driver"):
        AravisSettings(address=ADDRESS, features={"TriggerMode": "Off"})


def test_discover_by_address_lists_the_fake_camera(fake_camera: FakeGvCamera) -> None:
    """Asking 127.0.0.1 directly finds the fake camera with its vendor, model and serial."""
    found = aravis.discover([ADDRESS])
    assert [(d.backend, d.vendor, d.model, d.serial, d.address) for d in found] == [
        ("aravis", "Aravis", "Fake", "GV01", ADDRESS)
    ]
