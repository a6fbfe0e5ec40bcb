"""The response center opens a door remotely: honest outcomes, never late, always audited."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from portner.locks.keypad_sim import create_backend
from portner.locks.port import BackendConfig
from portner.services.keypad.store import record_capabilities
from portner.services.remote_operation import deliver_remote_commands
from portner.storage import tables as t
from tests.web.conftest import CSRF_META

BACKEND = "keypad"


@pytest.fixture
def backend(clock: Any) -> Any:
    return create_backend(BackendConfig("simulated"), now=clock)


@pytest.fixture
def app_adapters(backend: Any) -> dict[str, Any]:
    return {"lock_backends": {BACKEND: backend}}


def _keypad_lock(app: FastAPI, backend: Any) -> str:
    """One demo lock served by the keypad backend, its capabilities known (as after onboarding)."""
    p = app.state.portner
    with p.engine.begin() as conn:
        lock_id = conn.execute(select(t.locks.c.id).order_by(t.locks.c.id).limit(1)).scalar_one()
        conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(backend=BACKEND, address="door-1"))
        caps = asyncio.run(backend.lock("door-1").capabilities())
        record_capabilities(conn, lock_id, caps, p.now())
    return lock_id


def _audit(app: FastAPI) -> list[tuple[str, dict]]:
    with app.state.portner.engine.connect() as conn:
        return [(r.action, r.details) for r in conn.execute(
            select(t.audit_events.c.action, t.audit_events.c.details).where(t.audit_events.c.action.like("lock:remote%"))
            .order_by(t.audit_events.c.seq))]


def test_an_operator_opens_a_door_and_the_lock_confirms(portner_app: FastAPI, backend: Any,
                                                       client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _keypad_lock(portner_app, backend)
    op = client_for("demo-operator")
    answer = op.post(f"/api/v1/locks/{lock_id}/remote-unlock", json={"reason": "staff_locked_out"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "confirmed"
    assert backend.device("door-1").bolt == "unlocked"
    assert [a for a, _ in _audit(portner_app)] == ["lock:remote_unlock_requested", "lock:remote_unlock_confirmed"]
    assert _audit(portner_app)[0][1]["reason"] == "staff_locked_out"


def test_an_offline_lock_is_an_honest_no(portner_app: FastAPI, backend: Any,
                                         client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _keypad_lock(portner_app, backend)
    backend.device("door-1").go_offline()
    answer = client_for("demo-operator").post(f"/api/v1/locks/{lock_id}/remote-unlock",
                                               json={"reason": "resident_asked"})
    assert answer.json().get("state") in ("timed_out", "refused"), answer.text
    assert backend.device("door-1").bolt == "locked"


def test_a_request_is_dropped_not_carried_out_late(portner_app: FastAPI, backend: Any, clock: Any) -> None:
    from portner.services.remote_operation import Reason, request_remote_unlock

    lock_id = _keypad_lock(portner_app, backend)
    p = portner_app.state.portner
    with p.engine.begin() as conn:
        command = request_remote_unlock(conn, p.municipality.id, lock_id, reason=Reason.SAFETY_ALARM,
                                        actor="account:test", now=p.now(), ids=p.ids)
    later = p.now() + timedelta(minutes=2)
    outcomes = asyncio.run(deliver_remote_commands(p.engine, lambda _: backend.lock("door-1"), now=later))
    assert [(o.command_id, o.state, o.refusal) for o in outcomes] == [(command, "refused", "expired")]
    assert backend.device("door-1").bolt == "locked"
    # Delivered once: a second deliverer finds nothing to send.
    assert asyncio.run(deliver_remote_commands(p.engine, lambda _: backend.lock("door-1"), now=later)) == []


def test_only_operators_and_only_locks_that_can(portner_app: FastAPI, backend: Any,
                                                client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _keypad_lock(portner_app, backend)
    assert client_for("demo-nurse-1").post(f"/api/v1/locks/{lock_id}/remote-unlock",
                                           json={"reason": "resident_asked"}).status_code == 403
    op = client_for("demo-operator")
    assert op.post(f"/api/v1/locks/{lock_id}/remote-unlock", json={"reason": "because"}).status_code == 422
    assert op.post("/api/v1/locks/nope/remote-unlock", json={"reason": "resident_asked"}).status_code == 404
    with portner_app.state.portner.engine.connect() as conn:
        other = conn.execute(select(t.locks.c.id).where(t.locks.c.id != lock_id).limit(1)).scalar_one()
    refused = op.post(f"/api/v1/locks/{other}/remote-unlock", json={"reason": "resident_asked"})
    assert refused.status_code == 409 and "remote" in refused.json()["detail"]
    # The fleet page lists the lock an adapter serves, linking to its page.
    assert f'href="/console/locks/{lock_id}">door-1<' in op.get("/console/locks").text
    # The console form: CSRF checked, a reason required, the outcome shown in words.
    page = op.get(f"/console/locks/{lock_id}")
    csrf, attempt = CSRF_META.search(page.text).group(1), _attempt(page.text)  # type: ignore[union-attr]
    form = {"csrf": csrf, "attempt": attempt}
    assert op.post(f"/console/locks/{lock_id}/remote-unlock", data={**form, "csrf": "x", "reason": "resident_asked"}).status_code == 403
    assert op.post(f"/console/locks/{lock_id}/remote-unlock", data=form).status_code == 400
    done = op.post(f"/console/locks/{lock_id}/remote-unlock", data={**form, "reason": "resident_asked"})
    assert done.status_code == 200 and "Låsen melder at den er åpnet." in done.text


def _attempt(page: str) -> str:
    found = re.search(r'name="attempt" value="([^"]+)"', page)
    assert found, "the remote-unlock form carries its attempt"
    return found.group(1)


def test_the_console_form_sent_twice_opens_the_door_once(portner_app: FastAPI, backend: Any,
                                                         client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _keypad_lock(portner_app, backend)
    op = client_for("demo-operator")
    page = op.get(f"/console/locks/{lock_id}")
    form = {"csrf": CSRF_META.search(page.text).group(1), "attempt": _attempt(page.text),  # type: ignore[union-attr]
            "reason": "resident_asked"}
    url = f"/console/locks/{lock_id}/remote-unlock"
    first = op.post(url, data=form)
    assert first.status_code == 200 and "Låsen melder at den er åpnet." in first.text
    backend.device("door-1").bolt = "locked"
    again = op.post(url, data=form)  # a double click, or a reload of the answer
    assert again.status_code == 200 and "Låsen melder at den er åpnet." in again.text
    assert backend.device("door-1").bolt == "locked"
    assert [a for a, _ in _audit(portner_app)].count("lock:remote_unlock_requested") == 1
    # The answer's page is a new form: opening again is a new, deliberate attempt.
    assert _attempt(first.text) != form["attempt"]
    assert op.post(url, data={**form, "attempt": _attempt(again.text)}).status_code == 200
    assert backend.device("door-1").bolt == "unlocked"
    # A form without its attempt (an old page) is asked to be reloaded, not carried out.
    stale = op.post(url, data={k: v for k, v in form.items() if k != "attempt"})
    assert stale.status_code == 400 and "Last siden på nytt" in stale.text


def test_another_worker_running_the_fleet_delivers_and_the_operator_hears_the_answer(
        portner_app: FastAPI, backend: Any, client_for: Callable[[str | None], TestClient],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`portner serve --workers N`: one process talks to the locks. A request reaching another
    is not sent from there (its backends are not started); the fleet's process delivers it at its
    next step, and the request waits for that answer."""
    import threading

    from portner.services.fleet_runtime import port_for
    from portner.web.api import fleet
    from portner.web.api.fleet import FLEET_ELSEWHERE

    # This process is not the one running the fleet: its own fleet worker does not start.
    monkeypatch.setattr(fleet, "workers", [])

    lock_id = _keypad_lock(portner_app, backend)
    p = portner_app.state.portner
    p.adapters[FLEET_ELSEWHERE] = True
    delivered: list[Any] = []

    def fleet_step() -> None:  # the other process, a moment later
        delivered.extend(asyncio.run(deliver_remote_commands(
            p.engine, lambda lock: port_for(p.engine, {BACKEND: backend}, lock), now=p.now())))

    later = threading.Timer(1.0, fleet_step)
    later.start()
    try:
        answer = client_for("demo-operator").post(f"/api/v1/locks/{lock_id}/remote-unlock",
                                                   json={"reason": "staff_locked_out"})
    finally:
        later.join()
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "confirmed"
    assert [d.state for d in delivered] == ["confirmed"]  # sent once, by the fleet's process
    assert backend.device("door-1").bolt == "unlocked"
    assert [a for a, _ in _audit(portner_app)] == ["lock:remote_unlock_requested", "lock:remote_unlock_confirmed"]


