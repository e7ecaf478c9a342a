"""Audit images on disk: which ones are kept, and writing them atomically as PNG.

Images live under the store's ``images/`` folder in one folder per UTC day
(``images/2025-03-14/<result_id>.png``) so no folder grows without bound and
retention by age removes whole days. A file is written to ``images/.tmp/``
and renamed into place, so a reader never sees half an image; with
``durable=True`` the file and its folder are fsynced before the rename is
considered done, which is what makes a committed row's image survive a power cut.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

NS_PER_S = 1_000_000_000
TMP_DIR = ".tmp"
"""Folder under the image root for files being written; emptied when the store opens."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """``text`` as a file or folder name: runs of anything but ``A-Za-z0-9._-`` become ``_``."""
    name = _UNSAFE.sub("_", text).strip("._")
    return name or "_"


def keep_image(result_id: str, reject: bool, sample_passes: float) -> bool:
    """Whether a part's image is kept: always for a reject, else for a ``sample_passes`` share.

    The share is drawn from a hash of ``result_id`` (uniform in [0, 1)), not a
    random generator, so the same part always gets the same answer.
    """
    if reject:
        return True
    if sample_passes <= 0:
        return False
    digest = hashlib.blake2b(result_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < sample_passes


def image_relpath(result_id: str, wall_time_ns: int) -> str:
    """The image's path relative to the image root: ``<UTC day>/<file_stem(result id)>.png``."""
    day = time.strftime("%Y-%m-%d", time.gmtime(wall_time_ns // NS_PER_S))
    return f"{day}/{file_stem(result_id)}.png"


def file_stem(result_id: str) -> str:
    """``result_id`` as a file name stem; one that had to be altered gets a short hash of the
    original appended, so two ids never share a file."""
    name = safe_name(result_id)
    if name != result_id:
        name += "-" + hashlib.blake2b(result_id.encode(), digest_size=4).hexdigest()
    return name


def encode_png(image: npt.NDArray[np.generic]) -> bytes:
    """PNG bytes of a uint8 ``(H, W)``, ``(H, W, 1|3|4)`` or uint16 ``(H, W)`` image.

    Compression level 1: the writer thread's time matters more than a few
    percent of disk. Raises ``ValueError`` for any other shape or dtype.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    gray_or_colour = a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))
    if not ((a.dtype == np.uint8 and gray_or_colour) or (a.dtype == np.uint16 and a.ndim == 2)):
        raise ValueError(f"cannot store an image of shape {a.shape} and dtype {a.dtype} as PNG")
    im = Image.fromarray(np.ascontiguousarray(a))
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@dataclass(frozen=True, slots=True)
class StoredImage:
    """An image written under the image root: its relative path, sha256 and size.

    ``new_folder`` is True when writing it created its day folder (which then
    must be fsynced into the root as well).
    """

    relpath: str
    sha256: str
    size_bytes: int
    new_folder: bool = False


def write_atomic(root: Path, relpath: str, data: bytes, *, durable: bool) -> StoredImage:
    """Write ``data`` to ``root/relpath`` via a temporary file and a rename.

    With ``durable`` the file is fsynced before the rename; the caller fsyncs
    the target folder (:func:`fsync_dir`) once per batch before committing the
    rows that name the files. Raises ``OSError`` when the disk refuses.
    """
    target = root / relpath
    new_folder = not target.parent.is_dir()
    if new_folder:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = root / TMP_DIR
    tmp = tmp_dir / f"{target.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    return StoredImage(relpath, hashlib.sha256(data).hexdigest(), len(data), new_folder)


def fsync_dir(path: Path) -> None:
    """fsync a folder so the names renamed into it survive a power cut."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_tmp(root: Path) -> int:
    """Create ``root/.tmp`` and remove files left in it by a killed writer; returns how many."""
    tmp_dir = root / TMP_DIR
    tmp_dir.mkdir(parents=True, exist_ok=True)
    removed = 0
    for p in tmp_dir.iterdir():
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, hex. Raises ``OSError`` when it cannot be read."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_orphans(conn: sqlite3.Connection, root: Path) -> int:
    """Remove images in the two newest day folders that no record names; returns how many.

    Only an unclean stop leaves such files (written, then the process died
    before its row committed), and only in the newest folders.
    """
    days = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    removed = 0
    for day in days[-2:]:
        try:
            start_ns = calendar.timegm(time.strptime(day.name, "%Y-%m-%d")) * NS_PER_S
        except ValueError:
            continue  # not a folder of ours
        known = {
            row[0]
            for row in conn.execute(
                "SELECT image_path FROM records WHERE image_path IS NOT NULL "
                "AND wall_time_ns >= ? AND wall_time_ns < ?",
                (start_ns, start_ns + 86_400 * NS_PER_S),
            )
        }
        for p in day.iterdir():
            if p.is_file() and f"{day.name}/{p.name}" not in known:
                p.unlink(missing_ok=True)
                removed += 1
    return removed
