"""Hostile tests of POST /door-events (and the visitor's /visit/{token}/door-events) after who is
asking and which locks are theirs moved into the statement that reads the locks' heads FOR
UPDATE (phone._uploader_authority, door_events.UploadAuthority) and malformed batches took a
path of their own (phone._allowed_locks).

Most tests run on both databases (`backend`): SQLite on a copy of the demo, PostgreSQL on a
schema of this module that its tests share (so a test that stores events forgets its lock's log
first). The same input must get the same status and the same error fields on both.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, update

from portner.config import Settings
from portner.domain.access import SCOPE_EVENTS_UPLOAD, SCOPE_FHIR_IMPORT, AccountRole, Principal
from portner.services.accounts import DEV_ISSUER, create_account, end_sessions, set_account_disabled
from portner.services.one_time import grant_one_time_access, token_hash
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from tests.web.conftest import copy_demo
from tests.web.test_phone_api import API, actor_of, counts, fields, lock_with_opening
from tests.web.test_phone_api_postgresql import pg_demo  # noqa: F401 - the module's PostgreSQL demo
from tests.web.test_upload_limits import foreign_lock, her_lock, junk_event

UPLOAD = f"{API}/door-events"


# --- both databases -----------------------------------------------------------------------------


@pytest.fixture(params=[pytest.param("sqlite", id="sqlite"),
                        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def demo_settings(backend: str, request: pytest.FixtureRequest, demo_template: Settings,
                  tmp_path: Any) -> Settings:
    if backend == "sqlite":
        return copy_demo(demo_template, tmp_path / "serve")
    return replace(request.getfixturevalue("pg_demo"))


ONLY_PG = pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
ONLY_SQLITE = pytest.mark.parametrize("backend", ["sqlite"])


def shape(answer: Any) -> tuple[int, str, list[str]]:
    """What must be the same on both databases: status, problem type and the fields named."""
    body = answer.json()
    return answer.status_code, body.get("type", "").rsplit("/", 1)[-1], fields(answer)


def account_of(engine: Engine, subject: str) -> str:
    with engine.connect() as conn:
        return conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == subject)).scalar_one()


def forget(engine: Engine, lock_id: str, visit_id: str | None = None) -> None:
    """The lock (and visit) as if nothing of its log had been stored: the PostgreSQL schema is
    shared by this module's tests, and lock_with_opening logs the same events for a nurse's lock."""
    with engine.begin() as conn:
        if visit_id is not None:
            conn.execute(update(t.visits).where(t.visits.c.id == visit_id)
                         .values(status="planned", arrived_at=None, departed_at=None))
            conn.execute(t.outbox.delete().where(t.outbox.c.idempotency_key == f"encounter:{visit_id}"))
        for table in (t.door_events, t.door_event_pending, t.lock_log_anomalies):
            conn.execute(table.delete().where(table.c.lock_id == lock_id))
        conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(synced_seq=0, synced_hash=None))


def stored_of(engine: Engine, lock_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.door_events)
                            .where(t.door_events.c.lock_id == lock_id)).scalar_one()


def new_gateway(client_for: Callable[[str | None], Any], p: Any, clock: Any, scopes: list[str]) -> Any:
    subject = f"gateway-{p.ids.new('t')}"
    create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject=subject,
                   role=AccountRole.INTEGRATION, now=clock(), ids=p.ids, by="test", scopes=scopes)
    return client_for(subject)


# --- holding a lock's row (or SQLite's write lock) elsewhere ------------------------------------



def _once(*actions: Callable[[], Any]) -> Callable[[], None]:
    """Run `actions` on the first call only (a hold released early, and again at the end)."""
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            for action in actions:
                action()

    return run

@contextmanager
def row_held(p: Any, lock_id: str) -> Iterator[Callable[[Callable[[], Any], float], tuple[bool, list[Any]]]]:
    """Hold `lock_id`'s row (PostgreSQL: FOR UPDATE; SQLite: the database's write lock) in
    another transaction; yield `run(request, limit)`, which sends the request in a thread and
    says whether it waited on that hold (PostgreSQL: seen waiting on the holder's transaction
    in pg_locks; SQLite: not answered within `limit` s), the hold released before it returns."""
    engine: Engine = p.engine
    if engine.dialect.name == "postgresql":
        holder = engine.connect()
        holder.exec_driver_sql("SELECT id FROM locks WHERE id = %s FOR UPDATE", (lock_id,))
        xid = holder.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar_one()
        release = _once(holder.rollback, holder.close)

        def waited(thread: threading.Thread, limit: float) -> bool:
            with engine.connect() as watch:
                deadline = time.monotonic() + limit
                while thread.is_alive() and time.monotonic() < deadline:
                    if watch.exec_driver_sql(
                            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                            " AND transactionid::text = %s", (xid,)).scalar_one():
                        return True
                    watch.rollback()
                    time.sleep(0.02)
            return thread.is_alive()
    else:
        path = engine.url.database
        raw = sqlite3.connect(path, timeout=0, isolation_level=None)
        raw.execute("BEGIN IMMEDIATE")
        release = _once(raw.rollback, raw.close)

        def waited(thread: threading.Thread, limit: float) -> bool:
            thread.join(timeout=limit)
            return thread.is_alive()

    def run(request: Callable[[], Any], limit: float = 3.0) -> tuple[bool, list[Any]]:
        answers: list[Any] = []
        thread = threading.Thread(target=lambda: answers.append(request()))
        thread.start()
        try:
            did_wait = waited(thread, limit)
        finally:
            release()
        thread.join(timeout=60)
        assert not thread.is_alive()
        return did_wait, answers

    try:
        yield run
    finally:
        release()


def nurse_account(p: Any, clock: Any, of: str, **changes: Any) -> str:
    """A new nurse account (dev sign-in) for the staff member of demo account `of`, its row then
    changed as asked (e.g. actor_id=None): sign-outs, disabling and unlinking stay this test's."""
    subject = f"nurse-{p.ids.new('t')}"
    account = create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject=subject,
                             role=AccountRole.NURSE, now=clock(), ids=p.ids, by="test",
                             actor_id=actor_of(p.engine, of))
    if changes:
        with p.engine.begin() as conn:
            conn.execute(update(t.accounts).where(t.accounts.c.id == account).values(**changes))
    return subject


