"""Lock windows, weekly rules, native time forms (Matter, Nuki) across DST, and clock decisions."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portner.domain.errors import NaiveDatetimeError
from portner.locks.port import LockWindow
from portner.locks.schedules import (
    MATTER_EPOCH,
    AmbiguousLocalTime,
    Gap,
    NonexistentLocalTime,
    Repeat,
    ScheduleError,
    WeeklyRule,
    WindowNotExpressible,
    clock_action,
    from_matter_local_epoch,
    from_nuki_minutes,
    lock_windows,
    matter_days_mask,
    matter_local_epoch,
    matter_window,
    needs_clock_set,
    next_offset_change,
    next_rule_start,
    nuki_minutes,
    nuki_weekdays,
    offset_update_due,
    pad_window,
    weekdays_from_nuki,
    weekly_rules,
)

HELSINKI, OSLO, STOCKHOLM = "Europe/Helsinki", "Europe/Oslo", "Europe/Stockholm"


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def local_epoch(*parts: int) -> int:
    return int((datetime(*parts) - MATTER_EPOCH).total_seconds())  # type: ignore[misc]


def wall(epoch: int) -> datetime:
    return MATTER_EPOCH + timedelta(seconds=epoch)


# --- year-day windows -----------------------------------------------------------------------------


def test_lock_window_is_in_the_lock_zone_and_whole_seconds() -> None:
    [window] = lock_windows(
        utc(2026, 5, 1, 6, 0, 0, 400000), utc(2026, 5, 1, 8, 0, 0, 900000), OSLO
    )
    assert window.start == utc(2026, 5, 1, 6, 0, 1)  # rounded up: never opens early
    assert window.end == utc(2026, 5, 1, 8, 0, 0)  # rounded down: never closes late
    assert window.start.tzinfo == ZoneInfo(OSLO) and window.start.hour == 8


def test_lock_windows_refuse_empty_naive_and_bad_zones() -> None:
    with pytest.raises(ScheduleError, match="must end after it starts"):
        lock_windows(utc(2026, 5, 1, 8), utc(2026, 5, 1, 8), OSLO)
    with pytest.raises(ScheduleError, match="must end after it starts"):
        lock_windows(utc(2026, 5, 1, 8), utc(2026, 5, 1, 7), OSLO)
    with pytest.raises(NaiveDatetimeError):
        lock_windows(datetime(2026, 5, 1, 8), utc(2026, 5, 1, 9), OSLO)
    with pytest.raises(ScheduleError, match="not a known IANA time zone"):
        lock_windows(utc(2026, 5, 1, 8), utc(2026, 5, 1, 9), "Europe/Atlantis")


def test_pad_window_widens_by_the_uncertainty() -> None:
    window = LockWindow(utc(2026, 5, 1, 8), utc(2026, 5, 1, 9))
    padded = pad_window(window, timedelta(minutes=7))
    assert (padded.start, padded.end) == (utc(2026, 5, 1, 7, 53), utc(2026, 5, 1, 9, 7))
    assert pad_window(window, timedelta(0)) == window
    with pytest.raises(ScheduleError, match="non-negative"):
        pad_window(window, timedelta(seconds=-1))


# --- weekly rules ---------------------------------------------------------------------------------


def test_daytime_rule_is_one_entry() -> None:
    assert weekly_rules(time(8), time(16), [0, 2], OSLO) == [
        WeeklyRule(frozenset({0, 2}), time(8), time(16), OSLO)
    ]


def test_end_at_midnight_means_through_2359() -> None:
    [rule] = weekly_rules(time(18), time(0), [4], OSLO)
    assert rule.end == time(23, 59)
    assert rule.covers(datetime(2026, 5, 8, 23, 59, 59))  # a Friday
    assert not rule.covers(datetime(2026, 5, 9, 0, 0))


def test_overnight_rule_from_sunday_wraps_to_monday() -> None:
    evening, morning = weekly_rules(time(22), time(6), [6], OSLO)
    assert evening.weekdays == frozenset({6}) and morning.weekdays == frozenset({0})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((time(8, 0, 30), time(9), [0]), "whole minutes"),
        ((time(8), time(9), []), "at least one day"),
        ((time(8), time(9), [7]), "not 0 \\(Monday\\) to 6"),
        ((time(8), time(9), [True]), "not 0 \\(Monday\\) to 6"),
        ((time(8, tzinfo=UTC), time(9), [0]), "without a zone"),
    ],
)
def test_weekly_rules_refuse_bad_input(args: tuple[time, time, list[int]], message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        weekly_rules(*args, OSLO)


def test_next_rule_start_across_a_spring_gap_and_an_autumn_repeat() -> None:
    # A rule starting 02:30 on the night Oslo skips 02:00-03:00: the lock's wall clock passes
    # 02:30 at the jump itself (01:00Z).
    rules = weekly_rules(time(2, 30), time(5), range(7), OSLO)
    assert next_rule_start(rules, utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)
    # On the night 02:00-03:00 happens twice, it opens the first time (00:30Z, summer time).
    assert next_rule_start(rules, utc(2026, 10, 24, 12)) == utc(2026, 10, 25, 0, 30)
    assert next_rule_start([], utc(2026, 10, 24, 12)) is None


# --- Matter local epoch ---------------------------------------------------------------------------


def test_matter_epoch_counts_local_wall_seconds() -> None:
    assert matter_local_epoch(utc(1999, 12, 31, 23, 0), OSLO) == 0  # 00:00 local in Oslo
    assert matter_local_epoch(utc(2026, 1, 1, 12, 0, 0, 999999), "UTC") == local_epoch(
        2026, 1, 1, 12
    )
    with pytest.raises(ScheduleError, match="outside the Matter epoch"):
        matter_local_epoch(utc(1999, 12, 31, 22, 0), OSLO)


def test_spring_gap_vector() -> None:
    # Helsinki 2026-03-29 03:00 -> 04:00; 03:30 does not exist.
    skipped = local_epoch(2026, 3, 29, 3, 30)
    with pytest.raises(NonexistentLocalTime, match="does not exist"):
        from_matter_local_epoch(skipped, HELSINKI)
    assert from_matter_local_epoch(skipped, HELSINKI, gap=Gap.OFFSET_BEFORE) == utc(
        2026, 3, 29, 1, 30
    )
    assert from_matter_local_epoch(skipped, HELSINKI, gap=Gap.OFFSET_AFTER) == utc(
        2026, 3, 29, 0, 30
    )
    assert from_matter_local_epoch(skipped, HELSINKI, gap=Gap.SHIFT_FORWARD) == utc(2026, 3, 29, 1)
    # Stockholm skips 02:00-03:00 at the same instant.
    assert next_offset_change(STOCKHOLM, utc(2026, 3, 1)) == utc(2026, 3, 29, 1)
    with pytest.raises(NonexistentLocalTime):
        from_matter_local_epoch(local_epoch(2026, 3, 29, 2, 30), STOCKHOLM)


def test_autumn_repeat_vector() -> None:
    # Helsinki 2026-10-25 04:00 -> 03:00; 03:30 happens twice.
    repeated = local_epoch(2026, 10, 25, 3, 30)
    with pytest.raises(AmbiguousLocalTime, match="happens twice"):
        from_matter_local_epoch(repeated, HELSINKI)
    assert from_matter_local_epoch(repeated, HELSINKI, repeat=Repeat.EARLIER) == utc(
        2026, 10, 25, 0, 30
    )
    assert from_matter_local_epoch(repeated, HELSINKI, repeat=Repeat.LATER) == utc(
        2026, 10, 25, 1, 30
    )
    assert matter_local_epoch(utc(2026, 10, 25, 0, 30), HELSINKI) == repeated
    assert matter_local_epoch(utc(2026, 10, 25, 1, 30), HELSINKI) == repeated
    assert next_offset_change(STOCKHOLM, utc(2026, 10, 1)) == utc(2026, 10, 25, 1)


def test_dst_2025_dates() -> None:
    assert next_offset_change(OSLO, utc(2025, 1, 1)) == utc(2025, 3, 30, 1)
    assert next_offset_change(OSLO, utc(2025, 3, 30, 1)) == utc(2025, 10, 26, 1)
    assert next_offset_change("UTC", utc(2025, 1, 1)) is None


def test_from_matter_refuses_non_numbers() -> None:
    for bad in (-1, 2**32, True, 1.5, "10"):
        with pytest.raises(ScheduleError, match="Matter epoch value"):
            from_matter_local_epoch(bad, OSLO)  # type: ignore[arg-type]


instants = st.datetimes(
    min_value=datetime(2001, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=300, deadline=None)
@given(instants, st.sampled_from([OSLO, HELSINKI, STOCKHOLM, "America/New_York", "UTC"]))
def test_matter_round_trip(instant: datetime, zone: str) -> None:
    seconds = matter_local_epoch(instant, zone)
    local = instant.astimezone(ZoneInfo(zone))
    try:
        back = from_matter_local_epoch(seconds, zone)
    except AmbiguousLocalTime:
        # Only inside a repeated hour, and then the fold picks the instant back.
        repeat = Repeat.LATER if local.fold else Repeat.EARLIER
        back = from_matter_local_epoch(seconds, zone, repeat=repeat)
    assert back == instant  # an instant never lands in a gap, so the trip back always exists


# --- Matter windows across a repeated hour --------------------------------------------------------


def test_matter_window_plain() -> None:
    window = LockWindow(utc(2026, 6, 1, 5), utc(2026, 6, 1, 13, 59, 59))
    start, end = matter_window(window, HELSINKI)
    assert (wall(start), wall(end)) == (datetime(2026, 6, 1, 8), datetime(2026, 6, 1, 16, 59, 59))


def test_matter_window_ending_in_the_first_pass_stops_before_the_repeat() -> None:
    # Ends 03:45 summer time (00:45Z); the lock would reopen at 03:00 winter time otherwise.
    window = LockWindow(utc(2026, 10, 24, 22), utc(2026, 10, 25, 0, 45))
    start, end = matter_window(window, HELSINKI)
    assert (wall(start), wall(end)) == (
        datetime(2026, 10, 25, 1),
        datetime(2026, 10, 25, 2, 59, 59),
    )


def test_matter_window_starting_in_the_second_pass_starts_after_the_repeat() -> None:
    window = LockWindow(utc(2026, 10, 25, 1, 15), utc(2026, 10, 25, 5))
    start, end = matter_window(window, HELSINKI)
    assert (wall(start), wall(end)) == (datetime(2026, 10, 25, 4), datetime(2026, 10, 25, 7))


def test_matter_window_inside_the_repeat_cannot_be_held() -> None:
    with pytest.raises(WindowNotExpressible, match="enforce it by adding and removing"):
        matter_window(LockWindow(utc(2026, 10, 25, 0, 5), utc(2026, 10, 25, 0, 45)), HELSINKI)


def _lock_grants(start: int, end: int, instant: datetime, zone: str) -> bool:
    """How a lock counting local wall seconds judges a year-day schedule."""
    return start <= matter_local_epoch(instant, zone) <= end


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-6 * 3600, 6 * 3600),
    st.integers(1, 5 * 3600),
    st.sampled_from(
        [
            (HELSINKI, utc(2026, 10, 25, 1)),
            (OSLO, utc(2026, 10, 25, 1)),
            (HELSINKI, utc(2026, 3, 29, 1)),
        ]
    ),
)
def test_a_matter_window_never_opens_outside_the_plan(
    offset: int, length: int, case: tuple[str, datetime]
) -> None:
    zone, change = case
    window = LockWindow(
        change + timedelta(seconds=offset), change + timedelta(seconds=offset + length)
    )
    try:
        start, end = matter_window(window, zone)
    except WindowNotExpressible:
        return
    probe = window.start - timedelta(hours=3)
    while probe <= window.end + timedelta(hours=3):
        if _lock_grants(start, end, probe, zone):
            assert window.start <= probe <= window.end
        probe += timedelta(minutes=5)


def test_matter_days_mask() -> None:
    assert matter_days_mask([6]) == 0x01  # Sunday
    assert matter_days_mask([0]) == 0x02  # Monday
    assert matter_days_mask([5]) == 0x40  # Saturday
    assert matter_days_mask(range(7)) == 0x7F


# --- Nuki -----------------------------------------------------------------------------------------


def test_nuki_weekdays_and_minutes() -> None:
    assert nuki_weekdays([0]) == 64 and nuki_weekdays([6]) == 1
    assert nuki_weekdays(range(5)) == 64 + 32 + 16 + 8 + 4
    assert weekdays_from_nuki(124) == frozenset(range(5))
    assert nuki_minutes(time(8, 0)) == 480 and nuki_minutes(time(23, 59)) == 1439
    assert from_nuki_minutes(1080) == time(18, 0)
    for bad in (0, 128, True):
        with pytest.raises(ScheduleError, match="allowedWeekDays"):
            weekdays_from_nuki(bad)
    for bad_minutes in (-1, 1440, "480"):
        with pytest.raises(ScheduleError, match="minutes after midnight"):
            from_nuki_minutes(bad_minutes)  # type: ignore[arg-type]


@given(st.frozensets(st.integers(0, 6), min_size=1), st.integers(0, 1439))
def test_nuki_round_trips(days: frozenset[int], minutes: int) -> None:
    assert weekdays_from_nuki(nuki_weekdays(days)) == days
    assert nuki_minutes(from_nuki_minutes(minutes)) == minutes


# --- clock decisions ------------------------------------------------------------------------------


def test_needs_clock_set() -> None:
    assert not needs_clock_set(timedelta(seconds=60))
    assert needs_clock_set(timedelta(seconds=61))
    assert needs_clock_set(timedelta(seconds=-61))
    assert needs_clock_set(None)
    assert not needs_clock_set(timedelta(seconds=100), threshold=timedelta(minutes=2))


def test_clock_action_right_clock_needs_nothing() -> None:
    now = utc(2026, 6, 1, 12)
    action = clock_action(
        now + timedelta(seconds=20), now, zone=OSLO, lock_utc_offset=timedelta(hours=2)
    )
    assert not action.needed and action.offset == timedelta(hours=2)


def test_clock_action_no_time_at_all() -> None:
    action = clock_action(None, utc(2026, 6, 1, 12), zone=OSLO, lock_utc_offset=None)
    assert action.set_time and action.set_zone and action.drift is None
    assert "gave no time" in action.reason and "unknown" in action.reason


def test_offset_update_not_due_when_right_through_the_window() -> None:
    assert offset_update_due(timedelta(hours=2), OSLO, utc(2026, 6, 1), utc(2026, 6, 2, 6)) is None
    # A window already started is not "next": nothing to schedule for it.
    assert offset_update_due(timedelta(hours=2), OSLO, utc(2026, 6, 2), utc(2026, 6, 1)) is None
