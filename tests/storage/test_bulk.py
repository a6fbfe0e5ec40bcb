"""The driver-level reads of storage.bulk behave as SQLAlchemy's own: errors in its classes, and
(on SQLite) the reads of one connection in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from portner.storage.bulk import (
    fetch_in,
    fetch_rows,
    fetch_together,
    instant_writer,
    pipelined_transaction,
    sent_together,
)


def test_reads_together_come_back_in_order_whatever_their_kind(engine: Engine) -> None:
    with engine.connect() as conn:
        plain, listed, skipped = fetch_together(conn, [
            ("SELECT ? + 1", None, (1,)),
            ("SELECT 10 WHERE 1 {ids}", [1, 2], ()),
            ("SELECT 20 WHERE 1 {ids}", [], ()),  # no values: not run, no rows
        ])
    assert (plain, listed, skipped) == ([(2,)], [(10,)], [])


def test_one_value_reads_as_many_do(engine: Engine) -> None:
    # One value is sent as "= value" on PostgreSQL (kept plans stay index lookups), several as
    # one array: the rows are the same either way, for text and for numbers, run after run
    # (past the fifth, when psycopg prepares the statement and the server may keep its plan).
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (id varchar(8) PRIMARY KEY, n bigint)"))
        conn.execute(text("INSERT INTO kept VALUES ('a', 1), ('b', 2), ('c', 3)"))
        try:
            for _ in range(7):
                assert fetch_in(conn, "SELECT id FROM kept WHERE id {ids}", ["b"]) == [("b",)]
                assert fetch_in(conn, "SELECT id FROM kept WHERE n {ids} ORDER BY id", [3, 1]) == [("a",), ("c",)]
                one, none, many = fetch_together(conn, [
                    ("SELECT n FROM kept WHERE n > ? AND id {ids}", ["c"], (1,)),
                    ("SELECT n FROM kept WHERE n > ? AND id {ids}", ["a"], (1,)),
                    ("SELECT n FROM kept WHERE id {ids} ORDER BY n", ["a", "c", "a"], ()),
                ])
                assert (one, none, many) == ([(3,)], [], [(1,), (3,)])
        finally:
            conn.execute(text("DROP TABLE kept"))


def test_on_postgresql_one_value_is_compared_as_itself_and_several_as_one_array() -> None:
    from portner.storage.bulk import _pg_any

    assert _pg_any("SELECT 1 WHERE a = ? AND id {ids}", ["x"], (1,)) == (
        "SELECT 1 WHERE a = %s AND id = %s", (1, "x"))
    assert _pg_any("SELECT 1 WHERE a = ? AND id {ids}", ["x", "y"], (1,)) == (
        "SELECT 1 WHERE a = %s AND id = ANY(%b)", (1, ["x", "y"]))


def test_one_value_of_every_kind_the_callers_pass_reads_as_it_does_among_others(engine: Engine) -> None:
    # The callers pass ids (text, some with the characters the query text gives a meaning:
    # "%s", "?", "{ids}", "%"), sequence numbers (bigint, past int4 too), digests and instants;
    # each one alone ("= value" on PostgreSQL) finds what it finds among others (one array).
    at = datetime(2026, 12, 3, 7, 0, tzinfo=UTC)
    pg = engine.dialect.name == "postgresql"
    odd = ["%s", "?", "{ids}", "100%", "o'hara", "a\\b"]
    with engine.begin() as conn:
        stored = instant_writer(conn)
        conn.exec_driver_sql(f"CREATE TABLE kinds (s varchar(20), n bigint, b {'bytea' if pg else 'blob'},"
                             f" at {'timestamptz' if pg else 'text'})")
        rows = [(s, 2**40 + i, bytes([i]) * 32, stored(at + timedelta(minutes=i))) for i, s in enumerate(odd)]
        conn.exec_driver_sql(f"INSERT INTO kinds VALUES ({', '.join(['%s' if pg else '?'] * 4)})", rows)
        try:
            for column, position in (("s", 0), ("n", 1), ("b", 2), ("at", 3)):
                sql = f"SELECT s FROM kinds WHERE s <> ? AND {column} {{ids}} ORDER BY s"
                for n, row in enumerate(rows):
                    value, other = row[position], rows[n - 1][position]
                    assert fetch_in(conn, sql, [value], "-") == [(row[0],)], (column, row[0])
                    assert fetch_in(conn, sql, [value, other], "-") == sorted([(row[0],), (rows[n - 1][0],)])
                    alone, among = fetch_together(conn, [(sql, [value], ("-",)), (sql, {value, other}, ("-",))])
                    assert alone == [(row[0],)] and len(among) == 2
            # A value nothing holds, alone or not; None alone (no row equals NULL).
            assert fetch_in(conn, "SELECT s FROM kinds WHERE n {ids}", [2**62]) == []
            assert fetch_in(conn, "SELECT s FROM kinds WHERE n {ids}", [2**62, 2**62 + 1]) == []
            assert fetch_in(conn, "SELECT s FROM kinds WHERE s {ids}", [None]) == []
        finally:
            conn.exec_driver_sql("DROP TABLE kinds")


def test_one_value_reads_where_its_list_stands_whatever_surrounds_it(engine: Engine) -> None:
    # "{ids}" after NOT, inside a subquery and a function's argument, and with parameters
    # before it in a subquery too: the door_events reads' shapes, one value as several.
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE kept (id varchar(8) PRIMARY KEY, n bigint)"))
        conn.execute(text("INSERT INTO kept VALUES ('a', 1), ('b', 2), ('c', 3)"))
        try:
            for values, expected in ((["b"], [("a",), ("c",)]), (["b", "c"], [("a",)])):
                assert fetch_in(conn, "SELECT id FROM kept WHERE NOT id {ids} ORDER BY id", values) == expected
                assert fetch_in(conn, "SELECT id FROM kept WHERE NOT (lower(id) {ids}) ORDER BY id",
                                values) == expected
                assert fetch_in(conn, "SELECT id FROM kept WHERE n > ? AND id NOT IN (SELECT id FROM kept"
                                " WHERE n >= ? AND id {ids}) ORDER BY id", values, 0, 1) == expected
                assert fetch_in(conn, "SELECT coalesce(max(n), 0) FROM kept WHERE n <= (SELECT n FROM kept"
                                " WHERE id = ?) AND id {ids}", values, "c") == [(max(ord(v) - 96 for v in values),)]
        finally:
            conn.execute(text("DROP TABLE kept"))


def test_a_failing_read_raises_sqlalchemys_class_and_the_connection_goes_on(pg_engine: Engine) -> None:
    with pg_engine.connect() as conn:
        for read in (lambda: fetch_rows(conn, "SELECT 1 / ?", (0,)),
                     lambda: fetch_in(conn, "SELECT 1 / ? WHERE 1 {ids}", [1], 0),
                     lambda: fetch_together(conn, [("SELECT 1", None, ()), ("SELECT 1 / ?", None, (0,))])):
            with pytest.raises(DataError) as raised:
                read()
            assert isinstance(raised.value, DBAPIError) and "division by zero" in str(raised.value.orig)
            conn.rollback()
        assert fetch_rows(conn, "SELECT ?", (5,)) == [(5,)]


def test_on_sqlite_the_reads_of_one_connection_share_a_transaction(sqlite_engine: Engine) -> None:
    # As conn.execute would: another connection's commit in between is not seen.
    with sqlite_engine.begin() as conn:
        conn.execute(text("CREATE TABLE seen (n int)"))
        conn.execute(text("INSERT INTO seen VALUES (1)"))
    with sqlite_engine.connect() as reader:
        assert fetch_rows(reader, "SELECT count(*) FROM seen", ()) == [(1,)]
        assert reader.in_transaction()
        with sqlite_engine.begin() as writer:
            writer.execute(text("INSERT INTO seen VALUES (2)"))
        assert fetch_together(reader, [("SELECT count(*) FROM seen", None, ())]) == [[(1,)]]
    with sqlite_engine.connect() as conn:
        assert fetch_rows(conn, "SELECT count(*) FROM seen", ()) == [(2,)]
        conn.execute(text("DROP TABLE seen"))
        conn.commit()


def test_a_failing_copy_raises_sqlalchemys_class(pg_engine: Engine) -> None:
    from portner.storage.bulk import copy_rows, copy_writer

    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE copied (n int)"))
    try:
        for write in (lambda conn: copy_rows(conn, "COPY copied (n) FROM STDIN", [("not a number",)]),
                      lambda conn: _write_all(copy_writer(conn, "COPY copied (n) FROM STDIN"), "x\n")):
            with pytest.raises(DataError), pg_engine.begin() as conn:
                write(conn)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("DROP TABLE copied"))


def _write_all(writer, text_: str) -> None:  # type: ignore[no-untyped-def]
    with writer as write:
        write(text_)


@pytest.fixture
def scratch(pg_engine: Engine) -> Iterator[Engine]:
    with pg_engine.begin() as conn:
        conn.execute(text("CREATE TABLE scratch (id int PRIMARY KEY)"))
    try:
        yield pg_engine
    finally:
        with pg_engine.begin() as conn:
            conn.execute(text("DROP TABLE scratch"))


def _ids(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(text("SELECT id FROM scratch ORDER BY id")).scalars())


@pytest.mark.parametrize("first", ["pipeline", "sqlalchemy", "driver"])
def test_a_pipelined_transaction_is_one_whatever_runs_first(scratch: Engine, first: str) -> None:
    # Its BEGIN goes with whatever comes first (the driver's connection is in autocommit): an
    # error after a write undoes that write, as engine.begin() would.
    with pytest.raises(RuntimeError), pipelined_transaction(scratch) as conn:
        if first == "pipeline":
            with sent_together(conn) as run:
                run("INSERT INTO scratch VALUES (%s)", (1,))
        elif first == "sqlalchemy":
            conn.execute(text("INSERT INTO scratch VALUES (1)"))
        else:
            fetch_rows(conn, "INSERT INTO scratch VALUES (?) RETURNING id", (1,))
        assert fetch_together(conn, [("SELECT id FROM scratch", None, ())]) == [[(1,)]]
        raise RuntimeError("after the write")
    assert _ids(scratch) == []
    # Committed at the end when the caller queued no COMMIT.
    with pipelined_transaction(scratch) as conn:
        conn.execute(text("INSERT INTO scratch VALUES (2)"))
    assert _ids(scratch) == [2]


def test_a_pipelined_transaction_ends_where_the_caller_queued_its_commit(scratch: Engine) -> None:
    with pipelined_transaction(scratch) as conn:
        (seen,) = fetch_together(conn, [("SELECT count(*) FROM scratch", None, ())])
        with sent_together(conn) as run:
            run("INSERT INTO scratch VALUES (%s)", (3,))
            run("COMMIT", ())
    assert seen == [(0,)] and _ids(scratch) == [3]
    # A write that fails in the last pipeline: nothing of the transaction is stored.
    with pytest.raises(IntegrityError), pipelined_transaction(scratch) as conn:
        with sent_together(conn) as run:
            run("INSERT INTO scratch VALUES (%s)", (4,))
            run("INSERT INTO scratch VALUES (%s)", (3,))  # taken
            run("COMMIT", ())
    assert _ids(scratch) == [3]
    # The pool's connection went back as engine.begin() expects it: a transaction of its own.
    with pytest.raises(RuntimeError), scratch.begin() as conn:
        conn.execute(text("INSERT INTO scratch VALUES (5)"))
        raise RuntimeError("rolled back")
    assert _ids(scratch) == [3]
