"""Remote unlock with an Idempotency-Key: never a second opening, whatever cut the first off."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from portner.config import Settings
from portner.locks.keypad_sim.backend import SimulatedKeypadPort
from tests.web.test_phone_api_postgresql import pg_demo  # noqa: F401
from tests.web.test_remote_unlock import _audit, _keypad_lock, app_adapters, backend  # noqa: F401

URL = "/api/v1/locks/{}/remote-unlock"


def _requested(app: FastAPI) -> int:
    return [a for a, _ in _audit(app)].count("lock:remote_unlock_requested")


def test_an_unlock_that_fails_unexpectedly_after_opening_keeps_its_key(
        portner_app: FastAPI, backend: Any, client_for: Callable[[str | None], TestClient],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lock opened, then the link broke before the answer was read (a backend's network error,
    not a refusal): what the door did is not known, so a retry with the same key must not run the
    unlock again. Before: any Exception forgot the key and the retry opened the door a second time."""
    lock_id = _keypad_lock(portner_app, backend)
    opened = []
    original = SimulatedKeypadPort.operate

    async def operate_then_break(self: Any, operation: Any, *, idempotency_key: str | None = None) -> Any:
        await original(self, operation, idempotency_key=idempotency_key)
        opened.append(idempotency_key)
        raise ConnectionResetError("the link dropped after the lock answered")

    monkeypatch.setattr(SimulatedKeypadPort, "operate", operate_then_break)
    before = _requested(portner_app)
    op = client_for("demo-operator")
    quiet = TestClient(portner_app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    quiet.cookies, quiet.headers = op.cookies, op.headers
    key = {"Idempotency-Key": f"unlock-crash-{id(opened)}"}
    first = quiet.post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key)
    assert first.status_code == 500
    assert len(opened) == 1
    again = quiet.post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key)
    assert len(opened) == 1, "the retry opened the door a second time"
    assert again.status_code == 409, again.text
    assert _requested(portner_app) == before + 1


def test_a_key_cut_off_long_ago_is_not_said_to_be_still_running(
        portner_app: FastAPI, backend: Any, client_for: Callable[[str | None], TestClient],  # noqa: F811
        clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_id = _keypad_lock(portner_app, backend)

    async def broken(self: Any, operation: Any, *, idempotency_key: str | None = None) -> Any:
        raise ConnectionResetError("the link dropped")

    monkeypatch.setattr(SimulatedKeypadPort, "operate", broken)
    op = client_for("demo-operator")
    quiet = TestClient(portner_app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    quiet.cookies, quiet.headers = op.cookies, op.headers
    key = {"Idempotency-Key": f"unlock-cut-{id(quiet)}"}
    assert quiet.post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key).status_code == 500
    clock.advance(timedelta(hours=1))  # long after any remote command is dropped (60 s)
    again = quiet.post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key)
    assert again.status_code == 409
    assert "Retry-After" not in again.headers and "still running" not in again.text, again.text
    assert again.json()["type"].endswith("/idempotency-outcome-unknown")


def test_two_requests_at_once_with_one_key_open_the_door_once(
        portner_app: FastAPI, backend: Any, client_for: Callable[[str | None], TestClient],  # noqa: F811
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A double click from two tabs of one operator: one unlock, the other told 409 (or replayed)."""
    lock_id = _keypad_lock(portner_app, backend)
    original = SimulatedKeypadPort.operate
    calls = []

    async def slow(self: Any, operation: Any, *, idempotency_key: str | None = None) -> Any:
        calls.append(idempotency_key)
        await asyncio.sleep(0.5)
        return await original(self, operation, idempotency_key=idempotency_key)

    monkeypatch.setattr(SimulatedKeypadPort, "operate", slow)
    before = _requested(portner_app)
    tabs = [client_for("demo-operator"), client_for("demo-operator")]
    answers: list[Any] = [None, None]
    start = threading.Barrier(2)

    def click(i: int) -> None:
        start.wait()
        answers[i] = tabs[i].post(URL.format(lock_id), json={"reason": "resident_asked"},
                                  headers={"Idempotency-Key": f"unlock-dbl-{id(answers)}"})

    threads = [threading.Thread(target=click, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    # (On PostgreSQL the app leaves delivery to the fleet worker: no call here, one command.)
    assert len(calls) <= 1, [(a.status_code, a.text) for a in answers]
    assert sorted(a.status_code for a in answers) in ([200, 200], [200, 409]), [a.text for a in answers]
    assert _requested(portner_app) == before + 1


def test_another_operators_key_is_theirs(portner_app: FastAPI, backend: Any,  # noqa: F811
                                         client_for: Callable[[str | None], TestClient]) -> None:
    """Keys are per principal: the same key from another account runs its own unlock and is never
    answered with the first operator's stored answer."""
    lock_id = _keypad_lock(portner_app, backend)
    key = {"Idempotency-Key": "shared-key"}
    first = client_for("demo-operator").post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key)
    assert first.status_code == 200, first.text
    backend.device("door-1").bolt = "locked"
    other = client_for("demo-admin").post(URL.format(lock_id), json={"reason": "resident_asked"}, headers=key)
    assert other.status_code == 200 and "Idempotency-Replayed" not in other.headers, other.text
    assert other.json()["command_id"] != first.json()["command_id"]


@pytest.mark.postgres
class TestOnPostgreSQL:
    """The same answers on PostgreSQL (a key row's insert waits for the first's commit there)."""

    @pytest.fixture
    def demo_settings(self, pg_demo: Settings) -> Settings:  # noqa: F811
        return replace(pg_demo)

    def test_two_requests_at_once(self, portner_app: FastAPI, backend: Any,  # noqa: F811
                                  client_for: Callable[[str | None], TestClient],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
        test_two_requests_at_once_with_one_key_open_the_door_once(portner_app, backend, client_for, monkeypatch)
