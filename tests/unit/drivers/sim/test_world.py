"""The simulated world: belt kinematics, counter wraparound, the actuator's aim."""

from __future__ import annotations

import pytest

from drivers.sim.world import SimWorld


def make_world(**kw: object) -> SimWorld:
    args: dict[str, object] = dict(
        counts_per_mm=4.0,
        encoder_bits=16,
        pitch_mm=30.0,
        part_length_mm=28.0,
        speed_profile=[(0.0, 500.0), (1.0, 0.0), (2.0, 1000.0)],
        part_factory=lambda i: f"part{i}",
        reject_position_mm=400.0,
        actuator_lead_mm=5.0,
        clock_ns=lambda: 0,
    )
    args.update(kw)
    w = SimWorld(**args)  # type: ignore[arg-type]
    w.start(0)
    return w


def test_displacement_follows_the_speed_profile() -> None:
    """The belt moves 500 mm in the first second, stands still, then runs at 1 m/s."""
    w = make_world()
    assert w.displacement_mm(500_000_000) == pytest.approx(250.0)
    assert w.displacement_mm(1_500_000_000) == pytest.approx(500.0)
    assert w.displacement_mm(2_500_000_000) == pytest.approx(1000.0)


def test_speed_changes_at_run_time_keep_the_travel_before() -> None:
    """set_speed stops the belt where it is; later profile steps no longer apply."""
    w = make_world()
    w.set_speed(500_000_000, 0.0)
    assert w.displacement_mm(400_000_000) == pytest.approx(200.0)
    assert w.displacement_mm(3_000_000_000) == pytest.approx(250.0)
    assert w.speed_mm_s(3_000_000_000) == 0.0


def test_parts_beyond_a_station_are_made_even_if_never_seen() -> None:
    """Parts carried past a station count whether or not anything looked at them."""
    w = make_world()
    beyond = w.parts_beyond(400.0, 1_000_000_000)  # 500 mm travelled: centres at 500, 470, …
    assert [p.index for p in beyond] == [0, 1, 2, 3]
    assert [p.index for p in w.parts_beyond(400.0, 1_000_000_000)] == [0, 1, 2, 3]  # made once


def test_counter_wraps_at_its_bit_width() -> None:
    """A 16-bit counter started near its top wraps to small values."""
    w = make_world(count_offset=65_000)
    assert w.raw_count(0) == 65_000
    assert w.raw_count(1_000_000_000) == (65_000 + 2000) % 65536


def test_actuator_strikes_the_part_under_the_station() -> None:
    """A strike timed for part 3's centre hits part 3 with ~0 error."""
    w = make_world(speed_profile=[(0.0, 1000.0)])
    # part 3 crosses the origin at 90 mm; its centre is at 400 mm when displacement = 490 mm;
    # the actuator acts 5 mm of travel after the pulse starts.
    t_ns = int((490.0 - 5.0) / 1000.0 * 1e9)
    hit = w.strike(commanded_part_id=42, t_ns=t_ns)
    assert hit.part_index == 3
    assert abs(hit.error_mm) < 1e-6
    assert w.hits == [hit]


def test_strike_between_parts_hits_nothing() -> None:
    """A strike with no part body under the station records no part."""
    w = make_world(speed_profile=[(0.0, 1000.0)], part_length_mm=10.0)
    t_ns = int((490.0 + 15.0 - 5.0) / 1000.0 * 1e9)
    assert w.strike(1, t_ns).part_index is None


def test_part_present_sensor_covers_the_part_length() -> None:
    """The sensor at the origin is on while a part's body is over it."""
    w = make_world(speed_profile=[(0.0, 1000.0)], part_length_mm=10.0)
    assert w.part_present(int(30.0 / 1000 * 1e9))  # part 1 centred on the sensor
    assert not w.part_present(int(45.0 / 1000 * 1e9))  # half way between parts 1 and 2


def test_latched_edges_are_exact_and_none_are_lost() -> None:
    """Edges between two far-apart reads are all reported, at the leading-edge counts."""
    w = make_world(speed_profile=[(0.0, 1000.0)], part_length_mm=10.0, count_offset=65_500)
    # parts 1..3 (cross at 30, 60, 90 mm) have leading edges at 25, 55, 85 mm
    edges = w.edges_between(int(20 / 1000 * 1e9), int(90 / 1000 * 1e9))
    assert edges == tuple((65_500 + 4 * mm) % 65536 for mm in (25, 55, 85))
    assert w.edges_between(int(90 / 1000 * 1e9), int(91 / 1000 * 1e9)) == ()


