"""The records API: the door log (every read audited), the audit log and its verification, FHIR push."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, update

from portner.domain.access import SCOPE_DIRECTORY_READ, SCOPE_FHIR_IMPORT
from portner.services.accounts import DEV_ISSUER, create_account
from portner.storage import tables as t
from tests.conftest import SHARED_FIXTURES
from tests.web.test_api_directory import API, visible_ids, walk

Client = Callable[[str | None], TestClient]
VKP = SHARED_FIXTURES / "vkp" / "examples-stu3"
NO_BASIS = SHARED_FIXTURES / "no-basis"


def engine_of(app: FastAPI) -> Any:
    return app.state.portner.engine


def count(app: FastAPI, table: Any, *where: Any) -> int:
    with engine_of(app).connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()


def account_id(app: FastAPI, subject: str) -> str:
    with engine_of(app).connect() as conn:
        return conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == subject)).scalar_one()


# --- the door log -------------------------------------------------------------------------------


def _door_events(app: FastAPI, resident_id: str, n: int) -> None:
    """Events at the resident's first lock, as ingestion would have stored them."""
    now = app.state.portner.now()
    with engine_of(app).begin() as conn:
        lock_id, actor_id = conn.execute(
            select(t.locks.c.id, t.grants.c.actor_id)
            .join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id)
            .join(t.visits, t.visits.c.resident_id == t.homes.c.resident_id)
            .join(t.grants, t.grants.c.visit_id == t.visits.c.id)
            .where(t.homes.c.resident_id == resident_id).limit(1)
        ).one()
        conn.execute(insert(t.door_events), [
            {"lock_id": lock_id, "seq": seq, "lock_time": now - timedelta(minutes=n - seq), "received_at": now,
             "action": "unlock" if seq % 3 else "denied", "allowed": bool(seq % 3), "reason": "ok" if seq % 3 else
             "outside_window", "credential_id": None, "actor_id": actor_id, "visit_id": None,
             "hash": secrets.token_bytes(32)}
            for seq in range(1, n + 1)
        ])


def test_every_read_of_a_door_log_is_itself_logged(client_for: Client, portner_app: FastAPI) -> None:
    relative = client_for("demo-relative")
    (resident,) = visible_ids(portner_app, "demo-relative") or frozenset()
    _door_events(portner_app, resident, 12)
    reads = t.audit_events.c.action == "accesslog:read"
    before = count(portner_app, t.audit_events, reads, t.audit_events.c.subject == resident)
    lines = walk(relative, f"{API}/residents/{resident}/access-log?limit=5")
    assert len(lines) == 12 and [line["position"] for line in lines] == list(range(12))
    assert {line["outcome"] for line in lines} == {"opened", "refused"}
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)
    # Three pages read: three entries, each naming the reader's account.
    with engine_of(portner_app).connect() as conn:
        entries = conn.execute(select(t.audit_events).where(reads, t.audit_events.c.subject == resident)
                               .order_by(t.audit_events.c.seq)).all()
    assert len(entries) == before + 3
    assert entries[-1].actor == f"account:{account_id(portner_app, 'demo-relative')}"


def test_a_door_log_one_may_not_see_is_a_404_and_leaves_no_read_entry(
    client_for: Client, portner_app: FastAPI
) -> None:
    nurse = client_for("demo-nurse-1")
    (resident,) = visible_ids(portner_app, "demo-relative") or frozenset()
    mine = visible_ids(portner_app, "demo-nurse-1") or frozenset()
    assert resident not in mine
    before = count(portner_app, t.audit_events)
    answer = nurse.get(f"{API}/residents/{resident}/access-log")
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/problem+json"
    assert client_for("demo-admin").get(f"{API}/residents/res-nobody/access-log").status_code == 404
    assert count(portner_app, t.audit_events) == before


# --- audit --------------------------------------------------------------------------------------


