"""Bulk rows straight to the driver, in the caller's transaction.

A national morning writes and reads tens of thousands of visits, grants and credentials in one
transaction; SQLAlchemy's per-row type processing then costs more than the database itself. These
helpers convert values exactly as the column types in tables.py would (instants as UtcDateTime
stores them: naive UTC text on SQLite, aware UTC on PostgreSQL; JSON as json.dumps writes it) and
use one multi-row INSERT on SQLite or COPY on PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from psycopg.pq import PipelineStatus, TransactionStatus
from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError


def _sqlite_instant(value: datetime) -> str:
    if value.tzinfo is not UTC:
        if value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
        value = value.astimezone(UTC)
    return _sqlite_utc_text(value)


@lru_cache(maxsize=65536)
def _sqlite_utc_text(value: datetime) -> str:
    # Only UTC datetimes come here: for them equal keys are equal instants. (Two wall times in
    # one zone compare equal across a DST fold, so zoned values must not be cache keys.)
    # SQLAlchemy's SQLite DATETIME storage format, naive UTC with always six fraction digits.
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pg_instant(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() is None:
        raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
    return value.astimezone(UTC)


def instant_writer(conn: Connection) -> Callable[[datetime], Any]:
    """Return the function that turns an aware instant into what the driver stores for it."""
    return _sqlite_instant if conn.dialect.name == "sqlite" else _pg_instant


@lru_cache(maxsize=65536)
def _instant_from_text(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def read_instant(value: Any) -> datetime | None:
    """What UtcDateTime returns for a stored value: an aware UTC datetime (or None)."""
    if value is None:
        return None
    if type(value) is str:  # SQLite
        return _instant_from_text(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=65536)
def json_id_list(ids: tuple[str, ...]) -> str:
    """A list of ids as a JSON column stores it (json.dumps with its default format)."""
    return json.dumps(list(ids))


_json_id_list = json_id_list


@lru_cache(maxsize=65536)
def id_tuple_from_text(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def id_tuple(value: Any) -> tuple[str, ...]:
    # SQLite hands back the JSON text; psycopg has already parsed it.
    return id_tuple_from_text(value) if type(value) is str else tuple(value)


def dialect_insert(conn: Connection) -> Any:
    """The INSERT construct with ON CONFLICT for this connection's database (PostgreSQL or SQLite;
    both speak the same `on_conflict_do_nothing`/`on_conflict_do_update`)."""
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[Any]) -> None:
    """Insert tuples of driver-ready values: one executemany on SQLite, one COPY on PostgreSQL."""
    if not rows:
        return
    names = ", ".join(columns)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
        return
    copy_rows(conn, f"COPY {table.name} ({names}) FROM STDIN", rows)


def copy_rows(conn: Connection, statement: str, rows: list[Any]) -> None:
    """Stream rows to a PostgreSQL COPY ... FROM STDIN (text format) in the caller's transaction.

    The text is built here in one pass and written in large pieces: psycopg's write_row, one
    Python call per row, cost more than the server's work.
    """
    # The same DBAPI connection, so the same transaction as the rest of the caller's change.
    dbapi_connection: Any = _driver(conn)
    with _as_sqlalchemy_errors(conn, statement), dbapi_connection.cursor() as cursor, \
            cursor.copy(statement) as copy:
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            copy.write("".join(["\t".join(map(_copy_field, row)) + "\n" for row in chunk]))


@contextmanager
def copy_writer(conn: Connection, statement: str) -> Iterator[Callable[[str], None]]:
    """Yield `write(text)` into a PostgreSQL COPY ... FROM STDIN (text format) in the caller's
    transaction, for text the caller writes itself (lines ending in a newline; see
    `copy_text`): for rows whose types it knows, per-value dispatch is the larger cost. What is
    written goes to the server at once, so it inserts while the caller makes the next lines."""
    dbapi_connection: Any = _driver(conn)
    with _as_sqlalchemy_errors(conn, statement), dbapi_connection.cursor() as cursor, \
            cursor.copy(statement) as copy:
        yield copy.write


def copy_text(value: str) -> str:
    """A str in COPY text format (backslash, newline, CR and tab escaped)."""
    if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
        return value.translate(_COPY_ESCAPES)
    return value




def copy_instant(value: datetime) -> str:
    """An aware UTC instant (what instant_writer gives on PostgreSQL) in COPY text format."""
    return _copy_utc_instant(value) if value.tzinfo is UTC else _copy_field(value)


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_field(value: Any) -> str:
    """One value in COPY text format (NULL is \\N; backslash, newline, CR and tab escaped)."""
    kind = type(value)
    if kind is str:
        if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if value is None:
        return "\\N"
    if kind is int:
        return str(value)
    if kind is datetime:
        if value.tzinfo is UTC:
            return _copy_utc_instant(value)
        if value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
        return value.isoformat(sep=" ")
    if kind is bytes:
        return "\\\\x" + value.hex()  # bytea hex input, its backslash escaped for COPY
    if kind is bool:
        return "t" if value else "f"
    if isinstance(value, str):  # a str subclass: its plain text
        return _copy_field(str(value))
    raise TypeError(f"cannot COPY a value of type {kind.__name__}")


@lru_cache(maxsize=65536)
def _copy_utc_instant(value: datetime) -> str:
    return value.isoformat(sep=" ")


# Any one value in COPY text format, as copy_rows writes it (None is \\N).
copy_field = _copy_field


def _driver(conn: Connection) -> Any:
    """The driver's connection under `conn`, its transaction begun as `conn.execute` would begin
    it: on SQLite the engine's begin event sends BEGIN, so the raw reads of one connection share
    one snapshot, as SQLAlchemy's own do (psycopg begins by itself; in a pipelined_transaction
    the BEGIN is sent now)."""
    if not conn.in_transaction():
        conn.begin()
    dbapi_connection: Any = conn.connection.dbapi_connection
    if _begins_here(conn, dbapi_connection):
        dbapi_connection.execute("BEGIN")
    return dbapi_connection


@contextmanager
def driver_pipeline(conn: Connection) -> Iterator[Any]:
    """The driver's connection (PostgreSQL) in a psycopg pipeline, whose end is its one sync; in
    a pipelined_transaction whose BEGIN is not sent yet, that BEGIN is its first statement."""
    if not conn.in_transaction():
        conn.begin()
    dbapi_connection: Any = conn.connection.dbapi_connection
    begin = _begins_here(conn, dbapi_connection)
    with dbapi_connection.pipeline():
        if begin:
            dbapi_connection.execute("BEGIN")
        yield dbapi_connection


# conn.info's key: "in a pipelined_transaction" (its driver connection is in autocommit).
_PIPELINED = "portner.pipelined_transaction"


def _begins_here(conn: Connection, dbapi_connection: Any) -> bool:
    """In a pipelined_transaction, whether the next statement must send BEGIN before it: the
    server holds no transaction, none yet or the caller's COMMIT ended it (a statement after it
    begins a transaction of its own, as it would in engine.begin()). Known outside a pipeline
    only: in one, libpq learns the transaction's state at its sync, and its BEGIN was queued at
    its start."""
    if not conn.info.get(_PIPELINED):
        return False
    pgconn = dbapi_connection.pgconn
    return pgconn.pipeline_status == PipelineStatus.OFF and pgconn.transaction_status == TransactionStatus.IDLE


def send_pending_begin(conn: Connection, cursor: Any, *_: Any) -> None:
    """The engine's before_cursor_execute (PostgreSQL): a statement of SQLAlchemy's that comes
    first in a pipelined_transaction sends its BEGIN before it."""
    if _begins_here(conn, cursor.connection):
        # On the connection, not on `cursor`: a streamed read's is a server-side cursor.
        cursor.connection.execute("BEGIN")


@contextmanager
def pipelined_transaction(engine: Engine) -> Iterator[Connection]:
    """`engine.begin()` for a transaction of a few psycopg pipelines (a phone's upload): its
    BEGIN goes to the server with the first pipeline's statements (fetch_together, sent_together)
    instead of in a round trip of its own, as psycopg sends the BEGIN it makes, and a COMMIT the
    caller queued in the last one (audit.queue_append_prepared) ends it there. The driver's
    connection is in autocommit, so it sends no BEGIN of its own; whatever runs on `conn` when
    the server holds no transaction (a statement of SQLAlchemy's or the driver's) sends BEGIN
    before it, so nothing runs outside a transaction. Committed at the end if the caller did
    not; rolled back on an error, as engine.begin() does. Elsewhere than PostgreSQL,
    engine.begin()."""
    if engine.dialect.name != "postgresql":
        with engine.begin() as conn:
            yield conn
        return
    if not event.contains(engine, "before_cursor_execute", send_pending_begin):
        event.listen(engine, "before_cursor_execute", send_pending_begin)  # an engine not of make_engine
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        dbapi_connection: Any = conn.connection.dbapi_connection
        # Held here: once SQLAlchemy has invalidated a connection that failed, conn.info raises.
        info = conn.info
        info[_PIPELINED] = True
        try:
            yield conn
        except BaseException:
            # psycopg's rollback and commit act only when the server holds a transaction open.
            with suppress(Exception):  # a lost connection: the error that lost it is the one to raise
                if not dbapi_connection.closed:
                    dbapi_connection.rollback()
            raise
        else:
            with _as_sqlalchemy_errors(conn, "COMMIT"):
                dbapi_connection.commit()  # a no-op when the caller's COMMIT has ended it
        finally:
            info.pop(_PIPELINED, None)


@contextmanager
def _as_sqlalchemy_errors(conn: Connection, statement: str | None) -> Iterator[None]:
    try:
        yield
    except conn.dialect.loaded_dbapi.Error as exc:
        raise as_sqlalchemy_error(conn, exc, statement) from exc


def fetch_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run a query written with "?" placeholders straight on the driver; return plain tuples."""
    if conn.dialect.name != "sqlite":
        sql = sql.replace("?", "%s")
    with _as_sqlalchemy_errors(conn, sql):
        cursor = _driver(conn).cursor()
        try:
            cursor.execute(sql, tuple(params))
            return list(cursor.fetchall())
        finally:
            cursor.close()


def marks(n: int) -> str:
    return ", ".join("?" * n)


def fetch_in(
    conn: Connection, sql: str, values: Iterable[Any], *before: Any
) -> list[tuple[Any, ...]]:
    """Run `sql`, where "{ids}" stands for "IN (values)" and "?" marks the `before` parameters.

    On PostgreSQL one query with the values as one binary array (= ANY), however many there are
    (one value is "= value": see _pg_any); on SQLite one query per chunk of 500, well under its variable limit.
    """
    items = sorted(set(values))
    if not items:
        return []
    if conn.dialect.name == "sqlite":
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(items), 500):
            chunk = items[start : start + 500]
            rows += fetch_rows(conn, sql.format(ids=f"IN ({marks(len(chunk))})"), [*before, *chunk])
        return rows
    query = _pg_any(sql, items, before)
    with _as_sqlalchemy_errors(conn, query[0]), _driver(conn).cursor() as cursor:
        cursor.execute(*query)
        return list(cursor.fetchall())


