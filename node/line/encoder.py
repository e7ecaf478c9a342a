"""The encoder as a position: unwrap the PLC's wrapping counter, estimate belt speed.

Both are pure, synchronous and O(1) per sample; the tracker feeds them every
encoder sample (500–1000 Hz). Counts are Python ints; times are
``time.monotonic_ns()`` values carried by the samples.
"""

from __future__ import annotations

from collections import deque
from typing import Final, Literal

_NS_PER_S: Final = 1_000_000_000


class CounterUnwrapper:
    """Turns a wrapping ``bits``-wide hardware counter into a continuous count.

    Each step is taken as the signed difference modulo ``2**bits``, so a small
    backward move stays a small backward move; steps are therefore only
    unambiguous while ``|step| < 2**(bits - 1)`` between two readings. The first
    reading maps to itself.

    Raises:
        ValueError: ``bits`` is not 16 or 32.
    """

    __slots__ = ("_half", "_last_raw", "_modulus", "_position")

    def __init__(self, bits: Literal[16, 32]) -> None:
        if bits not in (16, 32):
            raise ValueError(f"counter width must be 16 or 32 bits, got {bits!r}")
        self._modulus: Final = 1 << bits
        self._half: Final = 1 << (bits - 1)
        self._last_raw: int | None = None
        self._position = 0

    @property
    def modulus(self) -> int:
        """``2**bits``: raw values lie in ``[0, modulus)``."""
        return self._modulus

    @property
    def position(self) -> int | None:
        """The last unwrapped count in counts, or None before the first reading."""
        return None if self._last_raw is None else self._position

    def signed_step(self, raw_from: int, raw_to: int) -> int:
        """Return the signed step in counts from ``raw_from`` to ``raw_to``, in ±2**(bits-1)."""
        step = (raw_to - raw_from) % self._modulus
        return step - self._modulus if step >= self._half else step

    def peek(self, raw: int) -> int:
        """Return what :meth:`unwrap` would return for ``raw`` without changing state.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``.
        """
        if not 0 <= raw < self._modulus:
            raise ValueError(f"raw count {raw} outside [0, {self._modulus})")
        if self._last_raw is None:
            return raw
        return self._position + self.signed_step(self._last_raw, raw)

    def unwrap(self, raw: int) -> int:
        """Return the continuous count in counts for the raw counter value ``raw``.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``; state is unchanged.
        """
        self._position = self.peek(raw)
        self._last_raw = raw
        return self._position

    def to_raw(self, count: int) -> int:
        """The raw counter value that means unwrapped ``count`` now (after any ``rebase``)."""
        if self._last_raw is None:
            return count % self._modulus
        return (self._last_raw + count - self._position) % self._modulus

    def rebase(self, raw: int, position: int) -> None:
        """Declare that the raw value ``raw`` now means unwrapped count ``position``.

        Raises:
            ValueError: ``raw`` is outside ``[0, 2**bits)``.
        """
        if not 0 <= raw < self._modulus:
            raise ValueError(f"raw count {raw} outside [0, {self._modulus})")
        self._last_raw = raw
        self._position = position


class SpeedEstimator:
    """Least-squares slope of position over time across a short sliding window.

    Keeps every sample not older than ``window_ns`` before the newest one plus
    the newest sample at or before that boundary (so the fit spans the whole
    window even after a gap in polling), and always at least the last two. Sums
    are exact integers, so a window of equal positions gives exactly 0. Fed with
    a non-decreasing position (the tracker feeds its high-water mark) the slope
    is never negative; it is clamped at 0 regardless.
    """

    __slots__ = (
        "_buf",
        "_n",
        "_speed_cps",
        "_st",
        "_stt",
        "_stx",
        "_sx",
        "_t0",
        "_window_ns",
        "_x0",
    )

    def __init__(self, window_ns: int) -> None:
        self._window_ns = window_ns
        self._buf: deque[tuple[int, int]] = deque()
        self._t0 = 0
        self._x0 = 0
        self._n = self._st = self._sx = self._stt = self._stx = 0
        self._speed_cps = 0.0

    @property
    def speed_cps(self) -> float:
        """The latest estimate in counts/s (>= 0; 0 until two samples are in)."""
        return self._speed_cps

    def reset(self) -> None:
        """Forget all samples; the speed reads 0 until two new samples are in."""
        self._buf.clear()
        self._n = self._st = self._sx = self._stt = self._stx = 0
        self._speed_cps = 0.0

    def add(self, t_ns: int, position: int) -> float:
        """Add a sample (time in ns, position in counts) and return the new speed in counts/s."""
        buf = self._buf
        if not buf:
            self._t0, self._x0 = t_ns, position
        t, x = t_ns - self._t0, position - self._x0
        buf.append((t, x))
        self._n += 1
        self._st += t
        self._sx += x
        self._stt += t * t
        self._stx += t * x
        oldest_t = t - self._window_ns
        # Keep one sample at or before the window's start, so the fit always spans the
        # whole window: after a gap in polling, two samples a millisecond apart would
        # otherwise set the speed from a difference of a count or two.
        while self._n > 2 and buf[1][0] <= oldest_t:
            ot, ox = buf.popleft()
            self._n -= 1
            self._st -= ot
            self._sx -= ox
            self._stt -= ot * ot
            self._stx -= ot * ox
        den = self._n * self._stt - self._st * self._st
        if den <= 0:
            self._speed_cps = 0.0
        else:
            num = self._n * self._stx - self._st * self._sx
            self._speed_cps = max(0.0, num * _NS_PER_S / den)
        return self._speed_cps
