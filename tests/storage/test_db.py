"""Engines, migrations and the UtcDateTime column type on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, StatementError

from portner.storage.db import (
    current_revision,
    head_revision,
    make_engine,
    migrate,
    normalise_url,
    open_database,
)
from portner.storage.tables import audit_head, metadata, municipalities, outbox, zones

OSLO = ZoneInfo("Europe/Oslo")


def test_plain_postgresql_urls_use_psycopg3() -> None:
    assert normalise_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:///x.sqlite").drivername == "sqlite"


def test_sqlite_file_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    engine = open_database(f"sqlite:///{tmp_path / 'p.sqlite'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(zones).values(id="z1", municipality_id="nowhere", path="A|B"))
    engine.dispose()


def _owner(conn: Connection) -> None:
    """The outbox rows these tests write belong to a municipality (a foreign key)."""
    if conn.execute(select(municipalities.c.id).where(municipalities.c.id == "m")).first() is None:
        conn.execute(
            insert(municipalities).values(
                id="m", name="m", timezone="Europe/Oslo", service_model="distributed",
                window_lead_s=0, window_grace_s=0, baseline_key_minutes_per_shift=0,
                accept_synthetic_ids=False, plan_horizon_s=0,
            )
        )


def test_sqlite_memory_database_is_shared_across_checkouts() -> None:
    engine = open_database("sqlite://")
    with engine.begin() as conn:
        _owner(conn)
        conn.execute(insert(outbox).values(idempotency_key="k", municipality_id="m", kind="x", payload={},
                                           created_at=datetime.now(UTC)))
    with engine.connect() as other:
        assert other.execute(select(outbox.c.idempotency_key)).scalars().all() == ["k"]


def test_sqlite_savepoints_roll_back_only_their_part(sqlite_engine: Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT; make_engine takes it over.
    row = {"kind": "x", "payload": {}, "created_at": datetime.now(UTC), "municipality_id": "m"}
    with sqlite_engine.begin() as conn:
        _owner(conn)
        conn.execute(insert(outbox).values(idempotency_key="a", **row))
        nested = conn.begin_nested()
        conn.execute(insert(outbox).values(idempotency_key="b", **row))
        nested.rollback()
    with sqlite_engine.connect() as conn:
        assert conn.execute(select(outbox.c.idempotency_key)).scalars().all() == ["a"]


def test_migrate_brings_an_empty_database_to_head(empty_engine: Engine) -> None:
    assert current_revision(empty_engine) is None
    migrate(empty_engine)
    assert current_revision(empty_engine) == head_revision() == "0001_initial"
    migrate(empty_engine)  # idempotent: a second run changes nothing and does not fail
    assert current_revision(empty_engine) == "0001_initial"
    tables = set(inspect(empty_engine).get_table_names())
    assert set(metadata.tables) <= tables


def test_migrations_match_tables_py_exactly(empty_engine: Engine) -> None:
    """Fails when tables.py changed without a matching migration (alembic check, in a test)."""
    migrate(empty_engine)
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_migration_creates_the_audit_genesis_head(engine: Engine) -> None:
    with engine.connect() as conn:
        rows = conn.execute(select(audit_head.c.id, audit_head.c.seq, audit_head.c.hash)).all()
    assert [(r.id, r.seq, bytes(r.hash)) for r in rows] == [(1, 0, bytes(32))]


def _put(engine: Engine, key: str, at: datetime) -> None:
    with engine.begin() as conn:
        _owner(conn)
        conn.execute(
            insert(outbox).values(
                idempotency_key=key, municipality_id="m", kind="x", payload={}, created_at=at
            )
        )


def test_utc_datetime_round_trip_is_aware_utc(engine: Engine) -> None:
    local = datetime(2026, 3, 29, 3, 30, 15, 123456, tzinfo=OSLO)  # just after spring-forward
    _put(engine, "k", local)
    with engine.connect() as conn:
        stored = conn.execute(select(outbox.c.created_at)).scalar_one()
    assert stored == local
    assert stored.utcoffset() == timedelta(0)
    assert stored.tzinfo is not None
    assert stored.replace(tzinfo=None) == datetime(2026, 3, 29, 1, 30, 15, 123456)


def test_utc_datetime_compares_in_utc_whatever_the_input_offset(engine: Engine) -> None:
    # 09:00+02:00 is 07:00 UTC, earlier than 08:00 UTC although "09" > "08" as text.
    _put(engine, "early", datetime(2026, 6, 1, 9, 0, tzinfo=OSLO))
    _put(engine, "late", datetime(2026, 6, 1, 8, 0, tzinfo=UTC))
    with engine.connect() as conn:
        order = conn.execute(select(outbox.c.idempotency_key).order_by(outbox.c.created_at))
        assert order.scalars().all() == ["early", "late"]
        after = conn.execute(
            select(outbox.c.idempotency_key).where(
                outbox.c.created_at > datetime(2026, 6, 1, 7, 30, tzinfo=UTC)
            )
        )
        assert after.scalars().all() == ["late"]


def test_utc_datetime_refuses_naive_values(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive"):
        _put(engine, "naive", datetime(2026, 1, 1, 8, 0))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar_one() == 0


def test_make_engine_defaults_to_a_sqlite_file() -> None:
    engine = make_engine()
    assert engine.dialect.name == "sqlite"
    assert engine.url.database == "portner.sqlite"
    engine.dispose()


@pytest.mark.postgres
def test_a_pooled_connection_the_server_closed_is_replaced_without_a_query_per_checkout(pg_url: str) -> None:
    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    try:
        with engine.connect() as conn:
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with engine.connect() as conn:  # open: the same connection, and no ping before it
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == first
        assert len(sent) == 2
        admin = make_engine(pg_url)
        with admin.connect() as conn:
            # wait: until the backend has gone (and so has closed its end)
            assert conn.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": first}).scalar_one()
        admin.dispose()
        time.sleep(0.1)  # for the close to cross loopback
        with engine.connect() as conn:  # a new connection, not an error
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_checkout_check_takes_descriptors_above_1023_and_keeps_a_connection_with_a_notify(
        pg_url: str) -> None:
    import os
    import resource

    import psycopg

    engine = make_engine(pg_url, pool_size=1, max_overflow=0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened: list[int] = []
    try:
        # A server with many phones connected holds many descriptors: select() took none > 1023.
        if soft < 2048:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
        opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
        with engine.connect() as conn:
            assert conn.connection.dbapi_connection.pgconn.socket > 1023
            first = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            conn.exec_driver_sql("LISTEN portner_test_channel")
            conn.commit()
        conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo, autocommit=True) as other:
            other.execute("NOTIFY portner_test_channel, 'hello'")
        time.sleep(0.1)
        pings: list[object] = []
        real_ping = engine.dialect.do_ping
        engine.dialect.do_ping = lambda dbapi: pings.append(dbapi) or real_ping(dbapi)  # type: ignore[method-assign]
        # Something to read, but not the end: pinged (a proxy may pass an error on long before
        # the end), and kept; an idle connection is not pinged.
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == first
        assert len(pings) == 1
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() == first
            conn.exec_driver_sql("UNLISTEN *")
            conn.commit()
        assert len(pings) == 1
    finally:
        for fd in opened:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        engine.dispose()


def test_statistics_after_a_bulk_load_are_refreshed_or_the_failure_logged(
        pg_engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    from portner.storage.db import refresh_statistics

    refresh_statistics(pg_engine, ["visits", "grants"])  # the tables of this schema, by name
    with caplog.at_level("WARNING", logger="portner.storage.db"):
        refresh_statistics(pg_engine, ["no_such_table"])  # the load committed: nothing is raised
    assert "ANALYZE after a bulk load failed" in caplog.text
    with pg_engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT 1").scalar() == 1  # the pool's connection went back clean
