"""The Zigbee2MQTT adapter through the real Mosquitto broker, against the simulated bridge."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from portner.locks.keypad_sim import KeypadLockDevice
from portner.locks.port import (
    BackendConfig,
    HealthEvent,
    KeypadCode,
    LockEvent,
    Operation,
    Outcome,
    Refusal,
    Source,
)
from portner.locks.registry import create_backend
from portner.locks.z2m_device import Z2MBridgeSimulator
from portner.locks.zigbee2mqtt import Zigbee2MqttBackend
from tests.locks.contract import EventPump, LockContract

NAME = "front-door"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


async def eventually(check: Callable[[], Any], timeout: float = 5.0) -> None:
    """Wait for a broker round trip to land (polling, not a fixed sleep)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the broker round trip did not land in time")
        await asyncio.sleep(0.01)


class Z2MHarness:
    """The LockHarness: the adapter under test, the simulated bridge and its device around it."""

    def __init__(self, backend: Zigbee2MqttBackend, sim: Z2MBridgeSimulator, clock: Clock) -> None:
        self.backend, self.sim, self.clock = backend, sim, clock
        self.port = backend.lock(NAME)
        self.device: KeypadLockDevice = sim.device(NAME)
        self.pump = EventPump(backend)

    async def device_code(self, slot: int) -> str | None:
        await self.sim.flush()
        return self.device.stored(slot - 1)

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        self.device.program_at_keypad(slot - 1, digits)
        await self.sim.flush()

    async def press_keypad(self, digits: str) -> None:
        self.device.enter_code(digits)
        await self.sim.flush()

    async def turn_thumb(self) -> None:
        self.device.turn_thumb()
        await self.sim.flush()

    async def go_offline(self) -> None:
        self.sim.go_offline(NAME)
        await eventually(lambda: self._online_is(False))

    async def go_online(self) -> None:
        self.sim.go_online(NAME)
        await eventually(lambda: self._online_is(True))

    async def _online_is(self, value: bool) -> bool:
        return (await self.port.health()).online is value

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        return await self.pump.next(timeout)

    async def radio_commands(self) -> int:
        await self.sim.flush()
        return self.device.commands_sent

    async def publish(self, payload: dict[str, Any]) -> None:
        """The bridge publishes exactly this state (fault inputs)."""
        self.sim.publish_raw(NAME, payload)
        await self.sim.flush()

    async def lock_events(self, count: int, timeout: float = 5.0) -> list[LockEvent]:
        out: list[LockEvent] = []
        while len(out) < count:
            event = await self.next_event(timeout)
            if isinstance(event, LockEvent):
                out.append(event)
        return out


@pytest.fixture
async def z2m(mqtt_broker: tuple[str, int]) -> AsyncIterator[Z2MHarness]:
    host, port = mqtt_broker
    base = f"portner-test-{uuid.uuid4().hex[:10]}"
    clock = Clock()
    device = KeypadLockDevice(clock, first_native=0, capacity=10, lengths=frozenset(range(4, 9)), seed=7)
    sim = Z2MBridgeSimulator(host, port, {NAME: device}, base_topic=base, now=clock)
    await sim.start()
    backend = create_backend(BackendConfig("zigbee2mqtt", url=f"mqtt://{host}:{port}", options={
        "base_topic": base, "command_timeout": "3"}), now=clock)
    assert isinstance(backend, Zigbee2MqttBackend)
    await backend.start()
    harness = Z2MHarness(backend, sim, clock)
    harness.pump.start()
    await eventually(lambda: harness._online_is(True))
    yield harness
    await harness.pump.stop()
    await backend.stop()
    await sim.stop()


