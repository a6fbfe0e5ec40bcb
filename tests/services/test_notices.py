"""Notices on both databases: grants and openings outside a visit become notices and SMS, once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, insert, select

from portner.credentials import DeviceKey
from portner.domain.model import Actor, ActorId, DoorKind, GrantOrigin, MunicipalityId, Role
from portner.locks.simulated import LockClock, SimulatedLock, seeded_random
from portner.services.devices import register_device
from portner.services.door_events import ingest_upload
from portner.services.ids import IdSource
from portner.services.importing import DoorSpec, import_sources
from portner.services.issuing import IssuedCredential, issue_for_shift
from portner.services.keys import load_or_create_secrets, trusted_issuers
from portner.services.notices import (
    KIND_GRANTED,
    KIND_OUTSIDE_VISIT,
    LOOKBACK,
    mark_read,
    notices_for,
    sms_text,
    sweep_notices,
    unread_count,
    who_kind,
)
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository
from tests.services.test_door_day import Clock, _open
from tests.services.test_importing import BASE, NID_A, NID_B, M, at, occ, patient, plan, source

RELATIVE_PHONE = "+4791234567"
PLUMBER = "Rørlegger Berg"


class Home:
    """One resident with a building door and a flat door, a nurse's visit 08:00-08:30, two
    relatives (one with a phone), and a plumber who can be given one-time access."""

    def __init__(self, engine: Engine, tmp_path: Path) -> None:
        self.engine = engine
        self.ids = IdSource(7)
        with engine.begin() as conn:
            Repository(conn).add_municipality(M)
            self.secrets = load_or_create_secrets(conn, tmp_path, M.id, now=at(5), seed_bytes=b"test")
            issuers = trusted_issuers(conn, M.id)
        specs = {
            "p1": [DoorSpec("d-1", "l-1", DoorKind.BUILDING), DoorSpec("d-2", "l-2", DoorKind.FLAT)],
            "p3": [DoorSpec("d-3", "l-3", DoorKind.FLAT)],
        }
        visit_plan = plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))
        third = source(patients=[patient("p3", "03914512345")])
        import_sources(engine, M, [*BASE, third, source(plans=[visit_plan])], now=at(5), ids=self.ids,
                       installations=specs)
        with engine.begin() as conn:
            repo = Repository(conn)
            self.resident = conn.execute(
                select(t.residents.c.id).where(t.residents.c.national_id == NID_A)).scalar_one()
            self.other_resident = conn.execute(
                select(t.residents.c.id).where(t.residents.c.national_id == NID_B)).scalar_one()
            self.nurse = next(a for a in repo.actors(M.id) if a.hpr_number == "9000001")
            for actor_id, phone in (("rel-1", RELATIVE_PHONE), ("rel-2", None)):
                repo.upsert_actor(Actor(ActorId(actor_id), MunicipalityId(M.id), Role.RELATIVE, "",
                                        display_name=f"Pårørende {actor_id}"))
                repo.add_relation(self.resident, actor_id, "C", phone)
            repo.upsert_actor(Actor(ActorId("ext-1"), MunicipalityId(M.id), Role.EXTERNAL_PROVIDER,
                                    "Rør AS", display_name=PLUMBER))
        self.clock = Clock(at(6))
        self.locks = {
            door: SimulatedLock(lock_id=lock, door_id=door, issuers=issuers,
                                lock_key=self.secrets.lock_key(lock), clock=LockClock(self.clock),
                                random=seeded_random(i))
            for i, (door, lock) in enumerate((("d-1", "l-1"), ("d-2", "l-2")))
        }
        self.creds: list[IssuedCredential] = []
        self.phones: dict[str, DeviceKey] = {}
        self.devices: dict[str, str] = {}
        for n, actor_id in enumerate((self.nurse.id, "ext-1")):
            key = DeviceKey.from_private_bytes(bytes([n + 1]) * 32)
            device = register_device(engine, actor_id, key.public_key_bytes, now=at(5), ids=self.ids, by="test")
            self.phones[actor_id], self.devices[actor_id] = key, device.id

    def grant_one_time(self, start: datetime, end: datetime, *, created: datetime) -> str:
        grant_id = self.ids.new("grt")
        with self.engine.begin() as conn:
            conn.execute(insert(t.grants).values(
                id=grant_id, actor_id="ext-1", door_ids=["d-2", "d-1"], not_before=start, not_after=end,
                origin=GrantOrigin.ONE_TIME.value, visit_id=None, status="active",
                reason="water leak", created_at=created,
            ))
        return grant_id

    def open_path(self, actor_id: str, at_: datetime) -> None:
        """The actor's phone opens the building door, then the flat door, then the locks upload."""
        creds = issue_for_shift(self.engine, self.secrets.issuer, [self.devices[actor_id]],
                                window_start=at(0), window_end=at(23), now=at(6), ids=self.ids)
        self.creds += creds  # issuing again gives only what is new
        blob = self.credential(actor_id, at_).blob
        for minutes, door in ((0, "d-1"), (1, "d-2")):
            self.clock.now = at_ + timedelta(minutes=minutes)
            assert _open(self.locks[door], self.phones[actor_id], blob).allowed
        self.upload(at_ + timedelta(minutes=5))

    def credential(self, actor_id: str, at_: datetime) -> IssuedCredential:
        return next(c for c in self.creds
                    if c.grant.actor_id == actor_id and c.grant.not_before <= at_ <= c.grant.not_after)

    def upload(self, now: datetime) -> None:
        for lock in self.locks.values():
            with self.engine.connect() as conn:
                synced = conn.execute(select(t.locks.c.synced_seq).where(t.locks.c.id == lock.lock_id)).scalar()
            ingest_upload(self.engine, lock.lock_id, lock.events_since(int(synced or 0)),
                          lock_key=self.secrets.lock_key(lock.lock_id), now=now)

    def notices(self, resident: str | None = None) -> list:
        with self.engine.connect() as conn:
            return notices_for(conn, resident or self.resident)

    def messages(self) -> list:
        with self.engine.connect() as conn:
            return conn.execute(select(t.messages).order_by(t.messages.c.id)).all()


