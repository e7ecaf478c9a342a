"""The tracker: speed estimation, part creation, sensor edges, bad-sample handling."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from drivers.plc.base import EncoderSample
from node.errors import ConfigError
from node.line.geometry import LineGeometry
from node.line.tracker import TrackedPart, Tracker, TrackerConfig

DT_NS = 2_000_000  # one sample every 2 ms, as a 500 Hz PLC poll
T0_NS = 1_000_000_000_000

PITCH_LINE = LineGeometry(
    pitch_counts=1000,
    first_part_count=0,
    camera_counts=300,
    reject_counts=1500,
    lead_counts=40,
    max_speed_cps=20_000.0,
    jitter_counts=3,
)
PITCH = TrackerConfig(mode="pitch", geometry=PITCH_LINE)
SENSOR = TrackerConfig(
    mode="sensor",
    geometry=dataclasses.replace(PITCH_LINE, pitch_counts=0, part_length_counts=200),
)

LATCHED_LINE = LineGeometry(
    part_length_counts=100,
    camera_counts=400,
    reject_counts=1600,
    lead_counts=24,
    max_speed_cps=10_000,
    jitter_counts=2,
)
LATCHED = TrackerConfig(mode="sensor", geometry=LATCHED_LINE)
"""A sensor line whose PLC latches the part-present edges."""

fast = settings(max_examples=60, deadline=None)


def wrap(position: int, bits: int) -> int:
    """The raw counter value a PLC shows for an unwrapped position."""
    return position % (1 << bits)


def feed(
    tracker: Tracker,
    positions: Iterable[int],
    *,
    t0_ns: int = T0_NS,
    bits: int = 32,
    present: Sequence[bool | None] | None = None,
) -> list[tuple[int, int, list[TrackedPart]]]:
    """Feed one sample per position, DT_NS apart; return (t_ns, position, new parts) per sample."""
    out = []
    for i, pos in enumerate(positions):
        t = t0_ns + i * DT_NS
        flag = None if present is None else present[i]
        out.append((t, pos, tracker.update(EncoderSample(wrap(pos, bits), t, flag))))
    return out


def created(trace: Iterable[tuple[int, int, list[TrackedPart]]]) -> list[TrackedPart]:
    """Every part a trace created, in order."""
    return [p for _, _, parts in trace for p in parts]


def ramp(start: int, speed_cps: float, n: int) -> list[int]:
    """Positions of a belt at constant speed, sampled n times DT_NS apart (floored counts)."""
    return [start + int(speed_cps * i * DT_NS / 1e9) for i in range(n)]


# -- configuration and parts ----------------------------------------------------------


def test_config_reports_every_problem_at_once() -> None:
    """An invalid tracker config raises one ConfigError naming each bad field."""
    with pytest.raises(ConfigError) as err:
        TrackerConfig(
            mode="pitch",
            geometry=dataclasses.replace(PITCH_LINE, pitch_counts=0),
            time_jitter_ns=-1,
            debounce_counts=-2,
            window_ns=0,
        )
    joined = "\n".join(err.value.problems)
    for key in ("pitch_counts", "time_jitter_ns", "debounce_counts", "window_ns"):
        assert f"tracker.{key}" in joined


def test_part_stations_follow_the_geometry() -> None:
    """A part's trigger, fire and reject counts are its origin plus the configured offsets."""
    tracker = Tracker(PITCH, 32)
    (part,) = created(feed(tracker, [0]))
    assert part == TrackedPart(
        part_id=0,
        origin_count=0,
        trigger_count=300,
        decide_count=1460,
        fire_count=1460,
        reject_count=1500,
        created_t_ns=T0_NS,
    )


def test_part_ids_start_where_configured() -> None:
    """part_id counts up from part_id_start, one per created part."""
    tracker = Tracker(dataclasses.replace(PITCH, part_id_start=41), 32)
    parts = created(feed(tracker, ramp(0, 10_000.0, 120)))
    assert [p.part_id for p in parts] == list(range(41, 41 + len(parts)))


