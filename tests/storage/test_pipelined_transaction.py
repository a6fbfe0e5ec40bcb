"""bulk.pipelined_transaction held to engine.begin()'s promises on PostgreSQL when things go
wrong: whatever fails, and wherever (a statement of SQLAlchemy's, of the driver's, a pipeline, a
COPY, Python in between, the server ending the session, Ctrl-C), nothing of the block is stored,
the error is SQLAlchemy's class (or the KeyboardInterrupt it was), and the pool's connection goes
back as engine.begin() expects it. The engine has one pooled connection, so each check after a
block gets the very connection the block had (unless the block's was lost)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

import pytest
from psycopg.pq import PipelineStatus, TransactionStatus
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError, OperationalError

from portner.storage.bulk import (
    copy_writer,
    fetch_rows,
    fetch_together,
    pipelined_transaction,
    sent_together,
)
from portner.storage.db import make_engine

pytestmark = pytest.mark.postgres


def _schema_engine(pg_engine: Engine, make: Callable[..., Engine] = make_engine) -> Engine:
    with pg_engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
    url = pg_engine.url.render_as_string(hide_password=False)
    return make(url, pool_size=1, max_overflow=0, pool_timeout=5,
                connect_args={"options": f"-csearch_path={schema} -csynchronous_commit=off"})


@pytest.fixture
def one(pg_engine: Engine) -> Iterator[Engine]:
    """The test schema with a table `scratch`, through an engine of one pooled connection."""
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (id int PRIMARY KEY)"))
    engine = _schema_engine(pg_engine)
    try:
        yield engine
    finally:
        engine.dispose()
        with pg_engine.begin() as conn:
            conn.execute(text("DROP TABLE scratch"))


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM scratch ORDER BY id")).scalars())


def _backend(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.connection.dbapi_connection.info.backend_pid)  # type: ignore[union-attr]


def _assert_pool_clean(engine: Engine) -> None:
    """The next checkout: not in autocommit, no transaction, no pipeline, no flag of ours left;
    and engine.begin() on it is a transaction that an error undoes."""
    with engine.connect() as conn:
        dbapi: Any = conn.connection.dbapi_connection
        assert dbapi.autocommit is False
        assert dbapi.info.transaction_status == TransactionStatus.IDLE
        assert dbapi.pgconn.pipeline_status == PipelineStatus.OFF
        assert [k for k in conn.info if str(k).startswith("portner.")] == []
    before = _ids(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO scratch VALUES (-1)"))
        raise RuntimeError("rolled back")
    assert _ids(engine) == before


# Ends this session on the server, from inside a statement (as a failover or an admin would).
_DIE = "DO $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); PERFORM pg_sleep(5); END $$"


def _write_then(conn: Any, first: str) -> None:
    """A write into scratch made the way `first` names."""
    if first == "pipeline":
        with sent_together(conn) as run:
            run("INSERT INTO scratch VALUES (%s)", (1,))
    elif first == "driver":
        fetch_rows(conn, "INSERT INTO scratch VALUES (?) RETURNING id", (1,))
    elif first == "copy":
        with copy_writer(conn, "COPY scratch (id) FROM STDIN") as write:
            write("1\n")
    else:
        conn.execute(text("INSERT INTO scratch VALUES (1)"))


_SEND = {
    "pipeline": lambda conn, sql: _sent(conn, sql),
    "driver": lambda conn, sql: fetch_rows(conn, sql, ()),
    "together": lambda conn, sql: fetch_together(conn, [(sql, None, ())]),
    "sqlalchemy": lambda conn, sql: conn.execute(text(sql)),
}


def _sent(conn: Any, sql: str) -> None:
    with sent_together(conn) as run:
        run(sql, ())
        run("COMMIT", ())


@pytest.mark.parametrize("by", [
    "pipeline", "driver", "together",
    pytest.param("sqlalchemy"),
])
def test_the_server_ending_the_session_is_sqlalchemys_error_and_stores_nothing(one: Engine, by: str) -> None:
    before = _backend(one)
    with pytest.raises(OperationalError), pipelined_transaction(one) as conn:
        _write_then(conn, "driver")
        _SEND[by](conn, _DIE)
    assert _ids(one) == []
    assert _backend(one) != before  # the lost connection was not handed out again
    _assert_pool_clean(one)


def test_the_session_ended_while_idle_between_pipelines_stores_nothing(one: Engine, pg_engine: Engine) -> None:
    with pytest.raises(OperationalError), pipelined_transaction(one) as conn:
        _write_then(conn, "pipeline")
        pid = conn.connection.dbapi_connection.info.backend_pid  # type: ignore[union-attr]
        with pg_engine.connect() as other:
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.2)
        _sent(conn, "INSERT INTO scratch VALUES (2)")
    assert _ids(one) == []
    _assert_pool_clean(one)


@pytest.mark.parametrize("first", ["pipeline", "driver", "copy", "sqlalchemy"])
@pytest.mark.parametrize("failing", ["timeout", "deferred at the queued COMMIT", "deferred at the end"])
def test_a_failure_on_the_server_undoes_the_block(one: Engine, first: str, failing: str) -> None:
    with one.begin() as conn:
        conn.execute(text("CREATE TABLE scratch_child (id int PRIMARY KEY, parent int"
                          " REFERENCES scratch DEFERRABLE INITIALLY DEFERRED)"))
    try:
        with pytest.raises(DBAPIError), pipelined_transaction(one) as conn:
            _write_then(conn, first)
            if failing == "timeout":
                conn.execute(text("SET LOCAL statement_timeout = '50ms'"))
                _sent(conn, "SELECT pg_sleep(1)")
            else:
                with sent_together(conn) as run:
                    run("INSERT INTO scratch_child VALUES (1, 99)", ())  # fails at the COMMIT
                    if failing == "deferred at the queued COMMIT":
                        run("COMMIT", ())
        assert _ids(one) == []
        _assert_pool_clean(one)
    finally:
        with one.begin() as conn:
            conn.execute(text("DROP TABLE scratch_child"))



def _interrupted_after(seconds: float) -> Callable[[], None]:
    """Ctrl-C in `seconds` (SIGALRM in this, the main thread); returns what disarms it."""
    def interrupt(*_: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)

    def disarm() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)

    return disarm


@pytest.mark.parametrize("during", [
    "pipeline", "driver", "together", "python", "copy",
    pytest.param("sqlalchemy"),
])
def test_ctrl_c_anywhere_is_a_keyboardinterrupt_and_stores_nothing(one: Engine, during: str) -> None:
    disarm = _interrupted_after(0.3)
    try:
        with pytest.raises(KeyboardInterrupt), pipelined_transaction(one) as conn:
            _write_then(conn, "driver")
            if during == "python":
                time.sleep(2)
            elif during == "copy":
                with copy_writer(conn, "COPY scratch (id) FROM STDIN") as write:
                    write("2\n")
                    time.sleep(2)
                    write("3\n")
            else:
                _SEND[during](conn, "SELECT pg_sleep(2)")
    finally:
        disarm()
    assert _ids(one) == []
    _assert_pool_clean(one)


@pytest.mark.parametrize("raised", [None, RuntimeError, KeyboardInterrupt])
def test_a_block_that_sends_nothing_leaves_the_connection_as_it_was(one: Engine, raised: Any) -> None:
    before = _backend(one)
    with pytest.raises(raised) if raised else nullcontext(), pipelined_transaction(one):
        if raised:
            raise raised("before any statement")
    assert _backend(one) == before
    _assert_pool_clean(one)


def test_a_generator_closed_in_the_block_stores_nothing(one: Engine) -> None:
    def rows() -> Iterator[int]:
        with pipelined_transaction(one) as conn:
            conn.execute(text("INSERT INTO scratch VALUES (1)"))
            yield 1
            conn.execute(text("INSERT INTO scratch VALUES (2)"))

    started = rows()
    assert next(started) == 1
    started.close()
    assert _ids(one) == []
    _assert_pool_clean(one)


def test_nothing_runs_in_autocommit_after_the_callers_commit(one: Engine) -> None:
    with pytest.raises(RuntimeError), pipelined_transaction(one) as conn:
        _sent(conn, "INSERT INTO scratch VALUES (1)")
        conn.execute(text("INSERT INTO scratch VALUES (2)"))
        raise RuntimeError("after")
    # The first block committed; the write after its COMMIT is undone, or refused.
    assert _ids(one) == [1]
    _assert_pool_clean(one)


def test_an_engine_not_made_by_make_engine_keeps_the_transaction_or_is_refused(pg_engine: Engine) -> None:
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (id int PRIMARY KEY)"))
    plain = _schema_engine(pg_engine, create_engine)
    try:
        with pytest.raises(Exception), pipelined_transaction(plain) as conn:  # noqa: B017 - any
            conn.execute(text("INSERT INTO scratch VALUES (1)"))
            raise RuntimeError("after the write")
        assert _ids(plain) == []
    finally:
        plain.dispose()
        with pg_engine.begin() as conn:
            conn.execute(text("DROP TABLE scratch"))


def test_a_streamed_read_may_come_first(one: Engine) -> None:
    with pipelined_transaction(one) as conn:
        # The statement's option, not the connection's (which would stream the INSERT too).
        assert list(conn.execute(text("SELECT 1").execution_options(stream_results=True)).scalars()) == [1]
        conn.execute(text("INSERT INTO scratch VALUES (1)"))
    assert _ids(one) == [1]
    _assert_pool_clean(one)
