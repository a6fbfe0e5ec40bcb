"""A phone's upload as web/api/phone.py `_ingest` stores it on PostgreSQL
(bulk.pipelined_transaction around ingest_uploads_in, ends_transaction), failing at each of its
writes: a trigger raising, a deferred check failing at the COMMIT, the server ending the session
mid-statement, Python raising between or inside its pipelines. A few events go in the pipelined
way (the COMMIT queued behind the audit append); "many" is the gateway's way (COPY for the events
and the audit, the head moved by a statement of SQLAlchemy's, committed at the block's end).
Whatever fails, nothing of the upload is stored, the error is SQLAlchemy's class, and the one
pooled connection goes back clean: the same upload then goes in whole."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from psycopg.pq import PipelineStatus, TransactionStatus
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from portner.services import door_events
from portner.services.door_events import LockUpload, ingest_uploads_in
from portner.storage import audit
from portner.storage.bulk import pipelined_transaction
from tests.services.test_door_day import day  # noqa: F401 - `day` is the fixture
from tests.services.test_door_events_ingest import ready  # noqa: F401 - `ready` is the fixture
from tests.services.test_importing import at
from tests.storage.test_pipelined_transaction import _schema_engine

pytestmark = pytest.mark.postgres

# What an upload may write, and so what a failed one must leave as it was.
_TABLES = ("door_events", "door_event_pending", "lock_log_anomalies", "locks", "visits", "outbox",
           "audit_events", "audit_head")


@pytest.fixture
def engine(pg_engine: Engine) -> Engine:
    """PostgreSQL only (the fixtures `day` and `ready` take `engine`)."""
    return pg_engine


@pytest.fixture
def one(pg_engine: Engine) -> Iterator[Engine]:
    """The schema through one pooled connection: every checkout after the upload is its."""
    engine = _schema_engine(pg_engine)
    yield engine
    engine.dispose()


@pytest.fixture
def inject(pg_engine: Engine) -> Iterator[Any]:
    """`inject(kind, table)`: a row trigger on `table` that raises ("fail"), raises only at the
    COMMIT ("deferred"), or has the server end the session ("die"); all dropped at the end."""
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION portner_test_fail() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'injected failure on %%', TG_TABLE_NAME; END $$")
        conn.exec_driver_sql(
            "CREATE FUNCTION portner_test_die() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5);"
            " RETURN NEW; END $$")

    def add(kind: str, table: str) -> None:
        with pg_engine.begin() as conn:
            if kind == "deferred":
                conn.exec_driver_sql(
                    f"CREATE CONSTRAINT TRIGGER portner_test AFTER INSERT OR UPDATE ON {table}"
                    " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION portner_test_fail()")
            else:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER portner_test BEFORE INSERT OR UPDATE OR DELETE ON {table}"
                    f" FOR EACH ROW EXECUTE FUNCTION portner_test_{kind}()")

    try:
        yield add
    finally:
        with pg_engine.begin() as conn:
            conn.exec_driver_sql("DROP FUNCTION portner_test_fail, portner_test_die CASCADE")


def _snapshot(engine: Engine) -> dict[str, tuple[int, str | None]]:
    with engine.connect() as conn:
        return {name: tuple(conn.exec_driver_sql(  # type: ignore[misc]
            f"SELECT count(*), md5(string_agg(r::text, '|' ORDER BY r::text)) FROM {name} r").one())
            for name in _TABLES}


def _as_ingest_stores_it(engine: Engine, r: dict[str, Any], now: datetime) -> Any:
    """What web/api/phone.py's _ingest does on PostgreSQL, for the fixture's six events."""
    upload = LockUpload(r["lock"].lock_id, r["events"], r["key"])
    with pipelined_transaction(engine) as conn:
        return ingest_uploads_in(conn, [upload], now=now, ends_transaction=True)


def _assert_clean(engine: Engine) -> None:
    with engine.connect() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        assert dbapi.autocommit is False
        assert dbapi.info.transaction_status == TransactionStatus.IDLE
        assert dbapi.pgconn.pipeline_status == PipelineStatus.OFF
        assert [k for k in conn.info if str(k).startswith("portner.")] == []


@pytest.fixture(params=["few", "many"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "many":  # as a gateway's batch goes in, here for the fixture's six events
        monkeypatch.setattr(door_events, "_FEW_EVENTS", 0)
        monkeypatch.setattr(audit, "_FEW", 0)
    return str(request.param)


def _then_all_goes_in(one: Engine, r: dict[str, Any], before: dict[str, Any]) -> None:
    assert _snapshot(one) == before, "nothing of a failed upload is stored"
    _assert_clean(one)
    report = _as_ingest_stores_it(one, r, at(10))
    assert (report[0].accepted, report[0].arrivals, report[0].departures) == (6, 1, 1)
    after = _snapshot(one)
    assert all(after[name] != before[name] for name in ("door_events", "locks", "visits", "outbox",
                                                        "audit_events", "audit_head"))
    _assert_clean(one)


_WRITTEN = ["door_events", "visits", "outbox", "locks", "audit_events", "audit_head"]


@pytest.mark.parametrize("table", _WRITTEN)
@pytest.mark.parametrize("kind", ["fail", "deferred"])
def test_a_write_failing_on_the_server_stores_nothing_of_the_upload(
        ready: dict[str, Any], one: Engine, inject: Any, way: str, kind: str, table: str) -> None:  # noqa: F811
    before = _snapshot(one)
    inject(kind, table)
    with pytest.raises(DBAPIError, match="injected failure"):
        _as_ingest_stores_it(one, ready, at(9))
    with one.begin() as conn:
        conn.exec_driver_sql(f"DROP TRIGGER portner_test ON {table}")
    _then_all_goes_in(one, ready, before)


@pytest.mark.parametrize("table", _WRITTEN)
def test_the_session_ended_mid_upload_stores_nothing(
        ready: dict[str, Any], one: Engine, inject: Any, way: str, table: str) -> None:  # noqa: F811
    before = _snapshot(one)
    inject("die", table)
    with pytest.raises(OperationalError):
        _as_ingest_stores_it(one, ready, at(9))
    with one.begin() as conn:
        conn.exec_driver_sql(f"DROP TRIGGER portner_test ON {table}")
    _then_all_goes_in(one, ready, before)


@pytest.mark.parametrize("raised", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("where", ["between the reads and the writes", "inside the writes"])
def test_python_raising_in_the_upload_stores_nothing(
        ready: dict[str, Any], one: Engine, monkeypatch: pytest.MonkeyPatch, way: str,  # noqa: F811
        where: str, raised: type[BaseException]) -> None:
    def boom(*_: Any, **__: Any) -> Any:
        raise raised("injected")

    before = _snapshot(one)
    with monkeypatch.context() as patched:
        if where == "inside the writes":
            # few: the writes are queued in the pipeline, the append and COMMIT not yet; many:
            # the events' COPY is done and the head taken, the audit's COPY half written.
            patched.setattr(audit, "_entry_tail", boom)
        else:
            patched.setattr(door_events._Batch, "_encounters", boom)
        with pytest.raises(raised):
            _as_ingest_stores_it(one, ready, at(9))
    _then_all_goes_in(one, ready, before)