def test_a_request_made_while_another_connection_writes_waits_its_turn(portner_app: FastAPI, backend: Any) -> None:
    # SQLite: a transaction that read before another connection committed cannot write after it
    # ("database is locked", at once). The request takes the write lock before it reads, so it
    # waits for the other writer (the lock fleet's worker, in a server) instead of failing.
    import threading

    from portner.services.ids import IdSource
    from portner.services.remote_operation import Reason, request_remote_unlock

    lock_id = _keypad_lock(portner_app, backend)
    p = portner_app.state.portner
    failed: list[BaseException] = []

    def request() -> None:
        try:
            with p.engine.begin() as conn:
                request_remote_unlock(conn, p.municipality.id, lock_id, reason=Reason.RESIDENT_ASKED,
                                      actor="test", now=p.now(), ids=IdSource(5))
        except BaseException as exc:  # noqa: BLE001 - reported below
            failed.append(exc)

    with p.engine.begin() as other:  # another writer holds the write lock, then commits
        other.execute(update(t.locks).where(t.locks.c.id == lock_id).values(battery_percent=50))
        asking = threading.Thread(target=request)
        asking.start()
        asking.join(0.5)  # it reads (or waits) meanwhile
    asking.join(30)
    assert not asking.is_alive() and failed == [], failed
    assert [a for a, _ in _audit(portner_app)] == ["lock:remote_unlock_requested"]


