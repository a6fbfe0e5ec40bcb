"""POST /door-events on PostgreSQL, whose batch is one transaction begun by its first pipeline
(bulk.pipelined_transaction): on every connection the request takes, the first statement sent is
BEGIN and nothing follows a COMMIT, whether a phone's few events or a gateway's many (COPY); and
a write failing on the server is SQLAlchemy's error (a 500) with nothing of the batch stored, the
same batch then going in whole."""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.pq import Trace
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError

from portner.domain.access import SCOPE_EVENTS_UPLOAD, AccountRole
from portner.services import door_events
from portner.services.accounts import DEV_ISSUER, create_account
from portner.storage import audit
from portner.storage.db import make_engine
from tests.web.test_phone_api import API, lock_with_opening
from tests.web.test_phone_api_postgresql import demo_settings, pg_demo  # noqa: F401 - fixtures

pytestmark = pytest.mark.postgres

_TABLES = ("door_events", "door_event_pending", "lock_log_anomalies", "locks", "visits", "outbox",
           "audit_events", "audit_head")


_FIRST_WORD = re.compile(r'^F\t\d+\t(?:Parse\t "[^"]*"|Query\t) "\s*(\w+)', re.MULTILINE)


def _statements(engine: Engine) -> Any:
    """A context giving, per connection handed out in it, the statements sent on it in order
    (libpq's trace of Parse and Query messages)."""

    class Traced:
        def __enter__(self) -> list[list[str]]:
            self.files: list[Any] = []
            self.out: list[list[str]] = []
            event.listen(engine, "checkout", self.checkout)
            event.listen(engine, "checkin", self.checkin)
            return self.out

        def checkout(self, dbapi: Any, _record: Any, _proxy: Any) -> None:
            trace = tempfile.TemporaryFile("w+")
            self.files.append((dbapi, trace))
            dbapi.pgconn.trace(trace.fileno())
            dbapi.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)

        def checkin(self, dbapi: Any, _record: Any) -> None:
            for traced, trace in [f for f in self.files if f[0] is dbapi]:
                traced.pgconn.untrace()
                self.files.remove((traced, trace))
                trace.seek(0)
                # Parse "" "the statement" ... or Query "the statement": its first word.
                sent = [m.upper() for m in _FIRST_WORD.findall(trace.read())]
                self.out.append(sent)
                trace.close()

        def __exit__(self, *_: Any) -> None:
            event.remove(engine, "checkout", self.checkout)
            event.remove(engine, "checkin", self.checkin)
            for dbapi, trace in self.files:
                dbapi.pgconn.untrace()
                trace.close()

    return Traced()


def _assert_one_transaction_each(connections: list[list[str]], *, failed: bool = False) -> None:
    """What was sent on each connection: BEGIN first, and its end last; a failed upload's
    COMMIT, queued behind the write that failed (so never run), is followed by its ROLLBACK."""
    for sent in connections:
        if not sent:
            continue
        assert sent[0] == "BEGIN" and sent.count("BEGIN") == 1, sent
        while sent[-1] == "DEALLOCATE":  # psycopg's, after a rollback: of the session, harmless
            sent = sent[:-1]
        ends = [s for s in sent if s in ("COMMIT", "ROLLBACK")]
        assert sent[len(sent) - len(ends):] == ends, sent
        assert ends in ([], ["COMMIT"], ["ROLLBACK"], ["COMMIT", "ROLLBACK"]), sent
        assert failed or "ROLLBACK" not in ends, sent


@pytest.fixture
def schema(pg_demo: Any) -> Iterator[Engine]:  # noqa: F811
    engine = make_engine(pg_demo.database_url)
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS portner_test_fail CASCADE")
    engine.dispose()


