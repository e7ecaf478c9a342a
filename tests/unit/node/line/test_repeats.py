"""RepeatWatch: the same defect type at one place on N of the last M parts raises one alarm."""

from __future__ import annotations

import math
import random

import pytest

from node.line.repeats import RepeatChange, RepeatSettings, RepeatWatch, Sighting


def scratch(x_mm: float = 10.0, y_mm: float = 5.0, zone: str | None = None) -> Sighting:
    return Sighting("scratch", x_mm, y_mm, zone)


def run(
    watch: RepeatWatch, parts: dict[int, list[Sighting]], last: int, first: int = 1
) -> dict[int, list[RepeatChange]]:
    """Observe parts ``first..last`` (those not in ``parts`` are good); the changes by part."""
    return {
        pid: changes
        for pid in range(first, last + 1)
        if (changes := watch.observe(pid, parts.get(pid, [])))
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"min_parts": 0}, "min_parts"),
        ({"window_parts": 4, "min_parts": 5}, "min_parts"),
        ({"window_parts": 10_001}, "window_parts"),
        ({"window_parts": 20.0}, "window_parts"),
        ({"distance_mm": 0.0}, "distance_mm"),
        ({"distance_mm": -1.0}, "distance_mm"),
        ({"distance_mm": math.nan}, "distance_mm"),
        ({"distance_mm": math.inf}, "distance_mm"),
    ],
)
def test_settings_out_of_range_name_the_field(kwargs: dict[str, float], field: str) -> None:
    """Settings outside 1 <= N <= M <= 10 000 or a distance not above 0 raise naming the field."""
    with pytest.raises(ValueError, match=field):
        RepeatSettings(**kwargs)  # type: ignore[arg-type]


def test_settings_at_the_bounds_are_accepted() -> None:
    """N = M = 1, M = 10 000 and N = M are all valid."""
    RepeatSettings(window_parts=1, min_parts=1)
    RepeatSettings(window_parts=10_000, min_parts=10_000, distance_mm=0.01)


def test_raised_on_the_part_that_makes_the_nth_distinct_part() -> None:
    """N-1 parts with the defect raise nothing; the Nth raises one alarm with its full picture."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    xs = [10.0, 10.5, 9.5, 10.2, 9.8]
    parts = {2 * i + 1: [scratch(x, 5.0 + 0.1 * i, "edge")] for i, x in enumerate(xs)}
    changes = run(watch, parts, 9)
    assert list(changes) == [9]
    [change] = changes[9]
    assert change.kind == "raised"
    a = change.alarm
    assert (a.key, a.defect_type, a.zone, a.parts, a.window) == (1, "scratch", "edge", 5, 9)
    assert (a.first_part_id, a.last_part_id) == (1, 9)
    assert a.x_mm == pytest.approx(sum(xs) / 5)
    assert a.y_mm == pytest.approx(5.2)
    assert watch.active == (a,)


def test_several_sightings_on_one_part_count_it_once() -> None:
    """Four parts with three sightings each at one place are four parts, not twelve: no alarm."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    parts = {pid: [scratch(10.0), scratch(10.5), scratch(9.6, 5.4)] for pid in range(1, 5)}
    assert run(watch, parts, 10) == {}
    [change] = watch.observe(11, [scratch(10.1)])
    assert (change.kind, change.alarm.parts) == ("raised", 5)


def test_different_types_never_combine() -> None:
    """Three scratches and three dents at one place (N=5) raise nothing."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    parts = {pid: [Sighting("scratch" if pid % 2 else "dent", 10.0, 5.0)] for pid in range(1, 7)}
    assert run(watch, parts, 20) == {}
    assert watch.active == ()


def test_good_parts_beyond_the_window_keep_far_sightings_apart() -> None:
    """N sightings spread over more than M parts never raise: the window moves on good parts."""
    watch = RepeatWatch(RepeatSettings(window_parts=10, min_parts=3, distance_mm=2.0))
    parts = {pid: [scratch()] for pid in (1, 6, 11, 16, 21)}  # at most 2 in any 10
    assert run(watch, parts, 40) == {}


def test_raised_once_then_updated_only_when_the_part_count_changes() -> None:
    """A continuing repeat: one raise, an update per part while its count grows, then silence."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(watch, {pid: [scratch()] for pid in range(1, 61)}, 60)
    assert [c.kind for c in changes[5]] == ["raised"]
    for pid in range(6, 21):
        [c] = changes[pid]
        assert (c.kind, c.alarm.key, c.alarm.parts, c.alarm.window) == ("updated", 1, pid, pid)
    assert max(changes) == 20  # from part 21 on: 20 of 20, no change
    [a] = watch.active
    assert (a.key, a.parts, a.window, a.first_part_id, a.last_part_id) == (1, 20, 20, 41, 60)


