"""Runs Aravis' fake GigE Vision camera (``arv-fake-gv-camera-0.8``) as a real peer.

The fake camera speaks real GVCP/GVSP over UDP, so the Aravis driver, the
camera bench and the HIL rig can be exercised without hardware. It listens
on the GVCP port 3956 of one address, so one runs per address at a time;
keep it on loopback. Its ``-r`` option drops that many GVSP packets per
thousand, and it does not answer packet-resend requests (Aravis 0.8.26).
In trigger mode it checks for a pending trigger 25 times a second, so each
software trigger waits up to 40 ms for its frame and sustained triggered
rate is at most 25 frames/s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from types import TracebackType

import structlog

from drivers.errors import CameraDriverError

log = structlog.get_logger(__name__)

EXECUTABLE = "arv-fake-gv-camera-0.8"
GVCP_PORT = 3956


class FakeGvCamera:
    """``with FakeGvCamera("127.0.0.1", lost_per_mille=50) as fake:`` — start, then kill.

    ``serial`` is the camera's serial number (its Aravis id is
    ``Aravis-Fake-<serial>``). ``start()`` waits until the camera answers a
    GVCP discovery (at most ``ready_timeout_s``) and raises
    ``CameraDriverError`` if the executable is missing or the camera never answers.
    ``stop()`` kills it and waits for the process to exit, so the address is
    free again; both may be called repeatedly (kill and restart mid-run).
    """

    def __init__(
        self,
        address: str = "127.0.0.1",
        *,
        serial: str = "GV01",
        lost_per_mille: int = 0,
        ready_timeout_s: float = 5.0,
    ) -> None:
        self.address = address
        self.serial = serial
        self.lost_per_mille = lost_per_mille
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """True when ``arv-fake-gv-camera-0.8`` is on PATH (Debian package aravis-tools)."""
        return shutil.which(EXECUTABLE) is not None

    def start(self) -> None:
        """Start the fake camera and wait until it answers discovery."""
        exe = shutil.which(EXECUTABLE)
        if exe is None:
            raise CameraDriverError(f"{EXECUTABLE} not found (Debian package aravis-tools)")
        if self._proc is not None:
            return
        cmd = [exe, "-i", self.address, "-s", self.serial]
        if self.lost_per_mille:
            cmd += ["-r", str(self.lost_per_mille)]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_timeout_s
        while not _answers_discovery(self.address, timeout_s=0.1):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise CameraDriverError(f"{EXECUTABLE} at {self.address} did not come up")
        log.info(
            "fake_camera_started",
            address=self.address,
            serial=self.serial,
            lost_per_mille=self.lost_per_mille,
            pid=self._proc.pid,
        )

    def stop(self) -> None:
        """Kill the fake camera (SIGKILL: no goodbye, like a pulled cable) and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=5.0)
        log.info("fake_camera_stopped", address=self.address, pid=proc.pid)

    def __enter__(self) -> FakeGvCamera:
        self.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _answers_discovery(address: str, timeout_s: float) -> bool:
    """Send one GVCP DISCOVERY_CMD to ``address`` (unicast) and wait for the ACK."""
    # GVCP header: key 0x42, flags 0x01 (ack required, unicast ack),
    # command 0x0002 DISCOVERY_CMD, payload length 0, request id 1
    packet = bytes([0x42, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(packet, (address, GVCP_PORT))
            reply, _ = sock.recvfrom(1024)
        except OSError:  # timeout, or port unreachable while the camera is still starting
            return False
    return len(reply) >= 8 and reply[2:4] == b"\x00\x03"  # DISCOVERY_ACK