def _forget(schema: Engine, lock_id: str, visit_id: str) -> None:
    """The lock and the visit as if nothing of the lock's log had been stored (this module's
    tests share a database, and lock_with_opening logs the same events for a nurse's lock)."""
    with schema.begin() as conn:
        conn.exec_driver_sql("UPDATE visits SET status = 'planned', arrived_at = NULL, departed_at = NULL"
                             " WHERE id = %s", (visit_id,))
        conn.exec_driver_sql("DELETE FROM outbox WHERE idempotency_key = %s", (f"encounter:{visit_id}",))
        for table in ("door_events", "door_event_pending", "lock_log_anomalies"):
            conn.exec_driver_sql(f"DELETE FROM {table} WHERE lock_id = %s", (lock_id,))
        conn.exec_driver_sql("UPDATE locks SET synced_seq = 0, synced_hash = NULL WHERE id = %s", (lock_id,))


@pytest.fixture
def gateway(client_for: Any, portner_app: Any, clock: Any) -> Any:
    p = portner_app.state.portner
    subject = f"gateway-{secrets.token_hex(4)}"
    create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject=subject,
                   role=AccountRole.INTEGRATION, now=clock(), ids=p.ids, by="test",
                   scopes=[SCOPE_EVENTS_UPLOAD])
    return client_for(subject)


@pytest.mark.parametrize("way", ["few", "many"])
def test_each_connection_of_an_upload_begins_before_anything_and_ends_last(
        client_for: Any, portner_app: Any, gateway: Any, schema: Engine, monkeypatch: pytest.MonkeyPatch,
        way: str) -> None:
    if way == "many":  # a gateway's batch of many events: by COPY, the audit too
        monkeypatch.setattr(door_events, "_FEW_EVENTS", 0)
        monkeypatch.setattr(audit, "_FEW", 0)
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    _forget(schema, lock_id, visit_id)
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    for n, uploader in enumerate((nurse, nurse, gateway)):  # stored, sent again, by a gateway
        with _statements(p.engine) as connections:
            answer = uploader.post(f"{API}/door-events", json=batch)
        assert answer.status_code == 200, answer.text
        _assert_one_transaction_each(connections)
        if n == 0:
            assert answer.json()["results"][0]["accepted"] == len(events)
            assert any("COPY" in sent for sent in connections) == (way == "many")


def _snapshot(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {name: tuple(conn.exec_driver_sql(
            f"SELECT count(*), md5(string_agg(r::text, '|' ORDER BY r::text)) FROM {name} r").one())
            for name in _TABLES}


@pytest.mark.parametrize("way", ["few", "many"])
@pytest.mark.parametrize(("table", "deferred"), [("door_events", False), ("visits", False),
                                                 ("audit_head", False), ("door_events", True)])
def test_an_upload_failing_at_a_write_stores_nothing_of_it(
        client_for: Any, portner_app: Any, schema: Engine, monkeypatch: pytest.MonkeyPatch,
        way: str, table: str, deferred: bool) -> None:
    if way == "many":
        monkeypatch.setattr(door_events, "_FEW_EVENTS", 0)
        monkeypatch.setattr(audit, "_FEW", 0)
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-2")
    lock_id, events, visit_id = lock_with_opening(p, nurse)
    _forget(schema, lock_id, visit_id)
    batch = {"uploads": [{"lock_id": lock_id, "events": events}]}
    before = _snapshot(schema)
    with schema.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION portner_test_fail() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'injected'; END $$")
        conn.exec_driver_sql(
            f"CREATE CONSTRAINT TRIGGER portner_test AFTER INSERT OR UPDATE ON {table}"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION portner_test_fail()"
            if deferred else
            f"CREATE TRIGGER portner_test BEFORE INSERT OR UPDATE ON {table}"
            " FOR EACH ROW EXECUTE FUNCTION portner_test_fail()")
    try:
        # (The test client raises what the app would answer with a 500.)
        with _statements(p.engine) as connections, pytest.raises(DBAPIError, match="injected"):
            nurse.post(f"{API}/door-events", json=batch)
        _assert_one_transaction_each(connections, failed=True)
        assert _snapshot(schema) == before
    finally:
        with schema.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION portner_test_fail CASCADE")
    stored = nurse.post(f"{API}/door-events", json=batch)
    assert stored.status_code == 200 and stored.json()["results"][0]["accepted"] == len(events), stored.text
