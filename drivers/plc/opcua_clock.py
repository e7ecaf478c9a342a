"""Dating OPC UA samples: the PLC's SourceTimestamps mapped onto the node's monotonic clock."""

from __future__ import annotations

import collections
from datetime import UTC, datetime, timedelta

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLOCK_WINDOW = 2000


def wall_ns(dt: datetime) -> int:
    """``dt`` (naive: UTC) as nanoseconds since the Unix epoch."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(microseconds=1) * 1000


class ClockMap:
    """Maps the PLC's SourceTimestamps onto ``time.monotonic_ns()``.

    The offset's target is min(arrival − source) over the last samples: the
    least-delayed notification is the best estimate of the clocks' offset (as
    in NTP's minimum filter). The offset moves towards it by at most
    ``1/_SLEW`` of the source time elapsed, so consecutive samples keep their
    spacing (a jump in the offset would look like a jump of the belt). The
    first ``_SETTLE`` samples after (re)subscribing set it directly: the first
    notifications carry the SourceTimestamp of the value's last *change*,
    which may be long ago.
    """

    _SLEW = 50
    _SETTLE = 50

    def __init__(self) -> None:
        self._window: collections.deque[int] = collections.deque(maxlen=_CLOCK_WINDOW)
        self._min: int | None = None
        self._offset: int | None = None
        self._last_src = 0
        self._n = 0

    def reset(self) -> None:
        """Start over (after resubscribing)."""
        self._window.clear()
        self._min = self._offset = None
        self._n = 0

    def to_monotonic(self, source_wall_ns: int, arrival_ns: int) -> int:
        """The node's monotonic time (ns) of a sample the PLC dated ``source_wall_ns`` and
        that arrived at ``arrival_ns``."""
        d = arrival_ns - source_wall_ns
        dropped = self._window[0] if len(self._window) == self._window.maxlen else None
        self._window.append(d)
        if self._min is None or d < self._min:
            self._min = d
        elif dropped is not None and dropped == self._min:
            self._min = min(self._window)
        self._n += 1
        if self._offset is None or self._n <= self._SETTLE:
            self._offset = self._min
        else:
            step = max(0, source_wall_ns - self._last_src) // self._SLEW
            self._offset += max(-step, min(step, self._min - self._offset))
        self._last_src = source_wall_ns
        return source_wall_ns + self._offset
