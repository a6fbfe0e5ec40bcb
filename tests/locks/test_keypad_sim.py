"""The simulated keypad lock device: its semantics, and that each fault hook does what it says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portner.locks.keypad_sim import (
    DeviceEvent,
    DeviceRead,
    DeviceReply,
    Faults,
    KeypadLockDevice,
    ReadKind,
    ReplyKind,
)
from portner.locks.port import LockWindow

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Time:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def time() -> Time:
    return Time()


def make(time: Time, **options: object) -> KeypadLockDevice:
    return KeypadLockDevice(time, **options)  # type: ignore[arg-type]


def delivered(device: KeypadLockDevice) -> list[DeviceEvent]:
    reports: list[DeviceEvent] = []
    device.radio.listen(reports.append)  # type: ignore[arg-type]
    return reports


# --- numbering, rules, capacity -----------------------------------------------------------------


def test_f09_zero_based_users_run_to_capacity_minus_one(time: Time) -> None:
    lock = make(time, first_native=0, capacity=30)
    assert lock.set_pin(29, "4711").ok
    assert lock.set_pin(30, "4712").kind is ReplyKind.OUT_OF_RANGE
    assert lock.stored(29) == "4711" and lock.stored(30) is None


def test_one_based_user_zero_is_out_of_range(time: Time) -> None:
    lock = make(time, first_native=1, capacity=3)
    assert lock.set_pin(0, "4711").kind is ReplyKind.OUT_OF_RANGE
    assert lock.set_pin(3, "4711").ok


def test_bad_numbering_or_capacity_is_refused_at_construction(time: Time) -> None:
    with pytest.raises(ValueError, match="first_native"):
        make(time, first_native=2)
    with pytest.raises(ValueError, match="capacity"):
        make(time, capacity=0)
    with pytest.raises(ValueError, match="lengths"):
        make(time, lengths=frozenset())


def test_f03_lengths_are_exact_not_minimums(time: Time) -> None:
    lock = make(time, lengths=frozenset({6}))
    assert lock.set_pin(1, "1234").kind is ReplyKind.BAD_CODE
    assert lock.set_pin(1, "1234567").kind is ReplyKind.BAD_CODE
    assert lock.set_pin(1, "123456").ok


def test_f24_alphabet_and_forbidden_prefix(time: Time) -> None:
    lock = make(time, lengths=frozenset({6}), alphabet="123456789", forbidden_prefixes=("12",))
    assert lock.set_pin(1, "102938").kind is ReplyKind.BAD_CODE  # no 0 on this keypad
    assert lock.set_pin(1, "123456").kind is ReplyKind.BAD_CODE  # starts with 12
    assert lock.set_pin(1, "334455").ok


def test_f05_duplicate_names_the_conflicting_user_and_stores_nothing(time: Time) -> None:
    lock = make(time)
    assert lock.set_pin(1, "4711").ok
    reply = lock.set_pin(2, "4711")
    assert reply.kind is ReplyKind.DUPLICATE and reply.conflict == 1
    assert lock.stored(2) is None
    assert lock.set_pin(1, "4711").ok  # same user, same code: idempotent


def test_duplicate_without_the_conflicting_user_and_locks_that_allow_duplicates(time: Time) -> None:
    quiet = make(time, names_conflict=False)
    quiet.set_pin(1, "4711")
    assert quiet.set_pin(2, "4711") == DeviceReply(ReplyKind.DUPLICATE, None)
    lax = make(time, reject_duplicates=False)
    lax.set_pin(1, "4711")
    assert lax.set_pin(2, "4711").ok and lax.stored(2) == "4711"


def test_f07_full_memory_and_a_smaller_real_capacity(time: Time) -> None:
    lock = make(time, capacity=2)
    assert lock.set_pin(1, "1111").ok and lock.set_pin(2, "2222").ok
    assert lock.set_pin(2, "2323").ok  # replacing a code needs no free memory
    limited = make(time, capacity=5, faults=Faults(capacity_limit=1))
    assert limited.set_pin(1, "1111").ok
    assert limited.set_pin(2, "2222").kind is ReplyKind.FULL
    assert limited.stored(2) is None


# --- reads --------------------------------------------------------------------------------------


def test_reads_are_tri_state_and_never_show_digits_in_a_repr(time: Time) -> None:
    lock = make(time)
    lock.set_pin(1, "4711")
    known, empty = lock.read_pin(1), lock.read_pin(2)
    assert (known.kind, known.digits, known.enabled) == (ReadKind.CODE, "4711", True)
    assert empty.kind is ReadKind.EMPTY
    assert "4711" not in repr(known)
    assert lock.read_pin(99).kind is ReadKind.NO_ANSWER


def test_f21_masked_lock_and_intermittent_masking(time: Time) -> None:
    masked = make(time, masked_reads=True)
    masked.set_pin(1, "4711")
    assert masked.read_pin(1) == DeviceRead(ReadKind.MASKED, enabled=True)
    flaky = make(time, seed=3, faults=Faults(mask_reads=0.5))
    flaky.set_pin(1, "4711")
    kinds = {flaky.read_pin(1).kind for _ in range(40)}
    assert kinds == {ReadKind.MASKED, ReadKind.CODE}  # alternates, as the BE469 did


def test_f21_read_lag_shows_empty_after_an_add(time: Time) -> None:
    lock = make(time, faults=Faults(read_lag=timedelta(minutes=2)))
    lock.set_pin(1, "4711")
    time.advance(seconds=119)
    assert lock.read_pin(1).kind is ReadKind.EMPTY
    assert lock.stored(1) == "4711"  # it is there all along
    time.advance(seconds=1)
    assert lock.read_pin(1).kind is ReadKind.CODE


def test_f21_delete_lag_shows_the_old_code_and_answers_already_exists(time: Time) -> None:
    lock = make(time, faults=Faults(delete_lag=timedelta(minutes=1)))
    lock.set_pin(1, "4711")
    assert lock.clear_pin(1).ok
    assert lock.stored(1) is None
    assert lock.read_pin(1).digits == "4711"
    assert lock.set_pin(1, "5822").kind is ReplyKind.ALREADY_EXISTS
    assert lock.stored(1) is None
    time.advance(minutes=1)
    assert lock.read_pin(1).kind is ReadKind.EMPTY
    assert lock.set_pin(1, "5822").ok


def test_f27_unreadable_user_never_answers(time: Time) -> None:
    lock = make(time, faults=Faults(unreadable={10}))
    lock.program_at_keypad(10, "9090")
    assert [lock.read_pin(10).kind for _ in range(3)] == [ReadKind.NO_ANSWER] * 3


def test_f27_sticky_code_survives_a_clear(time: Time) -> None:
    lock = make(time, faults=Faults(sticky={4}))
    lock.set_pin(4, "4711")
    assert lock.clear_pin(4).ok
    assert lock.stored(4) == "4711"


# --- writes -------------------------------------------------------------------------------------


def test_f10_write_accepted_but_not_stored_reads_back_garbage(time: Time) -> None:
    lock = make(time, faults=Faults(lose_writes_next=1))
    assert lock.set_pin(1, "4711").ok
    assert lock.stored(1) is None
    assert lock.read_pin(1).kind is ReadKind.GARBAGE
    assert lock.set_pin(1, "4711").ok  # the fault fired once
    assert lock.read_pin(1).kind is ReadKind.CODE


def test_busy_counts_down(time: Time) -> None:
    lock = make(time, faults=Faults(busy_next=2))
    assert [lock.set_pin(1, "4711").kind for _ in range(3)] == [
        ReplyKind.BUSY, ReplyKind.BUSY, ReplyKind.OK]


def test_window_needs_lock_side_schedules(time: Time) -> None:
    lock = make(time, schedules=False)
    window = LockWindow(START, START + timedelta(hours=1))
    assert lock.set_pin(1, "4711", window).kind is ReplyKind.UNSUPPORTED
    assert lock.stored(1) is None


# --- radio budget and the network ---------------------------------------------------------------


def test_f25_radio_commands_are_counted_by_kind_and_physical_acts_are_not(time: Time) -> None:
    lock = make(time)
    lock.set_pin(1, "4711")
    lock.read_pin(1)
    lock.read_pin(2)
    lock.clear_pin(1)
    lock.remote("unlock")
    lock.enter_code("4711")
    lock.turn_thumb()
    lock.program_at_keypad(3, "9999")
    assert lock.commands_received == 5
    assert lock.command_counts == {"set_pin": 1, "read_pin": 2, "clear_pin": 1, "remote": 1}


def test_offline_commands_are_lost_not_received(time: Time) -> None:
    lock = make(time)
    lock.go_offline()
    assert lock.set_pin(1, "4711").kind is ReplyKind.OFFLINE
    assert lock.read_pin(1).kind is ReadKind.NO_ANSWER
    assert lock.read_clock() is None and lock.read_status() is None
    assert (lock.commands_received, lock.commands_lost, lock.commands_sent) == (0, 4, 4)
    assert lock.stored(1) is None
    lock.go_online()
    assert lock.set_pin(1, "4711").ok


def test_offline_periods_follow_true_time(time: Time) -> None:
    lock = make(time, faults=Faults(offline_periods=[(START + timedelta(minutes=1),
                                                      START + timedelta(minutes=2))]))
    assert lock.online
    time.advance(minutes=1)
    assert not lock.online and lock.remote("unlock").kind is ReplyKind.OFFLINE
    time.advance(minutes=1)
    assert lock.online and lock.remote("unlock").ok


def test_a_flat_battery_takes_the_lock_off_the_network(time: Time) -> None:
    lock = make(time, battery_percent=1.0)
    lock.drain_battery(5.0)
    assert not lock.online
    assert lock.set_pin(1, "4711").kind is ReplyKind.OFFLINE


def test_reports_made_offline_are_buffered_or_lost(time: Time) -> None:
    buffering = make(time)
    reports = delivered(buffering)
    buffering.go_offline()
    buffering.turn_thumb()
    assert reports == [] and len(buffering.events) == 1
    buffering.go_online()
    assert reports == buffering.events
    losing = make(time, faults=Faults(reports_while_offline="lose"))
    lost = delivered(losing)
    losing.go_offline()
    losing.turn_thumb()
    losing.go_online()
    assert lost == [] and len(losing.events) == 1


# --- report faults ------------------------------------------------------------------------------


def test_f14_dropped_duplicated_and_reordered_reports(time: Time) -> None:
    dropping = make(time, faults=Faults(drop_events=1.0))
    dropped = delivered(dropping)
    dropping.turn_thumb()
    assert dropped == [] and len(dropping.events) == 1  # the lock's own log keeps it

    doubling = make(time, faults=Faults(duplicate_events=1.0))
    doubled = delivered(doubling)
    doubling.turn_thumb()
    assert [e.sequence for e in doubled] == [1, 1]

    shuffling = make(time, faults=Faults(reorder_events=1.0))
    shuffled = delivered(shuffling)
    shuffling.turn_thumb()
    assert shuffled == []  # held back behind the next report
    shuffling.faults.reorder_events = 0.0
    shuffling.turn_thumb()
    assert [e.sequence for e in shuffled] == [2, 1]


def test_events_are_append_only_with_sequence_numbers(time: Time) -> None:
    lock = make(time)
    lock.turn_thumb()
    lock.turn_thumb()
    lock.enter_code("0000")
    assert [e.sequence for e in lock.events] == [1, 2, 3]
    assert [(e.action, e.source) for e in lock.events] == [
        ("unlock", "manual"), ("lock", "manual"), ("unlock", "keypad")]


# --- keypad, bolt, clock, battery ---------------------------------------------------------------


def test_keypad_unlocks_with_a_stored_code_and_names_the_user(time: Time) -> None:
    lock = make(time, first_native=0)
    lock.set_pin(3, "4711")
    event = lock.enter_code("4711")
    assert (event.action, event.source, event.success, event.native) == ("unlock", "keypad", True, 3)
    assert lock.bolt == "unlocked"


def test_f26_five_wrong_codes_lock_the_keypad_out_for_a_while(time: Time) -> None:
    lock = make(time, lockout_for=timedelta(minutes=3))
    lock.set_pin(1, "4711")
    attempts = [lock.enter_code("0000") for _ in range(5)]
    assert all(not e.success and e.failure == "wrong_code" and e.native is None for e in attempts)
    assert lock.events[-1].action == "lockout"
    assert lock.enter_code("4711").failure == "lockout"
    assert lock.bolt == "locked"
    time.advance(minutes=3)
    assert lock.enter_code("4711").success


def test_a_right_code_resets_the_wrong_code_count(time: Time) -> None:
    lock = make(time)
    lock.set_pin(1, "4711")
    for _ in range(4):
        lock.enter_code("0000")
    lock.enter_code("4711")
    lock.enter_code("0000")
    assert not lock.locked_out


def test_lock_side_window_holds_at_the_locks_own_clock(time: Time) -> None:
    lock = make(time, clock_offset=timedelta(minutes=-10))  # the lock runs 10 minutes slow
    window = LockWindow(START + timedelta(minutes=5), START + timedelta(hours=1))
    lock.set_pin(1, "4711", window)
    time.advance(minutes=6)  # true time is inside, the lock's clock is not
    assert lock.enter_code("4711").failure == "outside_schedule"
    lock.set_clock(time.now)
    assert lock.enter_code("4711").success


def test_f16_battery_swap_loses_the_clock_and_windows_stop_holding(time: Time) -> None:
    lock = make(time)
    lock.set_pin(1, "4711", LockWindow(START, START + timedelta(days=1)))
    assert lock.enter_code("4711").success
    lock.replace_battery()
    assert lock.clock.now().year == 2000 and not lock.clock.known
    assert lock.events[-1].action == "battery_replaced"
    assert lock.enter_code("4711").failure == "outside_schedule"
    kept = make(time, faults=Faults(clock_loss_on_battery_swap=False))
    kept.replace_battery()
    assert kept.clock.known and kept.clock.now() == time.now


def test_clock_drift_accumulates(time: Time) -> None:
    lock = make(time, drift_ppm=100.0)
    time.advance(days=1)
    assert lock.clock.offset == timedelta(seconds=8.64)
    assert lock.read_clock() == time.now + timedelta(seconds=8.64)


def test_f29_jam_stays_until_a_successful_movement(time: Time) -> None:
    lock = make(time, faults=Faults(jam_next=1))
    assert lock.remote("unlock").kind is ReplyKind.JAMMED
    assert lock.bolt == "jammed" and lock.events[-1].action == "jammed"
    time.advance(hours=5)
    assert lock.bolt == "jammed"  # no timer clears it
    assert lock.remote("unlock").kind is ReplyKind.JAMMED  # the motor cannot move it
    lock.turn_thumb()
    assert [e.action for e in lock.events[-2:]] == ["unjammed", "lock"]


def test_jam_hook_and_a_jammed_keypad_entry(time: Time) -> None:
    lock = make(time)
    lock.set_pin(1, "4711")
    lock.jam()
    event = lock.enter_code("4711")
    assert (event.success, event.failure, event.native) == (False, "jammed", 1)


def test_auto_lock_relocks_after_the_delay(time: Time) -> None:
    lock = make(time, auto_lock_after=timedelta(seconds=30))
    lock.remote("unlock")
    time.advance(seconds=30)
    lock.tick()
    assert lock.bolt == "locked" and lock.events[-1].source == "auto"


def test_radio_and_motor_spend_battery(time: Time) -> None:
    lock = make(time)
    lock.read_pin(1)
    after_radio = lock.battery.percent
    lock.turn_thumb()
    assert 100.0 > after_radio > lock.battery.percent


def test_programming_at_the_lock_records_a_code_change(time: Time) -> None:
    lock = make(time)
    event = lock.program_at_keypad(2, "9090")
    assert (event.action, event.native) == ("codes_changed", 2)
    assert lock.stored(2) == "9090"
    lock.program_at_keypad(2, None)
    assert lock.stored(2) is None
    with pytest.raises(ValueError, match="native user 99"):
        lock.program_at_keypad(99, "1234")


def test_a_low_battery_is_reported_once(time: Time) -> None:
    lock = make(time, battery_percent=20.5)
    lock.read_pin(1)
    assert not any(e.action == "battery" for e in lock.events)
    lock.drain_battery(0.6)  # reports the level it was drained to
    for _ in range(3):
        lock.read_pin(1)
    assert [e.action for e in lock.events].count("battery") == 2
    assert lock.events[-1].percent is not None and lock.events[-1].percent < 20.0