def test_the_audit_log_pages_through_every_entry_for_admins(client_for: Client, portner_app: FastAPI) -> None:
    admin = client_for("demo-admin")
    entries = walk(admin, f"{API}/audit?limit=500")
    seqs = [e["seq"] for e in entries]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == count(portner_app, t.audit_events, t.audit_events.c.seq > 0)
    created = walk(admin, f"{API}/audit?action=grant:created&limit=200")
    assert created and all(e["action"] == "grant:created" for e in created)
    one = created[0]["subject"]
    assert {e["subject"] for e in admin.get(f"{API}/audit?subject={one}").json()["items"]} == {one}
    for who in ("demo-operator", "demo-nurse-1", "demo-relative"):
        assert client_for(who).get(f"{API}/audit").status_code == 403
        assert client_for(who).get(f"{API}/audit/verify").status_code == 403


def test_audit_verification_finds_an_edited_entry(client_for: Client, portner_app: FastAPI) -> None:
    admin = client_for("demo-admin")
    good = admin.get(f"{API}/audit/verify").json()
    assert good["ok"] and good["chain_ok"] and good["checkpoints"] >= 1 and good["entries"] > 100
    with engine_of(portner_app).begin() as conn:
        conn.execute(update(t.audit_events).where(t.audit_events.c.seq == 7).values(actor="someone-else"))
    bad = admin.get(f"{API}/audit/verify").json()
    assert not bad["ok"] and not bad["chain_ok"] and bad["first_bad_seq"] == 7
    assert "7" in bad["chain_problem"]


# --- FHIR push ----------------------------------------------------------------------------------


def _push(client: TestClient, path: Path, media: str, **headers: str) -> Any:
    return client.post(f"{API}/fhir", content=path.read_bytes(), headers={"Content-Type": media, **headers})


