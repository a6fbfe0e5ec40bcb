"""From FHIR text to the lock's decision on the nights the clocks change in Oslo."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine

from portner.credentials import DenyReason, DeviceKey
from portner.fhir import read_text
from portner.locks.simulated import LockClock, SimulatedLock, seeded_random
from portner.services.devices import register_device
from portner.services.ids import IdSource
from portner.services.importing import import_sources
from portner.services.issuing import issue_for_shift
from portner.services.keys import load_or_create_secrets, trusted_issuers
from portner.storage.repository import Repository
from tests.services.test_importing import M

OSLO = ZoneInfo("Europe/Oslo")


def _synthetic_nid() -> str:
    """A synthetic test-registry number (11 November 1980, month + 80) with valid check digits."""
    from portner.domain.national_id import check_digits

    for individual in range(100, 200):
        first = f"1191{80:02d}{individual}"
        digits = check_digits(first)
        if digits is not None:
            return first + digits
    raise AssertionError("no valid synthetic number found")


def _bundle(nid: str, start: str, end: str) -> str:
    sone = "http://ehelse.no/fhir/StructureDefinition/vkp-sone"
    elock = "http://ehelse.no/fhir/StructureDefinition/vkp-elock"
    return json.dumps(
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [
                {"resource": {
                    "resourceType": "Patient", "id": "p-night",
                    "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": nid}],
                    "name": [{"given": ["Natt"], "family": "Testperson"}],
                    "extension": [{"url": sone, "valueString": "Testkommune|Nord|Sone 1"}],
                    "address": [{"line": ["Nattveien 1"], "city": "Oslo",
                                 "extension": [{"url": elock, "valueString": "Simulert lås"}]}],
                }},
                {"resource": {
                    "resourceType": "Practitioner", "id": "n-night",
                    "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9100001"}],
                    "name": [{"given": ["Nattevakt"], "family": "Test"}],
                }},
                {"resource": {
                    "resourceType": "CarePlan", "id": "cp-night", "status": "active", "intent": "plan",
                    "identifier": [{"system": "urn:test", "value": "cp-night"}],
                    "category": [{"coding": [{
                        "system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category",
                        "code": "3", "display": "besoksplan"}]}],
                    "subject": {"identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": nid}},
                    "activity": [{"detail": {
                        "status": "scheduled",
                        "scheduledTiming": {"repeat": {"boundsPeriod": {"start": start, "end": end}}},
                        "performer": [{"identifier": {
                            "system": "urn:oid:2.16.578.1.12.4.1.4.4", "value": "9100001"}}],
                        "description": "Nattilsyn",
                    }}],
                }},
            ],
        }
    )


@pytest.mark.parametrize(
    ("start", "end", "real_minutes"),
    [
        # Autumn: 01:30 CEST to 02:30 CET spans the repeated hour: two real hours.
        ("2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+01:00", 120),
        # Spring: 01:30 CET to 03:30 CEST spans the missing hour: one real hour.
        ("2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00", 60),
        # An ordinary overnight visit.
        ("2026-12-03T23:30:00+01:00", "2026-12-04T00:30:00+01:00", 60),
    ],
)
def test_the_lock_opens_exactly_within_the_window_in_real_time(
    engine: Engine, tmp_path: Path, start: str, end: str, real_minutes: int
) -> None:
    start_at = datetime.fromisoformat(start)
    end_at = datetime.fromisoformat(end)
    assert end_at - start_at == timedelta(minutes=real_minutes)
    nid = _synthetic_nid()
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)
        secrets = load_or_create_secrets(conn, tmp_path, M.id, now=start_at - timedelta(days=1))
        issuers = trusted_issuers(conn, M.id)
    source = read_text(
        _bundle(nid, start, end), "night.json", timezone="Europe/Oslo",
        horizon_start=start_at - timedelta(days=1), horizon_end=start_at + timedelta(days=1),
        accept_synthetic_ids=True,
    )
    assert not [p for p in source.problems if p.severity.value == "error"], source.problems
    ids = IdSource(9)
    report = import_sources(engine, M, [source], now=start_at - timedelta(hours=12), ids=ids)
    assert (report.visits_added, report.grants_created) == (1, 1)
    with engine.connect() as conn:
        nurse = Repository(conn).actors(M.id)[0]
        door = next(iter(Repository(conn).door_paths(M.id).values()))[0]
    phone = DeviceKey.from_private_bytes(bytes(range(1, 33)))
    device = register_device(engine, nurse.id, phone.public_key_bytes, now=start_at - timedelta(hours=12), ids=ids, by="test")
    (cred,) = issue_for_shift(
        engine, secrets.issuer, [device.id], window_start=start_at - timedelta(hours=6),
        window_end=end_at + timedelta(hours=6), now=start_at - timedelta(hours=6), ids=ids,
    )
    now = {"t": start_at}
    lock = SimulatedLock(
        lock_id="l-night", door_id=door, issuers=issuers, lock_key=secrets.lock_key("l-night"),
        clock=LockClock(lambda: now["t"]), random=seeded_random(1), skew=timedelta(seconds=0),
    )

    def attempt(at: datetime) -> DenyReason:
        now["t"] = at
        challenge = lock.challenge()
        verdict = lock.present(cred.blob, phone.sign_proof(challenge, door, "unlock"), challenge=challenge)
        return verdict.reason

    lead, grace = M.window_lead, M.window_grace
    assert attempt(start_at - lead - timedelta(seconds=1)) is DenyReason.NOT_YET_VALID
    assert attempt(start_at - lead) is DenyReason.OK
    assert attempt(start_at + timedelta(minutes=real_minutes // 2)) is DenyReason.OK
    assert attempt(end_at + grace - timedelta(seconds=1)) is DenyReason.OK
    assert attempt(end_at + grace) is DenyReason.EXPIRED
    # The window is the same whatever the wall clock said: check it in UTC too.
    assert cred.grant.not_before == (start_at - lead).astimezone(UTC)
    assert cred.grant.not_after == (end_at + grace).astimezone(UTC)
    assert start_at.astimezone(OSLO).tzname() in ("CET", "CEST")
