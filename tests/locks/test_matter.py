"""The Matter adapter against a local Matter server (tests/locks/test_matter_fake_server.py).

These tests run against recorded exchanges, not a real matter.js device and server: the OHF
matter.js server is not in the npm registry reachable here (`npm view matter-server` and
`@matter-server/ws-controller` answer 404), so the pair cannot be installed. The fake speaks
the server's published wire schema and answers as matter.js 0.17.9's DoorLockServer does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from portner.locks.matter import MatterBackend, create_backend
from portner.locks.matter.cluster import BadSchedule, BadUserName, check_user_name, year_day
from portner.locks.port import (
    BackendConfig,
    Condition,
    HealthEvent,
    KeypadCode,
    LockEvent,
    LockWindow,
    Operation,
    Outcome,
    Refusal,
    SlotState,
    Source,
)
from portner.locks.registry import create_backend as registry_create_backend
from tests.locks.contract import EventPump, LockContract
from tests.locks.test_matter_fake_server import FakeDoorLock, FakeMatterServer

OSLO = ZoneInfo("Europe/Oslo")


class SimulatedTime:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class MatterHarness:
    """The LockHarness: the adapter over WebSocket, the fake lock's memory as device truth."""

    def __init__(
        self, server: FakeMatterServer, backend: MatterBackend, address: str = "5"
    ) -> None:
        self.server, self.device, self.backend = server, server.lock, backend
        self.port = backend.lock(address)
        self.pump = EventPump(backend)

    async def device_code(self, slot: int) -> str | None:
        return self.device.code(slot)  # slot N is credential index N (1-based, as Matter)

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        self.device.put_foreign(slot, digits)

    async def press_keypad(self, digits: str) -> None:
        self.device.enter(digits)

    async def turn_thumb(self) -> None:
        self.device.turn_thumb()

    async def go_offline(self) -> None:
        self.server.set_available(False)

    async def go_online(self) -> None:
        self.server.set_available(True)

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        return await self.pump.next(timeout)

    async def radio_commands(self) -> int:
        return self.server.device_commands()


async def _started(server: FakeMatterServer, clock: SimulatedTime, **options: str) -> MatterBackend:
    backend = create_backend(BackendConfig("matter", url=server.url, options=options), now=clock)
    await backend.start()
    return backend


@pytest.fixture
def clock() -> SimulatedTime:
    return SimulatedTime(datetime(2026, 12, 3, 11, 0, tzinfo=UTC))


@pytest.fixture
async def server(clock: SimulatedTime) -> AsyncIterator[FakeMatterServer]:
    fake = FakeMatterServer(FakeDoorLock(now=clock))
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def matter(server: FakeMatterServer, clock: SimulatedTime) -> AsyncIterator[MatterHarness]:
    harness = MatterHarness(server, await _started(server, clock))
    harness.pump.start()
    yield harness
    await harness.pump.stop()
    await harness.backend.stop()


class TestMatterContract(LockContract):
    @pytest.fixture
    async def harness(self, matter: MatterHarness) -> MatterHarness:
        return matter


def _writes(server: FakeMatterServer) -> list[str]:
    return [
        args["command_name"]
        for command, args in server.received
        if command == "device_command" and args["command_name"] != "GetCredentialStatus"
    ]


# --- F18: a restart while the lock (or the server) is unreachable ---------------------------------


@pytest.mark.anyio
async def test_f18_restart_while_the_lock_is_unreachable_reads_unreadable_and_writes_nothing(
    server: FakeMatterServer,
    clock: SimulatedTime,
) -> None:
    first = await _started(server, clock)
    assert (await first.lock("5").set_code(2, KeypadCode("480213"))).ok
    await first.stop()
    server.set_available(False)  # the Thread lock drops off while Portner restarts
    server.received.clear()
    backend = await _started(server, clock)
    port = backend.lock("5")
    readings = await port.read_slots([1, 2, 3])
    assert [r.state for r in readings] == [SlotState.UNREADABLE] * 3  # never EMPTY
    assert _writes(server) == []  # verify before writing: nothing was cleared or disabled
    assert server.lock.code(2) == "480213"
    server.set_available(True)
    readings = await port.read_slots([1, 2, 3])  # one poll after it returns
    assert [r.state for r in readings] == [SlotState.EMPTY, SlotState.MASKED, SlotState.EMPTY]
    assert _writes(server) == []
    await backend.stop()


