"""POST /api/v1/lock-callbacks/{backend_name}: a vendor cloud's signed callbacks reach the
activity log, without a session or CSRF token; bad ones are problem details naming the field.

The callbacks are made by the test vendor cloud (tests/support/webhook_server.py), signed as a
vendor signs them; the backend is the real WebhookBackend and the events are read back from the
lock_activity table.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from portner.config import Settings
from portner.locks.port import BackendConfig
from portner.locks.webhook import WebhookBackend, create_backend, decode_secret, signature_headers
from portner.storage import tables as t
from portner.web.app import create_app
from tests.support.clock import RunningClock
from tests.support.webhook_server import VendorCloud

SECRET = "whsec_" + base64.b64encode(b"portner-to-vendor-secret-key-32b").decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"vendor-to-portner-secret-key-32b").decode()
ADDRESS = "vendor-door-17"
URL = "/api/v1/lock-callbacks/webhook"


class NoCallbacks:
    """A lock backend that takes no callbacks (like zigbee2mqtt or nuki)."""


@pytest.fixture
def backend(clock: RunningClock) -> WebhookBackend:
    return create_backend(BackendConfig("webhook", "http://vendor.invalid/portner",
                                        {"secret": SECRET, "callback_secret": CALLBACK_SECRET}),
                          now=clock)


@pytest.fixture
def app_adapters(backend: WebhookBackend) -> dict[str, Any]:
    return {"lock_backends": {"webhook": backend, "polled": NoCallbacks()}}


@pytest.fixture
def lock_id(portner_app: FastAPI) -> str:
    """A demo lock, reached through this vendor under ADDRESS."""
    engine = portner_app.state.portner.engine
    with engine.begin() as conn:
        found = conn.execute(select(t.locks.c.id).where(t.locks.c.removed_at.is_(None))
                             .order_by(t.locks.c.id).limit(1)).scalar_one()
        conn.execute(update(t.locks).where(t.locks.c.id == found)
                     .values(backend="webhook", address=ADDRESS))
    return found


@pytest.fixture
def vendor(clock: RunningClock, lock_id: str) -> VendorCloud:
    cloud = VendorCloud(decode_secret(SECRET), decode_secret(CALLBACK_SECRET), clock)
    cloud.add_lock(ADDRESS).codes[3] = "482915"
    return cloud


@pytest.fixture
def client(client_for: Any) -> TestClient:
    return client_for(None)  # nobody signed in: the signature is the only authority


def activity(app: FastAPI, lock_id: str) -> list[Any]:
    with app.state.portner.engine.connect() as conn:
        return list(conn.execute(select(t.lock_activity).where(t.lock_activity.c.lock_id == lock_id)
                                 .order_by(t.lock_activity.c.id)).all())


def post(client: TestClient, signed: tuple[dict[str, str], bytes], **extra: str) -> Any:
    headers, body = signed
    return client.post(URL, content=body,
                       headers={**headers, "content-type": "application/json", **extra})


def test_a_signed_keypad_event_reaches_the_activity_log(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    answer = post(client, vendor.press_keypad(ADDRESS, "482915"))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"events": 1, "recorded": 1, "duplicates": 0, "health": 0,
                             "unknown_locks": []}
    [row] = activity(portner_app, lock_id)
    assert (row.key, row.operation, row.source, row.success, row.slot) == (
        f"webhook:{ADDRESS}:ev-1", "unlock", "keypad", True, 3)
    # No session and no CSRF token were sent, and no cookie was needed.
    assert "x-csrf-token" not in {k.lower() for k in client.headers}


def test_a_signed_in_browser_without_csrf_token_changes_nothing(
        client_for: Any, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    # The route asks for no session; a cookie that happens to come along grants nothing either.
    browser = client_for("demo-operator")
    del browser.headers["X-CSRF-Token"]
    answer = post(browser, vendor.press_keypad(ADDRESS, "000000"))
    assert answer.status_code == 200, answer.text
    [row] = activity(portner_app, lock_id)
    assert row.success is False and row.failure == "wrong_code"


def test_a_replayed_delivery_is_409_and_recorded_once(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    signed = vendor.press_keypad(ADDRESS, "482915")
    assert post(client, signed).status_code == 200
    again = post(client, signed)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    problem = again.json()
    assert problem["type"].endswith("/replayed")
    assert problem["errors"][0]["field"] == "header/webhook-id"
    assert len(activity(portner_app, lock_id)) == 1


def test_a_redelivery_under_a_new_id_is_a_duplicate_not_a_second_entry(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    headers, body = vendor.press_keypad(ADDRESS, "482915")
    assert post(client, (headers, body)).status_code == 200
    resent = vendor.callback("lock.event", json.loads(body)["data"])  # same event, new webhook-id
    answer = post(client, resent)
    assert answer.status_code == 200
    assert answer.json()["duplicates"] == 1 and answer.json()["recorded"] == 0
    assert len(activity(portner_app, lock_id)) == 1


def test_a_bad_signature_is_401_and_nothing_is_kept(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    headers, body = vendor.press_keypad(ADDRESS, "482915")
    tampered = body.replace(b'"slot": 3', b'"slot": 4')
    answer = post(client, (headers, tampered))
    assert answer.status_code == 401
    assert answer.json()["errors"][0]["field"] == "header/webhook-signature"
    unsigned = post(client, ({}, body))
    assert unsigned.status_code == 401
    assert unsigned.json()["errors"][0]["field"] == "header/webhook-id"
    # Signed by someone holding another secret (Portner's own request secret, say).
    forged = VendorCloud(decode_secret(SECRET), decode_secret(SECRET), vendor.now)
    forged.add_lock(ADDRESS)
    assert post(client, forged.press_keypad(ADDRESS, "482915")).status_code == 401
    assert activity(portner_app, lock_id) == []


def test_a_stale_timestamp_is_400_naming_the_header(
        client: TestClient, vendor: VendorCloud, clock: RunningClock) -> None:
    old = vendor.callback("lock.event", {}, at=clock() - timedelta(minutes=6))
    answer = post(client, old)
    assert answer.status_code == 400
    assert answer.json()["errors"] == [{"field": "header/webhook-timestamp",
                                        "message": answer.json()["detail"]}]


def test_a_malformed_body_is_400_naming_the_field_and_may_be_resent_fixed(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    data = {"lock": ADDRESS, "id": "ev-9", "operation": "open", "source": "keypad",
            "success": True, "slot": 3}
    bad = vendor.callback("lock.event", data, msg_id="msg_fixme")
    answer = post(client, bad)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "body/data/operation"
    fixed = vendor.callback("lock.event", {**data, "operation": "unlock"}, msg_id="msg_fixme")
    assert post(client, fixed).status_code == 200  # the bad one's id was not remembered
    assert [r.key for r in activity(portner_app, lock_id)] == [f"webhook:{ADDRESS}:ev-9"]


def test_an_event_the_activity_log_refuses_is_400_and_its_id_is_released(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str) -> None:
    data = {"lock": ADDRESS, "id": "ev-0", "operation": "unlock", "source": "keypad",
            "success": True, "slot": 0}  # Portner's slots start at 1
    answer = post(client, vendor.callback("lock.event", data, msg_id="msg_slot"))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "body/data/slot"
    assert activity(portner_app, lock_id) == []
    fixed = vendor.callback("lock.event", {**data, "slot": 3}, msg_id="msg_slot")
    assert post(client, fixed).status_code == 200  # not refused as a replay
    assert len(activity(portner_app, lock_id)) == 1


def test_health_and_unknown_locks_are_answered(
        client: TestClient, vendor: VendorCloud, lock_id: str) -> None:
    health = post(client, vendor.callback("lock.health", {
        "lock": ADDRESS, "id": "h1", "condition": "battery", "percent": 12}))
    assert health.status_code == 200
    assert health.json()["health"] == 1
    stranger = post(client, vendor.callback("lock.event", {
        "lock": "not-ours", "id": "e1", "operation": "lock", "source": "manual", "success": True}))
    assert stranger.status_code == 200
    assert stranger.json()["unknown_locks"] == ["not-ours"] and stranger.json()["recorded"] == 0


def test_a_command_result_carries_no_events(client: TestClient, vendor: VendorCloud) -> None:
    answer = post(client, vendor.callback("command.result", {
        "idempotency_key": "nobody-waits", "result": {"result": "success", "data": {}}}))
    assert answer.status_code == 200
    assert answer.json()["events"] == 0


def test_only_a_backend_that_takes_callbacks_answers(client: TestClient,
                                                     vendor: VendorCloud) -> None:
    signed = vendor.press_keypad(ADDRESS, "482915")
    for name in ("polled", "nuki"):
        headers, body = signed
        answer = client.post(f"/api/v1/lock-callbacks/{name}", content=body, headers=headers)
        assert answer.status_code == 404
        assert answer.json()["type"].endswith("/not-found")


def test_without_lock_backends_every_name_is_404(demo_settings: Settings,
                                                 clock: RunningClock) -> None:
    with TestClient(create_app(demo_settings, clock=clock)) as bare:
        answer = bare.post(URL, content=b"{}")
    assert answer.status_code == 404


def test_a_body_over_the_limit_is_413(client: TestClient) -> None:
    answer = client.post(URL, content=b"x" * 64_001, headers={"content-type": "application/json"})
    assert answer.status_code == 413


def _raw(vendor: VendorCloud, body: bytes, **headers: str) -> tuple[dict[str, str], bytes]:
    return {**signature_headers(vendor.callback_key, body, now=vendor.now()), **headers}, body


_EVENT = {"lock": ADDRESS, "id": "ev-h", "operation": "unlock", "source": "keypad",
          "success": True, "slot": 3}


@pytest.mark.parametrize(("kind", "over", "field"), [
    ("lock.event", {"slot": 2**63}, "body/data/slot"),  # overflowed the database driver (500)
    ("lock.event", {"slot": 2147483648}, "body/data/slot"),
    ("lock.event", {"slot": 65536}, "body/data/slot"),
    ("lock.event", {"occurred_at": "9999-12-31T23:59:59-14:00"}, "body/data/occurred_at"),
    ("lock.event", {"occurred_at": "0001-01-01T00:00:00+14:00"}, "body/data/occurred_at"),
    ("lock.event", {"occurred_at": "2199-01-01T00:00:00+00:00"}, "body/data/occurred_at"),
    ("lock.health", {"percent": float("nan")}, "body/data/percent"),
    ("lock.health", {"percent": float("inf")}, "body/data/percent"),
    ("lock.health", {"percent": 101}, "body/data/percent"),
    ("lock.health", {"slot": 2**63}, "body/data/slot"),
])
def test_out_of_range_values_are_400_naming_the_field(
        client: TestClient, vendor: VendorCloud, portner_app: FastAPI, lock_id: str,
        backend: WebhookBackend, kind: str, over: dict[str, Any], field: str) -> None:
    base = _EVENT if kind == "lock.event" else {"lock": ADDRESS, "id": "h-x",
                                                 "condition": "battery", "percent": 50}
    answer = post(client, vendor.callback(kind, {**base, **over}))
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["errors"][0]["field"] == field
    assert activity(portner_app, lock_id) == []
    assert backend._queue.qsize() == 0  # nothing refused reaches the runtime's event stream


def test_a_percent_of_1e400_is_400_naming_percent(
        client: TestClient, vendor: VendorCloud) -> None:
    body = (b'{"type":"lock.health","timestamp":"2026-01-01T00:00:00Z","data":{"lock":"'
            + ADDRESS.encode() + b'","id":"h-big","condition":"battery","percent":1e400}}')
    answer = post(client, _raw(vendor, body))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "body/data/percent"


def test_a_deeply_nested_body_is_400_naming_the_body(client: TestClient, vendor: VendorCloud) -> None:
    body = b"[" * 30000 + b"]" * 30000  # under 64 kB; json.loads raises RecursionError
    answer = post(client, _raw(vendor, body))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "body"


@pytest.mark.parametrize("timestamp", ["99999999999999999999", "-5", " 1"])
def test_an_impossible_timestamp_is_400_naming_the_header(
        client: TestClient, vendor: VendorCloud, timestamp: str) -> None:
    # 99999999999999999999 overflowed datetime.fromtimestamp (500 before).
    body = json.dumps({"type": "lock.event", "data": _EVENT}).encode()
    answer = post(client, _raw(vendor, body, **{"webhook-timestamp": timestamp}))
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "header/webhook-timestamp"
