"""The administrator's pages over the demo municipality: who may see them, forms that change
things (CSRF, 303 with a status message), refusals shown at the field, no national id anywhere."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from portner.config import Settings
from portner.services.devices import register_device
from portner.services.ids import IdSource
from portner.storage import tables as t
from portner.storage.db import open_database

Client = Callable[[str | None], TestClient]
NATIONAL_ID_LIKE = re.compile(r"(?<![0-9A-Za-z])\d{11}(?![0-9A-Za-z])")
PAGES = ["/admin", "/admin/residents", "/admin/locks", "/admin/staff", "/admin/accounts", "/admin/settings",
         "/admin/imports", "/admin/quarantine"]


@pytest.fixture
def admin(client_for: Client) -> TestClient:
    return client_for("demo-admin")


def _post(client: TestClient, url: str, data: dict[str, object], **kw: object) -> object:
    return client.post(url, data={"csrf": client.headers["X-CSRF-Token"], **data}, follow_redirects=False, **kw)


def _db(settings: Settings):  # type: ignore[no-untyped-def]
    return open_database(settings.db_url)


def _first(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found, pattern
    return found.group(1)


@pytest.mark.parametrize("subject", ["demo-nurse-1", "demo-operator", "demo-relative"])
def test_only_administrators_see_the_app(client_for: Client, subject: str) -> None:
    client = client_for(subject)
    assert client.get("/admin").status_code == 403
    assert _post(client, "/admin/settings", {"grace_minutes": 60}).status_code == 403  # type: ignore[attr-defined]
    anonymous = client_for(None).get("/admin/quarantine", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin")


def test_every_page_renders_without_national_ids(admin: TestClient) -> None:
    pages = list(PAGES)
    quarantine = admin.get("/admin/quarantine").text
    pages += sorted(set(re.findall(r'href="(/admin/quarantine/\d+)"', quarantine)))
    pages.append("/admin/residents/" + _first(r'href="/admin/residents/(res-[0-9a-f]+)"', admin.get("/admin/residents").text))
    pages.append("/admin/staff/" + _first(r'href="/admin/staff/(stf-[0-9a-f]+)"', admin.get("/admin/staff").text))
    for url in pages:
        answer = admin.get(url)
        assert answer.status_code == 200, url
        assert answer.text.count("<h1>") == 1, url
        assert not NATIONAL_ID_LIKE.search(answer.text), url
    english = admin.get("/admin/settings?lang=en").text
    assert "The municipality&#39;s settings" in english or "The municipality's settings" in english


def test_settings_form_saves_and_refuses_at_the_field(admin: TestClient, demo_settings: Settings) -> None:
    form = {"form": "settings", "service_model": "distributed", "lead_minutes": "15", "grace_minutes": "45",
            "baseline_key_minutes_per_shift": "25"}
    no_csrf = admin.post("/admin/settings", data=form, follow_redirects=False)
    assert no_csrf.status_code == 403
    done = _post(admin, "/admin/settings", form)
    assert done.status_code == 303 and done.headers["location"] == "/admin/settings?done=saved"  # type: ignore[attr-defined]
    page = admin.get("/admin/settings?done=saved").text
    assert 'value="45"' in page and "Lagret." in page
    engine = _db(demo_settings)
    with engine.connect() as conn:
        assert conn.execute(select(t.municipalities.c.window_grace_s)).scalar() == 45 * 60
    engine.dispose()
    refused = _post(admin, "/admin/settings", {**form, "grace_minutes": "999"})
    assert refused.status_code == 422  # type: ignore[attr-defined]
    html = refused.text  # type: ignore[attr-defined]
    assert 'aria-invalid="true"' in html and "Må være fra 0 til 240." in html
    field = _first(r'(<input id="settings-grace_minutes"[^>]*>)', html)
    assert "settings-grace_minutes-error" in field and 'value="999"' in field  # tied to the field, input kept
    assert 'id="settings-grace_minutes-error"' in html


def test_door_path_and_lock_through_the_resident_page(admin: TestClient) -> None:
    resident = _first(r'href="/admin/residents/(res-[0-9a-f]+)"', admin.get("/admin/locks").text)  # has a lock
    url = f"/admin/residents/{resident}"
    page = admin.get(url).text
    home = _first(r'action="/admin/homes/(hom-[0-9a-f]+)/doors"', page)
    doors_before = page.count('action="/admin/doors/')
    added = _post(admin, f"/admin/homes/{home}/doors", {"form": f"add-{home}", "kind": "building", "position": "1"})
    assert added.headers["location"] == f"{url}?done=door_added"  # type: ignore[attr-defined]
    page = admin.get(added.headers["location"]).text  # type: ignore[attr-defined]
    assert "Døren er lagt til." in page and "Dør 1: Inngangsdør (bygg)" in page
    new_door = _first(r'action="/admin/doors/(d-[0-9a-f]+)/lock"', page)
    installed = _post(admin, f"/admin/doors/{new_door}/lock", {"form": f"lock-{new_door}", "model": "SimLock B1"})
    assert installed.headers["location"].endswith("done=lock_installed")  # type: ignore[attr-defined]
    page = admin.get(url).text
    lock = _first(r'action="/admin/locks/(l-[0-9a-f]+)/remove"', page)
    assert "SimLock B1" in page
    refused = _post(admin, f"/admin/doors/{new_door}/remove", {"form": f"remove-{new_door}"})
    assert refused.status_code == 409 and "Fjern låsen først" in refused.text  # type: ignore[attr-defined]
    assert _post(admin, f"/admin/locks/{lock}/remove", {"form": f"unlock-{new_door}"}).status_code == 303  # type: ignore[attr-defined]
    moved = _post(admin, f"/admin/doors/{new_door}/move", {"form": f"move-{new_door}", "position": "2"})
    assert moved.status_code == 303  # type: ignore[attr-defined]
    assert _post(admin, f"/admin/doors/{new_door}/remove", {"form": f"remove-{new_door}"}).status_code == 303  # type: ignore[attr-defined]
    assert admin.get(url).text.count('action="/admin/doors/') == doors_before
    assert _post(admin, "/admin/doors/d-nowhere/remove", {"form": "remove-x"}).status_code == 404  # type: ignore[attr-defined]


def test_the_resident_page_installs_a_real_lock_by_its_address(admin: TestClient, demo_settings: Settings) -> None:
    resident = _first(r'href="/admin/residents/(res-[0-9a-f]+)"', admin.get("/admin/locks").text)
    url = f"/admin/residents/{resident}"
    home = _first(r'action="/admin/homes/(hom-[0-9a-f]+)/doors"', admin.get(url).text)
    for _ in range(2):
        assert _post(admin, f"/admin/homes/{home}/doors", {"form": f"add-{home}", "kind": "other",  # type: ignore[attr-defined]
                                                            "position": "1"}).status_code == 303
    page = admin.get(url).text
    door, other = re.findall(r'action="/admin/doors/(d-[0-9a-f]+)/lock"', page)[:2]
    backend = _first(rf'(<select id="lock-{door}-backend"[^>]*>)', page)  # labelled, and the choice is there
    assert f'<label for="lock-{door}-backend">Låssystem for dør 1</label>' in page and 'name="backend"' in backend
    assert '<option value="zigbee2mqtt">Zigbee (Zigbee2MQTT)</option>' in page
    address = _first(rf'(<input id="lock-{door}-address"[^>]*>)', page)
    assert f'<label for="lock-{door}-address">Låsens adresse for dør 1</label>' in page
    assert f'aria-describedby="lock-{door}-address-hint"' in address

    form = {"form": f"lock-{door}", "backend": "zigbee2mqtt", "address": "", "model": "Keypad K1"}
    missing = _post(admin, f"/admin/doors/{door}/lock", form)
    assert missing.status_code == 422  # type: ignore[attr-defined]
    html = missing.text  # type: ignore[attr-defined]
    assert f'id="lock-{door}-address-error"' in html and "trenger adressen sin" in html
    assert 'aria-invalid="true"' in _first(rf'(<input id="lock-{door}-address"[^>]*>)', html)
    assert '<option value="zigbee2mqtt" selected>' in html  # the choice is kept

    installed = _post(admin, f"/admin/doors/{door}/lock", {**form, "address": "front-door-12"})
    assert installed.headers["location"].endswith("done=lock_installed")  # type: ignore[attr-defined]
    engine = _db(demo_settings)
    with engine.connect() as conn:
        row = conn.execute(select(t.locks.c.backend, t.locks.c.address).join(
            t.doors, t.doors.c.lock_id == t.locks.c.id).where(t.doors.c.id == door)).one()
    engine.dispose()
    assert (row.backend, row.address) == ("zigbee2mqtt", "front-door-12")
    assert "<code>front-door-12</code>" in admin.get(url).text and "<code>front-door-12</code>" in admin.get("/admin/locks").text

    taken = _post(admin, f"/admin/doors/{other}/lock", {**form, "form": f"lock-{other}", "address": "front-door-12"})
    assert taken.status_code == 409  # type: ignore[attr-defined]
    html = taken.text  # type: ignore[attr-defined]
    assert f'id="lock-{other}-address-error"' in html and 'value="front-door-12"' in _first(
        rf'(<input id="lock-{other}-address"[^>]*>)', html)
    english = _post(admin, f"/admin/doors/{other}/lock?lang=en", {**form, "form": f"lock-{other}",
                                                                  "address": "front-door-12"})
    assert "Another mounted lock of the same lock system already has this address." in english.text  # type: ignore[attr-defined]


def test_staff_phone_revoked_and_account_disabled(admin: TestClient, demo_settings: Settings) -> None:
    added = _post(admin, "/admin/staff", {"form": "staff", "display_name": "Kari Nordmann", "role": "home_nursing",
                                          "organisation": "Hjemmetjenesten", "hpr_number": "91x"})
    assert added.status_code == 422 and "Bare sifre." in added.text  # type: ignore[attr-defined]
    added = _post(admin, "/admin/staff", {"form": "staff", "display_name": "Kari Nordmann", "role": "home_nursing",
                                          "organisation": "Hjemmetjenesten", "hpr_number": "9199999"})
    assert added.headers["location"] == "/admin/staff?done=staff_added"  # type: ignore[attr-defined]
    engine = _db(demo_settings)
    with engine.connect() as conn:
        staff = conn.execute(select(t.actors.c.id).where(t.actors.c.hpr_number == "9199999")).scalar_one()
    device = register_device(engine, staff, bytes(range(32)), now=__import__("portner.bootstrap").bootstrap.utcnow(),
                             ids=IdSource(), by="test")
    page = admin.get(f"/admin/staff/{staff}").text
    assert device.id in page
    no_reason = _post(admin, f"/admin/devices/{device.id}/revoke", {"form": f"revoke-{device.id}", "reason": ""})
    assert no_reason.status_code == 422  # type: ignore[attr-defined]
    revoked = _post(admin, f"/admin/devices/{device.id}/revoke", {"form": f"revoke-{device.id}", "reason": "mistet"})
    assert revoked.headers["location"] == f"/admin/staff/{staff}?done=device_revoked"  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(select(t.devices.c.status).where(t.devices.c.id == device.id)).scalar() == "revoked"
    made = _post(admin, "/admin/accounts", {"form": "account", "role": "nurse", "issuer": "https://idp.example",
                                            "subject": "kari", "actor_id": staff, "display_name": "Kari"})
    assert made.headers["location"] == "/admin/accounts?done=account_created"  # type: ignore[attr-defined]
    with engine.connect() as conn:
        account = conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == "kari")).scalar_one()
    assert _post(admin, f"/admin/accounts/{account}/disable", {"form": f"toggle-{account}"}).status_code == 303  # type: ignore[attr-defined]
    deactivate = _post(admin, f"/admin/staff/{staff}", {"form": f"toggle-{staff}", "active": "false"})
    assert deactivate.status_code == 303  # type: ignore[attr-defined]
    with engine.connect() as conn:
        assert conn.execute(select(t.accounts.c.disabled_at).where(t.accounts.c.id == account)).scalar()
        assert conn.execute(select(t.actors.c.active).where(t.actors.c.id == staff)).scalar() is False
    engine.dispose()


def _entry_id(admin: TestClient, resource: str) -> str:
    page = admin.get("/admin/quarantine").text
    row = next(r for r in page.split("<tr>") if f">{resource}<" in r)
    return _first(r'href="/admin/quarantine/(\d+)"', row)


def test_quarantine_corrected_by_upload_and_dismissed(admin: TestClient, demo_settings: Settings) -> None:
    entry = _entry_id(admin, "CarePlan/cp-bad-end-before-start")
    plan_file = Path(demo_settings.data_dir) / "care-record" / "plans" / "CarePlan-bad-end-before-start.json"
    plan = json.loads(plan_file.read_text())
    still_bad = _post(admin, f"/admin/quarantine/{entry}/correct", {"form": "correct", "resource": json.dumps(plan)})
    assert still_bad.status_code == 200 and "har fortsatt feil" in still_bad.text  # type: ignore[attr-defined]
    bounds = plan["activity"][0]["detail"]["scheduledTiming"]["repeat"]["boundsPeriod"]
    bounds["start"], bounds["end"] = bounds["end"], bounds["start"]
    fixed = _post(admin, f"/admin/quarantine/{entry}/correct", {"form": "correct", "resource": ""},
                  files={"file": ("plan.json", json.dumps(plan).encode(), "application/fhir+json")})
    assert fixed.headers["location"] == "/admin/quarantine?done=corrected"  # type: ignore[attr-defined]
    assert f'href="/admin/quarantine/{entry}"' not in admin.get("/admin/quarantine").text
    other = _entry_id(admin, "CarePlan/cp-bad-unknown-profile")
    empty = _post(admin, f"/admin/quarantine/{other}/dismiss", {"form": "dismiss", "reason": " "})
    assert empty.status_code == 422 and 'id="dismiss-reason-error"' in empty.text  # type: ignore[attr-defined]
    dismissed = _post(admin, f"/admin/quarantine/{other}/dismiss", {"form": "dismiss", "reason": "ikke vår plan"})
    assert dismissed.headers["location"] == "/admin/quarantine?done=dismissed"  # type: ignore[attr-defined]
    assert "Oppføringen er avvist." in admin.get("/admin/quarantine?done=dismissed").text