@pytest.mark.anyio
async def test_f18_a_server_that_stops_answering_times_out_honestly(
    server: FakeMatterServer,
    clock: SimulatedTime,
) -> None:
    backend = await _started(server, clock, timeout_seconds="0.2")
    port = backend.lock("5")
    server.silent = True
    [reading] = await port.read_slots([1])
    assert reading.state is SlotState.UNREADABLE
    result = await port.set_code(1, KeypadCode("480213"))
    assert result.outcome is Outcome.TIMED_OUT and result.retryable
    await backend.stop()


@pytest.mark.anyio
async def test_f18_a_platform_started_without_its_matter_server_keeps_running(
    clock: SimulatedTime,
) -> None:
    fake = FakeMatterServer(FakeDoorLock(now=clock))
    await fake.start()
    url = fake.url
    await fake.stop()  # nothing listens there any more
    backend = create_backend(
        BackendConfig("matter", url=url, options={"timeout_seconds": "1"}), now=clock
    )
    await backend.start()  # does not raise
    port = backend.lock("5")
    assert [r.state for r in await port.read_slots([1, 2])] == [SlotState.UNREADABLE] * 2
    result = await port.set_code(1, KeypadCode("480213"))
    assert result.refusal is Refusal.OFFLINE and result.retryable
    assert (await port.capabilities()).features == frozenset()  # unknown, not "no keypad"
    await backend.stop()


# --- F17: year-day windows in Matter's native form -------------------------------------------------


def test_f17_native_year_day_is_local_seconds_from_2000_with_an_inclusive_end() -> None:
    window = LockWindow(
        datetime(2026, 12, 3, 8, 0, tzinfo=OSLO), datetime(2026, 12, 3, 23, 59, 59, tzinfo=OSLO)
    )
    native = year_day(window, OSLO)
    # 9833 days from 2000-01-01 to 2026-12-03, plus 8 hours, in Oslo's wall clock.
    assert native.local_start == 849_600_000
    assert native.local_end == 849_600_000 + 16 * 3600 - 1
    with pytest.raises(ValueError):
        LockWindow(window.start, window.start)  # start == end is refused (F17)


def test_f17_a_window_whose_local_end_falls_before_its_start_at_the_dst_fold_is_refused() -> None:
    # 2026-10-25 in Oslo: 00:30Z is 02:30 CEST, 01:10Z is 02:10 CET (the repeated hour).
    window = LockWindow(
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    )
    with pytest.raises(BadSchedule):
        year_day(window, OSLO)


@pytest.mark.anyio
async def test_f17_the_lock_enforces_the_window_through_its_last_second(
    matter: MatterHarness,
    clock: SimulatedTime,
) -> None:
    start, end = (
        datetime(2026, 12, 3, 8, 0, tzinfo=OSLO),
        datetime(2026, 12, 3, 23, 59, 59, tzinfo=OSLO),
    )
    assert (await matter.port.set_code(4, KeypadCode("731904"), LockWindow(start, end))).ok
    outcomes = []
    for at in (start - timedelta(seconds=1), start, end, end + timedelta(seconds=1)):
        clock.now = at
        matter.device.enter("731904")
        event = await matter.next_event()
        while not isinstance(event, LockEvent):
            event = await matter.next_event()
        outcomes.append((event.success, event.failure))
    assert outcomes == [
        (False, "outside_schedule"),
        (True, ""),
        (True, ""),
        (False, "outside_schedule"),
    ]


@pytest.mark.anyio
async def test_f17_dst_fold_window_is_refused_before_any_radio_traffic(
    matter: MatterHarness,
) -> None:
    window = LockWindow(
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 1, 10, tzinfo=UTC)
    )
    before = await matter.radio_commands()
    result = await matter.port.set_code(1, KeypadCode("480213"), window)
    assert result.refusal is Refusal.BAD_SCHEDULE and not result.retryable
    assert await matter.radio_commands() == before


@pytest.mark.anyio
async def test_f02_a_reused_slot_does_not_inherit_the_old_window(matter: MatterHarness) -> None:
    window = LockWindow(
        datetime(2026, 12, 3, 13, 0, tzinfo=OSLO), datetime(2026, 12, 7, 15, 0, tzinfo=OSLO)
    )
    assert (await matter.port.set_code(3, KeypadCode("614028"), window)).ok
    assert matter.device.year_day  # the window is on the lock
    assert (await matter.port.clear_code(3)).ok
    assert (await matter.port.set_code(3, KeypadCode("905172"))).ok  # a new nurse, no window
    assert matter.device.year_day == {}
    assert matter.device.users[3]["type"] == 0  # unrestricted, not schedule-restricted


# --- Matter specifics --------------------------------------------------------------------------


