"""A nurse gets her keypad codes for doors without phone keys once, and only her own."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from portner.services.keypad import KeypadKeys, issue_code
from portner.storage import tables as t


def _issue_for(app: FastAPI, actor_id: str) -> tuple[str, str]:
    p = app.state.portner
    now = p.now()
    with p.engine.begin() as conn:
        lock_id = conn.execute(select(t.locks.c.id).order_by(t.locks.c.id).limit(1)).scalar_one()
        code_id = issue_code(conn, municipality_id=p.municipality.id, actor_id=actor_id, grant_id=None,
                             purpose="standing", lock_ids=[lock_id], not_before=now,
                             not_after=now + timedelta(hours=4), max_uses=None, now=now, ids=p.ids,
                             actor="test", key=KeypadKeys.from_secrets(p.secrets, p.municipality.id),
                             rng=random.Random(5))
    return code_id, lock_id


def _account_actor(app: FastAPI, subject: str) -> str:
    with app.state.portner.engine.connect() as conn:
        return conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == subject)).scalar_one()


def test_the_code_is_shown_once_to_its_holder(portner_app: FastAPI,
                                              client_for: Callable[[str | None], TestClient]) -> None:
    nurse = _account_actor(portner_app, "demo-nurse-1")
    code_id, lock_id = _issue_for(portner_app, nurse)
    me = client_for("demo-nurse-1")
    first = me.get("/api/v1/me/keypad-codes")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    (mine,) = [c for c in first.json() if c["id"] == code_id]
    assert mine["lock_ids"] == [lock_id] and mine["code"] is not None and len(mine["code"]) == 6
    again = [c for c in me.get("/api/v1/me/keypad-codes").json() if c["id"] == code_id][0]
    assert again["code"] is None and again["delivered_at"] is not None
    # Another nurse never sees it; an operator (no visits of her own) gets no codes at all.
    other = client_for("demo-nurse-2").get("/api/v1/me/keypad-codes").json()
    assert code_id not in {c["id"] for c in other}
    assert client_for("demo-operator").get("/api/v1/me/keypad-codes").status_code == 403
    # The digits are in no audit entry.
    with portner_app.state.portner.engine.connect() as conn:
        details = [str(d) for d in conn.execute(select(t.audit_events.c.details)).scalars()]
    # (as a value: a 6-digit run may occur by chance inside a random id)
    assert not any(f"'{mine['code']}'" in d or f": {mine['code']}" in d for d in details)
    assert client_for(None).get("/api/v1/me/keypad-codes").status_code == 401