def test_key_stays_while_the_defect_wanders() -> None:
    """A repeat drifting 0.2 mm a part (8 mm in all, 4x distance) stays one alarm with key 1."""
    watch = RepeatWatch(RepeatSettings(window_parts=10, min_parts=5, distance_mm=2.0))
    parts = {pid: [scratch(5.0 + 0.2 * pid, 5.0)] for pid in range(1, 41)}
    changes = run(watch, parts, 40)
    kinds = [c.kind for cs in changes.values() for c in cs]
    assert kinds.count("raised") == 1
    assert "cleared" not in kinds
    [a] = watch.active
    assert a.key == 1
    assert a.x_mm > 5.0 + 0.2 * 30  # it followed the defect


@pytest.mark.parametrize(("m", "n"), [(20, 5), (10, 10), (5, 1), (1, 1), (7, 3)])
def test_cleared_exactly_m_minus_n_plus_1_parts_after_it_stops(m: int, n: int) -> None:
    """A repeat on every part clears on the (M-N+1)th part after its last, with one change."""
    watch = RepeatWatch(RepeatSettings(window_parts=m, min_parts=n, distance_mm=2.0))
    last_seen = 30
    changes = run(watch, {pid: [scratch()] for pid in range(1, last_seen + 1)}, last_seen + 50)
    cleared = [(pid, c) for pid, cs in changes.items() for c in cs if c.kind == "cleared"]
    assert len(cleared) == 1
    pid, c = cleared[0]
    assert pid == last_seen + m - n + 1
    assert (c.alarm.key, c.alarm.parts, c.alarm.last_part_id) == (1, n - 1, last_seen)
    assert watch.active == ()


def test_cleared_as_soon_as_fewer_than_n_of_the_last_m_have_it() -> None:
    """Seen on exactly N parts: cleared the part the oldest leaves the window, before the bound."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(watch, {pid: [scratch()] for pid in (1, 3, 5, 7, 9)}, 40)
    assert [(pid, c.kind) for pid, cs in changes.items() for c in cs] == [
        (9, "raised"),
        (21, "cleared"),  # part 1 left the window; the bound would allow 9 + 16 = 25
    ]


def test_a_repeat_that_comes_back_after_clearing_gets_a_new_key() -> None:
    """Cleared, then seen on N parts again: raised again with key 2."""
    watch = RepeatWatch(RepeatSettings(window_parts=5, min_parts=3, distance_mm=2.0))
    parts = {pid: [scratch()] for pid in [*range(1, 4), *range(20, 23)]}
    changes = run(watch, parts, 30)
    events = [(pid, c.kind, c.alarm.key) for pid, cs in changes.items() for c in cs]
    assert events == [(3, "raised", 1), (6, "cleared", 1), (22, "raised", 2), (25, "cleared", 2)]


def test_two_places_farther_than_twice_the_distance_are_two_alarms() -> None:
    """Scratches at (5, 5) and (9.5, 5) (4.5 mm > 2 x 2 mm) on the same parts: keys 1 and 2."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    parts = {pid: [scratch(5.0, 5.0), scratch(9.5, 5.0)] for pid in range(1, 6)}
    changes = run(watch, parts, 5)
    raised = [c.alarm for c in changes[5]]
    assert [c.kind for c in changes[5]] == ["raised", "raised"]
    assert sorted((a.key, a.x_mm) for a in raised) == [(1, 5.0), (2, 9.5)]
    assert watch.active == tuple(sorted(raised, key=lambda a: a.key))