def one(lock_id: str, events: list[Any] | None = None, **more: Any) -> dict[str, Any]:
    return {"uploads": [{"lock_id": lock_id, "events": events or [], **more}]}


# --- who is asking ------------------------------------------------------------------------------


OTHER_ROLES = ["demo-operator", "demo-admin", "demo-relative", "demo-resident"]


@pytest.mark.parametrize("subject", OTHER_ROLES)
def test_other_roles_are_refused_whatever_they_send_and_nothing_is_stored(
        client_for, portner_app, subject) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    before = counts(p.engine)
    other = client_for(subject)
    bodies: list[Any] = [
        one(mine, [junk_event(1)]), one("no-such-lock"), one(mine, [{**junk_event(1), "seq": "x"}]), {"uploads": []},
        {"uploads": [{"lock_id": f"lock-{n}", "events": []} for n in range(51)]},
        one("l'; DROP TABLE locks; --"), b"not json at all", b"",
    ]
    for body in bodies:
        kw = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) \
            else {"json": body}
        answer = other.post(UPLOAD, **kw)
        # Who is asking first: the same 403 for every body, naming no field of it.
        assert shape(answer) == (403, "forbidden", []), (body, answer.text)
    assert counts(p.engine) == before


def test_nobody_signed_in_hears_401_whatever_the_body(client_for, portner_app) -> None:
    mine = her_lock(client_for("demo-nurse-1"))
    anonymous = client_for(None)
    for body in (one(mine), one(mine, [{**junk_event(1), "seq": "x"}]), {"uploads": []}, {"nope": 1}):
        assert shape(anonymous.post(UPLOAD, json=body)) == (401, "not-signed-in", [])
    assert shape(anonymous.post(UPLOAD, content=b"\xff\xfe", headers={"Content-Type": "application/json"})) \
        == (401, "not-signed-in", [])


@pytest.mark.parametrize("how", ["disabled", "signed-out"])
def test_a_disabled_or_signed_out_nurse_hears_401_before_the_body_is_judged(
        client_for, portner_app, clock, how) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    subject = nurse_account(p, clock, "demo-nurse-1")
    nurse = client_for(subject)
    assert nurse.post(UPLOAD, json=one(mine)).status_code == 200  # her staff member's lock
    account = account_of(p.engine, subject)
    if how == "disabled":
        # (Disabling an account turns its staff member off too: on again at the end, as the
        # PostgreSQL schema is shared by this module's tests.)
        set_account_disabled(p.engine, account, True, now=clock(), by="test")
        expected = (401, "account-disabled", [])
    else:
        end_sessions(p.engine, account, now=p.now())
        expected = (401, "not-signed-in", [])
    try:
        before = counts(p.engine)
        for body in (one(mine), one(mine, [junk_event(1)]), one("no-such-lock"), one(mine, [{**junk_event(1), "seq": "x"}]),
                     {"uploads": []}, one(mine, [{**junk_event(1), "at": "yesterday"}])):
            assert shape(nurse.post(UPLOAD, json=body)) == expected, body
        assert counts(p.engine) == before
    finally:
        if how == "disabled":
            set_account_disabled(p.engine, account, False, now=clock(), by="test")


