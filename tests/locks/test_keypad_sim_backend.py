"""The "simulated" backend: honest results over a faulty device, events, options, the registry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portner.locks.keypad_sim import (
    Faults,
    KeypadLockDevice,
    SimulatedKeypadBackend,
    create_backend,
    device_options,
)
from portner.locks.port import (
    BackendConfig,
    CommandResult,
    Condition,
    Feature,
    Health,
    HealthEvent,
    KeypadCode,
    LockEvent,
    LockWindow,
    Operation,
    Outcome,
    Refusal,
    SlotRange,
    SlotState,
    Source,
)
from portner.locks.registry import create_backend as registry_create_backend

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CODE = KeypadCode("4711")


class Time:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def time() -> Time:
    return Time()


def backend_with(time: Time, faults: Faults | None = None, **options: object) -> SimulatedKeypadBackend:
    backend = create_backend(BackendConfig("simulated"), now=time)
    backend.add_device("door", KeypadLockDevice(time, faults=faults, **options))  # type: ignore[arg-type]
    return backend


def drain(backend: SimulatedKeypadBackend) -> list[LockEvent | HealthEvent]:
    items = []
    while not backend._queue.empty():
        item = backend._queue.get_nowait()
        assert item is not None
        items.append(item)
    return items


def refused_with(result: CommandResult, refusal: Refusal) -> bool:
    return result.outcome is Outcome.REFUSED and result.refusal is refusal


def test_the_registry_maps_simulated_to_this_backend(time: Time) -> None:
    backend = registry_create_backend(BackendConfig("simulated", options={"capacity": "4"}), now=time)
    assert isinstance(backend, SimulatedKeypadBackend)
    assert backend.device("a").capacity == 4
    assert backend.device("a") is backend.device("a")


def test_options_are_parsed_and_bad_ones_name_the_option() -> None:
    parsed = device_options({"first_native": "0", "lengths": "4,6", "masked_reads": "yes",
                             "forbidden_prefixes": "12,00", "auto_lock_seconds": "30"})
    assert parsed == {"first_native": 0, "lengths": frozenset({4, 6}), "masked_reads": True,
                      "forbidden_prefixes": ("12", "00"), "auto_lock_after": timedelta(seconds=30)}
    assert device_options({"lengths": "4-8"})["lengths"] == frozenset(range(4, 9))
    for options, name in [({"capacity": "many"}, "capacity"), ({"masked_reads": "maybe"}, "masked_reads"),
                          ({"lengths": "six"}, "lengths"), ({"colour": "red"}, "colour")]:
        with pytest.raises(ValueError, match=name):
            device_options(options)


def test_add_device_refuses_a_taken_or_empty_address_or_bad_managed_slots(time: Time) -> None:
    backend = backend_with(time)
    with pytest.raises(ValueError, match="managed_slots"):
        backend.add_device("other", KeypadLockDevice(time, capacity=3), managed_slots=4)
    with pytest.raises(ValueError, match="door"):
        backend.add_device("door", KeypadLockDevice(time))
    with pytest.raises(ValueError, match="address"):
        backend.add_device("", KeypadLockDevice(time))


@pytest.mark.anyio
async def test_f09_slots_map_to_zero_based_users(time: Time) -> None:
    backend = backend_with(time, first_native=0, capacity=30)
    port = backend.lock("door")
    assert (await port.set_code(30, CODE)).ok
    assert backend.device("door").stored(29) == "4711"
    assert refused_with(await port.set_code(31, KeypadCode("4712")), Refusal.SLOT_OUT_OF_RANGE)


@pytest.mark.anyio
async def test_f05_duplicate_is_one_attempt_and_names_the_slot(time: Time) -> None:
    backend = backend_with(time, first_native=0)
    port, device = backend.lock("door"), backend.device("door")
    await port.set_code(1, CODE)
    before = device.command_counts["set_pin"]
    result = await port.set_code(2, CODE)
    assert refused_with(result, Refusal.DUPLICATE_CODE) and result.conflict_slot == 1
    assert device.command_counts["set_pin"] == before + 1


@pytest.mark.anyio
async def test_f12_a_duplicate_held_outside_portners_slots_has_no_conflict_slot(time: Time) -> None:
    backend = create_backend(BackendConfig("simulated"), now=time)
    device = backend.add_device("door", KeypadLockDevice(time, capacity=10), managed_slots=5)
    port = backend.lock("door")
    assert (await port.capabilities()).slots == SlotRange(5, 1)
    device.program_at_keypad(10, "4711")  # the master code, outside Portner's slots
    result = await port.set_code(1, CODE)
    assert refused_with(result, Refusal.DUPLICATE_CODE) and result.conflict_slot is None


@pytest.mark.anyio
async def test_f07_full_lock_is_refused_lock_full(time: Time) -> None:
    backend = backend_with(time, Faults(capacity_limit=1))
    port = backend.lock("door")
    assert (await port.set_code(1, CODE)).ok
    result = await port.set_code(2, KeypadCode("5822"))
    assert refused_with(result, Refusal.LOCK_FULL) and not result.retryable


@pytest.mark.anyio
async def test_f03_code_rules_are_checked_before_the_radio(time: Time) -> None:
    backend = backend_with(time, lengths=frozenset({6}), alphabet="1234567")
    port, device = backend.lock("door"), backend.device("door")
    for digits in ("1234", "123458"):
        result = await port.set_code(1, KeypadCode(digits))
        assert refused_with(result, Refusal.BAD_CODE)
        assert digits not in result.detail  # names the rule, never the code
    assert device.commands_sent == 0
    assert (await port.set_code(1, KeypadCode("123456"))).ok


@pytest.mark.anyio
async def test_f10_accepted_but_not_stored_is_write_unconfirmed(time: Time) -> None:
    backend = backend_with(time, Faults(lose_writes_next=1))
    port = backend.lock("door")
    result = await port.set_code(1, CODE)
    assert refused_with(result, Refusal.WRITE_UNCONFIRMED) and result.retryable
    assert [r.state for r in await port.read_slots([1])] == [SlotState.UNREADABLE]


@pytest.mark.anyio
async def test_f21_masked_read_back_confirms_and_reads_masked(time: Time) -> None:
    backend = backend_with(time, masked_reads=True)
    port = backend.lock("door")
    assert (await port.capabilities()).masked_reads
    assert (await port.set_code(1, CODE)).ok
    [reading] = await port.read_slots([1])
    assert reading.state is SlotState.MASKED and reading.code is None


@pytest.mark.anyio
async def test_f21_read_lag_is_unconfirmed_not_confirmed(time: Time) -> None:
    backend = backend_with(time, Faults(read_lag=timedelta(minutes=2)))
    result = await backend.lock("door").set_code(1, CODE)
    assert refused_with(result, Refusal.WRITE_UNCONFIRMED) and result.retryable


@pytest.mark.anyio
async def test_f21_already_exists_after_a_delete_is_read_not_retried(time: Time) -> None:
    backend = backend_with(time, Faults(delete_lag=timedelta(minutes=1)))
    port, device = backend.lock("door"), backend.device("door")
    await port.set_code(1, CODE)
    assert refused_with(await port.clear_code(1), Refusal.WRITE_UNCONFIRMED)  # still shows
    sets, reads = device.command_counts["set_pin"], device.command_counts["read_pin"]
    result = await port.set_code(1, KeypadCode("5822"))
    assert refused_with(result, Refusal.TEMPORARY) and result.retryable
    assert device.command_counts["set_pin"] == sets + 1  # no retry inside the adapter
    assert device.command_counts["read_pin"] == reads + 1  # it read to compare


@pytest.mark.anyio
async def test_f27_sticky_clear_and_deaf_slot_are_not_confirmed(time: Time) -> None:
    backend = backend_with(time, Faults(sticky={1}, unreadable={2}))
    port = backend.lock("door")
    await port.set_code(1, CODE)
    assert refused_with(await port.clear_code(1), Refusal.WRITE_UNCONFIRMED)
    assert [r.state for r in await port.read_slots([2])] == [SlotState.UNREADABLE]


@pytest.mark.anyio
async def test_busy_and_jammed_are_transient(time: Time) -> None:
    backend = backend_with(time, Faults(busy_next=1, jam_next=1))
    port = backend.lock("door")
    busy = await port.set_code(1, CODE)
    assert refused_with(busy, Refusal.BUSY) and busy.retryable
    jammed = await port.operate(Operation.UNLOCK)
    assert refused_with(jammed, Refusal.JAMMED) and jammed.retryable
    assert (await port.health()).jammed is True


@pytest.mark.anyio
async def test_windows_go_to_the_lock_or_are_not_supported(time: Time) -> None:
    window = LockWindow(START, START + timedelta(hours=2))
    with_schedules = backend_with(time)
    assert (await with_schedules.lock("door").set_code(1, CODE, window)).ok
    assert with_schedules.device("door").stored_window(1) == window
    without = backend_with(time, schedules=False)
    assert Feature.LOCK_SCHEDULES not in (await without.lock("door").capabilities()).features
    assert refused_with(await without.lock("door").set_code(1, CODE, window), Refusal.NOT_SUPPORTED)
    assert without.device("door").commands_sent == 0


@pytest.mark.anyio
async def test_read_slots_checks_the_range_before_the_radio(time: Time) -> None:
    backend = backend_with(time, capacity=5)
    with pytest.raises(ValueError, match="slot 6"):
        await backend.lock("door").read_slots([1, 6])
    assert backend.device("door").commands_sent == 0


@pytest.mark.anyio
async def test_f25_reads_cost_one_command_per_slot_and_a_set_two(time: Time) -> None:
    backend = backend_with(time)
    port, device = backend.lock("door"), backend.device("door")
    await port.read_slots(range(1, 11))
    await port.set_code(1, CODE)
    assert device.command_counts == {"read_pin": 11, "set_pin": 1}


@pytest.mark.anyio
async def test_offline_is_timed_out_and_the_link_change_is_reported(time: Time) -> None:
    backend = backend_with(time)
    port, device = backend.lock("door"), backend.device("door")
    device.go_offline()
    assert (await port.set_code(1, CODE)).outcome is Outcome.TIMED_OUT
    assert (await port.operate(Operation.UNLOCK)).outcome is Outcome.TIMED_OUT
    assert (await port.set_clock(time.now, "Europe/Oslo")).outcome is Outcome.TIMED_OUT
    assert await port.health() == Health(online=False)
    device.go_online()
    assert (await port.set_clock(time.now, "Europe/Oslo")).ok
    conditions = [e.condition for e in drain(backend) if isinstance(e, HealthEvent)]
    assert conditions == [Condition.OFFLINE, Condition.ONLINE]


@pytest.mark.anyio
async def test_health_reports_battery_bolt_and_clock_offset(time: Time) -> None:
    backend = backend_with(time, clock_offset=timedelta(seconds=-90))
    health = await backend.lock("door").health()
    assert health.online and health.bolt == "locked" and health.jammed is False
    assert health.clock_offset == timedelta(seconds=-90)
    assert 99.0 < (health.battery_percent or 0) <= 100.0


@pytest.mark.anyio
async def test_f14_duplicated_reports_keep_one_key(time: Time) -> None:
    backend = backend_with(time, Faults(duplicate_events=1.0))
    backend.device("door").turn_thumb()
    backend.device("door").turn_thumb()
    events = drain(backend)
    assert [e.key for e in events] == ["door#1", "door#1", "door#2", "door#2"]
    assert [e.operation for e in events if isinstance(e, LockEvent)] == [
        Operation.UNLOCK, Operation.UNLOCK, Operation.LOCK, Operation.LOCK]


@pytest.mark.anyio
async def test_events_are_normalised_with_slots_and_lock_time(time: Time) -> None:
    backend = backend_with(time, first_native=0, clock_offset=timedelta(minutes=5))
    port, device = backend.lock("door"), backend.device("door")
    await port.set_code(3, CODE)
    device.enter_code("4711")
    device.program_at_keypad(4, "9090")
    for _ in range(5):
        device.enter_code("0000")
    device.replace_battery()
    items = drain(backend)
    entry = items[0]
    assert isinstance(entry, LockEvent)
    assert (entry.source, entry.success, entry.slot, entry.sequence) == (Source.KEYPAD, True, 3, 1)
    assert entry.lock_time == START + timedelta(minutes=5) and entry.received_at == START
    changed = items[1]
    assert isinstance(changed, HealthEvent) and changed.condition is Condition.CODES_CHANGED
    assert changed.slot == 5
    failures = [e for e in items if isinstance(e, LockEvent) and not e.success]
    assert len(failures) == 5 and all(e.failure == "wrong_code" and e.slot is None for e in failures)
    conditions = [e.condition for e in items if isinstance(e, HealthEvent)]
    assert conditions == [Condition.CODES_CHANGED, Condition.LOCKOUT, Condition.BATTERY_REPLACED]


@pytest.mark.anyio
async def test_stop_ends_the_event_stream(time: Time) -> None:
    backend = backend_with(time)
    backend.device("door").turn_thumb()
    await backend.stop()
    seen = [event async for event in backend.events()]
    assert [e.source for e in seen if isinstance(e, LockEvent)] == [Source.MANUAL]