def _pg_any(sql: str, items: list[Any], before: Sequence[Any]) -> tuple[str, tuple[Any, ...]]:
    sql = sql.replace("?", "%s")
    if len(items) == 1:
        # One value (a phone's upload names one lock): "= value", a statement of its own. Once
        # prepared, "= ANY(array)" is planned for an array of unknown length, so the server
        # either plans it again at every run or keeps a plan for many values (scans and hash
        # joins); "= value" keeps the plan of index lookups it would choose anyway. Measured on
        # the upload's reads: 100 to 225 us less a statement on the server.
        return sql.format(ids="= %s"), (*before, items[0])
    # %b: the array goes in binary, so psycopg has no quoting to do per element.
    return sql.format(ids="= ANY(%b)"), (*before, items)


def fetch_together(
    conn: Connection, queries: Sequence[tuple[str, Iterable[Any] | None, Sequence[Any]]]
) -> list[list[tuple[Any, ...]]]:
    """`fetch_in` for several queries at once: (sql, values, before) each, their rows in order.

    On PostgreSQL they go through one psycopg pipeline: one round trip for all of them, each
    still its own statement (in READ COMMITTED each sees what was committed before it ran, as
    apart). A query with no values is not run (no rows); one whose values are None has no IN
    list and runs with `before` as its parameters (`fetch_rows`). On SQLite each runs in turn,
    in one transaction. Errors are SQLAlchemy's classes, as `conn.execute` raises them.
    """
    if conn.dialect.name == "sqlite":
        return [fetch_in(conn, sql, values, *before) if values is not None else fetch_rows(conn, sql, before)
                for sql, values, before in queries]
    cursors: list[Any] = []
    try:
        with _as_sqlalchemy_errors(conn, None), driver_pipeline(conn) as dbapi_connection:
            for sql, values, before in queries:
                items = sorted(set(values)) if values is not None else None
                if items == []:
                    cursors.append(None)
                    continue
                cursor = dbapi_connection.cursor()
                cursors.append(cursor)
                if items is None:
                    cursor.execute(sql.replace("?", "%s"), tuple(before))
                else:
                    cursor.execute(*_pg_any(sql, items, before))
        # The block's end sent the one Sync and read every result: one round trip (a sync() in
        # the block would have made it two, the end syncing again).
        return [list(c.fetchall()) if c is not None else [] for c in cursors]
    finally:
        for cursor in cursors:
            if cursor is not None:
                cursor.close()


