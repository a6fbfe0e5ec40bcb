"""The lock contract: what every lock adapter must do, run against each adapter in turn.

An adapter's test module subclasses `LockContract` and provides a `harness` fixture (see
`LockHarness`); every test here then runs against that adapter, bypassing it only to learn the
device's truth. A feature the adapter lacks is not skipped: the test asserts the honest
NOT_SUPPORTED answer instead (under CI=true a skip fails the run).

    class TestZigbee2MqttContract(LockContract):
        @pytest.fixture
        async def harness(self, mqtt_broker): ...

`EventPump` turns `backend.events()` into `next_event(timeout)` without cancelling the
iterator (a timed-out `anext` would close an async generator).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Protocol

import pytest

from portner.locks.port import (
    Capabilities,
    CodeRules,
    CommandResult,
    Feature,
    HealthEvent,
    KeypadCode,
    LockBackend,
    LockEvent,
    LockPort,
    Operation,
    Outcome,
    Refusal,
    SlotState,
    Source,
)


class LockHarness(Protocol):
    """One lock under test, reached through the adapter (`port`) and around it (the rest)."""

    backend: LockBackend
    port: LockPort

    async def device_code(self, slot: int) -> str | None:
        """The code the device really holds in Portner's `slot` (bypasses the adapter)."""
        ...

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        """Put a code on the device without Portner (someone at the lock, a vendor app)."""
        ...

    async def press_keypad(self, digits: str) -> None: ...

    async def turn_thumb(self) -> None: ...

    async def go_offline(self) -> None: ...

    async def go_online(self) -> None: ...

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        """The next item from backend.events(); raises TimeoutError when none comes."""
        ...

    async def radio_commands(self) -> int:
        """How many commands the device (or vendor server) has received so far."""
        ...


