"""The generic signed-webhook adapter against a local vendor that follows the published contract."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from portner.locks import registry
from portner.locks.port import (
    BackendConfig,
    Condition,
    HealthEvent,
    KeypadCode,
    LockEvent,
    Operation,
    Outcome,
    Refusal,
    SlotState,
    Source,
)
from portner.locks.webhook import (
    BadSignature,
    MalformedCallback,
    ManifestError,
    Replayed,
    ReplayGuard,
    StaleTimestamp,
    WebhookBackend,
    create_backend,
    decode_secret,
    sign,
    signature_headers,
    to_command_result,
    verify,
)
from portner.locks.webhook.callbacks import parse_callback
from portner.locks.webhook.contract import CONTRACT, parse_manifest
from tests.locks.contract import EventPump, LockContract
from tests.support.webhook_server import VendorLock, VendorServer

SECRET = "whsec_" + base64.b64encode(b"portner-to-vendor-secret-key-32b").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"vendor-to-portner-secret-key-32b").decode()
ADDRESS = "door-17"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def make_backend(url: str, clock: Clock, **options: str) -> WebhookBackend:
    merged = {"secret": SECRET, "callback_secret": CALLBACK_SECRET, **options}
    return create_backend(BackendConfig("webhook", url, merged), now=clock)


class WebhookHarness:
    def __init__(self, server: VendorServer, backend: WebhookBackend) -> None:
        self.cloud = server.cloud
        self.backend = backend
        self.port = backend.lock(ADDRESS)
        self.pump = EventPump(backend)

    @property
    def device(self) -> VendorLock:
        return self.cloud.locks[ADDRESS]

    async def device_code(self, slot: int) -> str | None:
        return self.device.codes.get(slot)

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        self.device.codes[slot] = digits

    async def press_keypad(self, digits: str) -> None:
        # The vendor's callback, delivered as the web app will: straight to handle_callback.
        self.backend.handle_callback(*self.cloud.press_keypad(ADDRESS, digits))

    async def turn_thumb(self) -> None:
        self.backend.handle_callback(*self.cloud.lock_event(
            ADDRESS, operation="lock", source="manual", success=True))

    async def go_offline(self) -> None:
        self.device.online = False

    async def go_online(self) -> None:
        self.device.online = True

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        return await self.pump.next(timeout)

    async def radio_commands(self) -> int:
        return len(self.cloud.executed)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vendor(clock: Clock) -> Iterator[VendorServer]:
    server = VendorServer(decode_secret(SECRET), decode_secret(CALLBACK_SECRET), now=clock).start()
    server.cloud.add_lock(ADDRESS)
    yield server
    server.stop()


@pytest.fixture
async def webhook(vendor: VendorServer, clock: Clock) -> AsyncIterator[WebhookHarness]:
    backend = make_backend(vendor.url, clock, result_timeout="5")
    await backend.start()
    harness = WebhookHarness(vendor, backend)
    harness.pump.start()
    yield harness
    await harness.pump.stop()
    await backend.stop()


class TestWebhookContract(LockContract):
    @pytest.fixture
    async def harness(self, webhook: WebhookHarness) -> WebhookHarness:
        return webhook


# --- signatures (pure) -------------------------------------------------------------------------

KEY = decode_secret(CALLBACK_SECRET)


def test_signature_follows_standard_webhooks_v1() -> None:
    body = b'{"type":"lock.event"}'
    value = sign(KEY, "msg_1", 1772442000, body)
    assert value.startswith("v1,")
    import hashlib
    import hmac
    expected = hmac.new(KEY, b"msg_1.1772442000." + body, hashlib.sha256).digest()
    assert base64.b64decode(value[3:]) == expected
    headers = signature_headers(KEY, body, now=T0, msg_id="msg_1")
    assert headers["webhook-timestamp"] == str(int(T0.timestamp()))
    assert verify(headers, body, [KEY], now=T0).msg_id == "msg_1"


def test_bad_signatures_are_rejected_with_a_reason() -> None:
    body = b'{"a":1}'
    headers = signature_headers(KEY, body, now=T0)
    with pytest.raises(BadSignature, match="no v1 signature"):
        verify(headers, b'{"a":2}', [KEY], now=T0)  # tampered body
    with pytest.raises(BadSignature, match="no v1 signature"):
        verify(headers, body, [decode_secret(SECRET)], now=T0)  # another key
    with pytest.raises(BadSignature, match="webhook-signature"):
        verify({k: v for k, v in headers.items() if k != "webhook-signature"}, body, [KEY], now=T0)
    rotated = {**headers, "webhook-signature": "v1,bm90LWl0 " + headers["webhook-signature"]}
    assert verify(rotated, body, [KEY], now=T0)  # one matching signature among several is enough


def test_timestamps_outside_five_minutes_are_stale() -> None:
    body = b"{}"
    old = signature_headers(KEY, body, now=T0 - timedelta(minutes=5, seconds=1))
    with pytest.raises(StaleTimestamp):
        verify(old, body, [KEY], now=T0)
    future = signature_headers(KEY, body, now=T0 + timedelta(minutes=5, seconds=1))
    with pytest.raises(StaleTimestamp):
        verify(future, body, [KEY], now=T0)
    edge = signature_headers(KEY, body, now=T0 - timedelta(minutes=4, seconds=59))
    assert verify(edge, body, [KEY], now=T0)


def test_a_webhook_id_is_accepted_once() -> None:
    guard = ReplayGuard()
    headers = signature_headers(KEY, b"{}", now=T0, msg_id="msg_once")
    verified = verify(headers, b"{}", [KEY], now=T0)
    guard.accept(verified, T0)
    with pytest.raises(Replayed):
        guard.accept(verified, T0 + timedelta(minutes=1))
    assert Replayed.http_status == 409 and BadSignature.http_status == 401


def test_typed_results_map_to_the_port() -> None:
    assert to_command_result({"result": "success", "data": {}}).ok
    denied = to_command_result({"result": "denied", "reason": "lock_full"})
    assert denied.refusal is Refusal.LOCK_FULL and not denied.retryable
    temporary = to_command_result({"result": "temporary", "retry_after": 30})
    assert temporary.refusal is Refusal.TEMPORARY and temporary.retryable
    assert "retry after 30" in temporary.detail
    offline = to_command_result({"result": "temporary", "reason": "offline"})
    assert offline.refusal is Refusal.OFFLINE and offline.retryable
    permanent = to_command_result({"result": "permanent", "detail": "unknown lock"})
    assert permanent.refusal is Refusal.NOT_SUPPORTED and not permanent.retryable
    assert to_command_result({"result": "maybe"}).retryable  # unknown: transient, not success
    assert to_command_result("garbage").retryable


# --- callbacks through the backend ---------------------------------------------------------------


@pytest.mark.anyio
async def test_callbacks_become_events_and_bad_ones_are_refused(
        webhook: WebhookHarness, clock: Clock) -> None:
    headers, body = webhook.cloud.lock_event(ADDRESS, operation="unlock", source="keypad",
                                             success=True, slot=3)
    [event] = webhook.backend.handle_callback(headers, body)
    assert isinstance(event, LockEvent) and event.slot == 3 and event.source is Source.KEYPAD
    assert event.key == f"webhook:{ADDRESS}:ev-1" and event.sequence == 1
    assert await webhook.next_event(1.0) == event
    with pytest.raises(Replayed):
        webhook.backend.handle_callback(headers, body)  # the same delivery again
    tampered = body.replace(b'"slot": 3', b'"slot": 4')
    with pytest.raises(BadSignature):
        webhook.backend.handle_callback({**headers, "webhook-id": "msg_new"}, tampered)
    clock.now = T0 + timedelta(minutes=6)
    with pytest.raises(StaleTimestamp):
        webhook.backend.handle_callback(*webhook.cloud.callback("lock.event", {}, at=T0))
    clock.now = T0
    for data, complaint in (({"lock": ADDRESS, "id": "x", "operation": "open", "source": "keypad",
                              "success": True}, "operation"),
                            ({"lock": ADDRESS, "operation": "unlock"}, "'id'")):
        with pytest.raises(MalformedCallback, match=complaint):
            webhook.backend.handle_callback(*webhook.cloud.callback("lock.event", data))
    [health] = webhook.backend.handle_callback(*webhook.cloud.callback(
        "lock.health", {"lock": ADDRESS, "id": "h1", "condition": "battery", "percent": 12}))
    assert isinstance(health, HealthEvent) and health.condition is Condition.BATTERY
    assert health.percent == 12.0


@pytest.mark.anyio
async def test_requests_to_the_vendor_are_signed(webhook: WebhookHarness, vendor: VendorServer,
                                                 clock: Clock) -> None:
    assert vendor.cloud.rejected == 0  # the manifest and the commands so far verified
    wrong = make_backend(vendor.url, clock, secret=CALLBACK_SECRET)
    with pytest.raises(ManifestError, match="401"):
        await wrong.start()
    await wrong.stop()
    assert vendor.cloud.rejected == 1


@pytest.mark.anyio
async def test_a_late_result_arrives_by_callback(webhook: WebhookHarness) -> None:
    webhook.cloud.defer = True
    task = asyncio.create_task(webhook.port.operate(Operation.UNLOCK))
    while not webhook.cloud.deferred:
        await asyncio.sleep(0.01)  # until the vendor has the command; not a timing assertion
    assert not task.done()
    assert webhook.backend.handle_callback(*webhook.cloud.release()) == []
    result = await task
    assert result.outcome is Outcome.CONFIRMED, result
    assert webhook.device.bolt == "unlocked"


@pytest.mark.anyio
async def test_a_pending_command_without_its_result_times_out(vendor: VendorServer,
                                                              clock: Clock) -> None:
    vendor.cloud.defer = True
    backend = make_backend(vendor.url, clock, result_timeout="0.05")
    await backend.start()
    try:
        result = await backend.lock(ADDRESS).operate(Operation.UNLOCK)
    finally:
        await backend.stop()
    assert result.outcome is Outcome.TIMED_OUT and result.retryable, result


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 502])
async def test_vendor_http_errors_are_temporary(webhook: WebhookHarness, status: int) -> None:
    webhook.cloud.http_status = status
    result = await webhook.port.set_code(1, KeypadCode("483920"))
    assert result.refusal is Refusal.TEMPORARY and result.retryable, result


@pytest.mark.anyio
async def test_typed_denials_reach_the_caller(webhook: WebhookHarness) -> None:
    webhook.cloud.next_results = [
        {"result": "denied", "reason": "lock_full", "detail": "no room"},
        {"result": "temporary", "reason": "busy", "retry_after": 5},
        {"result": "permanent", "reason": "bad_schedule"}]
    full = await webhook.port.set_code(1, KeypadCode("483920"))
    busy = await webhook.port.set_code(1, KeypadCode("483920"))
    schedule = await webhook.port.set_code(1, KeypadCode("483920"))
    assert (full.refusal, full.retryable) == (Refusal.LOCK_FULL, False)
    assert (busy.refusal, busy.retryable) == (Refusal.BUSY, True)
    assert (schedule.refusal, schedule.retryable) == (Refusal.BAD_SCHEDULE, False)


@pytest.mark.anyio
async def test_f21_webhook_already_exists_is_read_and_adopted_not_retried(
        webhook: WebhookHarness) -> None:
    """The vendor answers "already exists" (the first write landed, its answer was lost):
    Portner reads the slot once, finds its code and adopts it. One write, one read, no loop."""
    webhook.device.codes[2] = "483920"
    webhook.cloud.next_results = [{"result": "denied", "reason": "already_exists"}]
    before = len(webhook.cloud.executed)
    result = await webhook.port.set_code(2, KeypadCode("483920"))
    assert result.outcome is Outcome.CONFIRMED and "adopted" in result.detail, result
    commands = [m["command"] for m in webhook.cloud.executed[before:]]
    assert commands == ["set_code", "read_slots"]


@pytest.mark.anyio
async def test_f21_webhook_already_exists_elsewhere_is_a_duplicate_once(
        webhook: WebhookHarness) -> None:
    webhook.device.codes[5] = "483920"  # a code the vendor app set, not visible to the pre-check
    webhook.cloud.next_results = [{"result": "denied", "reason": "already_exists"}]
    before = len(webhook.cloud.executed)
    result = await webhook.port.set_code(2, KeypadCode("483920"))
    assert result.refusal is Refusal.DUPLICATE_CODE and not result.retryable, result
    assert [m["command"] for m in webhook.cloud.executed[before:]] == ["set_code", "read_slots"]


@pytest.mark.anyio
async def test_masked_reads_and_unanswered_slots(vendor: VendorServer, clock: Clock) -> None:
    vendor.cloud.add_lock("masked-1", masked=True, codes={1: "483920"})
    backend = make_backend(vendor.url, clock)
    await backend.start()
    try:
        port = backend.lock("masked-1")
        assert (await port.capabilities()).masked_reads is True
        one, two = await port.read_slots([1, 2])
        assert (one.state, one.code, two.state) == (SlotState.MASKED, None, SlotState.EMPTY)
        vendor.cloud.next_results = [{"result": "success", "data": {"slots": [
            {"slot": 1, "state": "known", "code": "483920"}]}}]
        _, missing = await port.read_slots([1, 2])
        assert missing.state is SlotState.UNREADABLE  # not answered is not empty
    finally:
        await backend.stop()


@pytest.mark.anyio
async def test_the_manifest_gives_capabilities_in_portner_terms(webhook: WebhookHarness) -> None:
    caps = await webhook.port.capabilities()
    assert caps.slots is not None and (caps.slots.count, caps.slots.first_native) == (8, 0)
    assert caps.code_rules is not None and caps.code_rules.lengths == frozenset({6})
    assert webhook.backend.vendor == "Testvendor"
    unknown = await webhook.backend.lock("not-in-manifest").capabilities()
    assert unknown.features == frozenset() and unknown.slots is None  # unknown, not zero (F8)
    assert json.loads(json.dumps(webhook.cloud.manifest()))  # the manifest is plain JSON


def test_the_registry_builds_the_webhook_backend_and_config_errors_name_the_field() -> None:
    config = BackendConfig("webhook", "http://127.0.0.1:1", {"secret": SECRET})
    assert isinstance(registry.create_backend(config, now=Clock()), WebhookBackend)
    with pytest.raises(ValueError, match="secret"):
        create_backend(BackendConfig("webhook", "http://x", {}), now=Clock())
    with pytest.raises(ValueError, match="whsec_"):
        create_backend(BackendConfig("webhook", "http://x", {"secret": "hunter2"}), now=Clock())
    with pytest.raises(ValueError, match="url"):
        create_backend(BackendConfig("webhook", None, {"secret": SECRET}), now=Clock())


# --- bounds of the manifest and of callbacks ---------------------------------------------------------


def _manifest(**lock: object) -> dict[str, object]:
    return {"contract": CONTRACT, "vendor": "v", "locks": [{"address": "door", **lock}]}


@pytest.mark.parametrize(("lock", "field"), [
    ({"code_rules": {"lengths": [0]}}, "code_rules.lengths"),
    ({"code_rules": {"lengths": [17]}}, "code_rules.lengths"),
    ({"code_rules": {"lengths": [10**7]}}, "code_rules.lengths"),
    ({"code_rules": {"lengths": [True]}}, "code_rules.lengths"),
    ({"code_rules": {"lengths": "6"}}, "code_rules.lengths"),
    ({"code_rules": {"alphabet": "\u0661\u0662\u0663"}}, "code_rules.alphabet"),
    ({"code_rules": {"alphabet": " *#0123"}}, "code_rules.alphabet"),
    ({"code_rules": {"alphabet": ""}}, "code_rules.alphabet"),
    ({"code_rules": {"alphabet": "0011"}}, "code_rules.alphabet"),
    ({"code_rules": {"forbidden_prefixes": ["a"]}}, "code_rules.forbidden_prefixes"),
    ({"code_rules": {"reject_weak": "no"}}, "code_rules.reject_weak"),
    ({"slots": {"count": 0}}, "slots.count"),
    ({"slots": {"count": 65536}}, "slots.count"),
    ({"slots": {"count": 1e30}}, "slots.count"),
    ({"slots": {"count": "8"}}, "slots.count"),
    ({"slots": {"count": 8, "first_native": -1}}, "slots.first_native"),
    ({"min_command_interval_s": float("nan")}, "min_command_interval_s"),
    ({"min_command_interval_s": 1e30}, "min_command_interval_s"),
])
def test_a_manifest_out_of_bounds_is_refused_naming_the_field(lock: dict[str, object],
                                                             field: str) -> None:
    with pytest.raises(ManifestError, match=rf"manifest\.locks\[0\]\.{field}"):
        parse_manifest(_manifest(**lock))


def test_a_manifest_at_the_bounds_is_taken() -> None:
    _, found = parse_manifest(_manifest(
        code_rules={"lengths": [1, 16], "alphabet": "13579", "forbidden_prefixes": ["0"]},
        slots={"count": 65535, "first_native": 0}, min_command_interval_s=0))
    caps = found["door"]
    assert caps.code_rules is not None and caps.code_rules.lengths == frozenset({1, 16})
    assert caps.code_rules.alphabet == "13579" and caps.code_rules.forbidden_prefixes == ("0",)
    assert caps.slots is not None and (caps.slots.count, caps.slots.first_native) == (65535, 0)


@pytest.mark.parametrize("timestamp", ["99999999999999999999", "\u00b2", "1" * 13])
def test_an_impossible_webhook_timestamp_is_stale_naming_the_header(timestamp: str) -> None:
    key = b"k" * 32
    with pytest.raises(StaleTimestamp) as refused:
        verify({"webhook-id": "m", "webhook-timestamp": timestamp, "webhook-signature": "v1,x"},
               b"{}", [key], now=datetime(2026, 3, 2, tzinfo=UTC))
    assert refused.value.field == "header/webhook-timestamp"


_EVENT_BODY = (b'{"type":"lock.event","data":{"lock":"d","id":"e","operation":"unlock",'
               b'"source":"keypad","success":true,')


@pytest.mark.parametrize(("body", "field"), [
    (b"[" * 30000 + b"]" * 30000, "body"),
    (b'{"type":"lock.health","data":{"lock":"d","id":"h","condition":"battery","percent":NaN}}',
     "body/data/percent"),
    (b'{"type":"lock.health","data":{"lock":"d","id":"h","condition":"battery","percent":1e400}}',
     "body/data/percent"),
    (_EVENT_BODY + b'"slot":9223372036854775808}}', "body/data/slot"),
    (_EVENT_BODY + b'"occurred_at":"9999-12-31T23:59:59-14:00"}}', "body/data/occurred_at"),
])
def test_a_hostile_callback_body_is_malformed_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(MalformedCallback) as refused:
        parse_callback(body, received_at=datetime(2026, 3, 2, tzinfo=UTC))
    assert refused.value.field == field


@pytest.mark.anyio
async def test_the_platforms_command_id_is_the_vendors_idempotency_key(webhook: WebhookHarness) -> None:
    """A redelivered lock command (after a crash between sending and recording) reaches the vendor
    under the same key, so the vendor does it once."""
    assert (await webhook.port.set_code(2, KeypadCode("385172"), idempotency_key="lcmd-7")).ok
    assert (await webhook.port.clear_code(2, idempotency_key="lcmd-8")).ok
    keys = [m["idempotency_key"] for m in webhook.cloud.executed if m["command"] in ("set_code", "clear_code")]
    assert keys[:1] == ["lcmd-7"] and "lcmd-8" in keys