def test_a_nurse_account_without_a_staff_member_may_upload_for_no_lock(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    subject = nurse_account(p, clock, "demo-nurse-1", actor_id=None)
    nobody = client_for(subject)
    before = counts(p.engine)
    assert shape(nobody.post(UPLOAD, json=one(mine, [junk_event(1)]))) == (403, "forbidden", ["body/uploads/0/lock_id"])
    # The same through the refusal of a batch that does not decode.
    assert shape(nobody.post(UPLOAD, json=one(mine, [{**junk_event(1), "at": "nope"}]))) == \
        (403, "forbidden", ["body/uploads/0/lock_id"])
    assert counts(p.engine) == before


@pytest.mark.parametrize("scopes", [[], [SCOPE_FHIR_IMPORT]])
def test_a_gateway_session_without_the_upload_scope_is_refused(client_for, portner_app, clock, scopes) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    relay = new_gateway(client_for, p, clock, scopes)
    before = counts(p.engine)
    for body in (one(mine, [junk_event(1)]), one("no-such-lock"), one(mine, [{**junk_event(1), "seq": "x"}]),
                 one(mine, [{**junk_event(1), "mac": "zz" * 32}])):
        assert shape(relay.post(UPLOAD, json=body)) == (403, "forbidden", []), body
    assert counts(p.engine) == before


def test_a_gateway_session_with_the_scope_relays_for_any_lock_of_its_municipality(
        client_for, portner_app, clock) -> None:
    # Its session is first read as a nurse's (no staff member: no lock), then its locks again
    # under its own authority, in the same transaction.
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    theirs = foreign_lock(p, "demo-nurse-1")
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    answer = relay.post(UPLOAD, json={"uploads": [{"lock_id": lock_id, "events": events},
                                                  {"lock_id": theirs, "events": []}]})
    assert answer.status_code == 200, answer.text
    assert [r["accepted"] for r in answer.json()["results"]] == [len(events), 0]
    assert stored_of(p.engine, lock_id) == len(events)
    unknown = relay.post(UPLOAD, json={"uploads": [{"lock_id": theirs, "events": []},
                                                   {"lock_id": "no-such-lock", "events": []}]})
    assert shape(unknown) == (403, "forbidden", ["body/uploads/1/lock_id"])
    with p.engine.connect() as conn:
        assert verify_audit(conn).ok


# --- which locks are hers -----------------------------------------------------------------------


@pytest.mark.parametrize("order", ["mine-first", "theirs-first", "theirs-between-mine"])
def test_her_lock_and_a_strangers_in_one_batch_is_all_or_nothing(client_for, portner_app, order) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    theirs = foreign_lock(p, "demo-nurse-1")
    mine_up, theirs_up = {"lock_id": lock_id, "events": events}, {"lock_id": theirs, "events": []}
    uploads, named = {
        "mine-first": ([mine_up, theirs_up], 1),
        "theirs-first": ([theirs_up, mine_up], 0),
        "theirs-between-mine": ([{"lock_id": lock_id, "events": events[:2]}, theirs_up,
                                 {"lock_id": lock_id, "events": events[2:]}, theirs_up], 1),
    }[order]
    before = counts(p.engine)
    answer = nurse.post(UPLOAD, json={"uploads": uploads})
    assert shape(answer) == (403, "forbidden", [f"body/uploads/{named}/lock_id"]), answer.text
    assert counts(p.engine) == before and stored_of(p.engine, lock_id) == 0
    # ...and her own lock alone goes in whole afterwards.
    alone = nurse.post(UPLOAD, json=one(lock_id, events))
    assert alone.status_code == 200 and alone.json()["results"][0]["accepted"] == len(events)


def test_her_lock_named_twice_is_one_upload(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    answer = nurse.post(UPLOAD, json={"uploads": [
        {"lock_id": lock_id, "events": events[:2]}, {"lock_id": lock_id, "events": events[2:]}]})
    assert answer.status_code == 200, answer.text
    [result] = answer.json()["results"]
    assert (result["lock_id"], result["accepted"], result["pending"], result["anomalies"]) == \
        (lock_id, len(events), 0, [])
    assert stored_of(p.engine, lock_id) == len(events)


def test_two_overlapping_reads_of_one_lock_in_one_batch_are_no_anomaly(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    # Two requests: no anomaly (the second read's first events are re-sent, verified ones).
    assert nurse.post(UPLOAD, json=one(lock_id, events[:2])).json()["results"][0]["anomalies"] == []
    assert nurse.post(UPLOAD, json=one(lock_id, events)).json()["results"][0]["anomalies"] == []
    forget(p.engine, lock_id, visit_id)
    # The same two reads in one request.
    answer = nurse.post(UPLOAD, json={"uploads": [
        {"lock_id": lock_id, "events": events[:2]}, {"lock_id": lock_id, "events": events}]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["accepted"] == len(events)
    assert answer.json()["results"][0]["anomalies"] == []


def _rewritten(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its content changed and its seq, hash and MAC kept (a relay's rewrite)."""
    return {**event, "reason": "forced" if event["reason"] != "forced" else "ok"}


def test_a_genuine_event_after_a_rewritten_copy_in_one_batch_is_stored_as_sent_apart(
        client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    first = [events[0], _rewritten(events[1])]
    nurse.post(UPLOAD, json=one(lock_id, first))
    nurse.post(UPLOAD, json=one(lock_id, events))
    apart = stored_of(p.engine, lock_id)
    forget(p.engine, lock_id, visit_id)
    together = nurse.post(UPLOAD, json={"uploads": [{"lock_id": lock_id, "events": first},
                                                    {"lock_id": lock_id, "events": events}]})
    assert together.status_code == 200, together.text
    assert stored_of(p.engine, lock_id) == apart == len(events)
    assert "rewritten" in together.json()["results"][0]["anomalies"]


def test_a_rewritten_copy_after_the_genuine_event_in_one_batch_is_found(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    answer = nurse.post(UPLOAD, json={"uploads": [{"lock_id": lock_id, "events": events},
                                                  {"lock_id": lock_id, "events": [_rewritten(events[1])]}]})
    assert answer.status_code == 200, answer.text
    assert "rewritten" in answer.json()["results"][0]["anomalies"], answer.json()


def test_a_stranger_named_twice_is_named_at_its_first_place(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    for uploads, named in (([mine, theirs, theirs], 1), ([mine, "no-such", theirs, "no-such"], 1),
                           ([theirs, theirs], 0), ([mine, mine, "zz-none"], 2)):
        answer = nurse.post(UPLOAD, json={"uploads": [{"lock_id": u, "events": []} for u in uploads]})
        assert shape(answer) == (403, "forbidden", [f"body/uploads/{named}/lock_id"]), (uploads, answer.text)


@pytest.mark.parametrize("lock_id", [
    "%s", "%(x)s", "?", "{ids}", "{}", "{0}", "l'; DROP TABLE locks; --", "l-1 OR 1=1", "",
    "x" * 65, "l-1\n", "l-1\x00", "\u0406-000001", "l\u2010000001", "\uff4c-000001", "l-1\u200b",
    "l-%", "l_*", "ℓ-000001",
])
def test_lock_ids_that_are_no_ids_are_422_naming_the_lock_id(client_for, portner_app, lock_id) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    before = counts(p.engine)
    answer = nurse.post(UPLOAD, json=one(lock_id))
    assert shape(answer) == (422, "invalid-request", ["body/uploads/0/lock_id"]), answer.text
    # A stranger hears who-is-asking first, not that the id is malformed.
    assert shape(client_for("demo-operator").post(UPLOAD, json=one(lock_id))) == (403, "forbidden", [])
    assert counts(p.engine) == before


@pytest.mark.parametrize("lock_id", ["a" * 64, "l-000001.", ":", "-", ".", "_", "l:1:2", "L-000001", "0"])
def test_well_formed_ids_of_no_lock_of_hers_are_the_same_403(client_for, portner_app, clock, lock_id) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    for who in (nurse, relay):
        answer = who.post(UPLOAD, json={"uploads": [{"lock_id": mine, "events": []},
                                                    {"lock_id": lock_id, "events": [junk_event(1)]}]})
        assert shape(answer) == (403, "forbidden", ["body/uploads/1/lock_id"]), answer.text


def test_a_lock_of_another_municipality_is_nobodys_here(client_for, portner_app, clock) -> None:
    """Another tenant's lock in the same database: even with a visit grant of her staff member
    there (and a gateway with the upload scope), not a lock anyone here may upload for."""
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    actor = actor_of(p.engine, "demo-nurse-1")
    tag = p.ids.new("x")
    now = clock()
    from portner.domain.model import (
        Door,
        DoorId,
        DoorKind,
        Home,
        HomeId,
        Lock,
        LockId,
        Municipality,
        MunicipalityId,
        Resident,
        ResidentId,
    )
    from portner.storage.repository import Repository
    with p.engine.begin() as conn:
        repo = Repository(conn)
        repo.add_municipality(Municipality(id=MunicipalityId(f"m-{tag}"), name="Annenkommune"))
        repo.upsert_resident(Resident(ResidentId(f"res-{tag}"), MunicipalityId(f"m-{tag}"), None, "Annen"))
        repo.upsert_home(Home(HomeId(f"hom-{tag}"), ResidentId(f"res-{tag}"), "Gate 1", "demo"))
        door = Door(DoorId(f"d-{tag}"), HomeId(f"hom-{tag}"), 1, DoorKind.FLAT, LockId(f"l-{tag}"))
        repo.add_door_with_lock(door, Lock(LockId(f"l-{tag}"), door.id))
        conn.execute(t.visits.insert().values(
            id=f"vis-{tag}", municipality_id=f"m-{tag}", resident_id=f"res-{tag}", plan_key=tag, source_key=tag,
            planned_start=now, planned_end=now + timedelta(hours=1), staff_ids=[actor], status="planned",
            description=""))
        conn.execute(t.grants.insert().values(
            id=f"grt-{tag}", actor_id=actor, door_ids=[f"d-{tag}"], not_before=now - timedelta(hours=1),
            not_after=now + timedelta(hours=2), origin="visit", visit_id=f"vis-{tag}", status="active",
            reason="", created_at=now))
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    for who in (nurse, relay):
        answer = who.post(UPLOAD, json={"uploads": [{"lock_id": mine, "events": []},
                                                    {"lock_id": f"l-{tag}", "events": [junk_event(1)]}]})
        assert shape(answer) == (403, "forbidden", ["body/uploads/1/lock_id"]), answer.text
        assert stored_of(p.engine, f"l-{tag}") == 0


# The relay window: her visit grants from 2 days back to 1 day ahead lead her to a home.
WINDOW_CASES = [
    # (not_before, not_after) relative to now, and whether she may upload
    pytest.param(-timedelta(days=4), -timedelta(days=3), False, id="ended-3-days-ago"),
    pytest.param(-timedelta(days=4), -timedelta(days=2, minutes=10), False, id="ended-just-before-the-window"),
    pytest.param(-timedelta(days=4), -timedelta(days=2) + timedelta(minutes=10), True, id="ended-just-inside"),
    pytest.param(timedelta(days=1, minutes=10), timedelta(days=1, hours=1), False, id="starts-just-after"),
    pytest.param(timedelta(days=1) - timedelta(minutes=10), timedelta(days=1, hours=1), True, id="starts-just-inside"),
]


@pytest.mark.parametrize(("starts", "ends", "allowed"), WINDOW_CASES)
def test_her_grants_lead_her_to_a_home_within_the_relay_window_only(
        client_for, portner_app, clock, starts, ends, allowed) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    actor = actor_of(p.engine, "demo-nurse-1")
    g, v, h, d, lk = t.grants, t.visits, t.homes, t.doors, t.locks
    with p.engine.begin() as conn:
        resident = conn.execute(select(h.c.resident_id).join(d, d.c.home_id == h.c.id)
                                .join(lk, lk.c.door_id == d.c.id).where(lk.c.id == mine)).scalar_one()
        grants = conn.execute(select(g.c.id, g.c.not_before, g.c.not_after).join(v, v.c.id == g.c.visit_id)
                              .where(g.c.actor_id == actor, v.c.resident_id == resident)).all()
        now = clock()
        conn.execute(update(g).where(g.c.id.in_([r.id for r in grants]))
                     .values(not_before=now + starts, not_after=now + ends))
    try:
        answer = nurse.post(UPLOAD, json=one(mine))
        refused = nurse.post(UPLOAD, json=one(mine, [{**junk_event(1), "hash": "x"}]))
    finally:
        with p.engine.begin() as conn:  # (the PostgreSQL schema is shared by this module's tests)
            for r in grants:
                conn.execute(update(g).where(g.c.id == r.id).values(not_before=r.not_before, not_after=r.not_after))
    if allowed:
        assert answer.status_code == 200, answer.text
        assert shape(refused) == (422, "invalid-request", ["body/uploads/0/events/0/hash"])
    else:
        assert shape(answer) == shape(refused) == (403, "forbidden", ["body/uploads/0/lock_id"]), answer.text


# --- the order of the answers (phone._refuse) ---------------------------------------------------


def test_a_batch_that_does_not_parse_or_decode_is_answered_in_the_order_of_the_checks(
        client_for, portner_app, clock) -> None:
    """Who is asking (401/403), a batch that does not parse (422), a lock not theirs (403), an
    event or head that does not decode (422): each row's body fails several checks at once."""
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    bad_at = {**junk_event(1), "at": "2026-12-03T08:00:00"}  # no zone: does not decode
    bad_head = {"nonce": "zz" * 16, "seq": 1, "hash": "00" * 32, "mac": "00" * 32}
    cases: list[tuple[Any, Any, tuple[int, str, list[str]]]] = [
        # who first
        (client_for(None), one(theirs, [{**junk_event(1), "seq": "x"}]), (401, "not-signed-in", [])),
        (client_for("demo-operator"), one(theirs, [{**junk_event(1), "seq": "x"}]), (403, "forbidden", [])),
        (client_for("demo-resident"), {"uploads": []}, (403, "forbidden", [])),
        # then the parse: before whose locks they are
        (nurse, {"uploads": [{"lock_id": theirs, "events": [{**junk_event(1), "seq": "x"}]}]},
         (422, "invalid-request", ["body/uploads/0/events/0/seq"])),
        (nurse, {"uploads": [{"lock_id": theirs, "events": [junk_event(s) for s in range(1, 502)]}]},
         (422, "invalid-request", ["body/uploads/0/events"])),
        (nurse, {"uploads": [{"lock_id": mine, "events": []}, {"lock_id": "bad id", "events": []}]},
         (422, "invalid-request", ["body/uploads/1/lock_id"])),
        (nurse, {"uploads": [{"lock_id": theirs, "events": []}], "extra": 1},
         (422, "invalid-request", ["body/extra"])),
        # then the locks: before the events decode
        (nurse, {"uploads": [{"lock_id": mine, "events": [bad_at]}, {"lock_id": theirs, "events": []}]},
         (403, "forbidden", ["body/uploads/1/lock_id"])),
        (nurse, {"uploads": [{"lock_id": mine, "events": [], "head": bad_head},
                             {"lock_id": "no-such-lock", "events": [bad_at]}]},
         (403, "forbidden", ["body/uploads/1/lock_id"])),
        # her own locks: the event named
        (nurse, {"uploads": [{"lock_id": mine, "events": [junk_event(1), bad_at]}]},
         (422, "invalid-request", ["body/uploads/0/events/1/at"])),
        (nurse, {"uploads": [{"lock_id": mine, "events": [], "head": bad_head}]},
         (422, "invalid-request", ["body/uploads/0/head/nonce"])),
        (nurse, {"uploads": [{"lock_id": mine, "events": [{**junk_event(1), "credential_id": "c\u0000"}]}]},
         (422, "invalid-request", ["body/uploads/0/events/0/credential_id"])),
    ]
    before = counts(p.engine)
    got = [shape(who.post(UPLOAD, json=body)) for who, body, _ in cases]
    assert got == [expected for *_, expected in cases]
    assert counts(p.engine) == before


def test_a_gateway_session_refusing_a_malformed_batch_reads_its_locks_by_its_municipality(
        client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    theirs = foreign_lock(p, "demo-nurse-1")
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    bad_at = {**junk_event(1), "at": "nope"}
    assert shape(relay.post(UPLOAD, json=one(theirs, [bad_at]))) == \
        (422, "invalid-request", ["body/uploads/0/events/0/at"])
    assert shape(relay.post(UPLOAD, json={"uploads": [{"lock_id": theirs, "events": [bad_at]},
                                                      {"lock_id": "no-such-lock", "events": []}]})) == \
        (403, "forbidden", ["body/uploads/1/lock_id"])


# --- a visitor's link ---------------------------------------------------------------------------


def visitor(p: Any, clock: Any, *, redeemed: bool) -> tuple[str, str, Any]:
    """A one-time invitation to a resident's door with a lock: its token, the lock, the access."""
    d, h, lk = t.doors, t.homes, t.locks
    with p.engine.connect() as conn:
        resident, door, lock = conn.execute(
            select(h.c.resident_id, d.c.id, d.c.lock_id).join(d, d.c.home_id == h.c.id)
            .join(lk, lk.c.id == d.c.lock_id).order_by(d.c.id).limit(1)).one()
    now = clock()
    access = grant_one_time_access(
        p.engine, municipality_id=p.municipality.id, by="test", resident_id=resident, door_ids=[door],
        name="Rørlegger Hansen", phone="912 34 567", starts=now, ends=now + timedelta(hours=2),
        public_url="https://portner.example", now=now, ids=p.ids)
    if redeemed:
        with p.engine.begin() as conn:
            conn.execute(update(t.invitations).where(t.invitations.c.token_hash == token_hash(access.token))
                         .values(redeemed_at=now))
    return access.token, lock, access


def test_a_visitor_link_unknown_unredeemed_or_long_past_uploads_nothing(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    anonymous = client_for(None)
    open_token, open_lock, _ = visitor(p, clock, redeemed=False)
    token, lock, _ = visitor(p, clock, redeemed=True)
    bad_at = {**junk_event(1), "at": "nope"}
    before = counts(p.engine)

    def post(tok: str, body: Any) -> tuple[int, str, list[str]]:
        return shape(anonymous.post(f"{API}/visit/{tok}/door-events", json=body))

    unknown = "A" * 43
    cases = [
        (unknown, one(lock), (404, "not-found", [])),
        (unknown, one(lock, [bad_at]), (404, "not-found", [])),
        (unknown, one(lock, [{**junk_event(1), "seq": "x"}]), (422, "invalid-request", ["body/uploads/0/events/0/seq"])),
        (open_token, one(open_lock), (404, "not-found", [])),
        (open_token, one(open_lock, [bad_at]), (404, "not-found", [])),
        (token, one("no-such-lock", [bad_at]), (403, "forbidden", ["body/uploads/0/lock_id"])),
        (token, {"uploads": [{"lock_id": lock, "events": [bad_at]}, {"lock_id": "no-such-lock", "events": []}]},
         (403, "forbidden", ["body/uploads/1/lock_id"])),
        (token, one(lock, [bad_at]), (422, "invalid-request", ["body/uploads/0/events/0/at"])),
    ]
    assert [post(tok, body) for tok, body, _ in cases] == [expected for *_, expected in cases]
    assert counts(p.engine) == before
    ok = anonymous.post(f"{API}/visit/{token}/door-events", json=one(lock, [junk_event(1)]))
    assert ok.status_code == 200, ok.text
    # A day after its access ended the link uploads nothing more.
    clock.advance(timedelta(days=1, hours=3))
    assert post(token, one(lock)) == (404, "not-found", [])
    assert post(token, one(lock, [bad_at])) == (404, "not-found", [])


# --- who holds what while refused ----------------------------------------------------------------


@ONLY_PG
@pytest.mark.parametrize("subject", [*OTHER_ROLES, "gateway-without-scope", "stranger-nurse"])
def test_a_refused_uploader_of_another_role_waits_for_no_lock_row(
        client_for, portner_app, clock, backend, subject) -> None:
    p = portner_app.state.portner
    lock_id = her_lock(client_for("demo-nurse-1"))
    if subject == "gateway-without-scope":
        who = new_gateway(client_for, p, clock, [SCOPE_FHIR_IMPORT])
    else:
        who = client_for("demo-nurse-2" if subject == "stranger-nurse" else subject)
    with row_held(p, lock_id) as run:
        waited, answers = run(lambda: who.post(UPLOAD, json=one(lock_id, [junk_event(1)])), 10.0)
    assert not waited, "the refused batch waited for a lock's row"
    assert answers[0].status_code == 403, answers[0].text


@ONLY_PG
def test_a_session_of_an_issuer_not_honoured_here_waits_for_no_lock_row(
        client_for, portner_app, backend, monkeypatch) -> None:
    """As in production, where a session is honoured for the OpenID provider's accounts alone:
    a development account's session is refused (401) before it locks her locks' rows."""
    from portner.web import deps

    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id = her_lock(nurse)
    monkeypatch.setattr(deps, "_session_issuers", lambda p: frozenset({"https://idp.example.no"}))
    with row_held(p, lock_id) as run:
        waited, answers = run(lambda: nurse.post(UPLOAD, json=one(lock_id, [junk_event(1)])), 5.0)
    assert answers[0].status_code == 401, answers[0].text
    assert not waited, "a session refused for its issuer waited for her lock's row"


@ONLY_PG
@pytest.mark.parametrize("how", ["disabled", "signed-out", "phone-revoked"])
def test_a_disabled_or_signed_out_nurse_waits_for_no_lock_row(client_for, portner_app, clock, backend, how) -> None:
    from portner.services.revocation import revoke_device
    from tests.web.test_phone_api import register

    p = portner_app.state.portner
    if how == "phone-revoked":
        # A phone of her own revoked (lost): her sessions end with it. (demo-nurse-3 is this
        # test's alone in this module.)
        subject = "demo-nurse-3"
        nurse = client_for(subject)
        _, device_id = register(nurse)
        lock_id = _locks_of_actor(p, actor_of(p.engine, subject))[0]
        revoke_device(p.engine, device_id, now=clock(), by="test", reason="lost")
    else:
        lock_id = her_lock(client_for("demo-nurse-1"))
        subject = nurse_account(p, clock, "demo-nurse-1")
        nurse = client_for(subject)
        account = account_of(p.engine, subject)
        if how == "disabled":
            set_account_disabled(p.engine, account, True, now=clock(), by="test")
        else:
            end_sessions(p.engine, account, now=p.now())
    try:
        with row_held(p, lock_id) as run:
            waited, answers = run(lambda: nurse.post(UPLOAD, json=one(lock_id, [junk_event(1)])), 5.0)
        assert answers[0].status_code == 401, answers[0].text
        assert not waited, "a nurse whose session is over waited for her lock's row"
    finally:
        if how == "disabled":
            set_account_disabled(p.engine, account_of(p.engine, subject), False, now=clock(), by="test")


def _locks_of_actor(p: Any, actor: str) -> list[str]:
    """Locks of the homes this staff member's visit grants lead to, in the relay window."""
    g, v, h, d, lk = t.grants, t.visits, t.homes, t.doors, t.locks
    now = p.now()
    with p.engine.connect() as conn:
        return list(conn.execute(
            select(lk.c.id).distinct().join(d, d.c.id == lk.c.door_id).join(h, h.c.id == d.c.home_id)
            .join(v, v.c.resident_id == h.c.resident_id).join(g, g.c.visit_id == v.c.id)
            .where(v.c.municipality_id == p.municipality.id,
                   g.c.actor_id == actor, g.c.not_after >= now - timedelta(days=2),
                   g.c.not_before <= now + timedelta(days=1)).order_by(lk.c.id)).scalars())


@ONLY_SQLITE
@pytest.mark.parametrize("subject", ["demo-operator", "demo-resident", "stranger-nurse"])
def test_a_refused_uploader_does_not_wait_for_sqlites_write_lock(client_for, portner_app, backend, subject) -> None:
    p = portner_app.state.portner
    lock_id = her_lock(client_for("demo-nurse-1"))
    who = client_for("demo-nurse-2" if subject == "stranger-nurse" else subject)
    with row_held(p, lock_id) as run:
        waited, answers = run(lambda: who.post(UPLOAD, json=one(lock_id, [junk_event(1)])), 3.0)
    assert answers[0].status_code == 403, answers[0].text
    assert not waited, "the refused batch waited for SQLite's write lock"


@ONLY_SQLITE
def test_a_malformed_batch_of_a_stranger_does_not_wait_for_sqlites_write_lock(
        client_for, portner_app, backend) -> None:
    # The refusal path of a batch that does not decode reads on a connection of its own.
    p = portner_app.state.portner
    lock_id = her_lock(client_for("demo-nurse-1"))
    operator = client_for("demo-operator")
    with row_held(p, lock_id) as run:
        waited, answers = run(lambda: operator.post(UPLOAD, json=one(lock_id, [{**junk_event(1), "at": "x"}])), 10.0)
    assert not waited and answers[0].status_code == 403


@ONLY_PG
@pytest.mark.parametrize("who", ["stranger-nurse", "operator", "signed-out", "malformed"])
def test_a_refused_upload_rolls_its_transaction_back_and_leaves_nothing_held(
        client_for, portner_app, clock, backend, who) -> None:
    from tests.web.test_phone_upload_transaction_postgresql import (
        _assert_one_transaction_each,
        _statements,
    )

    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    batch = {"uploads": [{"lock_id": mine, "events": [junk_event(1)]}, {"lock_id": theirs, "events": []}]}
    if who == "operator":
        client, expected = client_for("demo-operator"), 403
    elif who == "signed-out":
        subject = nurse_account(p, clock, "demo-nurse-1")
        client, expected = client_for(subject), 401
        end_sessions(p.engine, account_of(p.engine, subject), now=p.now())
    elif who == "malformed":
        client, expected = nurse, 403
        batch["uploads"][0]["events"] = [{**junk_event(1), "at": "nope"}]
    else:
        client, expected = nurse, 403
    used: set[int] = set()  # the server processes of the connections the upload took

    def note(dbapi: Any, *_: Any) -> None:
        used.add(dbapi.info.backend_pid)

    event.listen(p.engine, "checkout", note)
    try:
        with _statements(p.engine) as connections:
            answer = client.post(UPLOAD, json=batch)
    finally:
        event.remove(p.engine, "checkout", note)
    assert answer.status_code == expected, answer.text
    _assert_one_transaction_each(connections, failed=True)
    assert all("COMMIT" not in sent for sent in connections), connections
    assert used
    with p.engine.begin() as conn:  # NOWAIT: an error if any of it were still held
        conn.exec_driver_sql("SELECT id FROM locks WHERE id IN (%s, %s) FOR UPDATE NOWAIT", (mine, theirs))
        conn.exec_driver_sql("SELECT seq FROM audit_head FOR UPDATE NOWAIT")
        # Of the upload's own connections only: the database is shared with whatever else runs
        # (another test session), whose transactions are none of this test's business.
        idle = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)"
            " AND state LIKE 'idle in transaction%%'", (sorted(used),)).scalar_one()
    assert idle == 0


# --- a body bigger than a nurse's bound: who is asking is read before it ------------------------


def test_a_big_body_is_judged_by_who_sends_it(client_for, portner_app, clock) -> None:
    from tests.web.test_upload_limits import chunks, padded

    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    signed_out = nurse_account(p, clock, "demo-nurse-1")
    gone = client_for(signed_out)
    end_sessions(p.engine, account_of(p.engine, signed_out), now=p.now())
    headers = {"Content-Type": "application/json"}
    before = counts(p.engine)
    for send in (lambda body: body, chunks):
        assert shape(client_for("demo-operator").post(UPLOAD, content=send(padded(mine, 1_500_000)),
                                                      headers=headers)) == (403, "forbidden", [])
        assert shape(gone.post(UPLOAD, content=send(padded(mine, 1_500_000)), headers=headers)) == \
            (401, "not-signed-in", [])
        too_big = nurse.post(UPLOAD, content=send(padded(mine, 1_500_000)), headers=headers)
        assert (too_big.status_code, fields(too_big)) == (413, ["body"])
        assert shape(relay.post(UPLOAD, content=send(padded("no-such-lock", 1_500_000)), headers=headers)) == \
            (403, "forbidden", ["body/uploads/0/lock_id"])
        assert relay.post(UPLOAD, content=send(padded(theirs, 1_500_000)), headers=headers).status_code == 200
    assert counts(p.engine) == before


# --- the same batch at once ----------------------------------------------------------------------


def test_the_same_batch_sent_twice_at_once_is_stored_once(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    again = client_for("demo-nurse-1")
    batch = one(lock_id, events)
    answers: list[Any] = [None, None]
    start = threading.Barrier(2)
    audited_before = _audited_events(p.engine, lock_id)

    def send(n: int, client: Any) -> None:
        start.wait()
        answers[n] = client.post(UPLOAD, json=batch)

    threads = [threading.Thread(target=send, args=(n, c)) for n, c in enumerate((nurse, again))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    results = [a.json()["results"][0] for a in answers]
    assert sorted(r["accepted"] for r in results) == [0, len(events)]
    assert sum(r["arrivals"] for r in results) == 1 and sum(r["departures"] for r in results) == 1
    assert all(r["anomalies"] == [] for r in results)
    assert stored_of(p.engine, lock_id) == len(events)
    with p.engine.connect() as conn:
        assert verify_audit(conn).ok
        encounters = conn.execute(select(func.count()).select_from(t.outbox).where(
            t.outbox.c.idempotency_key == f"encounter:{visit_id}")).scalar_one()
    assert _audited_events(p.engine, lock_id) - audited_before == len(events) and encounters == 1


def _audited_events(engine: Engine, lock_id: str) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(t.audit_events).where(
            t.audit_events.c.subject.like(f"{lock_id}#%"))).scalar_one()


def test_a_nurse_and_a_stranger_at_once_store_hers_and_refuse_theirs(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    forget(p.engine, lock_id, visit_id)
    stranger = client_for("demo-nurse-2")
    answers: dict[str, Any] = {}
    start = threading.Barrier(2)

    def send(name: str, client: Any) -> None:
        start.wait()
        answers[name] = client.post(UPLOAD, json=one(lock_id, events))

    threads = [threading.Thread(target=send, args=a) for a in (("her", nurse), ("stranger", stranger))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert answers["her"].status_code == 200 and answers["her"].json()["results"][0]["accepted"] == len(events)
    assert shape(answers["stranger"]) == (403, "forbidden", ["body/uploads/0/lock_id"])
    with p.engine.connect() as conn:
        assert verify_audit(conn).ok


# --- an access token (verified before the handler) ----------------------------------------------


@pytest.fixture
def bearer(portner_app: Any) -> Callable[..., Any]:
    """Install a token verifier that maps a token to the Principal given for it."""
    known: dict[str, Principal] = {}

    def verify(token: str, _portner: Any) -> Principal:
        from portner.web.problems import Problem

        if token not in known:
            raise Problem(401, "Not signed in", "bad token", kind="not-signed-in")
        return known[token]

    portner_app.state.token_verifier = verify

    def make(**principal: Any) -> dict[str, str]:
        token = f"tok-{len(known)}"
        p = portner_app.state.portner
        known[token] = Principal(**{"account_id": f"acc-{token}", "municipality_id": p.municipality.id,
                                    "via": "bearer", **principal})
        return {"Authorization": f"Bearer {token}", "X-CSRF-Token": ""}

    return make


def test_access_tokens_are_judged_as_sessions_are(client_for, portner_app, bearer) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    anonymous = client_for(None)
    actor = actor_of(p.engine, "demo-nurse-1")
    bad_at = {**junk_event(1), "at": "nope"}
    cases = [
        (bearer(role=AccountRole.NURSE, actor_id=actor), one(mine), (200, "", [])),
        (bearer(role=AccountRole.NURSE, actor_id=actor), one(theirs), (403, "forbidden", ["body/uploads/0/lock_id"])),
        (bearer(role=AccountRole.NURSE, actor_id=actor), one(mine, [bad_at]),
         (422, "invalid-request", ["body/uploads/0/events/0/at"])),
        (bearer(role=AccountRole.NURSE, actor_id=None), one(mine), (403, "forbidden", ["body/uploads/0/lock_id"])),
        (bearer(role=AccountRole.NURSE, actor_id=None), one(mine, [bad_at]),
         (403, "forbidden", ["body/uploads/0/lock_id"])),
        (bearer(role=AccountRole.OPERATOR), one(mine), (403, "forbidden", [])),
        (bearer(role=AccountRole.OPERATOR), one(mine, [bad_at]), (403, "forbidden", [])),
        (bearer(role=AccountRole.INTEGRATION, scopes=frozenset({SCOPE_FHIR_IMPORT})), one(theirs), (403, "forbidden", [])),
        (bearer(role=AccountRole.INTEGRATION, scopes=frozenset({SCOPE_EVENTS_UPLOAD})), one(theirs), (200, "", [])),
        (bearer(role=AccountRole.INTEGRATION, scopes=frozenset({SCOPE_EVENTS_UPLOAD})), one("no-such-lock"),
         (403, "forbidden", ["body/uploads/0/lock_id"])),
        # An account of another tenant on this server is nobody here.
        (bearer(role=AccountRole.INTEGRATION, scopes=frozenset({SCOPE_EVENTS_UPLOAD}), municipality_id="elsewhere"),
         one(theirs), (401, "not-signed-in", [])),
        ({"Authorization": "Bearer nope"}, one(theirs), (401, "not-signed-in", [])),
    ]
    got = []
    for headers, body, _ in cases:
        answer = anonymous.post(UPLOAD, json=body, headers=headers)
        got.append((answer.status_code, "", []) if answer.status_code == 200 else shape(answer))
    assert got == [expected for *_, expected in cases]


# --- big batches ---------------------------------------------------------------------------------


def municipality_locks(p: Any, n: int, *, last: bool = False) -> list[str]:
    lk, d, h, r = t.locks, t.doors, t.homes, t.residents
    with p.engine.connect() as conn:
        return list(conn.execute(
            select(lk.c.id).join(d, d.c.id == lk.c.door_id).join(h, h.c.id == d.c.home_id)
            .join(r, r.c.id == h.c.resident_id).where(r.c.municipality_id == p.municipality.id)
            .order_by(lk.c.id.desc() if last else lk.c.id).limit(n)).scalars())


def test_fifty_locks_with_one_not_theirs_at_the_end_store_nothing(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    locks = municipality_locks(p, 49)
    before = counts(p.engine)
    uploads = [{"lock_id": lk, "events": [junk_event(s) for s in range(1, 41)]} for lk in locks]
    answer = relay.post(UPLOAD, json={"uploads": [*uploads, {"lock_id": "zz-no-such-lock", "events": []}]})
    assert shape(answer) == (403, "forbidden", ["body/uploads/49/lock_id"])
    assert counts(p.engine) == before
    # The first of them unknown: named at 0, whichever order the locks are read in.
    answer = relay.post(UPLOAD, json={"uploads": [{"lock_id": "00-no-such-lock", "events": []}, *uploads]})
    assert shape(answer) == (403, "forbidden", ["body/uploads/0/lock_id"])
    assert counts(p.engine) == before


def test_a_batch_at_the_limits_goes_in_whole(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    relay = new_gateway(client_for, p, clock, [SCOPE_EVENTS_UPLOAD])
    locks = municipality_locks(p, 4, last=True)
    for lk in locks:
        forget(p.engine, lk)
    # 2,000 events of 4 locks, 500 each (junk: one bad_mac anomaly per lock, nothing accepted).
    uploads = [{"lock_id": lk, "events": [junk_event(s) for s in range(1, 501)]} for lk in locks]
    answer = relay.post(UPLOAD, json={"uploads": uploads})
    assert answer.status_code == 200, answer.text
    assert [r["anomalies"] for r in answer.json()["results"]] == [["bad_mac"]] * 4
    one_more = relay.post(UPLOAD, json={"uploads": [*uploads, {"lock_id": "zz", "events": [junk_event(1)]}]})
    assert shape(one_more) == (422, "invalid-request", ["body/uploads/4/events"])
    with p.engine.connect() as conn:
        assert verify_audit(conn).ok


# --- accounts of other roles linked to a staff member -------------------------------------------


def linked_account(p: Any, clock: Any, role: AccountRole, of: str, scopes: list[str] | None = None) -> str:
    """An account of `role` (dev sign-in) linked to the staff member of demo account `of`, as an
    administrator may make one (administration.create_account asks an actor only of nurses and
    relatives, and forbids it to nobody): an operator who also works visits, a gateway's account."""
    subject = f"{role.value}-{p.ids.new('t')}"
    create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject=subject, role=role,
                   now=clock(), ids=p.ids, by="test", actor_id=actor_of(p.engine, of), scopes=scopes or [])
    return subject


def test_another_role_linked_to_a_staff_member_is_still_refused(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    linked = {role: client_for(linked_account(p, clock, role, "demo-nurse-1"))
              for role in (AccountRole.OPERATOR, AccountRole.ADMIN, AccountRole.RELATIVE)}
    before = counts(p.engine)
    for role, who in linked.items():
        assert shape(who.post(UPLOAD, json=one(mine, [junk_event(1)]))) == (403, "forbidden", []), role
        assert shape(who.post(UPLOAD, json=one(mine, [{**junk_event(1), "at": "x"}]))) == (403, "forbidden", [])
    assert counts(p.engine) == before


@ONLY_PG
@pytest.mark.parametrize("role", [AccountRole.OPERATOR, AccountRole.RELATIVE])
def test_another_role_linked_to_a_staff_member_waits_for_no_lock_row(
        client_for, portner_app, clock, backend, role) -> None:
    p = portner_app.state.portner
    mine = her_lock(client_for("demo-nurse-1"))
    who = client_for(linked_account(p, clock, role, "demo-nurse-1"))
    with row_held(p, mine) as run:
        waited, answers = run(lambda: who.post(UPLOAD, json=one(mine, [junk_event(1)])), 5.0)
    assert answers[0].status_code == 403, answers[0].text
    assert not waited, "a refused role's batch waited for a lock's row"


@ONLY_PG
def test_a_gateway_session_linked_to_a_staff_member_takes_its_locks_in_one_order(
        client_for, portner_app, clock, backend) -> None:
    p = portner_app.state.portner
    hers = _locks_of_actor(p, actor_of(p.engine, "demo-nurse-1"))
    high = max(hers)
    low = next(lk for lk in municipality_locks(p, 200) if lk < high and lk not in hers)
    relay = client_for(linked_account(p, clock, AccountRole.INTEGRATION, "demo-nurse-1", [SCOPE_EVENTS_UPLOAD]))
    engine: Engine = p.engine
    holder = engine.connect()
    holder.exec_driver_sql("SELECT id FROM locks WHERE id = %s FOR UPDATE", (low,))
    xid = holder.exec_driver_sql("SELECT pg_current_xact_id()::text").scalar_one()
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(relay.post(UPLOAD, json={"uploads": [
        {"lock_id": low, "events": []}, {"lock_id": high, "events": []}]})))
    thread.start()
    holder_error: Exception | None = None
    try:
        with engine.connect() as watch:  # the upload waits for the low lock's row
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not watch.exec_driver_sql(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted"
                    " AND transactionid::text = %s", (xid,)).scalar_one():
                watch.rollback()
                time.sleep(0.02)
        # ...and the holder, like an upload of both in id order, then asks for the high one.
        holder.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        try:
            holder.exec_driver_sql("SELECT id FROM locks WHERE id = %s FOR UPDATE", (high,))
        except Exception as exc:  # noqa: BLE001 - the holder may be the deadlock's victim instead
            holder_error = exc
    finally:
        holder.rollback()
        holder.close()
        thread.join(timeout=60)
    assert holder_error is None, holder_error
    assert answers and answers[0].status_code == 200, answers[0].text if answers else "no answer"
