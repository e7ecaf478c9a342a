"""The login back-off and lockout, and the request budget, on a clock the test moves."""

from __future__ import annotations

from node.hmi.limits import RequestBudget
from node.hmi.lockout import LoginGuard, Verdict


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _guard(clock: Clock) -> LoginGuard:
    return LoginGuard(
        backoff_after=3, backoff_s=1.0, lockout_after=10, lockout_s=600.0, clock=clock
    )


def test_three_failures_start_a_doubling_wait() -> None:
    """Up to 3 wrong passwords no wait; then 1 s, 2 s, 4 s ... before the next check."""
    clock = Clock()
    g = _guard(clock)
    for _ in range(3):
        assert g.admit("ann") is Verdict.CHECK
        g.failed("ann")
    assert g.admit("ann") is Verdict.THROTTLED
    assert g.wait_s("ann") == 1.0
    clock.t += 1.0
    assert g.admit("ann") is Verdict.CHECK
    g.failed("ann")
    assert g.wait_s("ann") == 2.0
    assert g.admit("bob") is Verdict.CHECK  # per user name


def test_ten_failures_lock_out_until_the_time_is_up_and_success_clears() -> None:
    """The 10th wrong password locks the name for 600 s; afterwards it starts afresh; a right
    password before that clears the count."""
    clock = Clock()
    g = _guard(clock)
    for _ in range(10):
        clock.t += g.wait_s("ann")
        assert g.admit("ann") is Verdict.CHECK
        g.failed("ann")
    assert g.admit("ann") is Verdict.LOCKED
    clock.t += 599.0
    assert g.admit("ann") is Verdict.LOCKED
    clock.t += 1.0
    assert g.admit("ann") is Verdict.CHECK
    for _ in range(2):
        g.failed("bob")
    g.succeeded("bob")
    g.failed("bob")
    assert g.admit("bob") is Verdict.CHECK


def test_request_budget_allows_a_burst_then_the_rate() -> None:
    """A burst of 5 at once, then one request per 1/rate seconds."""
    clock = Clock()
    b = RequestBudget(10.0, 5, clock=clock)
    assert [b.take() for _ in range(6)] == [True] * 5 + [False]
    clock.t += 0.1
    assert b.take() and not b.take()
    assert b.refused == 2