def test_an_admin_pushes_a_vkp_patient_and_a_plan_as_xml(
    client_for: Client, portner_app: FastAPI, shared_fixtures: object
) -> None:
    admin = client_for("demo-admin")
    residents = count(portner_app, t.residents)
    answer = _push(admin, VKP / "vkp-Patient-Magnar-Solbakken.xml", "application/fhir+xml",
                   **{"Idempotency-Key": "push-1"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["files"] == 1 and report["patients"] == 1
    # The demo was loaded from the same fixtures: the patient is matched, not added twice.
    assert count(portner_app, t.residents) == residents
    found = admin.get(f"{API}/residents?q=Solbakken").json()["items"]
    assert [r["display_name"] for r in found] == ["Magnar Solbakken"]
    replay = _push(admin, VKP / "vkp-Patient-Magnar-Solbakken.xml", "application/fhir+xml",
                   **{"Idempotency-Key": "push-1"})
    assert replay.json() == report and replay.headers["idempotency-replayed"] == "true"
    plan = _push(admin, VKP / "vkp-CarePlan-Arbeidsplan-Magnar-Solbakken.xml", "application/fhir+xml")
    assert plan.status_code == 200
    body = plan.json()
    assert body["plans_seen"] == 1
    # The fixture has a performer whose national id fails its check digits: named, never echoed.
    assert body["problems"], body
    for problem in body["problems"]:
        assert problem["file"] == "api-push.xml" and problem["resource"].startswith("CarePlan/")
        assert problem["field"] and problem["message"]
    again = _push(admin, VKP / "vkp-CarePlan-Arbeidsplan-Magnar-Solbakken.xml", "application/fhir+xml")
    assert again.json()["visits_added"] == 0
    assert admin.get(f"{API}/audit/verify").json()["ok"]


def _plan(national_id: str, her_id: str, start: str, end: str) -> dict[str, Any]:
    """A VKP visit plan of our own (synthetic people; the shared fixtures are never edited)."""
    return {
        "resourceType": "CarePlan", "id": "cp-api-push-1", "status": "active", "intent": "plan",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:7d1f2a8e-0c1b-4f44-9a55-1b2c3d4e5f60"}],
        "category": [{"coding": [{"system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category-v090",
                                  "code": "3", "display": "besoksplan"}]}],
        "subject": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": national_id}},
        "period": {"start": "2026-12-04T00:00:00+01:00", "end": "2026-12-05T00:00:00+01:00"},
        "activity": [{"detail": {
            "status": "scheduled", "description": "Tilsyn",
            "performer": [{"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.2", "value": her_id}}],
            "scheduledTiming": {"repeat": {"boundsPeriod": {"start": start, "end": end}}},
        }}],
    }


def test_a_pushed_plan_makes_visits_and_grants(client_for: Client, portner_app: FastAPI) -> None:
    with engine_of(portner_app).connect() as conn:
        resident = conn.execute(
            select(t.residents.c.id, t.residents.c.national_id)
            .join(t.homes, t.homes.c.resident_id == t.residents.c.id)
            .where(t.homes.c.elock_system.is_not(None), t.residents.c.national_id.is_not(None)).limit(1)
        ).one()
        nurse = conn.execute(select(t.actors.c.id, t.actors.c.her_id).where(
            t.actors.c.her_id.is_not(None), t.actors.c.role == "home_nursing").limit(1)).one()
    plan = _plan(resident.national_id, nurse.her_id, "2026-12-04T10:00:00+01:00", "2026-12-04T10:30:00+01:00")
    admin = client_for("demo-admin")
    answer = admin.post(f"{API}/fhir", content=json.dumps(plan), headers={"Content-Type": "application/fhir+json"})
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["visits_added"] == 1 and report["grants_created"] == 1 and report["problems"] == []
    assert resident.national_id not in answer.text
    (visit,) = admin.get(f"{API}/visits?date=2026-12-04&resident={resident.id}&staff={nurse.id}").json()["items"]
    assert visit["staff_ids"] == [nurse.id] and visit["description"] == "Tilsyn"
    grants = admin.get(f"{API}/grants?actor={nurse.id}&resident={resident.id}").json()["items"]
    assert visit["id"] in {g["visit_id"] for g in grants}
    # The same push again changes nothing (the import recognises an identical plan).
    again = admin.post(f"{API}/fhir", content=json.dumps(plan), headers={"Content-Type": "application/fhir+json"})
    assert again.json()["plans_unchanged"] == 1 and again.json()["visits_added"] == 0
    assert admin.get(f"{API}/audit/verify").json()["ok"]


def test_a_no_basis_appointment_is_reported_with_resource_and_field(
    client_for: Client, shared_fixtures: object
) -> None:
    admin = client_for("demo-admin")
    answer = _push(admin, NO_BASIS / "Appointment-NoBasisAppointmentExample1.json", "application/fhir+json")
    assert answer.status_code == 200
    (problem,) = answer.json()["problems"]
    assert problem == {"file": "api-push.json", "resource": "Appointment/NoBasisAppointmentExample1",
                       "field": "subject", "message": "subject matches no known resident", "severity": "error"}


@pytest.mark.parametrize(("body", "media", "status", "field"), [
    (b'{"resourceType": "Bundle", "entry": [', "application/fhir+json", 422, "body"),
    (b"<Patient xmlns='http://hl7.org/fhir'><unclosed></Patient>", "application/fhir+xml", 422, "body"),
    (b"\xff\xfe\x00junk", "application/fhir+json", 422, "body"),
    (b'{"resourceType": "Patient"}', "text/plain", 415, "header/Content-Type"),
    (b" " * (5 * 1024 * 1024 + 1), "application/fhir+json", 413, "body"),
])
def test_a_bad_push_names_the_field_and_writes_nothing(
    client_for: Client, portner_app: FastAPI, body: bytes, media: str, status: int, field: str
) -> None:
    admin = client_for("demo-admin")
    tables = (t.audit_events, t.quarantine, t.residents, t.visit_plans)
    before = [count(portner_app, table) for table in tables]
    answer = admin.post(f"{API}/fhir", content=body, headers={"Content-Type": media})
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["errors"][0]["field"] == field
    assert [count(portner_app, table) for table in tables] == before


def test_only_admins_and_integrations_with_the_import_scope_push_plans(
    client_for: Client, portner_app: FastAPI, shared_fixtures: object
) -> None:
    p = portner_app.state.portner
    for subject, scopes in (("test-epj", [SCOPE_FHIR_IMPORT]), ("test-reader", [SCOPE_DIRECTORY_READ])):
        create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject=subject,
                       role="integration", now=p.now(), ids=p.ids, by="test", scopes=scopes)
    fixture = NO_BASIS / "Patient-e70f0ba2-44d8-4f14-9c3a-ff4c6ead7473.json"
    assert _push(client_for("test-epj"), fixture, "application/fhir+json").status_code == 200
    for who in ("test-reader", "demo-operator", "demo-nurse-1", "demo-relative"):
        answer = _push(client_for(who), fixture, "application/fhir+json")
        assert answer.status_code == 403, who
