"""Shadow mode: a candidate model judges every inspected part beside the active one and
never acts.

The candidate gets the same crop the active model judged, after the active verdict was
decided, through a bounded queue to a thread of its own that runs at the lowest CPU
priority: a full queue skips the part (counted, shown in the status), so the line never
waits for the candidate. Its verdicts go through the same recipe (``Judge``) and are
recorded, never handed to the actuation.

Everything lands in ``<node.state_dir>/shadow/<candidate sha256[:12]>/``:
``judged.jsonl`` holds one line per part judged by both (both verdicts, scores and
types), ``images/<part_id>.png`` the crop of each disagreement (the first
``inspection.shadow.keep_images``), ``candidate.json`` which package this is. ``lineside
shadow report CONFIG`` reads them.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog
from PIL import Image

from models.backend import Backend
from node.line.judge import Judge, Verdict

log = structlog.get_logger(__name__)

_STOP = object()


@dataclass(slots=True)
class ShadowCounts:
    """What the candidate did so far.

    ``judged``: parts both models judged; ``agree``: same reject/pass; ``active_only``:
    the active model rejected, the candidate would have passed; ``candidate_only``: the
    candidate would have rejected a part the active one passed; ``type_differs``: both
    rejected, for different defect types; ``skipped``: parts offered while the queue was
    full; ``errors``: parts the candidate could not judge (its exception logged).
    """

    judged: int = 0
    agree: int = 0
    active_only: int = 0
    candidate_only: int = 0
    type_differs: int = 0
    skipped: int = 0
    errors: int = 0


def shadow_dir(state_dir: Path, sha256: str) -> Path:
    """Where a candidate's records go."""
    return state_dir / "shadow" / sha256[:12]


def _side(v: Verdict) -> dict[str, Any]:
    return {
        "reject": v.reject,
        "reason": v.reason.value,
        "type": v.defect_type,
        "score": None if v.score is None else round(float(v.score), 4),
        "explanation": v.explanation,
    }


