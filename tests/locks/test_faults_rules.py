"""Faults from ../shared/reference/locks.md that the pure lock rules must make impossible.

Each test feeds the fault's own input and asserts its expected result. Where the fault is about
radio traffic (F3, F4, F7), the simulated keypad backend shows that nothing reached the lock.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, time, timedelta

import pytest

from portner.locks.codes import (
    CapacityUnknown,
    InvalidSlot,
    LockFull,
    allocate_slot,
    check_code,
    generate_code,
    normalise_max_uses,
    validate_slot,
)
from portner.locks.keypad_sim import create_backend
from portner.locks.port import BackendConfig, CodeRules, KeypadCode, Outcome, Refusal, SlotRange
from portner.locks.schedules import (
    WeeklyRule,
    clock_action,
    lock_windows,
    matter_local_epoch,
    matter_window,
    next_rule_start,
    offset_update_due,
    pad_window,
    weekly_rules,
)

HELSINKI, OSLO = "Europe/Helsinki", "Europe/Oslo"
NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def _backend(**options: str):  # type: ignore[no-untyped-def]
    return create_backend(BackendConfig("simulated", options=options), now=lambda: NOW)


# --- F1: use limits arrive as floats and strings -----------------------------------------------


def test_f01_max_uses_float_and_string_normalised_never_ignored() -> None:
    assert normalise_max_uses(2.0) == 2 and isinstance(normalise_max_uses(2.0), int)
    assert normalise_max_uses("2") == 2
    for bad in (2.5, "two", True, 0, -1):
        with pytest.raises(ValueError, match="max_uses"):
            normalise_max_uses(bad)


# --- F3: an exact length is not a minimum ------------------------------------------------------


@pytest.mark.anyio
async def test_f03_fixed_length_is_exact_and_checked_before_radio() -> None:
    backend = _backend(lengths="6")
    port, device = backend.lock("front"), backend.device("front")
    rules = (await port.capabilities()).code_rules
    assert check_code(rules, "1234") == "lock requires 6 digits"
    assert check_code(CodeRules(lengths=frozenset({6})), "1234567") == "lock requires 6 digits"
    assert check_code(rules, "193746") is None  # any other 6-digit code that is not weak
    # 123456 is the fault's example of the right length: the length rule accepts it, only the
    # platform's weak filter refuses it, and a lock without that policy takes it.
    assert check_code(CodeRules(lengths=frozenset({6}), reject_weak=False), "123456") is None
    sent = device.commands_sent
    result = await port.set_code(1, KeypadCode("1234"))
    assert result.refusal is Refusal.BAD_CODE and not result.retryable
    assert device.commands_sent == sent  # refused before any radio traffic


# --- F4: out-of-range lengths must not wedge the lock ------------------------------------------


@pytest.mark.anyio
async def test_f04_lengths_outside_4_to_8_rejected_and_other_slots_still_work() -> None:
    backend = _backend(lengths="4-8")
    port, device = backend.lock("front"), backend.device("front")
    rules = (await port.capabilities()).code_rules
    assert rules is not None and rules.lengths == frozenset(range(4, 9))
    assert check_code(rules, "123") == "lock requires 4 to 8 digits"
    assert check_code(rules, "123456789") == "lock requires 4 to 8 digits"
    for digits in ("123", "123456789"):
        result = await port.set_code(2, KeypadCode(digits))
        assert result.outcome is Outcome.REFUSED and result.refusal is Refusal.BAD_CODE
    assert device.commands_sent == 0
    good = generate_code(rules, random.Random(4))
    assert (await port.set_code(3, good)).ok  # the lock is not wedged
    assert device.stored(3) == good.reveal()


# --- F7: a slot beyond capacity, and a full lock -----------------------------------------------


def test_f07_slot_beyond_capacity_names_it_and_full_lock_refuses() -> None:
    thirty = SlotRange(30)
    with pytest.raises(InvalidSlot, match="this lock has 30 slots"):
        validate_slot(thirty, 31)
    with pytest.raises(LockFull, match="all 30 slots"):
        allocate_slot(thirty, set(range(1, 31)), set(), set())


@pytest.mark.anyio
async def test_f07_no_write_is_attempted() -> None:
    backend = _backend(capacity="30")
    port, device = backend.lock("front"), backend.device("front")
    slots = (await port.capabilities()).slots
    with pytest.raises(InvalidSlot, match="this lock has 30 slots"):
        validate_slot(slots, 31)
    assert device.commands_sent == 0


# --- F8: empty capabilities are unknown, never an inverted range -------------------------------


def test_f08_empty_capabilities_are_unknown_not_1_to_0() -> None:
    for rules in (None, CodeRules(lengths=frozenset()), CodeRules(lengths=frozenset({0}))):
        reason = check_code(rules, "739154")
        assert reason is None
    assert validate_slot(SlotRange(count=0), 5) == 5  # no range validation with 0 reported slots
    with pytest.raises(CapacityUnknown) as caught:
        allocate_slot(SlotRange(count=0), set(), set(), set())
    assert "1..0" not in str(caught.value) and "between 1 and 0" not in str(caught.value)


# --- F15: DST is not automatic on a lock holding a UTC offset ----------------------------------


def test_f15_offset_update_scheduled_before_the_next_window_after_dst() -> None:
    # A Helsinki lock keeps a fixed UTC offset (EEST, +3) and a code valid 08:00-16:00 daily.
    rules = weekly_rules(time(8), time(16), range(7), HELSINKI)
    lock_offset = timedelta(hours=3)
    now = datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # half an hour before 04:00 -> 03:00
    next_start = next_rule_start(rules, now)
    assert next_start == datetime(2026, 10, 25, 6, 0, tzinfo=UTC)  # 08:00 EET
    due = offset_update_due(lock_offset, HELSINKI, now, next_start)
    assert due == datetime(2026, 10, 25, 1, 0, tzinfo=UTC)  # at the change, before the window
    # Not earlier: pushing +2 at 00:30Z would make the lock an hour wrong until the change.
    assert not clock_action(now, now, zone=HELSINKI, lock_utc_offset=lock_offset).set_zone
    at_change = clock_action(due, due, zone=HELSINKI, lock_utc_offset=lock_offset)
    assert at_change.set_zone and not at_change.set_time
    assert at_change.offset == timedelta(hours=2)

    def lock_allows(instant: datetime, offset: timedelta) -> bool:
        wall = (instant + offset).replace(tzinfo=None)
        return any(rule.covers(wall) for rule in rules)

    stale, fixed = lock_offset, at_change.offset
    seven_fifty_nine = datetime(2026, 10, 25, 5, 59, tzinfo=UTC)
    eight = datetime(2026, 10, 25, 6, 0, tzinfo=UTC)
    assert lock_allows(seven_fifty_nine, stale)  # the fault: opens at 07:59 without the update
    assert lock_allows(eight, fixed) and not lock_allows(seven_fifty_nine, fixed)
    next_day = timedelta(days=1)
    assert lock_allows(eight + next_day, fixed)
    assert not lock_allows(seven_fifty_nine + next_day, fixed)
    # Nothing further is due once the lock holds the new offset.
    assert offset_update_due(fixed, HELSINKI, due, next_start) is None


# --- F16: drift and a lost offset after a battery swap -----------------------------------------


def test_f16_drift_and_lost_offset_set_both_then_verified() -> None:
    true = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    action = clock_action(
        true - timedelta(minutes=7), true, zone=OSLO, lock_utc_offset=timedelta(0)
    )
    assert action.set_time and action.set_zone
    assert action.drift == -timedelta(minutes=7) and action.offset == timedelta(hours=1)
    # Re-verify after setting: nothing left to do.
    assert not clock_action(
        true + timedelta(seconds=2), true, zone=OSLO, lock_utc_offset=timedelta(hours=1)
    ).needed
    # Within the threshold the time is left alone (no radio spent on 30 s).
    assert not clock_action(
        true - timedelta(seconds=30), true, zone=OSLO, lock_utc_offset=timedelta(hours=1)
    ).set_time
    # Until verified, a lock-enforced window is padded by the measured uncertainty.
    [window] = lock_windows(true + timedelta(hours=1), true + timedelta(hours=2), OSLO)
    padded = pad_window(window, abs(action.drift))
    assert padded.start == window.start - timedelta(minutes=7)
    assert padded.end == window.end + timedelta(minutes=7)


def test_f16_battery_swap_clock_lost_is_resynced_before_the_next_boundary() -> None:
    true = datetime(2026, 1, 12, 9, 0, tzinfo=UTC)
    lost = datetime(2000, 1, 1, tzinfo=UTC)  # the RTC restarted
    action = clock_action(lost, true, zone=OSLO, lock_utc_offset=None)
    assert action.set_time and action.set_zone
    assert offset_update_due(None, OSLO, true, true + timedelta(hours=3)) == true  # now


# --- F17: invalid ranges are split or refused, never accepted silently -------------------------


def test_f17_overnight_rule_split_and_empty_rule_rejected() -> None:
    assert weekly_rules(time(18), time(8), [0], OSLO) == [
        WeeklyRule(frozenset({0}), time(18), time(23, 59), OSLO),
        WeeklyRule(frozenset({1}), time(0), time(8), OSLO),
    ]
    with pytest.raises(ValueError, match="same time"):
        weekly_rules(time(9), time(9), [0], OSLO)
    start = datetime(2026, 5, 4, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="must end after it starts"):
        lock_windows(start, start, OSLO)


def test_f17_end_2359_is_valid_through_235959_and_end_inclusive_to_the_second() -> None:
    [rule] = weekly_rules(time(9), time(23, 59), [0], OSLO)
    assert rule.covers(datetime(2026, 5, 4, 23, 59, 59))  # a Monday
    assert not rule.covers(datetime(2026, 5, 5, 0, 0, 0))
    assert not rule.covers(datetime(2026, 5, 4, 8, 59, 59)) and rule.covers(datetime(2026, 5, 4, 9))
    # Year-day: the end second is inside, the next one is not (Matter's inclusive end, +-1 s).
    [window] = lock_windows(
        datetime(2026, 5, 4, 7, tzinfo=UTC), datetime(2026, 5, 4, 21, 59, 59, tzinfo=UTC), OSLO
    )
    first, last = matter_window(window, OSLO)
    end = window.end
    assert matter_local_epoch(end, OSLO) == last
    assert matter_local_epoch(end + timedelta(seconds=1), OSLO) == last + 1
    assert matter_local_epoch(window.start - timedelta(seconds=1), OSLO) == first - 1


# --- F24: keypad alphabet and prefixes ---------------------------------------------------------


def test_f24_ttlock_alphabet_never_generates_8_9_or_0() -> None:
    rules = CodeRules(lengths=frozenset({6}), alphabet="1234567")
    rng = random.Random(24)
    samples = [generate_code(rules, rng).reveal() for _ in range(10_000)]
    assert not any(set(code) & set("890") for code in samples)
    assert all(len(code) == 6 for code in samples)
    assert {c for code in samples for c in code} == set("1234567")  # all seven keys are used


def test_f24_nuki_profile_and_weak_filter() -> None:
    nuki = CodeRules(lengths=frozenset({6}), alphabet="123456789", forbidden_prefixes=("12",))
    assert check_code(nuki, "123456") == "starts with a prefix this lock forbids (12)"
    assert check_code(nuki, "102938") == "uses a key this keypad does not have (it has 123456789)"
    assert check_code(nuki, "334455") is None
    six = CodeRules(lengths=frozenset({6}))
    for weak in ("111111", "123123", "654321", "234567", "345678"):
        assert check_code(nuki, weak) is not None
        assert (check_code(six, weak) or "").startswith("too weak")
    rng = random.Random(55)
    for _ in range(2000):
        code = generate_code(nuki, rng).reveal()
        assert not code.startswith("12") and "0" not in code


# --- F27: never allocate over unverifiable slots -----------------------------------------------


def test_f27_quarantined_and_unreadable_slots_are_never_allocated() -> None:
    slots = SlotRange(10)
    taken = set(range(1, 10)) - {10}
    assert allocate_slot(slots, set(range(1, 10)), set(), set()) == 10
    with pytest.raises(LockFull, match="1 quarantined"):
        allocate_slot(slots, taken, {10}, set())
    with pytest.raises(LockFull, match="1 unreadable"):
        allocate_slot(slots, taken, set(), {10})
    assert allocate_slot(slots, {1}, {2}, {3}) == 4
