"""A visit end to end through the services: credential, door, upload, visit log, write-back."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from portner.credentials import DenyReason, DeviceKey
from portner.domain.model import DoorKind
from portner.locks.simulated import LockClock, SimulatedLock, seeded_random
from portner.services.devices import register_device
from portner.services.door_events import ingest_upload
from portner.services.ids import IdSource
from portner.services.importing import DoorSpec, import_sources
from portner.services.issuing import IssuanceRefused, issue_for_shift
from portner.services.keys import MunicipalitySecrets, load_or_create_secrets, trusted_issuers
from portner.services.queries import UnknownResident, access_log, who_can_open
from portner.services.revocation import publish_revocation_list, revoke_device
from portner.services.writeback import FolderSink, deliver_outbox
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository
from tests.services.test_importing import BASE, NID_A, M, at, occ, plan, source


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def day(engine: Engine, tmp_path: Path) -> dict[str, object]:
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)
        secrets = load_or_create_secrets(conn, tmp_path, M.id, now=at(5), seed_bytes=b"test")
        issuers = trusted_issuers(conn, M.id)
    specs = {"p1": [DoorSpec("d-1", "l-1", DoorKind.BUILDING), DoorSpec("d-2", "l-2", DoorKind.FLAT)]}
    visit_plan = plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"), occ("k2", at(15), 30, "9000001"))
    ids = IdSource(3)
    import_sources(engine, M, [*BASE, source(plans=[visit_plan])], now=at(5), ids=ids, installations=specs)
    with engine.connect() as conn:
        nurse = next(a for a in Repository(conn).actors(M.id) if a.hpr_number == "9000001")
    phone = DeviceKey.from_private_bytes(bytes(range(32)))
    device = register_device(engine, nurse.id, phone.public_key_bytes, now=at(5), ids=ids, by="test")
    clock = Clock(at(6))
    locks = {
        door: SimulatedLock(
            lock_id=lock, door_id=door, issuers=issuers, lock_key=secrets.lock_key(lock),
            clock=LockClock(clock), random=seeded_random(i),
        )
        for i, (door, lock) in enumerate((("d-1", "l-1"), ("d-2", "l-2")))
    }
    return {"secrets": secrets, "nurse": nurse, "phone": phone, "device": device, "clock": clock,
            "locks": locks, "ids": ids}


def _open(lock: SimulatedLock, phone: DeviceKey, blob: bytes) -> object:
    challenge = lock.challenge()
    return lock.present(blob, phone.sign_proof(challenge, lock.door_id, "unlock"), challenge=challenge)


def _upload(engine: Engine, day: dict, lock: SimulatedLock, now: datetime):  # type: ignore[no-untyped-def]
    secrets: MunicipalitySecrets = day["secrets"]  # type: ignore[assignment]
    with engine.connect() as conn:
        synced = conn.execute(select(t.locks.c.synced_seq).where(t.locks.c.id == lock.lock_id)).scalar()
    return ingest_upload(engine, lock.lock_id, lock.events_since(int(synced or 0)),
                         lock_key=secrets.lock_key(lock.lock_id), now=now)


def test_a_visit_opens_logs_itself_and_goes_back_to_the_record(
    engine: Engine, day: dict, tmp_path: Path
) -> None:
    secrets: MunicipalitySecrets = day["secrets"]  # type: ignore[assignment]
    creds = issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                            window_end=at(23), now=at(6), ids=day["ids"])
    assert len(creds) == 2
    assert all(len(c.blob) <= 256 for c in creds)
    # Issuing again for the same shift is idempotent.
    assert issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                           window_end=at(23), now=at(6), ids=day["ids"]) == []
    morning = next(c for c in creds if c.grant.not_before < at(9).astimezone(UTC))
    clock, locks, phone = day["clock"], day["locks"], day["phone"]
    clock.now = at(8, 2)
    assert _open(locks["d-1"], phone, morning.blob).allowed
    assert _open(locks["d-2"], phone, morning.blob).allowed
    clock.now = at(8, 31)
    locks["d-2"].record_exit(source="inside")
    # The afternoon credential does not open in the morning: the lock enforces the window.
    refused = _open(locks["d-1"], phone, next(c for c in creds if c is not morning).blob)
    assert refused.reason is DenyReason.NOT_YET_VALID
    r1 = _upload(engine, day, locks["d-1"], at(9))
    r2 = _upload(engine, day, locks["d-2"], at(9))
    assert (r1.opened, r1.denied, r1.arrivals) == (1, 1, 1)
    assert (r2.opened, r2.departures) == (1, 1)
    with engine.connect() as conn:
        visit = conn.execute(select(t.visits).where(t.visits.c.source_key == "k1")).one()
    assert visit.status == "completed"
    assert visit.arrived_at == at(8, 2).astimezone(UTC)
    assert visit.departed_at is not None
    delivered = deliver_outbox(engine, FolderSink(tmp_path / "out"), municipality_id=M.id, now=at(9))
    assert delivered.delivered == 1
    (encounter_file,) = (tmp_path / "out").glob("*.json")
    enc = json.loads(encounter_file.read_text())
    assert enc["resourceType"] == "Encounter"
    assert enc["status"] == "finished"
    assert enc["subject"]["identifier"]["value"] == NID_A
    assert enc["participant"][0]["individual"]["identifier"]["value"] == "9000001"
    assert enc["period"]["start"].startswith("2026-12-03T07:02")
    # Delivering again sends nothing twice.
    assert deliver_outbox(engine, FolderSink(tmp_path / "out"), municipality_id=M.id, now=at(9)).delivered == 0
    with engine.connect() as conn:
        resident_id = conn.execute(select(t.residents.c.id).where(t.residents.c.national_id == NID_A)).scalar()
    lines = access_log(engine, resident_id, municipality_id=M.id, reader="test:relative", now=at(10))
    with pytest.raises(UnknownResident):
        access_log(engine, resident_id, municipality_id="another", reader="test:relative", now=at(10))
    assert [(ln.door, ln.outcome) for ln in lines] == [
        ("building door", "opened"), ("flat door", "opened"), ("building door", "refused")
    ]
    with engine.connect() as conn:
        reads = conn.execute(select(t.audit_events).where(t.audit_events.c.action == "accesslog:read")).all()
        assert [r.actor for r in reads] == ["test:relative"]
        assert verify_audit(conn).ok
    who = who_can_open(engine, resident_id, at=at(10), timezone="Europe/Oslo")
    assert [w.doors for w in who] == [("d-1", "d-2")]


def test_lost_phone_is_refused_by_an_offline_lock_that_got_the_list(engine: Engine, day: dict) -> None:
    secrets: MunicipalitySecrets = day["secrets"]  # type: ignore[assignment]
    creds = issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                            window_end=at(23), now=at(6), ids=day["ids"])
    afternoon = next(c for c in creds if c.grant.not_before > at(12).astimezone(UTC))
    assert revoke_device(engine, day["device"].id, now=at(12), by="operator:test", reason="lost") == 1  # the morning one has expired
    published = publish_revocation_list(engine, secrets.issuer, M.id, now=at(12), by="test")
    assert published.version == int(at(12).timestamp() * 1000)  # survives a database restore
    again = publish_revocation_list(engine, secrets.issuer, M.id, now=at(12), by="test")
    assert again.version == published.version + 1  # strictly rising even within a millisecond
    assert published.devices == 1
    lock = day["locks"]["d-1"]
    day["clock"].now = at(13)
    assert lock.install_revocation_list(published.blob)  # carried by another nurse's phone
    day["clock"].now = at(15, 1)
    verdict = _open(lock, day["phone"], afternoon.blob)
    assert not verdict.allowed
    assert verdict.reason is DenyReason.REVOKED
    # And no new credential is issued to the revoked phone.
    with pytest.raises(IssuanceRefused):
        issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                        window_end=at(23), now=at(13), ids=day["ids"])


def test_disabled_account_gets_no_credentials(engine: Engine, day: dict) -> None:
    from sqlalchemy import update

    with engine.begin() as conn:
        conn.execute(update(t.actors).where(t.actors.c.id == day["nurse"].id).values(active=False))
    with pytest.raises(IssuanceRefused, match="disabled"):
        issue_for_shift(engine, day["secrets"].issuer, [day["device"].id], window_start=at(0),
                        window_end=at(23), now=at(6), ids=day["ids"])


def test_tampered_upload_is_flagged_and_not_stored(engine: Engine, day: dict) -> None:
    from dataclasses import replace

    lock = day["locks"]["d-1"]
    secrets: MunicipalitySecrets = day["secrets"]  # type: ignore[assignment]
    creds = issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                            window_end=at(23), now=at(6), ids=day["ids"])
    day["clock"].now = at(8, 1)
    _open(lock, day["phone"], creds[0].blob)
    events = lock.events_since(0)
    forged = [events[0], replace(events[1], allowed=True, kind="unlock", reason="ok", subject="stf-evil"), *events[2:]]
    report = ingest_upload(engine, lock.lock_id, forged, lock_key=secrets.lock_key(lock.lock_id), now=at(9))
    assert report.anomalies
    with engine.connect() as conn:
        stored = conn.execute(select(t.door_events.c.actor_id)).scalars().all()
        assert "stf-evil" not in stored
        assert conn.execute(select(t.lock_log_anomalies)).all()


def test_an_upload_without_the_lock_key_is_refused(engine: Engine, day: dict) -> None:
    lock = day["locks"]["d-1"]
    with pytest.raises(ValueError, match="lock's log key"):
        ingest_upload(engine, lock.lock_id, lock.events_since(0), lock_key=None, now=at(9))  # type: ignore[arg-type]


def test_a_withheld_newest_event_is_caught_by_the_attested_head(engine: Engine, day: dict) -> None:
    from portner.services.door_events import HeadAttestation

    secrets: MunicipalitySecrets = day["secrets"]  # type: ignore[assignment]
    lock = day["locks"]["d-1"]
    creds = issue_for_shift(engine, secrets.issuer, [day["device"].id], window_start=at(0),
                            window_end=at(23), now=at(6), ids=day["ids"])
    day["clock"].now = at(8, 1)
    _open(lock, day["phone"], creds[0].blob)  # the opening the relay will hide
    events = lock.events_since(0)
    nonce = bytes(range(16))
    head = HeadAttestation(nonce, *lock.attest_head(nonce))
    key = secrets.lock_key(lock.lock_id)
    report = ingest_upload(engine, lock.lock_id, events[:-1], lock_key=key, now=at(9), head=head)
    assert report.anomalies == ["withheld"]
    forged = HeadAttestation(nonce, head.seq - 1, head.hash, head.mac)
    report = ingest_upload(engine, lock.lock_id, [], lock_key=key, now=at(9), head=forged)
    assert report.anomalies == ["bad_head_mac"]
    # The full upload then completes the chain, with no anomaly.
    head = HeadAttestation(nonce, *lock.attest_head(nonce))
    report = ingest_upload(engine, lock.lock_id, lock.events_since(len(events) - 1), lock_key=key, now=at(9), head=head)
    assert report.anomalies == []