class Sender:
    """`run(sql, params, many=False)` for writes whose results nobody reads (sent_together)."""

    def __init__(self, conn: Connection, stack: ExitStack) -> None:
        self.conn, self.stack = conn, stack
        self.cursor: Any = None

    def open(self) -> None:
        """Enter the pipeline now (PostgreSQL): for a caller that queues statements of its own
        on the driver behind these (audit.queue_append_prepared)."""
        if self.cursor is None and self.conn.dialect.name != "sqlite":
            dbapi_connection = self.stack.enter_context(driver_pipeline(self.conn))
            self.cursor = self.stack.enter_context(dbapi_connection.cursor())

    def __call__(self, sql: str, params: Any, many: bool = False) -> None:
        if self.conn.dialect.name == "sqlite":
            self.conn.exec_driver_sql(sql, list(params) if many else tuple(params))
            return
        self.open()
        if many:
            self.cursor.executemany(sql, params)
        else:
            self.cursor.execute(sql, params)


@contextmanager
def sent_together(conn: Connection) -> Iterator[Sender]:
    """Yield a Sender: `run(sql, params, many=False)` for writes whose results nobody reads.

    On PostgreSQL they go through one psycopg pipeline: each is sent without waiting for the one
    before, so the server works while the caller computes the next; errors surface when the block
    ends (COPY cannot run in here), and a block that sent nothing costs no round trip. On SQLite
    each runs at once. The SQL is the dialect's own (psycopg's %s/%b or SQLite's ?).
    """
    try:
        with ExitStack() as stack:
            yield Sender(conn, stack)
    except conn.dialect.loaded_dbapi.Error as exc:
        # Which of them failed is not known here (they were sent without waiting).
        raise as_sqlalchemy_error(conn, exc, None) from exc


def as_sqlalchemy_error(conn: Connection, exc: Exception, statement: str | None) -> DBAPIError:
    """A driver's error as SQLAlchemy raises it everywhere else (callers and the API's error
    handlers go by its classes), without the parameters."""
    return DBAPIError.instance(statement, None, exc, conn.dialect.loaded_dbapi.Error,
                               hide_parameters=True, dialect=conn.dialect)