def test_user_name_of_33_bytes_is_rejected_naming_the_field() -> None:
    assert check_user_name("Portner") == "Portner"
    assert check_user_name("x" * 10) == "x" * 10
    for name in ("x" * 33, "x" * 11, "ø" * 6):  # bytes, not characters: "ø" is two
        with pytest.raises(BadUserName, match="UserName"):
            check_user_name(name)


@pytest.mark.anyio
async def test_f05_spec_duplicate_status_is_refused_after_one_attempt(clock: SimulatedTime) -> None:
    server = FakeMatterServer(FakeDoorLock(now=clock, spec_status=True))
    await server.start()
    backend = await _started(server, clock)
    port = backend.lock("5")
    assert (await port.set_code(1, KeypadCode("4711"))).ok
    assert (await port.set_code(1, KeypadCode("4711"))).ok  # same slot, same code: idempotent
    server.received.clear()
    result = await port.set_code(2, KeypadCode("4711"))
    assert result.refusal is Refusal.DUPLICATE_CODE and not result.retryable
    assert _writes(server).count("SetCredential") == 1  # no retry storm
    assert server.lock.code(2) is None and 2 not in server.lock.users  # the new user rolled back
    await backend.stop()
    await server.stop()


@pytest.mark.anyio
async def test_every_timed_command_carries_a_timed_request(matter: MatterHarness) -> None:
    assert (await matter.port.set_code(1, KeypadCode("480213"))).ok
    assert (await matter.port.operate(Operation.UNLOCK)).ok
    assert (await matter.port.clear_code(1)).ok
    timed = {"LockDoor", "UnlockDoor", "SetUser", "SetCredential", "ClearUser", "ClearCredential"}
    sent = [args for command, args in matter.server.received if command == "device_command"]
    assert {args["command_name"] for args in sent} >= {"SetUser", "SetCredential", "UnlockDoor"}
    for args in sent:
        assert (args["command_name"] in timed) == ("timed_request_timeout_ms" in args)
        assert args["cluster_id"] == 257 and args["endpoint_id"] == 1


@pytest.mark.anyio
async def test_a_lock_requiring_a_remote_pin_is_not_operated_without_one(
    clock: SimulatedTime,
) -> None:
    server = FakeMatterServer(FakeDoorLock(now=clock, require_pin_for_remote=True))
    await server.start()
    backend = await _started(server, clock)
    result = await backend.lock("5").operate(Operation.UNLOCK)
    assert result.refusal is Refusal.NOT_SUPPORTED and server.device_commands() == 0
    await backend.stop()
    with_pin = await _started(server, clock, remote_pin="8642")
    await with_pin.lock("5").set_code(1, KeypadCode("8642"))
    assert (await with_pin.lock("5").operate(Operation.UNLOCK)).ok
    await with_pin.stop()
    await server.stop()


@pytest.mark.anyio
async def test_f29_a_jam_clears_only_when_the_lock_operates_again(matter: MatterHarness) -> None:
    matter.device.jam()
    jam = await matter.next_event()
    assert isinstance(jam, HealthEvent) and jam.condition is Condition.JAMMED
    assert (await matter.port.health()).jammed is True
    matter.device.turn_thumb()
    operation = await matter.next_event()
    unjammed = await matter.next_event()
    assert isinstance(operation, LockEvent) and operation.source is Source.MANUAL
    assert isinstance(unjammed, HealthEvent) and unjammed.condition is Condition.UNJAMMED
    assert (await matter.port.health()).jammed is False


@pytest.mark.anyio
async def test_events_carry_the_lock_time_and_a_key_from_the_event_number(
    matter: MatterHarness,
    clock: SimulatedTime,
) -> None:
    assert (await matter.port.set_code(2, KeypadCode("480213"))).ok
    matter.device.enter("480213")
    event = await matter.next_event()
    assert isinstance(event, LockEvent) and event.slot == 2 and event.source is Source.KEYPAD
    assert event.lock_time == clock.now and event.key == f"matter:5:{event.sequence}"


def test_the_registry_builds_the_matter_backend_and_refuses_bad_config(
    clock: SimulatedTime,
) -> None:
    backend = registry_create_backend(
        BackendConfig("matter", url="ws://127.0.0.1:5580/ws"), now=clock
    )
    assert backend.name == "matter"
    for config, field in (
        (BackendConfig("matter", url="http://x/ws"), "url"),
        (BackendConfig("matter", url="ws://x:5580/ws", options={"zone": "Mars/Base"}), "zone"),
        (
            BackendConfig("matter", url="ws://x:5580/ws", options={"timeout_seconds": "0"}),
            "timeout_seconds",
        ),
    ):
        with pytest.raises(ValueError, match=field):
            create_backend(config, now=clock)


