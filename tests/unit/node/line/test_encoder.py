"""The encoder counter as a position: unwrapping a 16/32-bit counter across its wraps."""

from __future__ import annotations

import itertools
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.line.encoder import CounterUnwrapper

fast = settings(max_examples=60, deadline=None)


def wrap(position: int, bits: int) -> int:
    """The raw counter value a PLC shows for an unwrapped position."""
    return position % (1 << bits)


@st.composite
def counter_walks(draw: st.DrawFn) -> tuple[Literal[16, 32], int, list[int]]:
    """A counter width, a start position and steps that each stay below half the range."""
    bits: Literal[16, 32] = draw(st.sampled_from([16, 32]))
    half = 1 << (bits - 1)
    start = draw(st.integers(0, (1 << bits) - 1))
    steps = draw(st.lists(st.integers(-(half - 1), half - 1), min_size=1, max_size=300))
    return bits, start, steps


@fast
@given(counter_walks())
def test_unwrap_equals_true_position_across_wraparounds(
    walk: tuple[Literal[16, 32], int, list[int]],
) -> None:
    """Unwrapping any walk whose steps are below half the counter range gives the true position."""
    bits, start, steps = walk
    unwrapper = CounterUnwrapper(bits)
    assert unwrapper.unwrap(start) == start
    for true in itertools.accumulate(steps, initial=start):
        assert unwrapper.unwrap(wrap(true, bits)) == true


@pytest.mark.parametrize("bits", [16, 32])
def test_unwrap_runs_forward_through_many_wraps(bits: Literal[16, 32]) -> None:
    """A counter driven forward through 20 wraparounds unwraps to a steadily growing count."""
    unwrapper = CounterUnwrapper(bits)
    step = (1 << (bits - 1)) - 1
    for true in range(0, 40 << bits >> 1, step):
        assert unwrapper.unwrap(wrap(true, bits)) == true
    assert unwrapper.position is not None and unwrapper.position > 19 << bits


@pytest.mark.parametrize(("bits", "raw"), [(16, -1), (16, 1 << 16), (32, 1 << 32), (32, -5)])
def test_unwrap_rejects_out_of_range_raw(bits: Literal[16, 32], raw: int) -> None:
    """A raw value outside [0, 2**bits) raises ValueError and leaves the unwrapper as it was."""
    unwrapper = CounterUnwrapper(bits)
    unwrapper.unwrap(1234)
    with pytest.raises(ValueError, match="outside"):
        unwrapper.unwrap(raw)
    assert unwrapper.position == 1234
    assert unwrapper.unwrap(1240) == 1240


def test_unwrapper_refuses_other_widths() -> None:
    """Only 16- and 32-bit counters exist on our PLCs; anything else is a ValueError."""
    with pytest.raises(ValueError, match="16 or 32"):
        CounterUnwrapper(24)  # type: ignore[arg-type]
