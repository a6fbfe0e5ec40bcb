"""The driver-level reads of storage.bulk behave as SQLAlchemy's own: errors in its classes, and
(on SQLite) the reads of one connection in one transaction."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DataError, DBAPIError

from portner.storage.bulk import fetch_in, fetch_rows, fetch_together


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