def test_pitch_mode_skips_parts_that_passed_before_start() -> None:
    """Started mid-belt, the tracker creates the next part ahead, not every part since count 0."""
    tracker = Tracker(PITCH, 32)
    parts = created(feed(tracker, ramp(123_456, 10_000.0, 100)))
    assert [p.origin_count for p in parts] == [124_000, 125_000]
    assert parts[0].part_id == 0


# -- speed, stop, restart ---------------------------------------------------------------


@fast
@given(
    v1=st.floats(500.0, 8000.0),
    v2=st.floats(500.0, 8000.0),
    change_at=st.integers(100, 2000),
)
def test_speed_change_mid_part(v1: float, v2: float, change_at: int) -> None:
    """After a speed change, parts appear at their pitch counts and ETA follows the new speed."""
    tracker = Tracker(PITCH, 32)
    positions = [p for p in ramp(0, v1, 400) if p < change_at]
    base = positions[-1]
    positions += ramp(base, v2, 200)[1:]
    trace = feed(tracker, positions)

    parts = created(trace)
    top = max(positions)
    assert [p.origin_count for p in parts] == list(range(0, top + 1, 1000))
    for part in parts:  # each created by the first sample that reached its origin
        t_first = next(t for t, pos, _ in trace if pos >= part.origin_count)
        assert part.created_t_ns == t_first

    # Whole counts resolve speed to about one count per window, whatever the speed;
    # rounding at both ends of the window can cost up to two.
    resolution_cps = 2.0e9 / PITCH.window_ns
    assert tracker.speed_cps == pytest.approx(v2, abs=resolution_cps)
    target = top + 5000
    eta = tracker.eta_ns(target)
    assert eta is not None
    travel_ns = (target - top) / v2 * 1e9
    assert eta - trace[-1][0] == pytest.approx(travel_ns, rel=resolution_cps / v2 * 1.1)


def test_speed_converges_within_one_window() -> None:
    """One window after a step from 1000 to 5000 counts/s the estimate reads 5000 counts/s."""
    tracker = Tracker(PITCH, 32)
    positions = ramp(0, 1000.0, 50)
    positions += ramp(positions[-1], 5000.0, 30)[1:]
    feed(tracker, positions)
    assert tracker.speed_cps == pytest.approx(5000.0, rel=0.01)


def test_stop_and_restart() -> None:
    """A stopped belt creates no parts and has no ETA; after restart parts resume, none twice."""
    tracker = Tracker(PITCH, 32)
    run1 = ramp(0, 4000.0, 300)  # to ~2400 counts
    stopped = [run1[-1]] * 500  # one second standing still
    run2 = ramp(run1[-1], 4000.0, 300)[1:]
    trace = feed(tracker, run1 + stopped)
    assert tracker.speed_cps == 0.0
    assert tracker.eta_ns(run1[-1] + 1) is None
    assert tracker.estimate_position(trace[-1][0] + 10**9) == run1[-1]
    assert created(trace[len(run1) :]) == []

    trace2 = feed(tracker, run2, t0_ns=trace[-1][0] + DT_NS)
    origins = [p.origin_count for p in created(trace) + created(trace2)]
    assert origins == list(range(0, run2[-1] + 1, 1000))
    assert tracker.speed_cps == pytest.approx(4000.0, rel=0.01)
    eta = tracker.eta_ns(tracker.position + 4000)
    assert eta is not None
    assert eta - trace2[-1][0] == pytest.approx(1e9, rel=0.01)


@st.composite
def jittery_walks(draw: st.DrawFn) -> list[int]:
    """A belt moving forward in small steps, shaking back by up to 3 counts now and then."""
    steps = draw(st.lists(st.integers(0, 12), min_size=50, max_size=600))
    shakes = draw(st.lists(st.integers(-3, 0), min_size=len(steps), max_size=len(steps)))
    base = 900  # before part 1's origin, so the walk crosses origins while shaking
    walk = []
    for i, step in enumerate(steps):
        base += step
        walk.append(base + shakes[i])
    return walk