def test_lock_status_codes_map_to_honest_refusals() -> None:
    from portner.locks.matter.cluster import Status
    from portner.locks.matter.outcomes import status_result

    expected = {
        (Status.FAILURE, Status.DUPLICATE): Refusal.DUPLICATE_CODE,  # cluster code on FAILURE
        (Status.DUPLICATE, None): Refusal.DUPLICATE_CODE,  # SetCredentialResponse.status
        (Status.RESOURCE_EXHAUSTED, None): Refusal.LOCK_FULL,
        (Status.INVALID_COMMAND, None): Refusal.BAD_CODE,
        (Status.CONSTRAINT_ERROR, None): Refusal.BAD_CODE,
        (Status.FAILURE, None): Refusal.TEMPORARY,
    }
    for (status, cluster_status), refusal in expected.items():
        result = status_result(status, cluster_status, "SetCredential")
        assert result.outcome is Outcome.REFUSED and result.refusal is refusal, (status, result)


@pytest.mark.anyio
async def test_a_pin_the_lock_refuses_despite_its_reported_lengths_is_bad_code(
    clock: SimulatedTime,
) -> None:
    server = FakeMatterServer(FakeDoorLock(now=clock, min_pin=6))
    server.attributes["1/257/24"] = 4  # the lock says 4..8, but takes 6..8
    await server.start()
    backend = await _started(server, clock)
    result = await backend.lock("5").set_code(1, KeypadCode("4711"))
    assert result.refusal is Refusal.BAD_CODE and not result.retryable
    assert server.lock.code(1) is None and 1 not in server.lock.users
    await backend.stop()
    await server.stop()


@pytest.mark.anyio
async def test_after_a_dropped_connection_events_flow_again_without_a_command(
    matter: MatterHarness,
) -> None:
    await matter.server.drop_connections()
    for _ in range(200):  # the backend reconnects on its own; wait for start_listening again
        if sum(1 for command, _ in matter.server.received if command == "start_listening") == 2:
            break
        await asyncio.sleep(0.01)
    matter.device.turn_thumb()
    event = await matter.next_event()
    while not isinstance(event, LockEvent):
        event = await matter.next_event()
    assert event.source is Source.MANUAL


def test_door_lock_events_translate_without_guessing() -> None:
    from portner.locks.matter.events import translate
    from portner.locks.port import SlotRange

    at = datetime(2026, 12, 3, 12, tzinfo=UTC)

    def event(event_id: int, data: dict, cluster: int = 257) -> LockEvent | HealthEvent | None:
        payload = {
            "node_id": 5,
            "endpoint_id": 1,
            "cluster_id": cluster,
            "event_id": event_id,
            "event_number": 7,
            "timestamp": 0,
            "timestamp_type": 0,
            "data": data,
        }
        return translate("5", payload, received_at=at, slots=SlotRange(count=10))

    conditions = {code: event(0, {"alarmCode": code}) for code in (0, 3, 4, 5, 6, 7)}
    assert {c: e.condition if e else None for c, e in conditions.items()} == {
        0: Condition.JAMMED,
        3: Condition.BATTERY_REPLACED,
        4: Condition.LOCKOUT,
        5: Condition.TAMPER,
        6: Condition.TAMPER,
        7: None,
    }
    programming = event(
        2,
        {
            "lockOperationType": 1,
            "operationSource": 3,
            "userIndex": None,
            "credentials": [{"credentialType": 1, "credentialIndex": 0}],
        },
    )
    assert isinstance(programming, LockEvent) and programming.slot is None  # index 0 is no slot
    by_user = event(2, {"lockOperationType": 1, "operationSource": 3, "userIndex": 4})
    assert isinstance(by_user, LockEvent) and (by_user.slot, by_user.attribution) == (
        4,
        "user_index",
    )
    assert by_user.lock_time is None  # a system timestamp is not the lock's clock
    changed = event(
        4,
        {
            "lockDataType": 6,
            "dataOperationType": 0,
            "operationSource": 3,
            "userIndex": 2,
            "dataIndex": 2,
        },
    )
    assert isinstance(changed, HealthEvent) and (changed.condition, changed.slot) == (
        Condition.CODES_CHANGED,
        2,
    )
    assert event(4, {"lockDataType": 6, "dataOperationType": 0, "operationSource": 7}) is None
    assert event(2, {"lockOperationType": 1}, cluster=6) is None
