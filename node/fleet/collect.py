"""``lineside fleet --collect DIR``: every node's reviewed images in one training set.

Each node announces its operators' reviews on the bus (``Review/Seq`` in DDATA and
DBIRTH, ``node.north.reviews``) and where to fetch them (``Properties/Collect URL`` in
its NBIRTH); the images and findings come over ``lineside web``'s collect path
(``node.web.collect``; the contract in ``node.north.collect_path``) with the plant's
bearer token. What is fetched lands in one data set in the MVTec AD layout for all nodes:

- ``DIR/train/good/<group>-<edge node>-<result id>.png`` for a part the reviewer passed,
  ``DIR/test/<type>/...png`` for one they rejected (the node's ``label_of``);
- ``DIR/captions.jsonl``: the training caption of each reviewed reject;
- ``DIR/manifest.jsonl``: one line per image in the set, sorted by image: its node,
  result id, review (seq, verdict, defect type, reviewer, time, comment), label, the
  image's SHA-256, the node's own verdict and the findings;
- ``DIR/.collect/<node>.json``: per node, the last review taken and the node's collect
  URL, so a restart catches up from there: neither again nor skipped.

A review of a result already collected (the label changed) moves its image. Fetching
runs on a worker thread of its own, fed by the host's messages (never on the MQTT thread
nor the table's); a failed fetch is counted, logged and tried again after 1 s, doubling
to a minute. An image whose bytes do not match the digest the node recorded is skipped
and counted, like ``lineside audit dataset`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog

from node.audit.images import file_stem
from node.errors import ConfigError
from node.fleet.fetch import Fetcher, Reply, UrlFetcher
from node.fleet.state import Kind, Message, NodeView
from node.north.collect_path import IMAGE, REVIEWED, is_loopback, read_token
from node.north.metrics import COLLECT_URL, REVIEW_SEQ

log = structlog.get_logger(__name__)

MANIFEST = "manifest.jsonl"
CAPTIONS = "captions.jsonl"
STATE_DIR = ".collect"
PAGE = 100
"""Reviews asked for per listing."""
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
NO_URL = "its birth names no Properties/Collect URL (north.collect_url)"
_PNG = b"\x89PNG\r\n\x1a\n"
_LABEL = re.compile(r"train/good|test/[A-Za-z0-9_-][A-Za-z0-9._-]*")
"""What a node may name as a folder: nothing that leaves the data set."""

Key = tuple[str, str]


class _Retry(Exception):
    """A fetch that may work later (the node away, refused, a bad answer)."""


@dataclass
class NodeCollect:
    """What the collector knows of one node and did for it."""

    group: str
    edge_node: str
    url: str | None = None
    cursor: int = 0
    """The last review seq taken (its image written, or skipped for good)."""
    announced: int = 0
    """The newest review seq heard of on the bus."""
    collected: int = 0
    no_image: int = 0
    bad_image: int = 0
    errors: int = 0
    refused: int = 0
    last_error: str = ""
    due: float | None = None
    backoff_s: float = FIRST_BACKOFF_S

    @property
    def name(self) -> str:
        return f"{self.group}/{self.edge_node}"

    def row(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "url": self.url,
            "review_seq": self.cursor,
            "announced": self.announced,
            "collected": self.collected,
            "no_image": self.no_image,
            "bad_image": self.bad_image,
            "errors": self.errors,
            "refused": self.refused,
            "pending": self.announced > self.cursor,
            "last_error": self.last_error,
        }


class Collector:
    """Gathers reviewed images into ``out``; :meth:`notice` is the fleet host's
    ``on_message``. A context manager: entering loads the cursors and starts the worker."""

    def __init__(
        self,
        out: Path,
        token: str,
        fetcher: Fetcher,
        *,
        allow_http: bool = False,
        page: int = PAGE,
    ) -> None:
        self.out = out
        self._token = token
        self._fetcher = fetcher
        self._allow_http = allow_http
        self._page = page
        self._cond = threading.Condition()
        self._nodes: dict[Key, NodeCollect] = {}
        self._stopping = False
        self._thread: threading.Thread | None = None
        # the worker's own
        self._manifest: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._captions: dict[str, str] = {}
        self._dirty = False
        self._load()

    # -- the host's thread ---------------------------------------------------------------
    def notice(self, msg: Message, view: NodeView) -> None:
        """A Sparkplug message the host applied: births give the collect URL (and ask for
        a catch-up), a review seq newer than the one taken asks for a fetch."""
        if msg.kind is Kind.NBIRTH:
            url = msg.metrics.get(COLLECT_URL)
            with self._cond:
                node = self._node(msg.group, msg.edge_node)
                node.url = url if isinstance(url, str) and url else None
                if node.url is not None:
                    self._schedule(node)
            return
        if msg.kind not in (Kind.DBIRTH, Kind.DDATA):
            return
        seq = msg.metrics.get(REVIEW_SEQ)
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        with self._cond:
            node = self._node(msg.group, msg.edge_node)
            node.announced = max(node.announced, seq)
            if seq <= node.cursor:
                return
            if node.url is not None:
                self._schedule(node)
            elif not node.last_error:
                node.last_error = NO_URL

    def snapshot(self) -> dict[str, Any]:
        """For ``--json`` and the table: totals and each node's figures."""
        with self._cond:
            nodes = {n.name: n.row() for n in sorted(self._nodes.values(), key=lambda n: n.name)}
            images = len(self._manifest)
        return {
            "dir": str(self.out),
            "images": images,
            "collected": sum(r["collected"] for r in nodes.values()),
            "errors": sum(r["errors"] for r in nodes.values()),
            "refused": sum(r["refused"] for r in nodes.values()),
            "pending": sum(bool(r["pending"]) for r in nodes.values()),
            "nodes": nodes,
        }

    def _node(self, group: str, edge_node: str) -> NodeCollect:
        node = self._nodes.get((group, edge_node))
        if node is None:
            node = self._nodes[(group, edge_node)] = NodeCollect(group, edge_node)
        return node

    def _schedule(self, node: NodeCollect) -> None:
        """Fetch for ``node`` now, unless it waits out a failure already (lock held)."""
        if node.due is None:
            node.due = time.monotonic()
            self._cond.notify()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker (nodes with a cursor and a URL are caught up first)."""
        self._thread = threading.Thread(target=self._run, name="fleet-collect", daemon=True)
        self._thread.start()

    def __enter__(self) -> Collector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop the worker after the review it is taking (the rest waits for a restart)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def _load(self) -> None:
        """The set so far (manifest, captions) and each node's cursor; nodes with a URL
        are due for a catch-up. Raises ``OSError`` when ``out`` cannot be written."""
        (self.out / STATE_DIR).mkdir(parents=True, exist_ok=True)
        for entry in _read_jsonl(self.out / MANIFEST):
            self._manifest[(entry["group"], entry["edge_node"], entry["result_id"])] = entry
        for entry in _read_jsonl(self.out / CAPTIONS):
            self._captions[str(entry["image"])] = str(entry["text"])
        for path in sorted((self.out / STATE_DIR).glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                node = self._node(str(data["group"]), str(data["edge_node"]))
                node.cursor = int(data["review_seq"])
                node.url = data.get("url") or None
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("fleet_collect_cursor_unreadable", path=str(path), error=str(exc))
                continue
            node.announced = node.cursor
            if node.url is not None:
                node.due = time.monotonic()
        log.info("fleet_collect_resuming", dir=str(self.out), images=len(self._manifest))

    # -- the worker ---------------------------------------------------------------------------
    def _run(self) -> None:
        while (key := self._next()) is not None:
            try:
                self.sync(key)
            except Exception as exc:  # the worker's supervisor: log, try that node later
                log.exception("fleet_collect_failed", node=f"{key[0]}/{key[1]}", error=str(exc))
                with self._cond:
                    self._failed(self._nodes[key], f"{type(exc).__name__}: {exc}")

    def _next(self) -> Key | None:
        """The next node due (waiting until one is); None once stopping."""
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                due = [(n.due, k) for k, n in self._nodes.items() if n.due is not None]
                if due:
                    at, key = min(due)
                    if at <= now:
                        self._nodes[key].due = None
                        return key
                    self._cond.wait(at - now)
                else:
                    self._cond.wait()
            return None

    def sync(self, key: Key) -> None:
        """Take every review of node ``key`` after its cursor (blocking; the worker's)."""
        with self._cond:
            node = self._nodes[key]
            url = node.url
        if url is None:
            return
        if url.startswith("http://") and not self._allow_http and not is_loopback(url):
            with self._cond:
                node.errors += 1
                node.last_error = f"not sending the token over plain HTTP to {url}"
            log.error("fleet_collect_plain_http", node=node.name, url=url)
            return
        start = node.cursor
        try:
            while not self._stopping:
                reviews = self._list(node, url)
                for entry in reviews:
                    if self._stopping:
                        break
                    self._take(node, url, entry)
                    with self._cond:
                        node.cursor = int(entry["seq"])
                if len(reviews) < self._page:
                    break
        except _Retry as exc:
            with self._cond:
                self._failed(node, str(exc))
        else:
            with self._cond:
                node.backoff_s = FIRST_BACKOFF_S
                node.last_error = ""
                node.announced = max(node.announced, node.cursor)
        finally:
            self._flush(node, moved=node.cursor != start)

    def _failed(self, node: NodeCollect, error: str) -> None:
        """Count a failure and try again later (lock held)."""
        node.errors += 1
        node.last_error = error
        node.due = time.monotonic() + node.backoff_s
        node.backoff_s = min(node.backoff_s * 2, MAX_BACKOFF_S)
        log.warning("fleet_collect_failed", node=node.name, error=error, retry_s=node.backoff_s)

    def _get(self, node: NodeCollect, url: str) -> Reply:
        try:
            reply = self._fetcher.get(url, self._token)
        except OSError as exc:
            raise _Retry(f"{url}: {exc}") from exc
        if reply.status in (401, 403):
            with self._cond:
                node.refused += 1
            log.error("fleet_collect_refused", node=node.name, url=url, status=reply.status)
            raise _Retry(f"{url}: refused ({reply.status}): check --collect-token-file")
        return reply

    def _list(self, node: NodeCollect, url: str) -> list[dict[str, Any]]:
        """The next page of reviews after the node's cursor."""
        reply = self._get(node, f"{url}{REVIEWED}?after={node.cursor}&limit={self._page}")
        if reply.status != 200:
            raise _Retry(f"{url}{REVIEWED}: HTTP {reply.status}")
        try:
            page = json.loads(reply.body)
            last = int(page["last_seq"])
            reviews = [
                entry | {"seq": int(entry["seq"]), "result_id": str(entry["result_id"])}
                for entry in page["reviews"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise _Retry(f"{url}{REVIEWED}: not a review listing: {exc}") from exc
        if last < node.cursor:  # the node's store was replaced: its reviews start again
            log.warning("fleet_collect_cursor_ahead", node=node.name, cursor=node.cursor, last=last)
            with self._cond:
                node.cursor = 0
            return self._list(node, url)
        return reviews

    def _take(self, node: NodeCollect, url: str, entry: dict[str, Any]) -> None:
        """Fetch one review's image and put it in the set (or count why not)."""
        rid, label = str(entry["result_id"]), str(entry["label"])
        if not _LABEL.fullmatch(label) or label == "test/good":
            self._skip(node, "bad_image", "fleet_collect_bad_label", rid, label=label)
            return
        if not entry.get("image"):
            self._skip(node, "no_image", "fleet_collect_no_image", rid)
            return
        reply = self._get(node, f"{url}{IMAGE}{quote(rid, safe='')}")
        if reply.status == 404:
            self._skip(node, "no_image", "fleet_collect_no_image", rid)
            return
        if reply.status == 409:
            self._skip(node, "bad_image", "fleet_collect_image_altered", rid)
            return
        if reply.status != 200:
            raise _Retry(f"{url}{IMAGE}{rid}: HTTP {reply.status}")
        digest = hashlib.sha256(reply.body).hexdigest()
        expected = entry.get("image_sha256")
        if (expected and digest != expected) or not reply.body.startswith(_PNG):
            self._skip(node, "bad_image", "fleet_collect_image_mismatch", rid)
            return
        self._write(node, entry, label, reply.body, digest)

    def _skip(self, node: NodeCollect, counter: str, event: str, rid: str, **kw: Any) -> None:
        with self._cond:
            setattr(node, counter, getattr(node, counter) + 1)
        log.warning(event, node=node.name, result_id=rid, **kw)

    def _write(
        self, node: NodeCollect, entry: dict[str, Any], label: str, png: bytes, digest: str
    ) -> None:
        rid = str(entry["result_id"])
        name = f"{file_stem(node.group)}-{file_stem(node.edge_node)}-{file_stem(rid)}.png"
        rel = f"{label}/{name}"
        key = (node.group, node.edge_node, rid)
        old = self._manifest.get(key)
        if old is not None and old["image"] != rel:  # relabelled: the image moves
            (self.out / old["image"]).unlink(missing_ok=True)
            self._captions.pop(old["image"], None)
        target = self.out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_bytes(png)
        os.replace(tmp, target)
        record = entry.get("record") or {}
        with self._cond:
            self._manifest[key] = {
                "image": rel,
                "group": node.group,
                "edge_node": node.edge_node,
                "result_id": rid,
                "review_seq": int(entry["seq"]),
                "label": label,
                "verdict": entry.get("verdict"),
                "defect_type": entry.get("defect_type"),
                "reviewer": entry.get("user"),
                "reviewed_utc": entry.get("reviewed_utc"),
                "comment": entry.get("comment"),
                "caption": entry.get("caption"),
                "image_sha256": digest,
                "node_verdict": record.get("verdict"),
                "node_defect_type": record.get("defect_type"),
                "score": record.get("score"),
                "part_id": record.get("part_id"),
                "wall_time_utc": record.get("wall_time_utc"),
                "model_sha256": record.get("model_sha256"),
                "findings": record.get("findings"),
            }
            node.collected += 1
        caption = entry.get("caption")
        if isinstance(caption, str) and caption:
            self._captions[rel] = caption
        else:
            self._captions.pop(rel, None)
        self._dirty = True
        log.info("fleet_review_collected", node=node.name, result_id=rid, image=rel)

    def _flush(self, node: NodeCollect, *, moved: bool) -> None:
        """Manifest and captions (when changed), then the node's cursor: images first, so
        a crash in between fetches them again under the same names."""
        if self._dirty:
            with self._cond:
                entries = sorted(self._manifest.values(), key=lambda e: str(e["image"]))
            _write_jsonl(self.out / MANIFEST, entries)
            captions = [{"image": k, "text": v} for k, v in sorted(self._captions.items())]
            _write_jsonl(self.out / CAPTIONS, captions)
            self._dirty = False
        path = self.out / STATE_DIR / f"{file_stem(node.name)}.json"
        with self._cond:
            state = {
                "group": node.group,
                "edge_node": node.edge_node,
                "review_seq": node.cursor,
                "url": node.url,
            }
        if moved or not path.is_file() or _read_json(path) != state:
            _write_jsonl(path, [state])


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _read_json(path: Path) -> Any:
    with contextlib.suppress(OSError, ValueError):
        return json.loads(path.read_text(encoding="utf-8"))
    return None


def _write_jsonl(path: Path, entries: list[dict[str, Any]]) -> None:
    """Replace ``path`` with one JSON object a line (none: the file goes)."""
    if not entries:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for entry in entries:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def open_collector(
    out: Path | None,
    token_file: Path | None,
    ca_file: Path | None,
    *,
    allow_http: bool = False,
) -> Collector | None:
    """The collector the command line asks for (None without ``--collect``). Raises
    ``ConfigError`` naming the argument that is wrong."""
    if out is None:
        for given, flag in ((token_file, "--collect-token-file"), (ca_file, "--collect-ca")):
            if given is not None:
                raise ConfigError([f"{flag}: only with --collect DIR"])
        return None
    if token_file is None:
        raise ConfigError(["--collect-token-file: --collect needs the plant's bearer token"])
    token = read_token(token_file, "--collect-token-file")
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError([f"--collect-ca: {ca_file} is not a file"])
    try:
        fetcher = UrlFetcher(ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError([f"--collect-ca: {ca_file}: {exc}"]) from exc
    try:
        return Collector(out, token, fetcher, allow_http=allow_http)
    except OSError as exc:
        raise ConfigError([f"--collect: {out}: {exc}"]) from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError([f"--collect: {out}: an unreadable {MANIFEST} or {CAPTIONS}"]) from exc
