"""The phone's two busiest calls on PostgreSQL, where each reads who is asking in the round trip
of its first reads: the shift's credentials, and the door-event upload (the session's account
with the transaction's BEGIN and the heads of the locks she may upload for). The other web
tests run on SQLite; these hold the PostgreSQL path to the same answers, and to its round trips."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, time
from typing import Any

import pytest
from psycopg.pq import Trace
from sqlalchemy import Engine, event, func, make_url, select

from portner.config import Settings
from portner.demo.accounts import create_dev_accounts
from portner.demo.site import MUNICIPALITY, load_demo_site
from portner.services.accounts import end_sessions, set_account_disabled
from portner.services.ids import IdSource
from portner.storage import tables as t
from portner.storage.db import migrate
from tests.web.conftest import DEMO_DAY, OSLO
from tests.web.test_phone_api import API, fields, lock_with_opening, register

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_demo(_pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The demo municipality of the web tests' day, in a PostgreSQL schema of this module."""
    if _pg_server.error is not None:
        pytest.skip(_pg_server.error)
    name, engine = _pg_server.new_schema()
    folder = tmp_path_factory.mktemp("pg-demo")
    try:
        migrate(engine)
        now = datetime.combine(DEMO_DAY, time(7, 0), OSLO)
        ids = IdSource(2026)
        load_demo_site(engine, folder, seed=2026, day=DEMO_DAY, ids=ids, now=now, fixtures=None)
        create_dev_accounts(engine, MUNICIPALITY, day_start=datetime.combine(DEMO_DAY, time(0), OSLO),
                            now=now, ids=ids)
    finally:
        engine.dispose()
    url = make_url(_pg_server.url).update_query_dict({"options": f"-csearch_path={name}"})
    yield Settings(data_dir=folder, database_url=url.render_as_string(hide_password=False),
                   municipality_id=MUNICIPALITY)
    _pg_server.drop(name)


@pytest.fixture
def demo_settings(pg_demo: Settings) -> Settings:
    # The web conftest's app and clients, on this module's PostgreSQL demo.
    return replace(pg_demo)


@contextmanager
def round_trips(engine: Engine) -> Iterator[Callable[[], int]]:
    """Count the client's round trips to the server in the block: one ReadyForQuery answers
    each Sync (a pipeline's or a plain query's), as libpq's own trace records them. From when
    a connection is handed out: the pool's liveness check before that is not counted."""
    trace = tempfile.TemporaryFile("w+")
    traced: list[Any] = []

    def on_checkout(dbapi: Any, record: Any, proxy: Any) -> None:
        dbapi.pgconn.trace(trace.fileno())
        dbapi.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
        traced.append(dbapi)

    def on_checkin(dbapi: Any, record: Any) -> None:
        if dbapi in traced:
            dbapi.pgconn.untrace()
            traced.remove(dbapi)

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield lambda: (trace.seek(0), trace.read().count("ReadyForQuery"))[1]
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)
        for dbapi in traced:
            dbapi.pgconn.untrace()
        trace.close()


def test_the_shift_is_read_with_the_session_in_one_round_trip(client_for, portner_app) -> None:
    p = portner_app.state.portner
    assert p.engine.dialect.name == "postgresql"
    nurse = client_for("demo-nurse-1")
    key, device_id = register(nurse)
    first = nurse.get(f"{API}/me/credentials", params={"device_id": device_id})  # issues them
    assert first.status_code == 200 and first.json()["credentials"], first.text
    with round_trips(p.engine) as counted:
        again = nurse.get(f"{API}/me/credentials", params={"device_id": device_id})
        assert again.status_code == 200
        # The session's account with the shift: one.
        assert counted() == 1
    assert again.json()["credentials"] == first.json()["credentials"]
    # Another nurse's phone is not found, as on SQLite.
    other = client_for("demo-nurse-2")
    assert other.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 404


def test_an_upload_reads_who_and_the_heads_of_her_locks_in_its_first_round_trip(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    with round_trips(p.engine) as counted:
        answer = nurse.post(f"{API}/door-events", json=batch)
        assert answer.status_code == 200, answer.text
        # BEGIN with the account, the heads of the locks she may upload for, the events stored
        # before, who holds the credentials and the visits; whom the Encounter names (she locked
        # up as she left: her visit ended); then the writes with the audit append and the COMMIT.
        assert counted() == 3
    result = answer.json()["results"][0]
    assert (result["accepted"], result["opened"], result["arrivals"], result["departures"]) == \
        (len(events), 2, 1, 1), result
    with p.engine.connect() as conn:
        stored = conn.execute(select(func.count()).select_from(t.door_events)
                              .where(t.door_events.c.lock_id == lock_id)).scalar_one()
        status = conn.execute(select(t.visits.c.status).where(t.visits.c.id == visit_id)).scalar_one()
        encounter = conn.execute(select(t.outbox.c.payload)
                                 .where(t.outbox.c.idempotency_key == f"encounter:{visit_id}")).scalar_one()
    assert stored == len(events) and status == "completed"
    assert encounter["resourceType"] == "Encounter" and encounter["participant"], encounter
    # Sent again: nothing new, and no visit ends twice; read in one round trip fewer, as no
    # Encounter is due.
    with round_trips(p.engine) as counted:
        retry = nurse.post(f"{API}/door-events", json=batch)
        assert retry.status_code == 200 and counted() == 2  # ... and a plain COMMIT
    assert retry.json()["results"][0]["accepted"] == 0 and retry.json()["results"][0]["departures"] == 0


def test_a_lock_she_may_not_upload_for_is_refused_before_anything_is_stored(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse1, nurse2 = client_for("demo-nurse-1"), client_for("demo-nurse-2")
    lock_id, events, _ = lock_with_opening(p, nurse1)
    with p.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(t.door_events)).scalar_one()
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    # demo-nurse-2 has no visit at that home: the same 403 as for a lock that does not exist.
    for uploads in (batch, {"uploads": [{"lock_id": "no-such-lock", "events": events}]}):
        refused = nurse2.post(f"{API}/door-events", json=uploads)
        assert refused.status_code == 403 and fields(refused) == ["body/uploads/0/lock_id"], refused.text
    with p.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.door_events)).scalar_one() == before