@pytest.fixture
def home(engine: Engine, tmp_path: Path) -> Home:
    return Home(engine, tmp_path)


def test_a_one_time_grant_makes_one_notice_and_one_sms_however_often_the_sweep_runs(home: Home) -> None:
    grant = home.grant_one_time(at(12), at(14), created=at(9))
    # The visit grants the import made at 05:00 are routine: no notice for them.
    first = sweep_notices(home.engine, M.id, now=at(9, 1))
    assert (first.notices, first.messages) == (1, 1)
    again = sweep_notices(home.engine, M.id, now=at(9, 2))
    later = sweep_notices(home.engine, M.id, now=at(20))
    assert (again.notices, later.notices) == (0, 0)
    (notice,) = home.notices()
    assert notice.kind == KIND_GRANTED and notice.unread
    assert notice.params["keys"] == [f"grant:{grant}:{home.resident}"]
    assert notice.params["doors"] == ["building", "flat"]  # path order, not the grant's order
    assert (notice.params["name"], notice.params["origin"]) == (PLUMBER, "one_time")
    assert notice.params["from"] == at(12).astimezone(UTC).isoformat()
    assert home.notices(home.other_resident) == []
    (sms,) = home.messages()
    # Only the relative with a phone number; the text names no one.
    assert (sms.channel, sms.recipient, sms.municipality_id) == ("sms", RELATIVE_PHONE, M.id)
    assert "engangstilgang" in sms.body and "3. desember kl. 12:00" in sms.body
    assert PLUMBER not in sms.body
    with home.engine.connect() as conn:
        created = conn.execute(select(t.audit_events).where(t.audit_events.c.action == "notice:created")).all()
        assert [(a.subject, a.actor) for a in created] == [(home.resident, "system:notices")]
        assert RELATIVE_PHONE not in str(created[0].details)
        assert verify_audit(conn).ok


