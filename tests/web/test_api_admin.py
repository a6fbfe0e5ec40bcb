"""The administrator's write API over the demo municipality: who may call it, conditional
updates, idempotent POSTs, problem details naming the field, and a quarantine correction of one
of the demo's deliberately bad records through the real import."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from portner.config import Settings
from portner.services.accounts import DEV_ISSUER
from portner.storage import tables as t
from portner.storage.db import open_database
from tests.web.conftest import sign_in

Client = Callable[[str | None], TestClient]
NATIONAL_ID_LIKE = re.compile(r"(?<!\d)\d{11}(?!\d)")


@pytest.fixture
def admin(client_for: Client) -> TestClient:
    return client_for("demo-admin")


def _etag(client: TestClient, url: str) -> str:
    answer = client.get(url)
    assert answer.status_code == 200, answer.text
    return answer.headers["ETag"]


def _field(answer: object) -> list[str]:
    return [e["field"] for e in answer.json().get("errors", [])]  # type: ignore[attr-defined]


@pytest.mark.parametrize("subject", ["demo-nurse-1", "demo-operator", "demo-relative", "demo-resident"])
def test_only_administrators_may_call_it(client_for: Client, subject: str) -> None:
    client = client_for(subject)
    assert client.get("/api/v1/quarantine").status_code == 403
    assert client.get("/api/v1/imports").status_code == 403
    answer = client.patch("/api/v1/municipalities/current", json={"grace_minutes": 60}, headers={"If-Match": "*"})
    assert answer.status_code == 403 and answer.headers["content-type"] == "application/problem+json"
    assert client.post("/api/v1/staff", json={"display_name": "X", "role": "home_nursing",
                                              "organisation": "Y"}).status_code == 403
    assert client_for(None).get("/api/v1/quarantine").status_code == 401


def test_settings_need_the_current_etag(admin: TestClient) -> None:
    url = "/api/v1/municipalities/current"
    etag = _etag(admin, url)
    missing = admin.patch(url, json={"grace_minutes": 45})
    assert missing.status_code == 428 and _field(missing) == ["header/If-Match"]
    stale = admin.patch(url, json={"grace_minutes": 45}, headers={"If-Match": '"0000"'})
    assert stale.status_code == 412
    bad = admin.patch(url, json={"grace_minutes": 500}, headers={"If-Match": etag})
    assert bad.status_code == 422 and _field(bad) == ["body/grace_minutes"]
    unknown = admin.patch(url, json={"timezone": "UTC"}, headers={"If-Match": etag})
    assert unknown.status_code == 422 and _field(unknown) == ["body/timezone"]
    done = admin.patch(url, json={"grace_minutes": 45, "service_model": "central"}, headers={"If-Match": etag})
    assert done.status_code == 200, done.text
    assert (done.json()["grace_minutes"], done.json()["service_model"]) == (45, "central")
    assert done.headers["ETag"] == _etag(admin, url) != etag  # the GET agrees with the new version
    again = admin.patch(url, json={"grace_minutes": 50}, headers={"If-Match": etag})
    assert again.status_code == 412  # the old version is gone


def test_resident_and_home_updates(admin: TestClient) -> None:
    resident = admin.get("/api/v1/residents", params={"limit": 1}).json()["items"][0]
    url = f"/api/v1/residents/{resident['id']}"
    bad = admin.patch(url, json={"zone_id": "zon-nowhere"}, headers={"If-Match": _etag(admin, url)})
    assert bad.status_code == 422 and _field(bad) == ["body/zone_id"]
    done = admin.patch(url, json={"display_name": "Ny Navnesen"}, headers={"If-Match": _etag(admin, url)})
    assert done.status_code == 200 and done.json()["display_name"] == "Ny Navnesen"
    assert done.headers["ETag"] == _etag(admin, url)  # the directory's GET agrees
    home = admin.get(f"{url}/homes").json()["items"][0]
    home_url = f"/api/v1/homes/{home['id']}"
    moved = admin.patch(home_url, json={"address": "Nyveien 1"}, headers={"If-Match": _etag(admin, home_url)})
    assert moved.status_code == 200 and moved.json()["address"] == "Nyveien 1"
    assert moved.headers["ETag"] == _etag(admin, home_url)
    assert admin.patch("/api/v1/homes/hom-nowhere", json={"address": "x"},
                       headers={"If-Match": "*"}).status_code == 404


def test_doors_and_locks_with_idempotent_posts(admin: TestClient) -> None:
    resident = admin.get("/api/v1/residents", params={"limit": 1}).json()["items"][0]
    home = admin.get(f"/api/v1/residents/{resident['id']}/homes").json()["items"][0]
    doors_before = len(home["doors"])
    url = f"/api/v1/homes/{home['id']}/doors"
    first = admin.post(url, json={"kind": "building", "position": 1}, headers={"Idempotency-Key": "door-1"})
    assert first.status_code == 201, first.text
    retry = admin.post(url, json={"kind": "building", "position": 1}, headers={"Idempotency-Key": "door-1"})
    assert retry.json() == first.json() and retry.headers["Idempotency-Replayed"] == "true"
    other = admin.post(url, json={"kind": "flat"}, headers={"Idempotency-Key": "door-1"})
    assert other.status_code == 422 and _field(other) == ["header/Idempotency-Key"]
    doors = admin.get(f"/api/v1/homes/{home['id']}").json()["doors"]
    assert len(doors) == doors_before + 1 and doors[0]["id"] == first.json()["id"]
    bad = admin.post(url, json={"kind": "garage"})
    assert bad.status_code == 422 and _field(bad) == ["body/kind"]
    door_url = f"/api/v1/doors/{first.json()['id']}"
    lock = admin.post(f"{door_url}/lock", json={"model": "SimLock B1"})
    assert lock.status_code == 201 and lock.json()["door_id"] == first.json()["id"]
    assert admin.post(f"{door_url}/lock", json={}).status_code == 409  # one lock per door
    assert admin.delete(door_url, headers={"If-Match": _etag(admin, door_url)}).status_code == 409  # it has a lock
    lock_url = f"/api/v1/locks/{lock.json()['id']}"
    assert admin.delete(lock_url).status_code == 428
    assert admin.delete(lock_url, headers={"If-Match": _etag(admin, lock_url)}).status_code == 204
    moved = admin.patch(door_url, json={"position": doors_before + 1}, headers={"If-Match": _etag(admin, door_url)})
    assert moved.status_code == 200, moved.text
    assert moved.headers["ETag"] == _etag(admin, door_url)
    assert admin.delete(door_url, headers={"If-Match": _etag(admin, door_url)}).status_code == 204
    assert len(admin.get(f"/api/v1/homes/{home['id']}").json()["doors"]) == doors_before


def _new_doors(admin: TestClient, count: int) -> list[str]:
    resident = admin.get("/api/v1/residents", params={"limit": 1}).json()["items"][0]
    home = admin.get(f"/api/v1/residents/{resident['id']}/homes").json()["items"][0]
    made = [admin.post(f"/api/v1/homes/{home['id']}/doors", json={"kind": "other"}) for _ in range(count)]
    assert all(m.status_code == 201 for m in made), [m.text for m in made]
    return [m.json()["id"] for m in made]


def test_a_real_lock_is_installed_by_its_backend_address(admin: TestClient, demo_settings: Settings) -> None:
    first, second, third = _new_doors(admin, 3)
    lock = admin.post(f"/api/v1/doors/{first}/lock",
                      json={"backend": "zigbee2mqtt", "address": " front-door-12 ", "enforcement": "server"})
    assert lock.status_code == 201, lock.text
    body = lock.json()
    assert (body["backend"], body["address"], body["enforcement"]) == ("zigbee2mqtt", "front-door-12", "server")
    lock_url = f"/api/v1/locks/{body['id']}"
    assert admin.get(lock_url).json() == body  # the read model shows them too
    assert {"address", "enforcement"} <= set(admin.get("/api/v1/locks").json()["items"][0])

    missing = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "zigbee2mqtt"})
    assert missing.status_code == 422 and _field(missing) == ["body/address"]
    blank = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "nuki", "address": "   "})
    assert blank.status_code == 422 and _field(blank) == ["body/address"]
    control = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "matter", "address": "12\n1"})
    assert control.status_code == 422 and _field(control) == ["body/address"]
    unknown = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "acme-cloud", "address": "x"})
    assert unknown.status_code == 422 and _field(unknown) == ["body/backend"]
    bad_mode = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "matter", "address": "12/1",
                                                               "enforcement": "door"})
    assert bad_mode.status_code == 422 and _field(bad_mode) == ["body/enforcement"]

    taken = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "zigbee2mqtt", "address": "front-door-12"})
    assert taken.status_code == 409 and _field(taken) == ["body/address"], taken.text
    assert taken.headers["content-type"] == "application/problem+json"
    other_backend = admin.post(f"/api/v1/doors/{second}/lock", json={"backend": "matter", "address": "front-door-12"})
    assert other_backend.status_code == 201 and other_backend.json()["enforcement"] is None  # unique per backend

    # A removed lock with history keeps its row, marked removed; its address is free again.
    engine = open_database(demo_settings.db_url)
    with engine.begin() as conn:
        conn.execute(t.lock_log_anomalies.insert().values(lock_id=body["id"], kind="gap", first_seq=1, last_seq=2,
                                                          detected_at=datetime(2026, 1, 1, tzinfo=UTC)))
    assert admin.delete(lock_url, headers={"If-Match": _etag(admin, lock_url)}).status_code == 204
    with engine.connect() as conn:
        row = conn.execute(select(t.locks.c.removed_at, t.locks.c.address).where(t.locks.c.id == body["id"])).one()
    engine.dispose()
    assert row.removed_at is not None and row.address == "front-door-12"
    moved = admin.post(f"/api/v1/doors/{third}/lock", json={"backend": "zigbee2mqtt", "address": "front-door-12"})
    assert moved.status_code == 201, moved.text


def test_staff_and_accounts_take_effect(admin: TestClient, client_for: Client) -> None:
    made = admin.post("/api/v1/staff", json={"display_name": "Kari Nordmann", "role": "home_nursing",
                                             "organisation": "Hjemmetjenesten", "hpr_number": "9199999"})
    assert made.status_code == 201, made.text
    staff = made.json()
    assert "hpr_number" not in staff
    relative = admin.post("/api/v1/staff", json={"display_name": "X", "role": "relative", "organisation": "Y"})
    assert relative.status_code == 422 and _field(relative) == ["body/role"]
    account = admin.post("/api/v1/accounts", json={"role": "nurse", "issuer": DEV_ISSUER, "subject": "kari",
                                                   "actor_id": staff["id"], "display_name": "Kari"})
    assert account.status_code == 201, account.text
    missing = admin.post("/api/v1/accounts", json={"role": "nurse", "issuer": DEV_ISSUER, "subject": "ola"})
    assert missing.status_code == 422 and _field(missing) == ["body/actor_id"]
    kari = client_for(None)
    sign_in(kari, "kari")
    assert kari.get("/api/v1/staff").status_code == 200
    disabled = admin.post(f"/api/v1/accounts/{account.json()['id']}/disable")
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True
    assert kari.get("/api/v1/staff").status_code == 401  # refused at the next request
    staff_url = f"/api/v1/staff/{staff['id']}"
    assert admin.get(staff_url).json()["active"] is False  # no new door credentials either
    enabled = admin.post(f"/api/v1/accounts/{account.json()['id']}/enable")
    assert enabled.json()["disabled"] is False and kari.get("/api/v1/staff").status_code == 200
    off = admin.patch(staff_url, json={"active": False}, headers={"If-Match": _etag(admin, staff_url)})
    assert off.status_code == 200 and off.json()["active"] is False
    assert off.headers["ETag"] == _etag(admin, staff_url)
    me = [a for a in admin.get("/api/v1/accounts").json()["items"] if a["subject"] == "demo-admin"][0]
    assert admin.post(f"/api/v1/accounts/{me['id']}/disable").status_code == 409


def _entry(admin: TestClient, resource: str) -> dict[str, object]:
    entries = admin.get("/api/v1/quarantine", params={"limit": 500}).json()["items"]
    return next(e for e in entries if e["resource"] == resource)


def test_quarantine_shows_no_national_id(admin: TestClient) -> None:
    entries = admin.get("/api/v1/quarantine", params={"limit": 500}).json()["items"]
    assert len(entries) >= 5
    assert any(e["raw"] for e in entries)
    assert not NATIONAL_ID_LIKE.search(json.dumps(entries))


def test_a_demo_quarantine_entry_corrected_round_trip(admin: TestClient, demo_settings: Settings) -> None:
    entry = _entry(admin, "CarePlan/cp-bad-end-before-start")
    plan_file = Path(demo_settings.data_dir) / "care-record" / "plans" / "CarePlan-bad-end-before-start.json"
    plan = json.loads(plan_file.read_text())
    url = f"/api/v1/quarantine/{entry['id']}/correct"
    still_bad = admin.post(url, json={"resource": json.dumps(plan)})
    assert still_bad.status_code == 200 and still_bad.json()["resolved"] is False
    assert "before it starts" in still_bad.json()["problems"][0]["message"]
    wrong = admin.post(url, json={"resource": "<Patient xmlns='http://hl7.org/fhir'><id value='x'/></Patient>"})
    assert wrong.status_code == 422 and _field(wrong) == ["body/resource"]
    bounds = plan["activity"][0]["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"]
    bounds["start"], bounds["end"] = bounds["end"], bounds["start"]
    fixed = admin.post(url, json={"resource": json.dumps(plan)}, headers={"Idempotency-Key": "fix-1"})
    assert fixed.status_code == 200, fixed.text
    body = fixed.json()
    assert body["resolved"] is True and entry["id"] in body["resolved_ids"]
    assert body["visits_added"] == 1 and body["grants_created"] >= 1
    remaining = admin.get("/api/v1/quarantine", params={"limit": 500}).json()["items"]
    assert entry["id"] not in [e["id"] for e in remaining]
    imports = admin.get("/api/v1/imports", params={"limit": 500}).json()["items"]
    mine = [i for i in imports if i["source_file"].endswith("CarePlan-bad-end-before-start.json")]
    assert [i["visits"] for i in mine] == [1]
    engine = open_database(demo_settings.db_url)
    try:
        with engine.connect() as conn:
            actions = conn.execute(select(func.count()).select_from(t.audit_events)
                                   .where(t.audit_events.c.action == "quarantine:corrected")).scalar()
    finally:
        engine.dispose()
    assert actions == 1


def test_dismiss_needs_a_reason(admin: TestClient) -> None:
    entry = _entry(admin, "CarePlan/cp-bad-unknown-profile")
    url = f"/api/v1/quarantine/{entry['id']}/dismiss"
    assert _field(admin.post(url, json={"reason": ""})) == ["body/reason"]
    done = admin.post(url, json={"reason": "not our plan"})
    assert done.status_code == 200 and done.json()["resolved_at"]
    assert admin.post(url, json={"reason": "again"}).status_code == 409


def test_admin_text_fields_refuse_control_characters(client_for) -> None:
    admin = client_for("demo-admin")
    answer = admin.post("/api/v1/staff", json={"display_name": "Kari\u0000", "organisation": "Hjemmetjenesten",
                                                "role": "home_nursing"})
    assert answer.status_code == 422
    assert any(e["field"].endswith("display_name") for e in answer.json()["errors"])


def test_an_id_with_a_control_character_is_refused_naming_the_path(admin: TestClient) -> None:
    """As every other module's ids: a control character in a path id is malformed, not looked up."""
    for url in ("/api/v1/residents/res-%01x", "/api/v1/homes/home-%0Ax", "/api/v1/doors/door-%7Fx"):
        answer = admin.patch(url, json={}, headers={"If-Match": "*"})
        assert answer.status_code == 422, (url, answer.text)
        assert [e["field"] for e in answer.json()["errors"]][0].startswith("path/"), answer.text