def test_two_close_sightings_on_a_repeat_are_one_alarm() -> None:
    """Two sightings 1 mm apart on every part are one place: one alarm."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(watch, {pid: [scratch(5.0), scratch(6.0)] for pid in range(1, 11)}, 10)
    assert sum(c.kind == "raised" for cs in changes.values() for c in cs) == 1
    assert len(watch.active) == 1


def test_zone_is_the_most_common_zone_among_the_sightings() -> None:
    """Zones edge, edge, hole, None, edge make zone "edge"; sightings without zones make None."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    zones = ["edge", "edge", "hole", None, "edge"]
    changes = run(watch, {pid: [scratch(zone=z)] for pid, z in enumerate(zones, 1)}, 5)
    assert changes[5][0].alarm.zone == "edge"
    plain = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(plain, {pid: [scratch()] for pid in range(1, 6)}, 5)
    assert changes[5][0].alarm.zone is None


def noise(rng: random.Random, parts: int) -> dict[int, list[Sighting]]:
    """30 % of parts with one defect of one of 4 types at a uniform place on a 24 x 24 mm part."""
    types = ["scratch", "dent", "stain", "pore"]
    return {
        pid: [Sighting(rng.choice(types), rng.uniform(0, 24), rng.uniform(0, 24))]
        for pid in range(1, parts + 1)
        if rng.random() < 0.3
    }


def test_random_scatter_raises_no_alarm() -> None:
    """2 000 parts of uniform random defects (N=5 of M=20 within 2 mm) raise nothing."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(watch, noise(random.Random(20261207), 2000), 2000)
    assert sum(c.kind == "raised" for cs in changes.values() for c in cs) == 0


def test_a_repeat_in_random_scatter_is_found_once_and_cleared() -> None:
    """A dent on parts 500-560 at (7, 16) amid noise: one alarm, there, within M parts each way."""
    rng = random.Random(7)
    parts = noise(rng, 2000)
    for pid in range(500, 561):
        parts.setdefault(pid, []).append(
            Sighting("dent", 7.0 + rng.gauss(0, 0.3), 16.0 + rng.gauss(0, 0.3))
        )
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=5, distance_mm=2.0))
    changes = run(watch, parts, 2000)
    events = [(pid, c) for pid, cs in changes.items() for c in cs if c.kind != "updated"]
    assert [(c.kind, c.alarm.key) for _, c in events] == [("raised", 1), ("cleared", 1)]
    (raised_at, raised), (cleared_at, _) = events
    assert raised.alarm.defect_type == "dent"
    assert math.dist((raised.alarm.x_mm, raised.alarm.y_mm), (7.0, 16.0)) < 0.5
    assert 500 <= raised_at < 500 + 20
    assert 560 < cleared_at <= 560 + 20


def test_part_ids_must_increase() -> None:
    """A repeated or smaller part id raises ValueError saying so and changes nothing."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=2, distance_mm=2.0))
    watch.observe(5, [scratch()])
    for pid in (5, 4):
        with pytest.raises(ValueError, match="part ids must increase"):
            watch.observe(pid, [scratch()])
    [change] = watch.observe(6, [scratch()])
    assert (change.kind, change.alarm.parts, change.alarm.window) == ("raised", 2, 2)


def test_non_finite_coordinates_are_ignored() -> None:
    """NaN and infinite sightings neither count towards a repeat nor crash."""
    watch = RepeatWatch(RepeatSettings(window_parts=20, min_parts=3, distance_mm=2.0))
    assert watch.observe(1, [scratch()]) == []
    assert watch.observe(2, [scratch(math.nan, 5.0), scratch(10.0, math.inf)]) == []
    assert watch.observe(3, [scratch(-math.inf, math.nan)]) == []
    assert watch.observe(4, [scratch()]) == []
    [change] = watch.observe(5, [scratch(), scratch(math.nan, math.nan)])
    assert (change.kind, change.alarm.parts) == ("raised", 3)
    assert math.isfinite(change.alarm.x_mm)


def test_two_alarms_that_meet_become_one_and_the_younger_is_cleared() -> None:
    """A second repeat 3.5 mm away that wanders onto the first is cleared; key 1 lives on."""
    watch = RepeatWatch(RepeatSettings(window_parts=10, min_parts=3, distance_mm=2.0))
    parts = {
        pid: [scratch(5.0), scratch(max(5.0, 8.5 - 0.3 * max(0, pid - 5)))] for pid in range(1, 31)
    }
    changes = run(watch, parts, 30)
    events = [(c.kind, c.alarm.key) for cs in changes.values() for c in cs if c.kind != "updated"]
    assert events == [("raised", 1), ("raised", 2), ("cleared", 2)]
    [a] = watch.active
    assert a.key == 1