def test_opening_outside_a_visit_makes_a_notice_and_opening_inside_the_visit_does_not(home: Home) -> None:
    home.open_path(str(home.nurse.id), at(8, 2))  # inside the 08:00-08:30 visit
    assert sweep_notices(home.engine, M.id, now=at(8, 10)).notices == 0
    home.grant_one_time(at(12), at(14), created=at(9))
    home.open_path("ext-1", at(12, 30))  # no visit: the plumber
    result = sweep_notices(home.engine, M.id, now=at(12, 40))
    assert (result.notices, result.messages) == (2, 2)
    outside = [n for n in home.notices() if n.kind == KIND_OUTSIDE_VISIT]
    # The building door and the flat door a minute apart are one passage: one notice.
    (notice,) = outside
    assert notice.params["doors"] == ["building", "flat"]
    assert len(notice.params["keys"]) == 2 and all(k.startswith("door:l-") for k in notice.params["keys"])
    assert notice.params["at"] == at(12, 30).astimezone(UTC).isoformat()
    assert who_kind(notice.params["role"], notice.params["origin"]) == "one_time"
    assert sweep_notices(home.engine, M.id, now=at(12, 41)).notices == 0
    bodies = [m.body for m in home.messages()]
    assert any("utenom et planlagt besøk 3. desember kl. 12:30" in b for b in bodies)


def test_a_late_upload_of_the_same_passage_is_noticed_once_per_event(home: Home) -> None:
    home.grant_one_time(at(12), at(14), created=at(9))
    home.open_path("ext-1", at(12, 30))
    assert sweep_notices(home.engine, M.id, now=at(12, 40)).notices == 2
    home.clock.now = at(13)
    assert _open(home.locks["d-2"], home.phones["ext-1"], home.credential("ext-1", at(13)).blob).allowed
    home.upload(at(13, 5))
    assert sweep_notices(home.engine, M.id, now=at(13, 6)).notices == 1
    outside = [n for n in home.notices() if n.kind == KIND_OUTSIDE_VISIT]
    keys = [k for n in outside for k in n.params["keys"]]
    assert len(keys) == len(set(keys)) == 3


def test_what_is_older_than_the_look_back_is_not_noticed_again_or_late(home: Home) -> None:
    home.grant_one_time(at(12), at(14), created=at(9))
    assert sweep_notices(home.engine, M.id, now=at(9) + LOOKBACK + timedelta(minutes=1)).notices == 0
    assert home.notices() == [] and home.messages() == []


def test_marking_read_touches_only_the_residents_own_notices_and_is_audited(home: Home) -> None:
    home.grant_one_time(at(12), at(14), created=at(9))
    sweep_notices(home.engine, M.id, now=at(9, 1))
    (notice,) = home.notices()
    assert mark_read(home.engine, home.other_resident, [notice.id], now=at(10), by="account:x") == 0
    with home.engine.connect() as conn:
        assert unread_count(conn, home.resident) == 1
    assert mark_read(home.engine, home.resident, [notice.id], now=at(10), by="account:rel") == 1
    assert mark_read(home.engine, home.resident, None, now=at(10), by="account:rel") == 0
    with home.engine.connect() as conn:
        assert unread_count(conn, home.resident) == 0
        reads = conn.execute(select(t.audit_events.c.actor).where(t.audit_events.c.action == "notice:read")).all()
        assert [r.actor for r in reads] == ["account:rel"]
        count = conn.execute(select(func.count()).select_from(t.notices)).scalar()
    assert count == 1 and home.notices()[0].read_at is not None


def test_the_sms_says_what_and_when_in_plain_bokmal() -> None:
    zone = ZoneInfo("Europe/Oslo")
    text = sms_text(KIND_OUTSIDE_VISIT, {"at": "2026-12-03T09:32:00+00:00", "role": "response_center",
                                          "origin": "manual"}, zone)
    assert text.startswith("Portner: Døren ble åpnet utenom et planlagt besøk 3. desember kl. 10:32")
    assert "responssenteret" in text
    granted = sms_text(KIND_GRANTED, {"from": "2026-07-01T08:00:00+00:00", "until": "2026-07-01T10:00:00+00:00",
                                      "role": "emergency_service", "origin": "emergency"}, zone)
    assert "Nødetaten har fått tilgang til døren fra 1. juli kl. 10:00 til 1. juli kl. 12:00" in granted


def test_sweeps_running_at_once_make_each_notice_once(home: Home) -> None:
    """Two replicas sweeping at the same moment: whichever order the database lets them write
    in, one notice and one SMS result."""
    home.grant_one_time(at(12), at(14), created=at(9))
    start = threading.Barrier(2)
    results: list[int] = []

    def sweep() -> None:
        start.wait()
        results.append(sweep_notices(home.engine, M.id, now=at(9, 1)).notices)

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [0, 1]
    assert len(home.notices()) == 1 and len(home.messages()) == 1