def test_part_lookups_over_a_long_jittered_run_match_a_full_scan() -> None:
    """After 20,000 parts with placement jitter (the soak's length), the sensor, the
    latched edges, the parts past a station and the actuator's aim find exactly what a scan
    of every part finds — they look only near the belt's position, so a long run's sensor
    polls do not slow down as parts accumulate."""
    import random

    jitter = random.Random(3)
    w = make_world(
        speed_profile=[(0.0, 1000.0)],
        placement_jitter_mm=lambda i: jitter.uniform(-6.0, 6.0),
        encoder_bits=32,
        max_parts=30_000,  # a finite run keeps every part
    )
    end_ns = 600 * 10**9  # 600 m of belt: 20,000 parts at 30 mm
    w.parts_beyond(0.0, end_ns)
    every = w.parts
    assert len(every) >= 20_000
    probe = random.Random(5)
    for _ in range(200):
        t = probe.randrange(0, end_ns)
        d = w.displacement_mm(t)
        near = {p.index for p in every if abs(d - p.cross_mm - 100.0) <= 14.0}
        assert {p.index for p in w.parts_near(100.0, t, 14.0)} == near
        beyond = [p.index for p in every if d - p.cross_mm > 400.0]
        assert [p.index for p in w.parts_beyond(400.0, t)] == beyond
        t1 = t + probe.randrange(1, 50_000_000)
        d1 = w.displacement_mm(t1)
        leads = [p for p in every if d < p.cross_mm - p.length_mm / 2 <= d1]
        assert len(w.edges_between(t, t1)) == len(leads)
    hit = w.strike(1, end_ns // 2)
    acts = w.displacement_mm(end_ns // 2) + w.actuator_lead_mm - w.reject_position_mm
    under = [p for p in every if abs(acts - p.cross_mm) <= p.length_mm / 2]
    assert hit.part_index == (
        min(under, key=lambda p: abs(acts - p.cross_mm)).index if under else None
    )


def test_an_endless_belt_keeps_only_its_recent_parts() -> None:
    """Without max_parts (the node's own sim line, which runs for days) the world keeps at
    most 2 × keep_parts parts and hits, so its memory does not grow with the run; parts
    near the stations are still found exactly, the forgotten ones are gone for good."""
    w = make_world(speed_profile=[(0.0, 1000.0)], encoder_bits=32, keep_parts=100)
    end_ns = 30 * 10**9  # 30 m: 1000 parts at 30 mm
    for k in range(1, 301):
        t = k * end_ns // 300
        w.parts_near(0.0, t, 14.0)
        w.strike(k, t)
        assert len(w.parts) < 200 and len(w.hits) < 200
    assert w.part(0) is None and w.part(999) is not None
    d = w.displacement_mm(end_ns)
    kept = w.parts
    near = [p.index for p in kept if abs(d - p.cross_mm - 400.0) <= 14.0]
    assert near and [p.index for p in w.parts_near(400.0, end_ns, 14.0)] == near
    assert w.part_present(end_ns) == any(abs(d - p.cross_mm) <= 14.0 for p in kept)
    hit = w.strike(1, end_ns)
    assert hit.part_index is not None and w.part(hit.part_index) is not None
    beyond = w.parts_beyond(400.0, end_ns)
    assert beyond[0].index == kept[0].index and len(beyond) < 200


def test_time_at_inverts_the_displacement_across_speed_steps() -> None:
    """time_at(d) is the first moment the belt has moved d mm: inside a segment, at a
    standstill (its start), and None when the profile never gets there."""
    w = make_world()  # 500 mm/s for 1 s, stopped for 1 s, then 1 m/s
    for t_ns in (250_000_000, 999_000_000, 2_500_000_000):
        t = w.time_at(w.displacement_mm(t_ns))
        assert t is not None and abs(t - t_ns) <= 1
    assert w.time_at(500.0) == 1_000_000_000  # reached as the belt stops, not when it restarts
    stopped = make_world(speed_profile=[(0.0, 500.0), (1.0, 0.0)])
    assert stopped.time_at(600.0) is None


def test_a_speed_step_ramps_at_the_drive_s_acceleration() -> None:
    """With ``accel_mm_s2`` the belt ramps to each later step's speed: from 500 mm/s to a
    stop at 1 s it decelerates for 0.5 s at 1000 mm/s² (125 mm more), then stands; to
    1000 mm/s at 2 s it takes 1 s; the first speed holds from the start."""
    w = make_world(accel_mm_s2=1000.0)
    assert w.speed_mm_s(0) == 500.0
    assert w.speed_mm_s(1_250_000_000) == pytest.approx(250.0)
    assert w.displacement_mm(1_500_000_000) == pytest.approx(625.0)
    assert w.displacement_mm(1_900_000_000) == pytest.approx(625.0)
    assert w.speed_mm_s(2_500_000_000) == pytest.approx(500.0)
    assert w.displacement_mm(3_000_000_000) == pytest.approx(625.0 + 500.0)
    assert w.displacement_mm(4_000_000_000) == pytest.approx(625.0 + 500.0 + 1000.0)
    assert w.time_at(600.0) == pytest.approx(1_276_393_202, abs=2)  # mid-ramp: 0.2764 s in
    assert w.time_at(625.0) == pytest.approx(1_500_000_000, abs=2)  # reached as it stops


def test_a_step_during_a_ramp_cuts_it_short() -> None:
    """A stop at 1 s, ramping at 100 mm/s² (5 s to stand), is cut by the restart at 2 s:
    the belt still runs 400 mm/s then and ramps up from there."""
    w = make_world(accel_mm_s2=100.0)
    assert w.speed_mm_s(2_000_000_000) == pytest.approx(400.0)
    assert w.displacement_mm(2_000_000_000) == pytest.approx(500.0 + 450.0)
    assert w.speed_mm_s(3_000_000_000) == pytest.approx(500.0)
    assert w.speed_mm_s(8_000_000_000) == pytest.approx(1000.0)
