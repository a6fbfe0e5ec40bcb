"""The planning API: visits, grants, manual grants (idempotent, audited) and revocation."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select

from portner.storage import tables as t
from tests.web.test_api_directory import API, visible_ids, walk

Client = Callable[[str | None], TestClient]
OSLO = ZoneInfo("Europe/Oslo")


def engine_of(app: FastAPI) -> Any:
    return app.state.portner.engine


def actor_of(app: FastAPI, subject: str) -> str:
    with engine_of(app).connect() as conn:
        return conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == subject)).scalar_one()


def count(app: FastAPI, table: Any, *where: Any) -> int:
    with engine_of(app).connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


# --- visits -------------------------------------------------------------------------------------


def test_a_nurse_sees_her_own_visits_of_the_day_in_order(client_for: Client, portner_app: FastAPI) -> None:
    nurse = client_for("demo-nurse-1")
    me = actor_of(portner_app, "demo-nurse-1")
    visits = walk(nurse, f"{API}/visits?date=2026-12-03&limit=4")
    assert visits, "the busiest nurse has visits on the demo day"
    assert all(me in v["staff_ids"] for v in visits)
    starts = [datetime.fromisoformat(v["planned_start"]) for v in visits]
    assert starts == sorted(starts)
    assert all(s.astimezone(OSLO).date().isoformat() == "2026-12-03" for s in starts)
    assert len({v["id"] for v in visits}) == len(visits)
    # Someone else's visit is a 404, not a 403.
    admin = client_for("demo-admin")
    other = next(v for v in walk(admin, f"{API}/visits?date=2026-12-03&limit=500") if me not in v["staff_ids"])
    assert nurse.get(f"{API}/visits/{other['id']}").status_code == 404
    assert nurse.get(f"{API}/visits/{visits[0]['id']}").json() == visits[0]


def test_an_operator_walks_all_visits_of_a_day_without_duplicates(client_for: Client, portner_app: FastAPI) -> None:
    operator = client_for("demo-operator")
    visits = walk(operator, f"{API}/visits?date=2026-12-03&limit=33")
    start = datetime(2026, 12, 3, tzinfo=OSLO)
    expected = count(portner_app, t.visits, t.visits.c.planned_start >= start,
                     t.visits.c.planned_start < start + timedelta(days=1))
    assert len(visits) == len({v["id"] for v in visits}) == expected > 33
    staff = visits[0]["staff_ids"][0]
    theirs = walk(operator, f"{API}/visits?date=2026-12-03&staff={staff}")
    assert theirs and all(staff in v["staff_ids"] for v in theirs)
    resident = visits[0]["resident_id"]
    at_home = walk(operator, f"{API}/visits?resident={resident}")
    assert at_home and all(v["resident_id"] == resident for v in at_home)
    bad = operator.get(f"{API}/visits?date=2026-13-45")
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "query/date"


def test_a_relative_sees_only_their_residents_visits(client_for: Client, portner_app: FastAPI) -> None:
    relative = client_for("demo-relative")
    mine = visible_ids(portner_app, "demo-relative") or frozenset()
    visits = walk(relative, f"{API}/visits?limit=50")
    assert visits and {v["resident_id"] for v in visits} <= set(mine)
    with engine_of(portner_app).connect() as conn:
        other = conn.execute(select(t.residents.c.id).where(t.residents.c.id.not_in(sorted(mine))).limit(1)).scalar()
    answer = relative.get(f"{API}/visits?resident={other}")
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"


# --- grants -------------------------------------------------------------------------------------


def test_grants_are_cut_to_what_each_role_may_see(client_for: Client, portner_app: FastAPI) -> None:
    me = actor_of(portner_app, "demo-nurse-1")
    nurse_grants = walk(client_for("demo-nurse-1"), f"{API}/grants?limit=20")
    assert nurse_grants and all(g["actor_id"] == me for g in nurse_grants)
    operator = client_for("demo-operator")
    everything = walk(operator, f"{API}/grants?limit=97")
    assert len(everything) == len({g["id"] for g in everything}) == count(portner_app, t.grants)
    active = walk(operator, f"{API}/grants?active=true&limit=200")
    now = portner_app.state.portner.now()
    assert active and all(g["status"] == "active" and datetime.fromisoformat(g["not_after"]) > now for g in active)
    relative = client_for("demo-relative")
    (resident,) = visible_ids(portner_app, "demo-relative") or frozenset()
    with engine_of(portner_app).connect() as conn:
        doors = set(conn.execute(select(t.doors.c.id).join(t.homes).where(t.homes.c.resident_id == resident)).scalars())
    theirs = walk(relative, f"{API}/grants")
    assert theirs and all(doors & set(g["door_ids"]) for g in theirs)
    assert {g["id"] for g in theirs} == {g["id"] for g in walk(operator, f"{API}/grants?resident={resident}")}
    foreign = next(g for g in everything if not doors & set(g["door_ids"]))
    assert relative.get(f"{API}/grants/{foreign['id']}").status_code == 404
    assert operator.get(f"{API}/grants/{foreign['id']}").json() == foreign


def _manual(portner_app: FastAPI, **changes: Any) -> dict[str, Any]:
    with engine_of(portner_app).connect() as conn:
        actor = conn.execute(select(t.actors.c.id).where(t.actors.c.role == "home_nursing").limit(1)).scalar_one()
        doors = list(conn.execute(select(t.doors.c.id).order_by(t.doors.c.id).limit(2)).scalars())
    body = {"actor_id": actor, "door_ids": doors, "not_before": "2026-12-03T20:00:00+01:00",
            "not_after": "2026-12-04T06:00:00+01:00", "reason": "Nattevakt for fast ansatt"}
    return {**body, **changes}


def test_an_operator_gives_a_manual_grant_once_per_idempotency_key(client_for: Client, portner_app: FastAPI) -> None:
    operator = client_for("demo-operator")
    body = _manual(portner_app)
    before = count(portner_app, t.grants)
    first = operator.post(f"{API}/grants", json=body, headers={"Idempotency-Key": "grant-1"})
    assert first.status_code == 201, first.text
    grant = first.json()
    assert grant["origin"] == "manual" and grant["status"] == "active" and grant["door_ids"] == body["door_ids"]
    assert datetime.fromisoformat(grant["not_before"]) == datetime.fromisoformat(body["not_before"])
    assert "idempotency-replayed" not in first.headers
    again = operator.post(f"{API}/grants", json=body, headers={"Idempotency-Key": "grant-1"})
    assert again.status_code == 201 and again.json() == grant
    assert again.headers["idempotency-replayed"] == "true"
    assert count(portner_app, t.grants) == before + 1
    other = operator.post(f"{API}/grants", json={**body, "reason": "another"}, headers={"Idempotency-Key": "grant-1"})
    assert other.status_code == 422
    assert other.json()["errors"] == [{"field": "header/Idempotency-Key",
                                       "message": "this key was used with another request; use a new key"}]
    assert count(portner_app, t.grants) == before + 1
    # The same key from another person is their own key.
    admin = client_for("demo-admin")
    assert admin.post(f"{API}/grants", json=body, headers={"Idempotency-Key": "grant-1"}).json()["id"] != grant["id"]
    # Audited, naming the account (never a name), in the same transaction as the grant.
    with engine_of(portner_app).connect() as conn:
        entry = conn.execute(select(t.audit_events).where(
            t.audit_events.c.action == "grant:created", t.audit_events.c.subject == grant["id"])).one()
        account = conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == "demo-operator")).scalar_one()
    assert entry.actor == f"account:{account}"
    assert entry.details["origin"] == "manual" and entry.details["actor"] == body["actor_id"]
    assert client_for("demo-nurse-1").get(f"{API}/grants/{grant['id']}").status_code == 404


def test_a_bad_manual_grant_names_the_field_and_writes_nothing(client_for: Client, portner_app: FastAPI) -> None:
    operator = client_for("demo-operator")
    grants, audit = count(portner_app, t.grants), count(portner_app, t.audit_events)
    cases = {
        "body/not_after": _manual(portner_app, not_after="2026-12-04T09:00:01+01:00"),  # > 12 h
        "body/door_ids/1": _manual(portner_app, door_ids=["d-000001", "d-nowhere"]),
        "body/actor_id": _manual(portner_app, actor_id="stf-nobody"),
        "body/reason": _manual(portner_app, reason="   "),
        "body/door_ids": _manual(portner_app, door_ids=[]),
        "body/not_before": _manual(portner_app, not_before="2026-12-03T20:00:00"),  # naive
    }
    for field, body in cases.items():
        answer = operator.post(f"{API}/grants", json=body, headers={"Idempotency-Key": f"bad-{field}"})
        assert answer.status_code == 422, (field, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        assert field in [e["field"] for e in answer.json()["errors"]], (field, answer.json())
    # An error is not remembered: the corrected request may reuse the key.
    fixed = operator.post(f"{API}/grants", json=_manual(portner_app), headers={"Idempotency-Key": "bad-body/actor_id"})
    assert fixed.status_code == 201
    assert count(portner_app, t.grants) == grants + 1
    assert count(portner_app, t.audit_events) == audit + 1


def test_nurses_and_relatives_may_not_give_grants(client_for: Client, portner_app: FastAPI) -> None:
    for who in ("demo-nurse-1", "demo-relative"):
        answer = client_for(who).post(f"{API}/grants", json=_manual(portner_app))
        assert answer.status_code == 403
    anonymous = client_for(None)
    assert anonymous.post(f"{API}/grants", json=_manual(portner_app)).status_code == 401
    operator = client_for("demo-operator")
    del operator.headers["X-CSRF-Token"]
    assert operator.post(f"{API}/grants", json=_manual(portner_app)).status_code == 403


def _credential(portner_app: FastAPI, grant_id: str, actor_id: str, *, not_after: datetime) -> str:
    now = portner_app.state.portner.now()
    device_id, credential_id = f"dev-{secrets.token_hex(4)}", secrets.token_hex(16)
    with engine_of(portner_app).begin() as conn:
        conn.execute(insert(t.devices).values(id=device_id, actor_id=actor_id, public_key=secrets.token_bytes(32),
                                              status="active", registered_at=now))
        conn.execute(insert(t.credentials).values(id=credential_id, grant_id=grant_id, device_id=device_id,
                                                  issued_at=now, not_before=now, not_after=not_after, size=200))
    return credential_id


def test_revoking_a_grant_revokes_its_live_credentials_and_publishes_the_list(
    client_for: Client, portner_app: FastAPI
) -> None:
    operator = client_for("demo-operator")
    body = _manual(portner_app)
    grant = operator.post(f"{API}/grants", json=body).json()
    now = portner_app.state.portner.now()
    live = _credential(portner_app, grant["id"], body["actor_id"], not_after=now + timedelta(hours=6))
    lists = count(portner_app, t.revocation_lists)
    answer = operator.post(f"{API}/grants/{grant['id']}/revoke", json={"reason": "mistet telefon"},
                           headers={"Idempotency-Key": "revoke-1"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "revoked" and answer.json()["reason"] == "mistet telefon"
    with engine_of(portner_app).connect() as conn:
        revoked_at = conn.execute(select(t.credentials.c.revoked_at).where(t.credentials.c.id == live)).scalar_one()
        entry = conn.execute(select(t.audit_events).where(
            t.audit_events.c.action == "grant:revoked", t.audit_events.c.subject == grant["id"])).one()
    assert revoked_at is not None
    assert entry.details == {"credentials": 1}
    assert count(portner_app, t.revocation_lists) == lists + 1
    replay = operator.post(f"{API}/grants/{grant['id']}/revoke", json={"reason": "mistet telefon"},
                           headers={"Idempotency-Key": "revoke-1"})
    assert replay.json() == answer.json() and replay.headers["idempotency-replayed"] == "true"
    assert count(portner_app, t.revocation_lists) == lists + 1
    twice = operator.post(f"{API}/grants/{grant['id']}/revoke")
    assert twice.status_code == 409 and twice.headers["content-type"] == "application/problem+json"
    assert operator.get(f"{API}/grants/{grant['id']}").json()["status"] == "revoked"
    assert operator.post(f"{API}/grants/grt-nothing/revoke").status_code == 404
    assert client_for("demo-nurse-1").post(f"{API}/grants/{grant['id']}/revoke").status_code == 403