class TestZigbee2MqttContract(LockContract):
    @pytest.fixture
    async def harness(self, z2m: Z2MHarness) -> Z2MHarness:
        return z2m


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "options", "field"), [
    ("http://127.0.0.1", {}, "url"),
    ("mqtt://127.0.0.1", {"base_topic": "a/#"}, "base_topic"),
    ("mqtt://127.0.0.1", {"command_timeout": "soon"}, "command_timeout"),
    ("mqtt://127.0.0.1", {"qos": "3"}, "qos"),
    ("mqtt://127.0.0.1", {"pin_code_count": "0"}, "pin_code_count"),
])
def test_bad_configuration_names_the_field(url: str, options: dict[str, str], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        create_backend(BackendConfig("zigbee2mqtt", url=url, options=options), now=Clock())


def test_addresses_must_be_friendly_names() -> None:
    backend = create_backend(BackendConfig("zigbee2mqtt", url="mqtt://127.0.0.1"), now=Clock())
    for bad in ("", "a/+", "bridge/devices", "door/set", "/door"):
        with pytest.raises(ValueError, match="friendly name"):
            backend.lock(bad)
    assert backend.lock("hall/door").address == "hall/door"


# --- faults from ../shared/reference/locks.md ----------------------------------------------------------


@pytest.mark.anyio
async def test_f09_zero_based_users_string_ids_and_local_range_check(mqtt_broker: tuple[str, int]) -> None:
    """F9: on a 30-user lock slot 30 is Zigbee user 29; "user":"5" is 5; user 30 is refused locally."""
    host, port = mqtt_broker
    base = f"portner-test-{uuid.uuid4().hex[:10]}"
    clock = Clock()
    device = KeypadLockDevice(clock, first_native=0, capacity=30, seed=1)
    sim = Z2MBridgeSimulator(host, port, {NAME: device}, base_topic=base, now=clock)
    await sim.start()
    backend = create_backend(BackendConfig("zigbee2mqtt", url=f"mqtt://{host}:{port}", options={
        "base_topic": base, "command_timeout": "3", "pin_code_count": "30"}), now=clock)
    await backend.start()
    pump = EventPump(backend)
    pump.start()
    try:
        lock = backend.lock(NAME)
        assert (await lock.set_code(30, KeypadCode("4711"))).ok
        await sim.flush()
        assert device.stored(29) == "4711" and device.stored(30) is None

        before = device.commands_sent
        result = await lock.set_code(31, KeypadCode("5812"))  # would be Zigbee user 30
        assert result.refusal is Refusal.SLOT_OUT_OF_RANGE and "30" in result.detail
        assert (await lock.clear_code(31)).refusal is Refusal.SLOT_OUT_OF_RANGE
        await sim.flush()
        assert device.commands_sent == before  # nothing was published

        # A bridge (or a frontend) that sends the user as a string: normalised to 5.
        sim.publish_raw(NAME, {"action": "keypad_unlock", "action_user": "5",
                               "last_seen": "2026-03-02T09:00:00.000Z"})
        await sim.flush()
        event = await pump.next()
        while not isinstance(event, LockEvent):
            event = await pump.next()
        assert event.slot == 6  # Zigbee user 5 is Portner slot 6
    finally:
        await pump.stop()
        await backend.stop()
        await sim.stop()


@pytest.mark.anyio
async def test_f10_set_whose_read_back_is_an_empty_object_is_write_unconfirmed(z2m: Z2MHarness) -> None:
    """F10: after a set the read-back is {"status":"available","pin_code":{}} -> never confirmed."""
    z2m.device.faults.lose_writes_next = 1  # the write reaches the lock and stores nothing
    result = await z2m.port.set_code(2, KeypadCode("48213"))
    assert result.outcome is Outcome.REFUSED and result.refusal is Refusal.WRITE_UNCONFIRMED
    assert result.retryable
    assert z2m.sim.served[NAME].users["1"] == {"status": "available", "pin_code": {}}
    [reading] = await z2m.port.read_slots([2])
    assert reading.state.value == "unreadable"
    assert await z2m.device_code(2) is None
    # The next attempt, once the fault has passed, lands and is confirmed.
    assert (await z2m.port.set_code(2, KeypadCode("48213"))).ok


@pytest.mark.anyio
async def test_f10_user_still_available_after_a_set_is_write_unconfirmed(z2m: Z2MHarness) -> None:
    z2m.device.faults.read_lag = timedelta(minutes=2)  # the lock reads EMPTY right after an add
    result = await z2m.port.set_code(3, KeypadCode("60417"))
    assert result.refusal is Refusal.WRITE_UNCONFIRMED and "available" in result.detail


@pytest.mark.anyio
async def test_f11_user_in_action_user_and_missing_user_is_unidentified(z2m: Z2MHarness) -> None:
    """F11: action_user names the user even when action_source_user is null; a null user is an
    unidentified keypad unlock, never guessed."""
    await z2m.publish({"action": "keypad_unlock", "action_user": 2, "action_source_user": None,
                       "last_seen": "2026-03-02T09:00:00.000Z"})
    await z2m.publish({"action": "keypad_unlock", "action_user": None,
                       "last_seen": "2026-03-02T09:01:00.000Z"})
    named, unnamed = await z2m.lock_events(2)
    assert (named.source, named.success, named.slot) == (Source.KEYPAD, True, 3)  # Zigbee user 2
    assert (unnamed.source, unnamed.success, unnamed.slot) == (Source.KEYPAD, True, None)


@pytest.mark.anyio
async def test_f14_repeats_count_twice_redeliveries_once_and_empty_actions_never(z2m: Z2MHarness) -> None:
    """F14: two unlocks by user 5 five minutes apart are 2 entries; the same message twice within
    1 s is 1; `"action": ""` is ignored."""
    unlock = {"action": "keypad_unlock", "action_user": 5}
    await z2m.publish({**unlock, "last_seen": "2026-03-02T09:00:00.000Z"})
    await z2m.publish({**unlock, "last_seen": "2026-03-02T09:00:00.000Z"})  # redelivered
    await z2m.publish({**unlock, "last_seen": "2026-03-02T09:05:00.000Z"})  # 5 min later
    await z2m.publish({**unlock, "action": ""})  # the Yale YDM4109's empty second publish
    await z2m.publish({"action": "manual_lock", "last_seen": "2026-03-02T09:10:00.000Z"})  # marker
    with_identity = await z2m.lock_events(4)
    assert with_identity[-1].source is Source.MANUAL  # nothing came of the empty action
    # Without last_seen the bytes are all there is: twice within 1 s is one event, and the
    # same bytes five minutes later another. Each is received before the clock moves on.
    bare = []
    for step in (timedelta(0), timedelta(milliseconds=400), timedelta(minutes=5)):
        z2m.clock.advance(step)
        await z2m.publish({**unlock, "battery": 88})
        bare += await z2m.lock_events(1)
    keypad = with_identity[:-1] + bare
    assert all(e.slot == 6 for e in keypad)
    assert len({e.key for e in keypad[:3]}) == 2
    assert len({e.key for e in keypad[3:]}) == 2
    assert len({e.key for e in keypad}) == 4


@pytest.mark.anyio
async def test_failed_keypad_attempt_is_wrong_code(z2m: Z2MHarness) -> None:
    await z2m.publish({"action": "unlock_failure_invalid_pin_or_id", "action_source_name": "keypad",
                       "action_user": None, "last_seen": "2026-03-02T09:00:00.000Z"})
    [event] = await z2m.lock_events(1)
    assert (event.success, event.failure, event.slot) == (False, "wrong_code", None)


@pytest.mark.anyio
async def test_jam_battery_and_availability_are_health(z2m: Z2MHarness) -> None:
    z2m.device.faults.jam_next = 1
    result = await z2m.port.operate(Operation.UNLOCK)
    assert result.refusal is Refusal.JAMMED
    seen: list[HealthEvent] = []

    async def jammed() -> bool:
        while True:
            try:
                event = await z2m.next_event(0.05)
            except TimeoutError:
                return False
            if isinstance(event, HealthEvent):
                seen.append(event)
                if event.condition.value == "jammed":
                    return True

    await eventually(jammed)
    assert (await z2m.port.health()).jammed is True
    await z2m.publish({"state": "LOCK", "lock_state": "locked", "battery": 41})
    await eventually(lambda: _health_is(z2m, jammed=False, battery=41.0))
    conditions = []
    while True:
        try:
            event = await z2m.next_event(0.5)
        except TimeoutError:
            break
        conditions.append(event.condition.value if isinstance(event, HealthEvent) else "lock")
    assert "unjammed" in conditions and "battery" in conditions
    await z2m.go_offline()
    assert (await z2m.port.health()).online is False


async def _health_is(z2m: Z2MHarness, *, jammed: bool, battery: float) -> bool:
    health = await z2m.port.health()
    return health.jammed is jammed and health.battery_percent == battery


@pytest.mark.anyio
async def test_read_of_a_user_that_never_answers_is_unreadable(z2m: Z2MHarness) -> None:
    z2m.device.faults.unreadable = {4}
    z2m.backend.timeout = 0.3  # the read waits for an answer that will not come
    [silent, empty] = await z2m.port.read_slots([5, 6])
    assert silent.state.value == "unreadable" and empty.state.value == "empty"


# --- the benchmark, smoke only (not timed) -------------------------------------------------------------


def test_bench_locks_prints_every_figure(mqtt_broker: tuple[str, int], capsys: pytest.CaptureFixture[str]) -> None:
    from portner.cli import main

    host, port = mqtt_broker
    code = main(["bench-locks", "--broker", f"{host}:{port}", "--locks", "3", "--commands", "6",
                 "--samples", "4", "--events", "6", "--concurrency", "2"])
    out = capsys.readouterr().out
    assert code == 0
    for figure in ("3 of 3 simulated locks online", "Commands per second", "unlock latency", "p50",
                   "p99", "Broker round trip", "Unlock p99 / broker p99", "Events per second",
                   "6 of 6 keypad"):
        assert figure in out, figure