def test_a_retry_with_the_same_idempotency_key_does_not_open_the_door_again(
        portner_app: FastAPI, backend: Any, client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _keypad_lock(portner_app, backend)
    op = client_for("demo-operator")
    url, key = f"/api/v1/locks/{lock_id}/remote-unlock", {"Idempotency-Key": "unlock-7f3a"}
    first = op.post(url, json={"reason": "resident_asked"}, headers=key)
    assert first.status_code == 200 and first.json()["state"] == "confirmed", first.text
    backend.device("door-1").bolt = "locked"  # the door was locked again after the visit
    again = op.post(url, json={"reason": "resident_asked"}, headers=key)
    assert again.status_code == 200 and again.headers.get("Idempotency-Replayed") == "true"
    assert again.json() == first.json()
    assert backend.device("door-1").bolt == "locked"  # not opened a second time
    assert [a for a, _ in _audit(portner_app)] == ["lock:remote_unlock_requested", "lock:remote_unlock_confirmed"]
    # The same key with another request is refused, naming the header; a new key opens again.
    other = op.post(url, json={"reason": "staff_locked_out"}, headers=key)
    assert other.status_code == 422 and other.json()["errors"][0]["field"] == "header/Idempotency-Key"
    assert op.post(url, json={"reason": "resident_asked"}, headers={"Idempotency-Key": "unlock-8b1c"}).json()["state"] == "confirmed"
    assert backend.device("door-1").bolt == "unlocked"


def test_a_refused_unlock_forgets_its_key(portner_app: FastAPI, backend: Any,
                                         client_for: Callable[[str | None], TestClient]) -> None:
    _keypad_lock(portner_app, backend)
    op = client_for("demo-operator")
    key = {"Idempotency-Key": "unlock-404"}
    for _ in range(2):  # run again, not replayed: nothing was done the first time
        answer = op.post("/api/v1/locks/nope/remote-unlock", json={"reason": "resident_asked"}, headers=key)
        assert answer.status_code == 404 and "Idempotency-Replayed" not in answer.headers
