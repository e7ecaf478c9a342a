"""Where the edge node has got to, kept on disk: so a restart resumes where it left.

A small JSON file: the audit store insertion number of the last result the broker
acknowledged, the bdSeq of the last MQTT session, how many results were ever skipped
(the backlog overflowed), and the last review announced (``node.north.reviews``).
Written whole to a temporary file and renamed over the old one, so a crash leaves the
old or the new, never half of one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)


@dataclass
class Cursor:
    """``seq``: last forwarded record; ``bd_seq``: last session's bdSeq (-1: none yet);
    ``review_seq``: last review announced (-1: none yet, a cursor from before reviews were
    announced)."""

    seq: int = 0
    bd_seq: int = -1
    skipped: int = 0
    review_seq: int = -1

    @classmethod
    def load(cls, path: Path) -> Cursor | None:
        """The cursor in ``path``; None when there is none or it cannot be read (logged)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(
                int(data["seq"]),
                int(data["bd_seq"]),
                int(data.get("skipped", 0)),
                int(data.get("review_seq", -1)),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("north_cursor_unreadable", path=str(path), error=str(exc))
            return None

    def save(self, path: Path) -> None:
        """Replace ``path`` with this cursor. Raises ``OSError`` when it cannot be written."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self)), encoding="utf-8")
        os.replace(tmp, path)