class Shadow:
    """Runs ``backend`` beside the line; see the module docstring.

    Use as a context manager (``with``): the worker starts on entry and is stopped on
    exit, after the parts already queued were judged.
    """

    def __init__(
        self,
        backend: Backend,
        judge: Judge,
        directory: Path,
        *,
        package: dict[str, str],
        queue_size: int = 4,
        keep_images: int = 200,
    ) -> None:
        self.backend = backend
        self.judge = judge
        self.directory = directory
        self.package = package
        self.keep_images = keep_images
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._counts = ShadowCounts()
        self._images_kept = 0
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Shadow:
        (self.directory / "images").mkdir(parents=True, exist_ok=True)
        info = {**self.package, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (self.directory / "candidate.json").write_text(json.dumps(info, indent=2) + "\n")
        self._images_kept = sum(1 for _ in (self.directory / "images").glob("*.png"))
        self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
        self._thread.start()
        log.info("shadow_started", directory=str(self.directory), **self.package)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, timeout_s: float = 10.0) -> None:
        """Judge what is queued, then stop the worker (at most ``timeout_s``)."""
        thread = self._thread
        if thread is None:
            return
        self._thread = None
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout_s)
        thread.join(timeout_s)
        log.info("shadow_stopped", **asdict(self.snapshot_counts()))

    def offer(self, crop: npt.NDArray[np.uint8], active: Verdict) -> bool:
        """Queue one part the active model judged; False (and counted) when the queue is
        full. Never blocks: the caller is the line."""
        try:
            self._queue.put_nowait((crop, active))
        except queue.Full:
            with self._lock:
                self._counts.skipped += 1
            return False
        return True

    def snapshot_counts(self) -> ShadowCounts:
        """A copy of the counts."""
        with self._lock:
            return ShadowCounts(**asdict(self._counts))

    def snapshot(self) -> dict[str, Any]:
        """The counts and the candidate, for the node's status."""
        return {"package_sha256": self.package.get("sha256", ""), **asdict(self.snapshot_counts())}

    # -- the worker thread ---------------------------------------------------------------
    def _work(self) -> None:
        with contextlib.suppress(OSError):  # Linux: a thread's own nice value
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            out = open(self.directory / "judged.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            log.error("shadow_cannot_record", directory=str(self.directory), error=str(exc))
            for _ in self._items():  # nothing judged that could not be kept: count, go on
                self._count_error()
            return
        with out:
            for crop, active in self._items():
                try:
                    (findings,) = self.backend.infer([crop])
                except Exception as exc:  # noqa: BLE001 - the candidate never stops the line
                    self._count_error()
                    log.warning("shadow_inference_failed", part_id=active.part_id, error=str(exc))
                    continue
                candidate = self.judge.judge(active.part_id, findings)
                try:
                    self._record(out, crop, active, candidate)
                except OSError as exc:  # e.g. a full disk: the line goes on without it
                    self._count_error()
                    log.warning("shadow_record_failed", part_id=active.part_id, error=str(exc))

    def _count_error(self) -> None:
        with self._lock:
            self._counts.errors += 1

    def _items(self) -> Iterator[tuple[npt.NDArray[np.uint8], Verdict]]:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            yield item  # type: ignore[misc]

    def _record(
        self, out: Any, crop: npt.NDArray[np.uint8], active: Verdict, candidate: Verdict
    ) -> None:
        """Write the part's line (and its crop if they disagree), then count it."""
        agree = active.reject == candidate.reject
        differs = agree and active.reject and active.defect_type != candidate.defect_type
        image = None
        if (not agree or differs) and self._images_kept < self.keep_images:
            image = f"images/{active.part_id}.png"
            Image.fromarray(np.ascontiguousarray(crop)).save(
                self.directory / image, compress_level=1
            )
            self._images_kept += 1
        row = {
            "part_id": active.part_id,
            "t": round(time.time(), 3),
            "agree": agree,
            "type_differs": differs,
            "active": _side(active),
            "candidate": _side(candidate),
            "image": image,
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        with self._lock:
            c = self._counts
            c.judged += 1
            c.agree += agree
            c.active_only += active.reject and not candidate.reject
            c.candidate_only += candidate.reject and not active.reject
            c.type_differs += differs


def _wilson(k: int, n: int) -> tuple[float, float]:
    """The 95 % Wilson interval of a proportion ``k / n`` (0, 1 when ``n`` is 0)."""
    if n == 0:
        return 0.0, 1.0
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)


def read_report(directory: Path, examples: int = 12) -> dict[str, Any]:
    """The disagreement report of the candidate recorded in ``directory``.

    Counts over every line of ``judged.jsonl`` (agreement with its 95 % Wilson interval)
    and up to ``examples`` disagreements, newest first: the parts one model would have
    rejected and the other passed, then those rejected by both for different types (both
    verdicts; the crop's path when it was kept). Raises ``FileNotFoundError`` when nothing
    was recorded there.
    """
    judged_file = directory / "judged.jsonl"
    if not judged_file.is_file():
        raise FileNotFoundError(f"{judged_file}: no shadow records (has the node run with it?)")
    info_file = directory / "candidate.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    counts = ShadowCounts()
    verdicts: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(examples, 1))
    types: collections.deque[dict[str, Any]] = collections.deque(maxlen=max(examples, 1))
    with open(judged_file, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a power loss
            counts.judged += 1
            a, c = row["active"]["reject"], row["candidate"]["reject"]
            counts.agree += a == c
            counts.active_only += a and not c
            counts.candidate_only += c and not a
            counts.type_differs += bool(row.get("type_differs"))
            if a != c or row.get("type_differs"):
                if row.get("image"):
                    row["image"] = str(directory / row["image"])
                (verdicts if a != c else types).append(row)
    n = counts.judged
    return {
        "candidate": info,
        "directory": str(directory),
        "judged": n,
        "agree": counts.agree,
        "agreement": round(counts.agree / n, 4) if n else None,
        "agreement_ci95": _wilson(counts.agree, n),
        "active_only": counts.active_only,
        "candidate_only": counts.candidate_only,
        "type_differs": counts.type_differs,
        "examples": ([*reversed(verdicts), *reversed(types)])[:examples],
    }


def plot_report(report: dict[str, Any], out: Path) -> Path:
    """A PNG sheet of the report's examples: each kept crop with both verdicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [e for e in report["examples"] if e.get("image")][:12]
    cols = 4
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows + 0.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, e in zip(axes.flat, shown, strict=False):
        ax.imshow(np.asarray(Image.open(e["image"])), cmap="gray", vmin=0, vmax=255)

        def say(side: dict[str, Any]) -> str:
            what = (side["type"] or side["reason"]) if side["reject"] else "pass"
            return f"{what} ({side['score']})"

        ax.set_title(
            f"part {e['part_id']}\nactive: {say(e['active'])}\ncandidate: {say(e['candidate'])}",
            fontsize=8,
        )
    sha = str(report["candidate"].get("sha256", ""))[:12]
    fig.suptitle(
        f"shadow candidate {sha}: {report['judged']} parts, agreement {report['agreement']} "
        f"(95 % {report['agreement_ci95'][0]}-{report['agreement_ci95'][1]}); "
        f"active only {report['active_only']}, candidate only {report['candidate_only']}, "
        f"type differs {report['type_differs']}",
        fontsize=9,
    )
    if not shown:
        fig.text(0.5, 0.5, "no disagreement kept", ha="center", va="center")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