def test_a_lock_she_may_not_upload_for_is_never_locked_by_her_batch(client_for, portner_app) -> None:
    """Who may upload for which lock is decided in the statement that locks the locks' rows:
    another nurse's batch takes no lock of a lock that is not hers, so it is refused at once
    while that lock's row is held elsewhere (an upload of its own nurse), and the lock's own
    uploads never wait behind a stranger's."""
    p = portner_app.state.portner
    nurse1, nurse2 = client_for("demo-nurse-1"), client_for("demo-nurse-2")
    lock_id, events, _ = lock_with_opening(p, nurse1)
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    holder = p.engine.connect()
    try:
        holder.exec_driver_sql("SELECT id FROM locks WHERE id = %s FOR UPDATE", (lock_id,))
        answers: list[Any] = []
        refused = threading.Thread(target=lambda: answers.append(nurse2.post(f"{API}/door-events", json=batch)))
        refused.start()
        refused.join(timeout=10)
        waited = refused.is_alive()
    finally:
        holder.rollback()
        holder.close()
    refused.join(timeout=30)
    assert not waited, "the refused batch waited for the row of a lock that is not hers"
    assert answers[0].status_code == 403 and fields(answers[0]) == ["body/uploads/0/lock_id"], answers[0].text


def test_a_disabled_or_signed_out_uploader_is_refused_and_a_malformed_batch_named(
        client_for, portner_app, clock) -> None:
    # (This module's tests share one database: demo-nurse-3 is this test's alone.)
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-3")
    malformed = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": "x", "events": [{"seq": "1"}]}]})
    assert malformed.status_code == 422 and any(f.startswith("body/uploads/0/events/0") for f in fields(malformed))
    with p.engine.connect() as conn:
        account = conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == "demo-nurse-3")).scalar_one()
    set_account_disabled(p.engine, account, True, now=clock(), by="test")
    disabled = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": "x", "events": []}]})
    assert disabled.status_code == 401 and disabled.json()["type"].endswith("account-disabled")
    set_account_disabled(p.engine, account, False, now=clock(), by="test")
    _, device_id = register(nurse)
    assert nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 200
    end_sessions(p.engine, account, now=p.now())
    signed_out = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": "x", "events": []}]})
    assert signed_out.status_code == 401
    assert nurse.get(f"{API}/me/credentials", params={"device_id": device_id}).status_code == 401


def test_the_demos_import_leaves_the_planner_statistics_of_what_it_filled(pg_demo: Settings) -> None:
    # A bulk import runs ANALYZE on the tables it filled (storage.db.refresh_statistics): a
    # table never analyzed has reltuples -1, and the upload's lock check was planned from
    # guesses until autovacuum came by.
    from portner.storage.db import make_engine

    engine = make_engine(pg_demo.database_url)
    try:
        with engine.connect() as conn:
            counted = dict(conn.exec_driver_sql(
                "SELECT relname, reltuples FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relname IN ('visits', 'grants', 'locks', 'homes')").all())
    finally:
        engine.dispose()
    assert set(counted) == {"visits", "grants", "locks", "homes"}
    assert all(n > 0 for n in counted.values()), counted


@pytest.mark.parametrize("events", [1, 2])
def test_a_credential_id_postgresql_cannot_hold_is_answered_as_on_sqlite(client_for, portner_app,
                                                                           events: int) -> None:
    # PostgreSQL text cannot hold NUL (one event's credential would be read as "= value", two's as
    # one array: both failed with a 500).
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, logged, _ = lock_with_opening(p, nurse)
    sent = [{**event, "credential_id": f"c\u0000{n}"} for n, event in enumerate(logged[:events])]
    answer = nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": sent}]})
    # Refused as malformed, naming the field, on either database: nothing of the batch stored.
    assert answer.status_code == 422, answer.text
    assert any(f.endswith("/credential_id") for f in fields(answer)), answer.text