@fast
@given(jittery_walks())
def test_jitter_never_duplicates_parts_nor_goes_negative(walk: list[int]) -> None:
    """Jitter within jitter_counts never duplicates a part nor gives a negative speed."""
    tracker = Tracker(PITCH, 16)
    speeds = []
    parts: list[TrackedPart] = []
    for t, _, new in feed(tracker, walk, bits=16):
        parts += new
        speeds.append(tracker.speed_cps)
        assert tracker.estimate_position(t + DT_NS) >= tracker.position
    assert tracker.rejected_samples == 0
    assert min(speeds) >= 0.0
    assert tracker.position == max(walk)
    origins = [p.origin_count for p in parts]
    assert origins == list(range(1000, max(walk) + 1, 1000))
    assert [p.part_id for p in parts] == list(range(len(parts)))


def test_jitter_on_a_stopped_belt_reads_as_stopped() -> None:
    """A stopped belt that shakes by a few counts has speed 0 and no ETA."""
    tracker = Tracker(PITCH, 32)
    feed(tracker, [500, 498, 500, 497, 499, 500] * 20)
    assert tracker.speed_cps == 0.0
    assert tracker.eta_ns(501) is None
    assert tracker.position == 500


def test_belt_reversal_does_not_recreate_parts() -> None:
    """A belt that runs back over several origins and forward again creates each part once."""
    tracker = Tracker(PITCH, 32)
    forward = list(range(0, 3500, 8))
    back = list(range(3500, 1200, -8))
    again = list(range(1200, 5000, 8))
    parts = created(feed(tracker, forward + back + again))
    assert [p.origin_count for p in parts] == [0, 1000, 2000, 3000, 4000]


def test_eta_and_estimate() -> None:
    """ETA is the last sample time for reached counts; the estimate extrapolates but never back."""
    tracker = Tracker(PITCH, 32)
    assert tracker.eta_ns(0) is None
    assert tracker.estimate_position(T0_NS) == float("-inf")
    trace = feed(tracker, ramp(0, 2000.0, 50))
    t_last, p_last, _ = trace[-1]
    assert tracker.eta_ns(p_last - 10) == t_last
    assert tracker.estimate_position(t_last - DT_NS) == p_last
    assert tracker.estimate_position(t_last + 10_000_000) == pytest.approx(p_last + 20, abs=0.5)
    limit = PITCH.extrapolation_limit_ns
    far = tracker.estimate_position(t_last + 10 * limit)
    assert far == pytest.approx(p_last + 2000.0 * limit / 1e9, abs=0.5)


def test_reached_tells_when_a_passed_count_was_passed() -> None:
    """``reached_ns`` is the ETA for a count ahead, and for a passed count the time the belt
    passed it (not the last sample's time), so a late caller can tell how late it is."""
    tracker = Tracker(PITCH, 32)
    assert tracker.reached_ns(0) is None
    trace = feed(tracker, ramp(0, 2000.0, 50))
    t_last, p_last, _ = trace[-1]
    assert tracker.reached_ns(p_last + 20) == tracker.eta_ns(p_last + 20)
    assert tracker.reached_ns(p_last - 40) == pytest.approx(t_last - 20_000_000, abs=1_000_000)
    feed(tracker, [p_last] * 60, t0_ns=t_last + DT_NS)  # the belt stops
    assert tracker.reached_ns(p_last + 20) is None


# -- sensor mode ----------------------------------------------------------------------------


def sensor_present(pos: int, edges: Sequence[int], length: int) -> bool:
    """Whether a part covers the sensor when the belt is at pos."""
    return any(e <= pos < e + length for e in edges)


@st.composite
def sensor_runs(draw: st.DrawFn) -> tuple[list[int], int]:
    """Leading-edge counts of parts at least a part length plus a gap apart, and a sample step."""
    gaps = draw(st.lists(st.integers(60, 900), min_size=1, max_size=8))
    edges = list(itertools.accumulate(gaps, lambda e, g: e + 200 + g, initial=300 + gaps[0]))[1:]
    step = draw(st.integers(1, 40))
    return edges, step


