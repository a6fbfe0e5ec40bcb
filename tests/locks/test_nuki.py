"""The Nuki Web API adapter against a local server that follows Nuki's published API.

Nuki has no code slots: Portner's slot N is the keypad-code auth named "portner-slot-NN", so the
harness's device truth is "the code of the auth with that name" on the server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from portner.locks import registry
from portner.locks.nuki import NukiBackend, create_backend
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
from tests.locks.contract import EventPump, LockContract
from tests.support.nuki_server import FakeSmartlock, NukiServer

LOCK_ID = 4711
TOKEN = "test-token"


def clock() -> datetime:
    return datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def make_backend(url: str, **options: str) -> NukiBackend:
    merged = {"token": TOKEN, "poll_interval": "0", "confirm_interval": "0", "slots": "10",
              **options}
    return create_backend(BackendConfig("nuki", url, merged), now=clock)


class NukiHarness:
    def __init__(self, server: NukiServer, backend: NukiBackend) -> None:
        self.server = server
        self.cloud = server.cloud
        self.backend = backend
        self.port = backend.lock(str(LOCK_ID))
        self.pump = EventPump(backend)

    @property
    def device(self) -> FakeSmartlock:
        return self.cloud.locks[LOCK_ID]

    async def device_code(self, slot: int) -> str | None:
        return self.cloud.codes(LOCK_ID).get(self.backend.name_of(slot))

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        self.cloud.put_foreign_code(LOCK_ID, self.backend.name_of(slot), digits)

    async def press_keypad(self, digits: str) -> None:
        self.cloud.press_keypad(LOCK_ID, digits)

    async def turn_thumb(self) -> None:
        self.cloud.turn_thumb(LOCK_ID)

    async def go_offline(self) -> None:
        self.device.online = False

    async def go_online(self) -> None:
        self.device.online = True

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        # The adapter polls the log; here a poll is made on demand instead of on a timer.
        await self.backend.poll_once()
        return await self.pump.next(timeout)

    async def radio_commands(self) -> int:
        return len(self.cloud.requests)


@pytest.fixture
def nuki_server() -> Iterator[NukiServer]:
    server = NukiServer(token=TOKEN).start()
    server.cloud.add_lock(LOCK_ID)
    yield server
    server.stop()


@pytest.fixture
async def nuki(nuki_server: NukiServer) -> AsyncIterator[NukiHarness]:
    backend = make_backend(nuki_server.url)
    await backend.start()
    harness = NukiHarness(nuki_server, backend)
    baseline = await backend.poll_once()  # the first poll's health (battery) is no test event
    harness.pump.start()
    for _ in range(baseline):
        await harness.pump.next(1.0)
    yield harness
    await harness.pump.stop()
    await backend.stop()


class TestNukiContract(LockContract):
    @pytest.fixture
    async def harness(self, nuki: NukiHarness) -> NukiHarness:
        return nuki


# --- code rules --------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_f24_nuki_code_rules_are_checked_before_any_http_call(nuki: NukiHarness) -> None:
    before = await nuki.radio_commands()
    for digits, rule in (("123456", "prefix this lock forbids (12)"), ("102938", "it has 123456789")):
        result = await nuki.port.set_code(1, KeypadCode(digits))
        assert result.refusal is Refusal.BAD_CODE and not result.retryable, result
        assert rule in result.detail
        assert digits not in result.detail
    assert await nuki.radio_commands() == before  # refused locally, nothing sent
    accepted = await nuki.port.set_code(1, KeypadCode("334455"))
    assert accepted.outcome is Outcome.CONFIRMED, accepted
    assert await nuki.device_code(1) == "334455"
    caps = await nuki.port.capabilities()
    assert caps.code_rules is not None and caps.code_rules.lengths == frozenset({6})
    assert "0" not in caps.code_rules.alphabet and "12" in caps.code_rules.forbidden_prefixes


# --- HTTP status semantics ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 500, 503])
async def test_throttling_and_server_errors_are_temporary(nuki: NukiHarness, status: int) -> None:
    nuki.cloud.fail_next(status, path="PUT", retry_after=30)
    result = await nuki.port.set_code(2, KeypadCode("345678"))
    assert result.refusal is Refusal.TEMPORARY and result.retryable, result
    assert "retry after 30" in result.detail
    assert await nuki.device_code(2) is None
    again = await nuki.port.set_code(2, KeypadCode("345678"))  # the reconciler's later retry
    assert again.ok, again
    assert await nuki.device_code(2) == "345678"


@pytest.mark.anyio
async def test_401_is_permanent_and_reads_are_unreadable(nuki: NukiHarness) -> None:
    nuki.cloud.token = "revoked"
    result = await nuki.port.set_code(1, KeypadCode("345678"))
    assert result.refusal is Refusal.NOT_AUTHORISED and not result.retryable, result
    unlock = await nuki.port.operate(Operation.UNLOCK)
    assert unlock.refusal is Refusal.NOT_AUTHORISED
    [reading] = await nuki.port.read_slots([1])
    assert reading.state is SlotState.UNREADABLE
    assert (await nuki.port.health()).online is None  # unknown, not "offline"


@pytest.mark.anyio
async def test_cloud_side_400_is_bad_code(nuki: NukiHarness) -> None:
    nuki.cloud.fail_next(400, path="PUT")
    result = await nuki.port.set_code(1, KeypadCode("345678"))
    assert result.refusal is Refusal.BAD_CODE and not result.retryable, result


@pytest.mark.anyio
async def test_unreachable_api_is_offline_and_retryable() -> None:
    backend = make_backend("http://127.0.0.1:9")  # the discard port: nothing listens
    await backend.start()
    try:
        result = await backend.lock(str(LOCK_ID)).set_code(1, KeypadCode("345678"))
        assert result.refusal is Refusal.OFFLINE and result.retryable, result
    finally:
        await backend.stop()


# --- writes, reads and restart ---------------------------------------------------------------


@pytest.mark.anyio
async def test_restart_finds_portner_codes_by_reading_and_writes_nothing(
        nuki: NukiHarness, nuki_server: NukiServer) -> None:
    assert (await nuki.port.set_code(2, KeypadCode("345678"))).ok
    assert (await nuki.port.set_code(7, KeypadCode("456789"))).ok
    writes = nuki.device.writes
    restarted = make_backend(nuki_server.url)
    await restarted.start()
    try:
        port = restarted.lock(str(LOCK_ID))
        readings = await port.read_slots([2, 7, 3])
        assert [r.state for r in readings] == [SlotState.KNOWN, SlotState.KNOWN, SlotState.EMPTY]
        assert readings[0].code == KeypadCode("345678")
        assert (await port.set_code(7, KeypadCode("456789"))).ok  # verify, not rewrite (F19)
    finally:
        await restarted.stop()
    assert nuki.device.writes == writes
    assert not [r for r in nuki.cloud.requests[-6:] if r[0] in ("PUT", "POST", "DELETE")]


@pytest.mark.anyio
async def test_a_write_is_confirmed_only_once_the_cloud_shows_it(nuki_server: NukiServer) -> None:
    nuki_server.cloud.locks[LOCK_ID].visible_after_gets = 2
    backend = make_backend(nuki_server.url, confirm_polls="1")
    await backend.start()
    try:
        port = backend.lock(str(LOCK_ID))
        first = await port.set_code(3, KeypadCode("345678"))
        assert first.refusal is Refusal.WRITE_UNCONFIRMED and first.retryable, first
        patient = make_backend(nuki_server.url, confirm_polls="4")
        await patient.start()
        nuki_server.cloud.locks[LOCK_ID].visible_after_gets = 1
        assert (await patient.lock(str(LOCK_ID)).set_code(4, KeypadCode("456789"))).ok
        await patient.stop()
    finally:
        await backend.stop()


@pytest.mark.anyio
async def test_f21_nuki_already_exists_is_reconciled_not_retried(nuki_server: NukiServer) -> None:
    """The first PUT landed but is not visible yet; the retry's PUT answers 409 "already exists"
    -> the adapter reads, finds its own code in its slot, adopts it: no third write."""
    device = nuki_server.cloud.locks[LOCK_ID]
    device.visible_after_gets = 2
    backend = make_backend(nuki_server.url, confirm_polls="1")
    await backend.start()
    try:
        port = backend.lock(str(LOCK_ID))
        first = await port.set_code(3, KeypadCode("345678"))
        assert first.refusal is Refusal.WRITE_UNCONFIRMED
        second = await port.set_code(3, KeypadCode("345678"))
        assert second.outcome is Outcome.CONFIRMED, second
        assert "adopted" in second.detail
    finally:
        await backend.stop()
    puts = [r for r in nuki_server.cloud.requests if r[0] == "PUT"]
    assert len(puts) == 2 and device.writes == 1


@pytest.mark.anyio
async def test_a_code_from_the_nuki_app_blocks_its_duplicate_without_a_write(
        nuki: NukiHarness) -> None:
    nuki.cloud.put_foreign_code(LOCK_ID, "Cleaner", "567891")
    writes = nuki.device.writes
    result = await nuki.port.set_code(1, KeypadCode("567891"))
    assert result.refusal is Refusal.DUPLICATE_CODE and result.conflict_slot is None, result
    assert nuki.device.writes == writes
    [reading] = await nuki.port.read_slots([1])
    assert reading.state is SlotState.EMPTY  # the app's code occupies no Portner slot


@pytest.mark.anyio
async def test_windows_go_to_nuki_dates_and_resetting_them_is_idempotent(nuki: NukiHarness) -> None:
    window = LockWindow(datetime(2026, 3, 2, 8, 0, tzinfo=UTC), datetime(2026, 3, 2, 15, 59, 59,
                                                                         tzinfo=UTC))
    assert (await nuki.port.set_code(1, KeypadCode("345678"), window)).ok
    [auth] = [a for a in nuki.device.auths.values() if a.get("name") == "portner-slot-01"]
    assert auth["allowedFromDate"] == "2026-03-02T08:00:00.000Z"
    assert auth["allowedUntilDate"] == "2026-03-02T15:59:59.000Z"
    assert auth["type"] == 13 and auth["code"] == 345678
    writes = nuki.device.writes
    assert (await nuki.port.set_code(1, KeypadCode("345678"), window)).ok
    assert nuki.device.writes == writes  # same code, same window: nothing sent
    later = LockWindow(window.start + timedelta(days=1), window.end + timedelta(days=1))
    assert (await nuki.port.set_code(1, KeypadCode("345678"), later)).ok
    assert nuki.device.writes == writes + 1  # changed in place (POST), not a second auth
    assert sum(a.get("name") == "portner-slot-01" for a in nuki.device.auths.values()) == 1


# --- events and operation ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_log_entries_are_deduplicated_on_their_id(nuki: NukiHarness) -> None:
    assert (await nuki.port.set_code(5, KeypadCode("345678"))).ok
    nuki.cloud.press_keypad(LOCK_ID, "345678")
    nuki.cloud.press_keypad(LOCK_ID, "345678")  # a second real entry by the same code (F14)
    first = await nuki.backend.poll_once()
    again = await nuki.backend.poll_once()  # the same log read again: nothing new
    assert (first, again) == (2, 0)
    events = await _lock_events(nuki, 2)
    assert all(isinstance(e, LockEvent) and e.slot == 5 and e.source is Source.KEYPAD
               for e in events)
    assert len({e.key for e in events}) == 2
    restarted = make_backend(nuki.server.url)
    await restarted.start()
    try:
        restarted.lock(str(LOCK_ID))
        await restarted.poll_once()
        replayed = [e async for e in _drain(restarted) if isinstance(e, LockEvent)]
    finally:
        await restarted.stop()
    # After a restart the same entries come again with the same keys: consumers dedupe on them.
    assert {e.key for e in events} <= {e.key for e in replayed}


async def _lock_events(nuki: NukiHarness, count: int) -> list[LockEvent]:
    found: list[LockEvent] = []
    while len(found) < count:
        event = await nuki.pump.next(1.0)
        if isinstance(event, LockEvent):
            found.append(event)
    return found


async def _drain(backend: NukiBackend) -> AsyncIterator[LockEvent | HealthEvent]:
    iterator = backend.events()
    while True:
        try:
            async with asyncio.timeout(0.2):
                event = await anext(iterator)
        except TimeoutError:
            return
        yield event


@pytest.mark.anyio
async def test_f26_remote_unlock_without_a_lock_event_is_not_confirmed(nuki: NukiHarness) -> None:
    nuki.device.swallow_actions = True  # the API says 204, the lock never acts
    result = await nuki.port.operate(Operation.UNLOCK)
    assert result.outcome is Outcome.TIMED_OUT, result
    assert "unconfirmed by device" in result.detail
    assert await nuki.backend.poll_once() == 0  # and no door event is made up
    assert (await nuki.port.health()).bolt == "locked"


@pytest.mark.anyio
async def test_a_jammed_lock_refuses_and_reports_it(nuki: NukiHarness) -> None:
    nuki.cloud.jam(LOCK_ID)
    queued = await nuki.backend.poll_once()
    events = [await nuki.pump.next(1.0) for _ in range(queued)]
    assert any(isinstance(e, HealthEvent) and e.condition is Condition.JAMMED for e in events)
    assert any(isinstance(e, LockEvent) and not e.success and e.failure == "jammed"
               for e in events)
    result = await nuki.port.operate(Operation.LOCK)
    assert result.refusal is Refusal.JAMMED, result
    assert (await nuki.port.health()).jammed is True


# --- configuration -----------------------------------------------------------------------------


def test_the_registry_builds_the_nuki_backend_and_config_errors_name_the_field() -> None:
    config = BackendConfig("nuki", "http://127.0.0.1:1", {"token": "t"})
    assert isinstance(registry.create_backend(config, now=clock), NukiBackend)
    with pytest.raises(ValueError, match="token"):
        create_backend(BackendConfig("nuki", None, {}), now=clock)
    with pytest.raises(ValueError, match="poll_interval"):
        create_backend(BackendConfig("nuki", None, {"token": "t", "poll_interval": "soon"}),
                       now=clock)
    with pytest.raises(ValueError, match="smartlockId"):
        create_backend(BackendConfig("nuki", None, {"token": "t"}), now=clock).lock("front door")
