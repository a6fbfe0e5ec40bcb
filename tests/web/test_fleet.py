"""The lock fleet for operators: alarms, quarantined slots and each lock's codes, by API and page."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from portner.storage import tables as t
from tests.web.conftest import CSRF_META

AT = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)


def _a_lock(app: FastAPI) -> str:
    with app.state.portner.engine.connect() as conn:
        return str(conn.execute(select(t.locks.c.id).order_by(t.locks.c.id).limit(1)).scalar_one())


def _seed(app: FastAPI, lock_id: str) -> int:
    with app.state.portner.engine.begin() as conn:
        alarm = conn.execute(insert(t.lock_alarms).values(
            lock_id=lock_id, kind="jammed", subject="", detail="", raised_at=AT)).inserted_primary_key[0]
        conn.execute(insert(t.lock_slots).values(
            lock_id=lock_id, slot=4, observed="known", code_mac=b"\x01" * 32, unreadable_reads=0,
            observed_at=AT, quarantined_at=AT, quarantine_reason="foreign"))
    return int(alarm)


def _audit(app: FastAPI, action: str) -> list[dict]:
    with app.state.portner.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(t.audit_events.c.actor, t.audit_events.c.details).where(t.audit_events.c.action == action))]


def test_operator_sees_acknowledges_and_resolves(portner_app: FastAPI,
                                                 client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _a_lock(portner_app)
    alarm_id = _seed(portner_app, lock_id)
    op = client_for("demo-operator")

    alarms = op.get("/api/v1/lock-alarms").json()["items"]
    assert [(a["id"], a["kind"], a["lock_id"]) for a in alarms] == [(alarm_id, "jammed", lock_id)]
    quarantine = op.get(f"/api/v1/locks/{lock_id}/quarantine").json()
    assert [(q["slot"], q["reason"]) for q in quarantine] == [(4, "foreign")]
    assert "code_mac" not in quarantine[0]

    page = op.get("/console/locks")
    assert page.status_code == 200 and "Låsen står fast" in page.text
    head, _, body = page.text.partition("</title>")
    assert "<h2" not in head and body.count("Låser med kodetastatur eller fjernåpning") == 1

    assert op.post(f"/api/v1/lock-alarms/{alarm_id}/acknowledge").status_code == 204
    assert op.post(f"/api/v1/lock-alarms/{alarm_id}/acknowledge").status_code == 204  # twice: no change
    assert len(_audit(portner_app, "lock_alarm:acknowledged")) == 1
    # Acknowledged is not cleared: a jam stays on the list until the lock reports it gone.
    assert op.get("/api/v1/lock-alarms").json()["items"][0]["acknowledged_by"].startswith("account:")

    lock_page = op.get(f"/console/locks/{lock_id}")
    csrf = CSRF_META.search(lock_page.text).group(1)  # type: ignore[union-attr]
    bad = op.post(f"/console/locks/{lock_id}/quarantine/4", data={"csrf": "x", "resolution": "adopted"})
    assert bad.status_code == 403
    done = op.post(f"/console/locks/{lock_id}/quarantine/4", data={"csrf": csrf, "resolution": "adopted"},
                   follow_redirects=False)
    assert done.status_code == 303
    assert op.get(f"/api/v1/locks/{lock_id}/quarantine").json() == []
    assert _audit(portner_app, "lock_slot:resolved")[0]["details"]["resolution"] == "adopted"
    again = op.post(f"/api/v1/locks/{lock_id}/quarantine/4", json={"resolution": "released"})
    assert again.status_code == 409


def test_fleet_is_for_operators_and_their_municipality(portner_app: FastAPI,
                                                       client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _a_lock(portner_app)
    _seed(portner_app, lock_id)
    nurse = client_for("demo-nurse-1")
    assert nurse.get("/api/v1/lock-alarms").status_code == 403
    assert nurse.get(f"/api/v1/locks/{lock_id}/codes").status_code == 403
    relative = client_for("demo-relative")
    assert relative.get("/console/locks").status_code in (403, 303)
    op = client_for("demo-operator")
    assert op.get("/api/v1/locks/no-such-lock/codes").status_code == 404
    assert op.post("/api/v1/lock-alarms/999999/acknowledge").status_code == 404
    assert op.post(f"/api/v1/locks/{lock_id}/quarantine/4", json={"resolution": "cleared"}).status_code == 422


def test_lock_codes_show_intent_and_state_never_the_code(portner_app: FastAPI,
                                                         client_for: Callable[[str | None], TestClient]) -> None:
    lock_id = _a_lock(portner_app)
    p = portner_app.state.portner
    with p.engine.begin() as conn:
        conn.execute(insert(t.keypad_codes).values(
            id="code-1", municipality_id=p.municipality.id, purpose="visit", ciphertext=b"sealed", code_mac=b"\x02" * 32,
            key_id="k1", not_before=AT, not_after=AT + timedelta(hours=1), uses=0, notify=True, created_at=AT))
        conn.execute(insert(t.code_placements).values(
            code_id="code-1", lock_id=lock_id, slot=3, intent="present", state="failed", enforcement="server",
            attempts=1, last_refusal="duplicate_code", updated_at=AT))
    op = client_for("demo-operator")
    codes = op.get(f"/api/v1/locks/{lock_id}/codes").json()
    assert [(c["slot"], c["intent"], c["state"], c["last_refusal"]) for c in codes] == [
        (3, "present", "failed", "duplicate_code")]
    assert "ciphertext" not in codes[0] and "sealed" not in str(codes)
    page = op.get(f"/console/locks/{lock_id}")
    assert "koden finnes alt på låsen" in page.text
