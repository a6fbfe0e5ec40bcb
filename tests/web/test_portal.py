"""The resident and relative portal over the demo municipality, through the real app."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, insert, select

from portner.credentials import DeviceKey
from portner.domain.model import Actor, ActorId, DoorKind, GrantOrigin, MunicipalityId, Role
from portner.locks.simulated import LockClock, SimulatedLock, seeded_random
from portner.services.devices import register_device
from portner.services.door_events import ingest_upload
from portner.services.issuing import issue_for_shift
from portner.services.keys import trusted_issuers
from portner.services.notices import sweep_notices
from portner.storage import tables as t
from portner.storage.repository import Repository
from portner.web.state import Portner
from tests.web.conftest import CSRF_META, DEMO_DAY, OSLO


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def _runtime(app: FastAPI) -> Portner:
    return app.state.portner


def _account(app: FastAPI, subject: str) -> Any:
    with _runtime(app).engine.connect() as conn:
        return conn.execute(select(t.accounts).where(t.accounts.c.subject == subject)).one()


def _relative_resident(app: FastAPI) -> str:
    relative = _account(app, "demo-relative")
    with _runtime(app).engine.connect() as conn:
        return conn.execute(select(t.relations.c.resident_id)
                            .where(t.relations.c.actor_id == relative.actor_id)).scalar_one()


def _another_resident(app: FastAPI, mine: str) -> str:
    with _runtime(app).engine.connect() as conn:
        return conn.execute(select(t.residents.c.id).where(t.residents.c.id != mine)
                            .order_by(t.residents.c.id).limit(1)).scalar_one()


def _doors(app: FastAPI, resident_id: str) -> list[Any]:
    with _runtime(app).engine.connect() as conn:
        home = conn.execute(select(t.homes.c.id).where(t.homes.c.resident_id == resident_id)).scalar_one()
        return Repository(conn).doors_of_home(home)


def _h1(html: str) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", html, re.S)
    assert len(found) == 1, "one h1 per page"
    return found[0].strip()


def _audit_reads(app: FastAPI) -> list[Any]:
    with _runtime(app).engine.connect() as conn:
        return conn.execute(select(t.audit_events).where(t.audit_events.c.action == "accesslog:read")
                            .order_by(t.audit_events.c.seq)).all()


def test_a_relative_lands_on_their_residents_door_with_todays_visits(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    client = client_for("demo-relative")
    start = client.get("/portal", follow_redirects=False)
    assert (start.status_code, start.headers["location"]) == (303, f"/portal/{resident}")
    page = client.get(f"/portal/{resident}")
    assert page.status_code == 200
    assert 'class="large"' in page.text and '<html lang="nb">' in page.text
    day_start = datetime.combine(DEMO_DAY, datetime.min.time(), OSLO)
    with _runtime(portner_app).engine.connect() as conn:
        planned = conn.execute(select(t.visits.c.id).where(
            t.visits.c.resident_id == resident, t.visits.c.planned_start >= day_start,
            t.visits.c.planned_start < day_start + timedelta(days=1)).order_by(t.visits.c.planned_start)).scalars().all()
    assert planned, "the demo relative's resident has visits on the demo day"
    assert re.findall(r'data-visit-id="([^"]+)"', page.text) == list(planned)
    assert "Hvem kan åpne døren min" in page.text
    # One section per door, in path order from the street.
    kinds = re.findall(r'data-door-kind="([^"]+)"', page.text)
    assert kinds == [d.kind.value for d in _doors(portner_app, resident)]
    assert "Besøk fra " in page.text and "til kl. " in page.text
    # In English too, each time said once: "visit at 20:10, until 21:05" (it read "at at", "until at").
    english = client.get(f"/portal/{resident}?lang=en").text
    assert re.search(r"visit at \d\d:\d\d", english) and re.search(r"until \d\d:\d\d", english)
    assert " at at " not in english and "until at " not in english


def test_another_residents_id_gets_the_not_found_page_on_every_portal_page(portner_app, client_for) -> None:
    mine = _relative_resident(portner_app)
    other = _another_resident(portner_app, mine)
    client = client_for("demo-relative")
    for resident in (other, "res-does-not-exist"):
        for suffix in ("", "/who-came", "/notices"):
            answer = client.get(f"/portal/{resident}{suffix}", headers={"accept": "text/html"})
            assert answer.status_code == 404, (resident, suffix)
            assert "Fant ikke siden." in answer.text
        token = CSRF_META.search(client.get(f"/portal/{mine}").text).group(1)  # type: ignore[union-attr]
        posted = client.post(f"/portal/{resident}/notices/read", data={"csrf": token, "notice": "all"},
                             follow_redirects=False)
        assert posted.status_code == 404
    # Nothing about the other resident was read, so nothing was logged as read.
    assert [r.subject for r in _audit_reads(portner_app)] == []


def test_staff_have_no_portal(client_for) -> None:
    answer = client_for("demo-nurse-1").get("/portal", headers={"accept": "text/html"})
    assert answer.status_code == 403


def test_the_resident_sees_their_own_door(portner_app, client_for) -> None:
    resident = _account(portner_app, "demo-resident").resident_id
    start = client_for("demo-resident").get("/portal", follow_redirects=False)
    assert start.headers["location"] == f"/portal/{resident}"


def test_a_relative_of_two_residents_chooses_one(portner_app, client_for) -> None:
    mine = _relative_resident(portner_app)
    other = _another_resident(portner_app, mine)
    relative = _account(portner_app, "demo-relative")
    with _runtime(portner_app).engine.begin() as conn:
        Repository(conn).add_relation(other, relative.actor_id, "C", None)
    client = client_for("demo-relative")
    page = client.get("/portal")
    assert page.status_code == 200 and _h1(page.text) == "Velg person"
    assert sorted(re.findall(r'href="/portal/(res-[^"]+)"', page.text)) == sorted([mine, other])
    assert client.get(f"/portal/{other}").status_code == 200


def _open_as_visiting_staff(app: FastAPI, resident: str) -> tuple[str, datetime]:
    """The staff member of the resident's first visit today opens the doors through the real
    lock path (device, credential, simulated lock, upload), and leaves 20 minutes later."""
    p = _runtime(app)
    with p.engine.connect() as conn:
        visit = conn.execute(select(t.visits).where(t.visits.c.resident_id == resident)
                             .order_by(t.visits.c.planned_start)).first()
        staff = Repository(conn).get_actor(visit.staff_ids[0])
        issuers = trusted_issuers(conn, p.municipality.id)
    phone = DeviceKey.from_private_bytes(bytes([9]) * 32)
    device = register_device(p.engine, staff.id, phone.public_key_bytes, now=p.now(), ids=p.ids, by="test")
    creds = issue_for_shift(p.engine, p.secrets.issuer, [device.id], window_start=visit.planned_start,
                            window_end=visit.planned_end, now=p.now(), ids=p.ids)
    cred = next(c for c in creds if c.grant.visit_id == visit.id)
    arrive = visit.planned_start + timedelta(minutes=5)
    clock = FixedClock(arrive)
    for i, door in enumerate(_doors(app, resident)):
        lock = SimulatedLock(lock_id=door.lock_id, door_id=door.id, issuers=issuers,
                             lock_key=p.secrets.lock_key(door.lock_id), clock=LockClock(clock),
                             random=seeded_random(i))
        challenge = lock.challenge()
        assert lock.present(cred.blob, phone.sign_proof(challenge, door.id, "unlock"), challenge=challenge).allowed
        if door.kind is DoorKind.FLAT:
            clock.now = arrive + timedelta(minutes=20)
            lock.record_exit(source="inside")
        ingest_upload(p.engine, lock.lock_id, lock.events_since(0), lock_key=p.secrets.lock_key(lock.lock_id),
                      now=p.now())
    return staff.display_name, arrive


def test_who_came_speaks_plainly_and_every_read_is_audited_with_the_account(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    name, arrive = _open_as_visiting_staff(portner_app, resident)
    client = client_for("demo-relative")
    page = client.get(f"/portal/{resident}/who-came")
    assert page.status_code == 200 and _h1(page.text) == "Hvem kom"
    local = arrive.astimezone(OSLO)
    assert f"Torsdag 3. desember kl. {local:%H:%M}:" in page.text
    assert re.search(rf"{re.escape(name)} \([a-zæøå]+\) åpnet [^<;]*leilighetsdøren", page.text)
    assert f"gikk kl. {local + timedelta(minutes=20):%H:%M}" in page.text
    english = client.get(f"/portal/{resident}/who-came?lang=en")
    assert f"Thursday 3 December at {local:%H:%M}:" in english.text and " opened " in english.text
    reads = _audit_reads(portner_app)
    account = _account(portner_app, "demo-relative")
    assert [(r.actor, r.subject) for r in reads] == [(f"account:{account.id}", resident)] * 2


def test_the_portal_speaks_english_and_bokmal(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    client = client_for("demo-relative")
    expected = {"": ("I dag, torsdag 3. desember", "Today, Thursday 3 December"),
                "/who-came": ("Hvem kom", "Who came"), "/notices": ("Varsler", "Notices")}
    for suffix, (nb, en) in expected.items():
        assert _h1(client.get(f"/portal/{resident}{suffix}?lang=nb").text) == nb
        page = client.get(f"/portal/{resident}{suffix}?lang=en")
        assert _h1(page.text) == en and '<html lang="en">' in page.text
    assert "Who can open my door" in client.get(f"/portal/{resident}").text  # the cookie keeps English


@pytest.fixture
def one_time_notice(portner_app: FastAPI) -> str:
    """A one-time grant for a plumber on the demo relative's resident's doors, swept into a notice."""
    p = _runtime(portner_app)
    resident = _relative_resident(portner_app)
    doors = [d.id for d in _doors(portner_app, resident)]
    now = p.now()
    with p.engine.begin() as conn:
        Repository(conn).upsert_actor(Actor(ActorId("ext-plumber"), MunicipalityId(p.municipality.id),
                                            Role.EXTERNAL_PROVIDER, "Rør AS", display_name="Rørlegger Berg"))
        conn.execute(insert(t.grants).values(
            id="grt-plumber", actor_id="ext-plumber", door_ids=doors, not_before=now + timedelta(hours=2),
            not_after=now + timedelta(hours=4), origin=GrantOrigin.ONE_TIME.value, visit_id=None,
            status="active", reason="", created_at=now))
    assert sweep_notices(p.engine, p.municipality.id, now=p.now()).notices == 1
    return resident


def test_a_notice_is_shown_as_new_and_the_form_marks_it_read(portner_app, client_for, one_time_notice) -> None:
    resident = one_time_notice
    client = client_for("demo-relative")
    home = client.get(f"/portal/{resident}")
    assert "1 nye" in home.text
    assert "Engangstilgang for Rørlegger Berg" in home.text  # who can open, later today
    page = client.get(f"/portal/{resident}/notices")
    assert '<span class="badge">Ny</span> Noen har fått tilgang' in page.text
    assert "En person med engangstilgang (Rørlegger Berg) kan åpne" in page.text
    (notice_id,) = re.findall(r'name="notice" value="(\d+)"', page.text)
    refused = client.post(f"/portal/{resident}/notices/read", data={"csrf": "wrong", "notice": notice_id},
                          follow_redirects=False)
    assert refused.status_code == 403
    token = CSRF_META.search(page.text).group(1)  # type: ignore[union-attr]
    done = client.post(f"/portal/{resident}/notices/read", data={"csrf": token, "notice": notice_id},
                       follow_redirects=False)
    assert (done.status_code, done.headers["location"]) == (303, f"/portal/{resident}/notices?marked=1")
    after = client.get(done.headers["location"])
    assert "Merket som lest." in after.text and "badge\">Ny" not in after.text and "· Lest" in after.text
    with _runtime(portner_app).engine.connect() as conn:
        read_by = conn.execute(select(t.audit_events.c.actor)
                               .where(t.audit_events.c.action == "notice:read")).scalars().all()
        texts = conn.execute(select(func.count()).select_from(t.messages)
                             .where(t.messages.c.body.like("%engangstilgang%"))).scalar()
    assert read_by == [f"account:{_account(portner_app, 'demo-relative').id}"]
    assert texts and texts >= 1  # the relatives with a phone number got an SMS