@fast
@given(sensor_runs())
def test_sensor_mode_one_part_per_rising_edge_at_interpolated_count(
    run: tuple[list[int], int],
) -> None:
    """Each rising edge creates one part, centred half a length after the interpolated edge."""
    edges, step = run
    tracker = Tracker(SENSOR, 32)
    positions = list(range(0, edges[-1] + 600, step))
    present = [sensor_present(p, edges, 200) for p in positions]
    parts = created(feed(tracker, positions, present=present))

    expected = []
    for e in edges:
        i = next(i for i, p in enumerate(positions) if p >= e)
        expected.append((positions[i - 1] + positions[i]) // 2 + 100)
    assert [p.origin_count for p in parts] == expected
    assert [p.part_id for p in parts] == list(range(len(edges)))


@fast
@given(sensor_runs(), st.lists(st.integers(-3, 0), min_size=50, max_size=50))
def test_sensor_jitter_and_reversal_create_each_part_once(
    run: tuple[list[int], int], shakes: list[int]
) -> None:
    """Shaking, and a reversal across a whole part, never make the sensor count a part twice."""
    edges, step = run
    step = max(step, 4)
    tracker = Tracker(SENSOR, 32)
    stop = edges[0] + 250  # just past part 0: run it back over the sensor whole, then forward
    positions = list(range(0, stop, step))
    positions += list(range(stop, edges[0] - 300, -step)) + list(
        range(edges[0] - 300, edges[-1] + 600, step)
    )
    positions = [max(0, p + shakes[i % len(shakes)]) for i, p in enumerate(positions)]
    present = [sensor_present(p, edges, 200) for p in positions]
    parts = created(feed(tracker, positions, present=present))
    assert len(parts) == len(edges)
    for part, edge in zip(parts, edges, strict=True):
        assert abs(part.origin_count - (edge + 100)) <= step + 3


def test_sensor_debounce_ignores_a_flicker() -> None:
    """With debounce, a sensor blip shorter than debounce_counts of travel creates no part."""
    tracker = Tracker(dataclasses.replace(SENSOR, debounce_counts=10), 32)
    positions = list(range(0, 400, 4))
    present = [p in (100, 104) or 200 <= p < 400 for p in positions]
    parts = created(feed(tracker, positions, present=present))
    assert [p.origin_count for p in parts] == [(196 + 200) // 2 + 100]


def test_sensor_edges_closer_than_half_a_part_are_ignored() -> None:
    """A second rising edge within half a part length of the last one is a bounce, not a part."""
    tracker = Tracker(SENSOR, 32)
    positions = list(range(0, 800, 4))
    present = [100 <= p < 140 or 160 <= p < 300 or 600 <= p < 800 for p in positions]
    parts = created(feed(tracker, positions, present=present))
    assert [p.origin_count for p in parts] == [198, 698]


# -- bad samples ------------------------------------------------------------------------------


def snapshot(tracker: Tracker) -> tuple[object, ...]:
    """The observable tracking state."""
    return (
        tracker.position,
        tracker.unwrapped_count,
        tracker.speed_cps,
        tracker.last_t_ns,
        tracker.next_part_id,
    )


@pytest.mark.parametrize(
    ("raw", "dt_ns", "reason"),
    [
        (1500 + 100_000, DT_NS, "forward_jump"),
        ((2000 - 5_000) % (1 << 32), DT_NS, "backward_jump"),
        (1 << 32, DT_NS, "raw_out_of_range"),
        (-1, DT_NS, "raw_out_of_range"),
        (1504, 0, "time_not_increasing"),
        (1504, -DT_NS, "time_not_increasing"),
    ],
)
def test_bad_samples_are_refused_without_changing_state(raw: int, dt_ns: int, reason: str) -> None:
    """A bad sample is counted with its reason, creates nothing and leaves the state unchanged."""
    tracker = Tracker(PITCH, 32)
    trace = feed(tracker, ramp(1000, 2000.0, 251))  # to 2000: parts at 1000 and 2000
    t_last = trace[-1][0]
    before = snapshot(tracker)
    assert tracker.update(EncoderSample(raw, t_last + dt_ns)) == []
    assert snapshot(tracker) == before
    assert tracker.rejected_samples == 1
    assert tracker.last_rejection_reason == reason

    more = feed(tracker, ramp(2000, 2000.0, 600)[1:], t0_ns=t_last + DT_NS)
    assert [p.origin_count for p in created(more)] == [3000, 4000]
    assert tracker.rejected_samples == 1


def test_a_reset_counter_is_resynced_after_consistent_jumps() -> None:
    """After a PLC counter reset, consistent samples re-anchor tracking with no duplicate parts."""
    tracker = Tracker(PITCH, 32)
    trace = feed(tracker, ramp(0, 2000.0, 500))  # to ~2000
    t_last, p_last, _ = trace[-1]
    after = feed(tracker, ramp(0, 2000.0, 1000), t0_ns=t_last + DT_NS)  # counter restarts at 0
    limit = PITCH.resync_after_samples
    assert tracker.rejected_samples == limit - 1
    assert tracker.last_rejection_reason == "backward_jump"
    origins = [p.origin_count for p in created(trace) + created(after)]
    assert origins == list(range(0, tracker.position + 1, 1000))
    assert tracker.position == pytest.approx(p_last + 4000, abs=2 * limit * 4 + 2)
    assert tracker.speed_cps == pytest.approx(2000.0, rel=0.01)


def test_a_belt_over_max_speed_loses_tracking_and_is_never_adopted() -> None:
    """A steady counter at twice max_speed_cps is refused sample after sample — never
    resynced as if it were a counter reset — so tracking is lost within loss_after_ns and
    the refused run tells the speed; a believable speed again is resynced and regained."""
    tracker = Tracker(PITCH, 32)
    trace = feed(tracker, ramp(0, 10_000.0, 100))
    t_last, p_last, _ = trace[-1]
    assert not tracker.lost
    fast = feed(tracker, ramp(p_last + 80, 40_000.0, 200), t0_ns=t_last + DT_NS)
    assert tracker.rejected_samples == 200 and tracker.lost
    speed = tracker.refused_speed_cps
    assert speed is not None and speed == pytest.approx(40_000.0, rel=0.02)
    assert not created(fast)
    t_fast, p_fast, _ = fast[-1]
    feed(tracker, ramp(p_fast + 80, 10_000.0, 30), t0_ns=t_fast + DT_NS)
    assert not tracker.lost and tracker.refused_speed_cps is None
    assert tracker.speed_cps == pytest.approx(10_000.0, rel=0.05)


def test_loss_needs_refusals_for_the_whole_loss_time() -> None:
    """A short run of bad samples (shorter than loss_after_ns) is not a loss of tracking;
    the first good count after it is believed once the next one agrees."""
    tracker = Tracker(PITCH, 32)
    trace = feed(tracker, ramp(0, 10_000.0, 50))
    t_last, p_last, _ = trace[-1]
    for k in range(1, 20):  # 38 ms of garbage, then good again
        tracker.update(EncoderSample(wrap(p_last + 500_000 * k, 32), t_last + k * DT_NS))
    assert not tracker.lost
    tracker.update(EncoderSample(wrap(p_last + 400, 32), t_last + 20 * DT_NS))
    assert tracker.last_t_ns == t_last  # held
    tracker.update(EncoderSample(wrap(p_last + 420, 32), t_last + 21 * DT_NS))
    assert not tracker.lost and tracker.last_t_ns == t_last + 21 * DT_NS
    assert tracker.position == p_last + 420 and tracker.rejected_samples == 19


def test_counts_go_back_to_the_plc_in_its_own_terms_after_a_resync() -> None:
    """``raw_count`` is the count modulo the counter width until a resync; after a PLC
    counter reset it gives the raw value the PLC's counter now shows at that belt position
    (a PLC-tracked origin sent unconverted would fire at the wrong place)."""
    tracker = Tracker(PITCH, 32)
    trace = feed(tracker, ramp(0, 2000.0, 500))
    before = created(trace)[-1]
    assert tracker.raw_count(before.origin_count) == before.origin_count
    t_last, p_last, _ = trace[-1]
    restart = ramp(0, 2000.0, 1000)  # the PLC's counter restarts at 0 one sample later
    after = feed(tracker, restart, t0_ns=t_last + DT_NS)
    assert tracker.last_rejection_reason == "backward_jump"  # so it was resynced
    raw_now = restart[-1]
    assert tracker.raw_count(tracker.unwrapped_count) == raw_now
    # a part created after the reset: its origin in the PLC's counter, within the
    # samples the resync needed to be sure (each 4 counts at 2000 counts/s)
    late = created(after)[-1]
    expect = raw_now - (tracker.unwrapped_count - late.origin_count)
    assert tracker.raw_count(late.origin_count) == expect
    assert abs(tracker.raw_count(late.origin_count) - (late.origin_count - p_last)) <= (
        2 * PITCH.resync_after_samples * 4 + 2
    )


def test_sample_time_jitter_widens_the_speed_check_by_that_much_travel() -> None:
    """A count dated 1 ms early (a poll's round trip) is accepted with 1 ms of time jitter
    allowed and refused without it; a jump far beyond it is refused either way."""
    for jitter_ns, accepted in ((0, False), (1_000_000, True)):
        tracker = Tracker(dataclasses.replace(PITCH, time_jitter_ns=jitter_ns), 32)
        feed(tracker, ramp(0, 16_000.0, 50))  # 32 counts per 2 ms sample
        t = tracker.last_t_ns
        assert t is not None
        # 3 ms of travel at 16 000 counts/s, dated 2 ms after the last: 48 counts where
        # max_speed 20 000 counts/s allows 40 (+ 3 jitter), or 60 with 1 ms more
        pos = tracker.position + 48
        tracker.update(EncoderSample(pos, t + DT_NS, None))
        assert (tracker.rejected_samples == 0) is accepted
        tracker.update(EncoderSample(pos + 5000, t + 2 * DT_NS, None))
        assert tracker.last_rejection_reason == "forward_jump"


def test_a_run_of_bad_samples_logs_once_not_per_sample() -> None:
    """A source sending only bad samples is counted every time but logged once per run."""
    tracker = Tracker(dataclasses.replace(PITCH, resync_after_samples=0), 16)
    trace = feed(tracker, [100, 104], bits=16)
    with capture_logs() as logs:
        for i in range(1, 50):
            tracker.update(EncoderSample(70_000 + i, trace[-1][0] + i * DT_NS))
    assert tracker.rejected_samples == 49
    assert [e["event"] for e in logs] == ["encoder_sample_rejected"]
    assert logs[0]["reason"] == "raw_out_of_range"


def test_latched_edges_create_parts_at_their_exact_counts_however_late_the_poll() -> None:
    """Edges latched by the PLC make one part each at edge + half a length, even 2 per poll."""
    tracker = Tracker(
        dataclasses.replace(LATCHED, geometry=dataclasses.replace(LATCHED_LINE, max_speed_cps=1e6)),
        16,
    )
    start = 65_500  # the counter wraps between the edges
    assert tracker.update(EncoderSample(start, 0, False, ())) == []
    late = tracker.update(
        EncoderSample(
            (start + 400) % 65536, 100_000_000, True, ((start + 120) % 65536, (start + 300) % 65536)
        )
    )
    assert [p.origin_count for p in late] == [start + 170, start + 350]
    # an edge closer than half a part length to the previous one is not a new part
    again = tracker.update(
        EncoderSample((start + 500) % 65536, 200_000_000, True, ((start + 320) % 65536,))
    )
    assert again == []


def test_edges_that_come_with_a_refused_count_still_make_their_parts() -> None:
    """A sample whose count is garbage (a jump, or out of range) still carries the PLC's
    latched edges: each becomes its part, placed from the last good count, so no part goes
    untracked (unjudged); an edge farther than the belt can have moved, or out of the
    counter's range, is refused and counted in ``edges_refused`` (the node reports it as a
    part that passed unseen)."""
    tracker = Tracker(LATCHED, 16)
    assert tracker.update(EncoderSample(1000, 0, False, ())) == []
    # 10 ms later: the count read says +30000 (impossible at 10 000 counts/s), the edge is at 1050
    jumped = tracker.update(EncoderSample(31_000, 10_000_000, True, (1050,)))
    assert [p.origin_count for p in jumped] == [1050 + 50]
    assert tracker.rejected_samples == 1
    # a count outside a 16-bit counter, with an edge 90 counts on
    bad = tracker.update(EncoderSample(70_000, 20_000_000, True, (1140,)))
    assert [p.origin_count for p in bad] == [1140 + 50]
    # an edge 20 000 counts away in 10 ms cannot be real
    assert tracker.edges_refused == 0
    far = tracker.update(EncoderSample(99_999, 30_000_000, True, (21_000,)))
    assert far == []
    assert tracker.rejected_samples == 3 and tracker.edges_refused == 1
    garbage = tracker.update(EncoderSample(99_999, 40_000_000, True, (70_000,)))
    assert garbage == [] and tracker.edges_refused == 2


def test_a_plausible_count_after_refused_ones_is_held_until_the_next_agrees() -> None:
    """After a long run of refused counts the plausible range is wide; a garbage count that
    lands in it by chance (here 700 counts behind the last good one, after 0.5 s of garbage)
    is held, refused as "unconfirmed" when the next count disagrees, and so never moves the
    belt: the good counts that follow are accepted and their edges become parts."""
    tracker = Tracker(LATCHED, 32)
    t = 0
    pos = 10_000
    tracker.update(EncoderSample(pos, t, False, ()))
    for _ in range(10):  # the belt at 5000 counts/s, 10 counts per 2 ms
        t += DT_NS
        pos += 10
        tracker.update(EncoderSample(pos, t, False, ()))
    good = tracker.position
    for k in range(250):  # 0.5 s of garbage counts
        t += DT_NS
        pos += 10
        tracker.update(EncoderSample((pos * 7919 + k * 104_729) % (1 << 32), t, False, ()))
    assert tracker.lost
    t += DT_NS
    pos += 10
    with capture_logs() as logs:
        lucky = tracker.update(EncoderSample(good - 700, t, False, ()))
    assert lucky == [] and tracker.position == good and tracker.last_t_ns != t
    assert "belt_reversed" not in [e["event"] for e in logs]
    parts: list[TrackedPart] = []
    for _ in range(5):  # good again; a part's leading edge 3 counts behind each count
        t += DT_NS
        pos += 10
        parts += tracker.update(EncoderSample(pos, t, True, (pos - 3,)))
    assert tracker.last_rejection_reason == "unconfirmed"
    assert not tracker.lost and tracker.position == pos
    # edges 10 counts apart are closer than half a part: one part, at the first edge
    assert [p.origin_count for p in parts] == [pos - 40 - 3 + 50]


def test_a_read_dated_within_its_round_trip_is_believed_not_resynced() -> None:
    """A polled read whose answer waited 30 ms for a busy event loop is dated at the
    request's midpoint, 15 ms after the PLC read its counter: every count after it then
    looks faster than any belt. Within the request's half width (``t_err_ns``) they are
    possible, so they are accepted and the belt position keeps the counter's every count.
    Without the half width the counts after it are refused until they agree with each
    other and are resynced onto the tracker's estimate: the counts of the gap are lost,
    and every part in flight would be struck that far behind its place."""
    speed = 8_000  # counts/s, 80 % of LATCHED's max_speed_cps: a belt near its rating

    def run(err_ns: int) -> tuple[Tracker, int]:
        tracker = Tracker(LATCHED, 32)
        t = 0
        pos = 10_000
        tracker.update(EncoderSample(pos, t, False, ()))
        for _ in range(50):
            t += DT_NS
            pos += speed * DT_NS // 1_000_000_000
            tracker.update(EncoderSample(pos, t, False, ()))
        # the slow request: sent 2 ms after the last, the counter read at once, the
        # answer taken 30 ms later; dated at its midpoint
        t += DT_NS
        pos += speed * DT_NS // 1_000_000_000
        tracker.update(EncoderSample(pos, t + 15_000_000, False, (), t_err_ns=err_ns))
        t += 30_000_000
        pos += speed * 30_000_000 // 1_000_000_000
        for _ in range(40):
            t += DT_NS
            pos += speed * DT_NS // 1_000_000_000
            tracker.update(EncoderSample(pos, t, False, ()))
        return tracker, pos

    tracker, pos = run(err_ns=15_000_000)
    assert tracker.rejected_samples == 0
    assert tracker.position == pos
    blind, pos = run(err_ns=0)
    assert blind.rejected_samples >= LATCHED.resync_after_samples - 1
    assert blind.position < pos - 50  # the gap's counts are gone