class EventPump:
    """Reads a backend's events() in a task, so tests can wait for the next one with a timeout."""

    def __init__(self, backend: LockBackend) -> None:
        self._events: AsyncIterator[LockEvent | HealthEvent] = backend.events()
        self._queue: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        async for event in self._events:
            self._queue.put_nowait(event)

    async def next(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        async with asyncio.timeout(timeout):
            return await self._queue.get()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


# --- helpers ------------------------------------------------------------------------------------


def _weak(digits: str) -> bool:
    steps = {int(b, 36) - int(a, 36) for a, b in pairwise(digits)}
    half = len(digits) // 2
    return len(steps) <= 1 or (len(digits) % 2 == 0 and digits[:half] == digits[half:])


def sample_code(rules: CodeRules | None, salt: int) -> str:
    """A code the lock's rules accept, different for each salt (deterministic, never weak)."""
    rules = rules or CodeRules()
    length = 6 if rules.lengths is None or 6 in rules.lengths else min(rules.lengths)
    rng = random.Random(f"contract-{salt}")
    for _ in range(10_000):
        digits = "".join(rng.choice(rules.alphabet) for _ in range(length))
        if not _weak(digits) and not any(digits.startswith(p) for p in rules.forbidden_prefixes):
            return digits
    raise AssertionError("the lock's code rules admit no sample code")


def wrong_length_code(rules: CodeRules | None) -> str:
    lengths = (rules.lengths if rules else None) or frozenset({8})
    return "".join(("1234567890" * 4)[: max(lengths) + 1]) if max(lengths) < 30 else "1"


def _refused(result: CommandResult, refusal: Refusal) -> bool:
    return result.outcome is Outcome.REFUSED and result.refusal is refusal


async def _lock_event(harness: LockHarness, source: Source, limit: int = 20) -> LockEvent:
    """The next LockEvent from `source`, passing over health and other events."""
    for _ in range(limit):
        event = await harness.next_event()
        if isinstance(event, LockEvent) and event.source is source:
            return event
    raise AssertionError(f"no {source.value} event among the next {limit} events")


def _slots(caps: Capabilities, want: int) -> list[int]:
    count = caps.slots.count if caps.slots is not None else want
    assert count >= want, f"the contract needs a lock with at least {want} slots"
    return list(range(1, want + 1))


# --- the contract -------------------------------------------------------------------------------


class LockContract:
    """Subclass with a `harness` fixture; every test runs against that adapter."""

    @pytest.mark.anyio
    async def test_capabilities_are_sane(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        assert isinstance(caps.features, frozenset)
        assert all(isinstance(feature, Feature) for feature in caps.features)
        if caps.slots is not None:  # None is unknown, never "zero slots" (F8)
            assert caps.slots.count >= 1
            assert caps.slots.native(1) == caps.slots.first_native
            assert caps.slots.slot(caps.slots.native(caps.slots.count)) == caps.slots.count
        if caps.code_rules is not None and caps.code_rules.lengths is not None:
            assert caps.code_rules.lengths, "an empty set of lengths is unknown: say None"
            assert min(caps.code_rules.lengths) >= 1
            assert min(caps.code_rules.lengths) <= max(caps.code_rules.lengths)
        if caps.code_rules is not None:
            assert caps.code_rules.alphabet
        assert caps.min_command_interval.total_seconds() >= 0

    @pytest.mark.anyio
    async def test_set_code_lands_on_the_device_and_reads_back(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 1))
        result = await harness.port.set_code(1, code)
        if Feature.KEYPAD not in caps.features:
            assert _refused(result, Refusal.NOT_SUPPORTED), result
            return
        assert result.outcome is Outcome.CONFIRMED, result
        assert await harness.device_code(1) == code.reveal()
        [reading] = await harness.port.read_slots([1])
        assert reading.slot == 1
        assert reading.state in (SlotState.KNOWN, SlotState.MASKED)
        if reading.state is SlotState.KNOWN:
            assert reading.code == code

    @pytest.mark.anyio
    async def test_same_code_in_the_same_slot_is_idempotent(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 2))
        first = await harness.port.set_code(1, code)
        again = await harness.port.set_code(1, code)
        if Feature.KEYPAD not in caps.features:
            assert _refused(again, Refusal.NOT_SUPPORTED), again
            return
        assert first.ok and again.ok, (first, again)
        assert await harness.device_code(1) == code.reveal()

    @pytest.mark.anyio
    async def test_same_code_in_another_slot_is_refused_duplicate(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 3))
        if Feature.KEYPAD not in caps.features:
            assert _refused(await harness.port.set_code(1, code), Refusal.NOT_SUPPORTED)
            return
        one, two = _slots(caps, 2)
        assert (await harness.port.set_code(one, code)).ok
        result = await harness.port.set_code(two, code)
        assert _refused(result, Refusal.DUPLICATE_CODE), result  # never a success (F5)
        assert not result.retryable
        assert result.conflict_slot in (one, None)
        assert await harness.device_code(two) is None
        assert await harness.device_code(one) == code.reveal()

    @pytest.mark.anyio
    async def test_a_foreign_code_blocks_the_same_code(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        digits = sample_code(caps.code_rules, 4)
        if Feature.KEYPAD not in caps.features:
            assert _refused(await harness.port.set_code(1, KeypadCode(digits)), Refusal.NOT_SUPPORTED)
            return
        mine, foreign = _slots(caps, 2)
        await harness.put_foreign_code(foreign, digits)
        [reading] = await harness.port.read_slots([foreign])
        assert reading.state in (SlotState.KNOWN, SlotState.MASKED, SlotState.UNREADABLE)
        result = await harness.port.set_code(mine, KeypadCode(digits))
        assert _refused(result, Refusal.DUPLICATE_CODE), result  # F6
        assert result.conflict_slot in (foreign, None)
        assert await harness.device_code(mine) is None

    @pytest.mark.anyio
    async def test_clear_code_empties_the_slot(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 5))
        await harness.port.set_code(1, code)
        result = await harness.port.clear_code(1)
        if Feature.KEYPAD not in caps.features:
            assert _refused(result, Refusal.NOT_SUPPORTED), result
            return
        assert result.outcome is Outcome.CONFIRMED, result
        assert await harness.device_code(1) is None
        [reading] = await harness.port.read_slots([1])
        assert reading.state is SlotState.EMPTY

    @pytest.mark.anyio
    async def test_slot_out_of_range_sends_nothing(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 6))
        beyond = caps.slots.count + 1 if caps.slots is not None else 100_000
        before = await harness.radio_commands()
        for slot in (0, beyond):
            for attempt in (harness.port.set_code(slot, code), harness.port.clear_code(slot)):
                try:
                    result = await attempt
                except ValueError as error:
                    assert str(slot) in str(error)
                else:
                    expected = (Refusal.SLOT_OUT_OF_RANGE if Feature.KEYPAD in caps.features
                                else Refusal.NOT_SUPPORTED)
                    assert result.refusal in (expected, Refusal.SLOT_OUT_OF_RANGE), result
                    assert not result.retryable
        if caps.slots is not None:  # known capacity: checked before the radio (F7)
            assert await harness.radio_commands() == before

    @pytest.mark.anyio
    async def test_code_of_a_wrong_length_is_refused(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(wrong_length_code(caps.code_rules))
        before = await harness.radio_commands()
        result = await harness.port.set_code(1, code)
        if Feature.KEYPAD not in caps.features:
            assert _refused(result, Refusal.NOT_SUPPORTED), result
            return
        assert _refused(result, Refusal.BAD_CODE), result
        assert await harness.device_code(1) is None
        if caps.code_rules is not None and caps.code_rules.lengths is not None:
            assert await harness.radio_commands() == before  # F3: no radio traffic

    @pytest.mark.anyio
    async def test_keypad_entry_of_a_stored_code_names_its_slot(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 7))
        if Feature.KEYPAD not in caps.features:
            assert _refused(await harness.port.set_code(1, code), Refusal.NOT_SUPPORTED)
            return
        slot = _slots(caps, 3)[-1]  # not slot 1: the native numbering must be mapped back
        assert (await harness.port.set_code(slot, code)).ok
        await harness.press_keypad(code.reveal())
        event = await _lock_event(harness, Source.KEYPAD)
        assert event.operation is Operation.UNLOCK
        assert event.success is True
        assert event.lock == harness.port.address
        assert event.key
        if Feature.USER_EVENTS in caps.features:
            assert event.slot == slot

    @pytest.mark.anyio
    async def test_a_wrong_code_is_a_failed_unattributed_attempt(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        stored, wrong = sample_code(caps.code_rules, 8), sample_code(caps.code_rules, 9)
        assert stored != wrong
        if Feature.KEYPAD not in caps.features:
            assert _refused(await harness.port.set_code(1, KeypadCode(stored)), Refusal.NOT_SUPPORTED)
            return
        assert (await harness.port.set_code(1, KeypadCode(stored))).ok
        await harness.press_keypad(wrong)
        event = await _lock_event(harness, Source.KEYPAD)
        assert event.success is False  # a failed attempt, never an entry (F26)
        assert event.slot is None  # never guessed (F11, F12)

    @pytest.mark.anyio
    async def test_thumb_turn_is_a_manual_operation(self, harness: LockHarness) -> None:
        await harness.turn_thumb()
        event = await _lock_event(harness, Source.MANUAL)
        assert event.operation in (Operation.LOCK, Operation.UNLOCK)
        assert event.success is True
        assert event.slot is None

    @pytest.mark.anyio
    async def test_offline_commands_are_never_confirmed_and_retryable(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        code = KeypadCode(sample_code(caps.code_rules, 10))
        await harness.go_offline()
        results = [await harness.port.set_code(1, code), await harness.port.clear_code(1),
                   await harness.port.operate(Operation.UNLOCK)]
        for result in results:
            assert result.outcome is not Outcome.CONFIRMED, result
            if result.refusal is not Refusal.NOT_SUPPORTED:
                assert result.retryable, result
        [reading] = await harness.port.read_slots([1])
        assert reading.state is SlotState.UNREADABLE  # silence is not "empty"
        await harness.go_online()
        retried = await harness.port.set_code(1, code)
        if Feature.KEYPAD in caps.features:
            assert retried.ok, retried
            assert await harness.device_code(1) == code.reveal()

    @pytest.mark.anyio
    async def test_operate_unlock_is_confirmed_online(self, harness: LockHarness) -> None:
        caps = await harness.port.capabilities()
        result = await harness.port.operate(Operation.UNLOCK)
        if Feature.REMOTE_OPERATION not in caps.features:
            assert _refused(result, Refusal.NOT_SUPPORTED), result
            return
        assert result.outcome is Outcome.CONFIRMED, result
        locked = await harness.port.operate(Operation.LOCK)
        assert locked.outcome is Outcome.CONFIRMED, locked

    @pytest.mark.anyio
    async def test_codes_never_appear_in_reprs_or_logs(
        self, harness: LockHarness, caplog: pytest.LogCaptureFixture
    ) -> None:
        caps = await harness.port.capabilities()
        digits = sample_code(caps.code_rules, 11)
        code = KeypadCode(digits)
        caplog.set_level(logging.DEBUG)
        shown = [repr(code), str(code), repr(harness.port), repr(harness.backend)]
        shown.append(repr(await harness.port.set_code(1, code)))
        shown.append(repr(await harness.port.read_slots([1])))
        shown.append(repr(await harness.port.set_code(2, code)))  # the duplicate path
        await harness.press_keypad(digits)
        if Feature.KEYPAD in caps.features:
            shown.append(repr(await _lock_event(harness, Source.KEYPAD)))
        shown.append(repr(await harness.port.clear_code(1)))
        shown.append(repr(await harness.port.health()))
        for text in [*shown, caplog.text]:
            assert digits not in text
