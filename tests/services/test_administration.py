"""The administrator's changes on both databases: settings, directory, door paths and their door
keys, staff, accounts, and correcting the import quarantine through the real FHIR import."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from portner.domain.model import Municipality, MunicipalityId
from portner.domain.national_id import check_digits
from portner.fhir import read_text
from portner.services.accounts import DEV_ISSUER, sign_in_issuers
from portner.services.administration import Administration, InvalidChange, NotFound, Refused
from portner.services.devices import register_device
from portner.services.ids import IdSource
from portner.services.importing import import_sources
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository

NOW = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
M = Municipality(id=MunicipalityId("m1"), name="Testkommune", accept_synthetic_ids=True)
ADMIN = "account:acc-admin"
HPR = "9100002"


def synthetic_nid(day: str = "11", individual: int = 123) -> str:
    """A synthetic national id (month + 80) with valid check digits."""
    while True:
        first = f"{day}9145{individual:03d}"
        digits = check_digits(first)
        if digits:
            return first + digits
        individual += 1


NID = synthetic_nid()
ELOCK_EXT = "http://ehelse.no/fhir/StructureDefinition/vkp-elock-v090"
SONE_EXT = "http://ehelse.no/fhir/StructureDefinition/vkp-sone-v090"


def patient_json(nid: str = NID, *, pid: str = "pat-1") -> dict[str, Any]:
    return {
        "resourceType": "Patient", "id": pid,
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": nid}],
        "name": [{"family": "Strand", "given": ["Torill"], "use": "official"}],
        "extension": [{"url": SONE_EXT, "valueString": "Testkommune|Nord|Sone 1"}],
        "address": [{"use": "home", "line": ["Lyngåsen 76"], "city": "Testkommune",
                     "extension": [{"url": ELOCK_EXT, "valueString": "Portner simulert lås"}]}],
    }


PRACTITIONER = {
    "resourceType": "Practitioner", "id": "prac-1",
    "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": HPR}],
    "name": [{"family": "Lunde", "given": ["Hanne"]}],
}


def careplan_json(start: str, end: str, *, pid: str = "cp-1") -> dict[str, Any]:
    return {
        "resourceType": "CarePlan", "id": pid, "status": "active", "intent": "plan",
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{pid}"}],
        "meta": {"profile": ["http://ehelse.no/fhir/StructureDefinition/vkp-CarePlan-v090"]},
        "category": [{"coding": [{"code": "3", "system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category-v090"}]}],
        "subject": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": NID}},
        "activity": [{"detail": {
            "status": "scheduled", "description": "Tilsyn",
            "performer": [{"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": HPR}}],
            "scheduledTiming": {"repeat": {"boundsPeriod": {"start": start, "end": end}}},
        }}],
    }


GOOD_PLAN = careplan_json("2026-12-03T10:00:00+01:00", "2026-12-03T10:30:00+01:00")
BAD_PLAN = careplan_json("2026-12-03T10:30:00+01:00", "2026-12-03T10:00:00+01:00", pid="cp-bad")


def _import(engine: Engine, name: str, resource: dict[str, Any]) -> None:
    source = read_text(json.dumps(resource), name, timezone="Europe/Oslo", horizon_start=NOW - timedelta(days=1),
                       horizon_end=NOW + timedelta(days=14), accept_synthetic_ids=True)
    import_sources(engine, M, [source], now=NOW, ids=IdSource())


@pytest.fixture
def admin(engine: Engine) -> Administration:
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)
    _import(engine, "staff.json", PRACTITIONER)
    _import(engine, "patient.json", patient_json())
    _import(engine, "plan.json", GOOD_PLAN)
    return Administration(engine, M.id, ADMIN, NOW, IdSource(), account_id="acc-admin")


def _one(engine: Engine, stmt: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(stmt).first()


def _home(engine: Engine) -> Any:
    return _one(engine, select(t.homes))


def _doors(engine: Engine, home_id: str) -> list[tuple[str, int, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.doors).where(t.doors.c.home_id == home_id).order_by(t.doors.c.position))
        return [(r.id, r.position, r.lock_id) for r in rows]


def _active_grants(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.grants).where(t.grants.c.status == "active")))


def _actions(engine: Engine, actor: str = ADMIN) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(t.audit_events.c.action).where(t.audit_events.c.actor == actor)
                                 .order_by(t.audit_events.c.seq)).scalars())


def test_settings_change_with_audit_and_bad_values_name_the_field(admin: Administration) -> None:
    admin.update_municipality({"grace_minutes": 45, "service_model": "central",
                               "baseline_key_minutes_per_shift": 20.5})
    with admin.engine.connect() as conn:
        m = Repository(conn).get_municipality(M.id)
    assert m is not None
    assert (m.window_grace, m.service_model.value, m.baseline_key_minutes_per_shift) == (
        timedelta(minutes=45), "central", 20.5)
    assert _actions(admin.engine) == ["municipality:updated"]
    for changes, name in [({"grace_minutes": 241}, "grace_minutes"),
                          ({"lead_minutes": 2.5}, "lead_minutes"),
                          ({"service_model": "remote"}, "service_model"),
                          ({"lead_minutes": 10, "timezone": "UTC"}, "timezone")]:
        with pytest.raises(InvalidChange) as caught:
            admin.update_municipality(changes)
        assert caught.value.field == name
    with admin.engine.connect() as conn:
        assert Repository(conn).get_municipality(M.id).window_lead == timedelta(minutes=15)  # type: ignore[union-attr]
    assert _actions(admin.engine) == ["municipality:updated"]  # nothing half-written


def test_resident_name_and_zone(admin: Administration) -> None:
    resident = _one(admin.engine, select(t.residents))
    admin.update_resident(resident.id, {"display_name": "  Torill S. Strand ", "zone_id": None})
    after = _one(admin.engine, select(t.residents))
    assert (after.display_name, after.zone_id) == ("Torill S. Strand", None)
    with pytest.raises(InvalidChange) as caught:
        admin.update_resident(resident.id, {"zone_id": "zon-nowhere"})
    assert caught.value.field == "zone_id"
    with pytest.raises(InvalidChange):
        admin.update_resident(resident.id, {"display_name": ""})
    other = Administration(admin.engine, "m2", ADMIN, NOW, IdSource())
    with pytest.raises(NotFound):
        other.update_resident(resident.id, {"display_name": "X"})


def test_door_path_add_reorder_and_remove(admin: Administration) -> None:
    home = _home(admin.engine)
    [(flat, _, flat_lock)] = _doors(admin.engine, home.id)
    building = admin.add_door(home.id, "building", position=1)
    stair = admin.add_door(home.id, "stairwell", position=2)
    assert [d[0] for d in _doors(admin.engine, home.id)] == [building, stair, flat]
    assert [d[1] for d in _doors(admin.engine, home.id)] == [0, 1, 2]
    admin.update_door(stair, {"position": 3})
    assert [d[0] for d in _doors(admin.engine, home.id)] == [building, flat, stair]
    admin.reorder_doors(home.id, [stair, building, flat])
    assert [d[0] for d in _doors(admin.engine, home.id)] == [stair, building, flat]
    with pytest.raises(InvalidChange) as caught:
        admin.reorder_doors(home.id, [stair, flat])
    assert caught.value.field == "door_ids"
    with pytest.raises(InvalidChange) as caught:
        admin.add_door(home.id, "garage")
    assert caught.value.field == "kind"
    with pytest.raises(InvalidChange) as caught:
        admin.add_door(home.id, "flat", position=9)
    assert caught.value.field == "position"
    with pytest.raises(Refused):
        admin.remove_door(flat)  # it has a lock
    admin.remove_door(stair)
    assert [(d[0], d[1]) for d in _doors(admin.engine, home.id)] == [(building, 0), (flat, 1)]
    assert flat_lock is not None
    assert _actions(admin.engine).count("door:added") == 2


def test_a_new_lock_regrants_coming_visits_and_removal_keeps_the_door(admin: Administration) -> None:
    home = _home(admin.engine)
    [(flat, _, _)] = _doors(admin.engine, home.id)
    [before] = _active_grants(admin.engine)
    assert before.door_ids == [flat]
    building = admin.add_door(home.id, "building", position=1)
    assert [g.id for g in _active_grants(admin.engine)] == [before.id]  # a door without a lock changes no key
    lock = admin.install_lock(building, "simulated", "SimLock B1")
    [after] = _active_grants(admin.engine)
    assert after.id != before.id and after.door_ids == [building, flat]
    assert after.visit_id == before.visit_id and after.actor_id == before.actor_id
    with pytest.raises(Refused):
        admin.install_lock(building)
    with pytest.raises(InvalidChange) as caught:
        admin.install_lock(flat, "acme-cloud")
    assert caught.value.field == "backend"
    admin.remove_lock(lock)
    assert _one(admin.engine, select(t.locks).where(t.locks.c.id == lock)) is None  # no log to keep
    assert [d[2] for d in _doors(admin.engine, home.id)][0] is None
    admin.remove_door(building)
    with admin.engine.connect() as conn:
        assert verify_audit(conn).ok


def test_taking_the_elock_away_revokes_and_giving_it_back_grants(admin: Administration) -> None:
    home = _home(admin.engine)
    assert len(_active_grants(admin.engine)) == 1
    admin.update_home(home.id, {"elock_system": None, "address": "Lyngåsen 78"})
    assert _active_grants(admin.engine) == []
    assert (_home(admin.engine).address, _home(admin.engine).elock_system) == ("Lyngåsen 78", None)
    admin.update_home(home.id, {"elock_system": "Portner simulert lås"})
    assert len(_active_grants(admin.engine)) == 1
    assert _actions(admin.engine).count("grant:revoked") == 1


def test_staff_and_their_devices(admin: Administration) -> None:
    staff = admin.add_staff("Kari Nordmann", "home_nursing", "Hjemmetjenesten", hpr_number="9100077")
    with pytest.raises(InvalidChange) as caught:
        admin.add_staff("Ola", "home_nursing", "Hjemmetjenesten", hpr_number=HPR)
    assert caught.value.field == "hpr_number"
    with pytest.raises(InvalidChange) as caught:
        admin.add_staff("Ola", "relative", "Hjemmetjenesten")
    assert caught.value.field == "role"
    device = register_device(admin.engine, staff, bytes(32), now=NOW, ids=IdSource(), by=ADMIN)
    assert [d["status"] for d in admin.devices_of(staff)] == ["active"]
    admin.revoke_device(device.id, "lost on the bus")
    assert [d["status"] for d in admin.devices_of(staff)] == ["revoked"]
    admin.update_staff(staff, {"active": False})
    assert _one(admin.engine, select(t.actors.c.active).where(t.actors.c.id == staff)).active is False
    with pytest.raises(InvalidChange):
        admin.update_staff(staff, {"active": "no"})
    with pytest.raises(NotFound):
        admin.devices_of("stf-unknown")


def test_accounts_created_disabled_and_never_your_own(admin: Administration) -> None:
    staff = admin.add_staff("Kari Nordmann", "home_nursing", "Hjemmetjenesten")
    account = admin.create_account(role="nurse", issuer="https://idp.example", subject="kari",
                                   actor_id=staff, display_name="Kari")
    with pytest.raises(InvalidChange) as caught:
        admin.create_account(role="nurse", issuer="https://idp.example", subject="x")
    assert caught.value.field == "actor_id"
    with pytest.raises(InvalidChange) as caught:
        admin.create_account(role="integration", issuer="https://idp.example", subject="cr",
                             scopes=["everything"])
    assert caught.value.field == "scopes"
    with pytest.raises(Refused):  # the same sign-in twice
        admin.create_account(role="nurse", issuer="https://idp.example", subject="kari", actor_id=staff)
    admin.set_account_disabled(account, True)
    assert _one(admin.engine, select(t.accounts.c.disabled_at).where(t.accounts.c.id == account)).disabled_at
    with pytest.raises(Refused):
        admin.set_account_disabled("acc-admin", True)
    with pytest.raises(NotFound):
        admin.set_account_disabled("acc-elsewhere", True)


IDP = "https://idp.example.no"


@pytest.mark.parametrize(("provider", "development", "accepted", "refused"), [
    # Production: the provider's issuer alone, exactly (sign-in matches it so).
    (IDP, False, [IDP], [IDP + "/", DEV_ISSUER, "https://other.example.no"]),
    (None, False, [], [IDP, DEV_ISSUER]),  # no provider: none could sign in
    # Development: the provider's and the development sign-in's, or any while there is no provider.
    (IDP, True, [IDP, DEV_ISSUER], [IDP + "/", "https://other.example.no"]),
    (None, True, [IDP, DEV_ISSUER, "https://other.example.no"], []),
])
def test_an_account_is_of_an_issuer_that_can_sign_in_here(
        admin: Administration, provider: str | None, development: bool, accepted: list[str],
        refused: list[str]) -> None:
    admin = replace(admin, issuers=sign_in_issuers(provider, development=development))
    for n, issuer in enumerate(refused):
        with pytest.raises(InvalidChange) as caught:
            admin.create_account(role="admin", issuer=issuer, subject=f"refused-{n}")
        assert caught.value.field == "issuer" and "PORTNER_OIDC_ISSUER" in caught.value.message
    for n, issuer in enumerate(accepted):
        admin.create_account(role="admin", issuer=issuer, subject=f"accepted-{n}")
    with admin.engine.connect() as conn:
        assert sorted(conn.execute(select(t.accounts.c.issuer)).scalars()) == sorted(accepted)


@pytest.mark.parametrize("development", [False, True])
def test_an_issuer_is_compared_as_sign_in_compares_it(admin: Administration, development: bool) -> None:
    # Sign-in matches the token's issuer exactly: surrounding blanks are trimmed (as from every
    # field), but another case, a look-alike letter, another Unicode form or a missing or extra
    # "/" is another issuer; an empty or overlong one is refused at the field as any text is.
    provider = IDP + "/r\u00e9alm"  # é as one code point (NFC)
    admin = replace(admin, issuers=sign_in_issuers(provider, development=development))
    other = "issuer_not_provider"
    refused = [(provider.upper(), other), (IDP.upper() + "/r\u00e9alm", other),
               (provider.replace("e", "\u0435"), other),  # a Cyrillic e (U+0435) in the host
               (IDP + "/re\u0301alm", other),  # é as e and a combining accent (NFD)
               (provider + "/", other), (IDP, other), (provider + "\u200b", other),  # a zero-width space
               ("", "required"), ("   ", "required"), ("x" * 301, "too_long"), (provider + "\u0000", "control")]
    for n, (issuer, code) in enumerate(refused):
        with pytest.raises(InvalidChange) as caught:
            admin.create_account(role="admin", issuer=issuer, subject=f"refused-{n}")
        assert (caught.value.field, caught.value.code) == ("issuer", code), repr(issuer)
    admin.create_account(role="admin", issuer=f"  {provider}\t", subject="trimmed")
    with admin.engine.connect() as conn:
        assert list(conn.execute(select(t.accounts.c.issuer, t.accounts.c.subject))) == [(provider, "trimmed")]


def _bad_entry(admin: Administration) -> Any:
    _import(admin.engine, "bad-plan.json", BAD_PLAN)
    [entry] = admin.quarantine()
    assert entry.resource == "CarePlan/cp-bad" and "before it starts" in entry.message
    return entry


def test_a_correction_that_imports_cleanly_resolves_the_entry(admin: Administration) -> None:
    entry = _bad_entry(admin)
    still_bad = admin.correct_quarantine(entry.id, json.dumps(BAD_PLAN))
    assert not still_bad.resolved and "before it starts" in still_bad.problems[0][1]
    assert [e.id for e in admin.quarantine()] == [entry.id]  # no second entry for the same problem
    fixed = careplan_json("2026-12-03T12:00:00+01:00", "2026-12-03T12:30:00+01:00", pid="cp-bad")
    result = admin.correct_quarantine(entry.id, json.dumps(fixed))
    assert result.resolved and result.resolved_ids == (entry.id,)
    assert result.report.visits_added == 1 and result.report.grants_created == 1
    assert admin.quarantine() == []
    assert admin.quarantine(include_resolved=True)[0].resolved_at == NOW
    assert "quarantine:corrected" in _actions(admin.engine)
    with pytest.raises(Refused):
        admin.correct_quarantine(entry.id, json.dumps(fixed))


def test_a_correction_of_a_plan_of_many_visits_resolves_the_entry(admin: Administration) -> None:
    # One care plan of hourly visits over the two weeks' horizon: more visits and grants than
    # importing.BULK_ROWS, as a correction of one resource can be.
    entry = _bad_entry(admin)
    fixed = careplan_json("2026-12-03T12:00:00+01:00", "2026-12-03T12:30:00+01:00", pid="cp-bad")
    fixed["activity"][0]["detail"]["scheduledTiming"] = {"repeat": {
        "boundsPeriod": {"start": "2026-12-03", "end": "2026-12-16"}, "duration": 20, "durationUnit": "min",
        "timeOfDay": [f"{hour:02d}:00:00" for hour in range(24)]}}
    result = admin.correct_quarantine(entry.id, json.dumps(fixed))
    assert result.resolved and result.report.visits_added + result.report.grants_created >= 500
    assert admin.quarantine() == []


def test_a_correction_must_be_one_readable_resource_of_the_same_kind(admin: Administration) -> None:
    entry = _bad_entry(admin)
    audit_before = _one(admin.engine, select(func.count()).select_from(t.audit_events))[0]
    for text, words in [("{not json", "not valid JSON"), (json.dumps(patient_json()), "must be one too"),
                        (json.dumps(careplan_json("2026-12-03T12:00:00+01:00", "2026-12-03T12:30:00+01:00",
                                                  pid="cp-other")), "keep the resource id"),
                        ("", "paste or upload")]:
        with pytest.raises(InvalidChange) as caught:
            admin.correct_quarantine(entry.id, text)
        assert caught.value.field == "resource" and words in caught.value.message
    # Refused before the import: nothing was written.
    assert _one(admin.engine, select(func.count()).select_from(t.audit_events))[0] == audit_before


def test_dismiss_with_a_reason_and_import_status(admin: Administration) -> None:
    entry = _bad_entry(admin)
    with pytest.raises(InvalidChange) as caught:
        admin.dismiss_quarantine(entry.id, "  ")
    assert caught.value.field == "reason"
    admin.dismiss_quarantine(entry.id, "plan withdrawn by the care record, 01019012345 called")
    assert admin.quarantine() == []
    with admin.engine.connect() as conn:
        details = conn.execute(select(t.audit_events.c.details)
                               .where(t.audit_events.c.action == "quarantine:dismissed")).scalar_one()
    assert "01019012345" not in json.dumps(details)
    status = {row["plan_key"]: row for row in admin.import_status()}
    assert status["urn:ietf:rfc:3986|urn:uuid:cp-1"]["visits"] == 1
    assert status["urn:ietf:rfc:3986|urn:uuid:cp-1"]["source_file"] == "plan.json"


def test_inside_a_callers_transaction_everything_rolls_back_together(admin: Administration) -> None:
    from portner.services.administration import InTransaction

    staff = admin.add_staff("Kari Nordmann", "home_nursing", "Hjemmetjenesten")
    with pytest.raises(RuntimeError), admin.engine.begin() as conn:  # type: ignore[union-attr]
        inner = Administration(InTransaction(conn), M.id, ADMIN, NOW, IdSource())
        inner.create_account(role="nurse", issuer="https://idp.example", subject="kari", actor_id=staff)
        inner.update_municipality({"grace_minutes": 60})
        raise RuntimeError("the caller's transaction fails after the changes")
    assert _one(admin.engine, select(t.accounts.c.id)) is None
    assert _one(admin.engine, select(t.municipalities.c.window_grace_s)).window_grace_s == 1800


def test_control_characters_are_refused_by_name(admin: Administration) -> None:
    resident = _one(admin.engine, select(t.residents))
    with pytest.raises(InvalidChange) as caught:
        admin.update_resident(resident.id, {"display_name": "Tor\x00ill"})
    assert (caught.value.field, caught.value.code) == ("display_name", "control")
    admin.update_resident(resident.id, {"display_name": "Torill\tStrand"})  # tabs and newlines are text
