"""Engines for SQLite and PostgreSQL, and the Alembic migrations that bring a database to head.

The migrations ship inside the package (portner/storage/migrations, portner/storage/alembic.ini),
so an installed Portner can migrate its own database without a source checkout.
"""

from __future__ import annotations

import logging
import select
from collections.abc import Callable
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from psycopg.pq import ConnStatus
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from portner.storage.bulk import send_pending_begin

DEFAULT_URL = "sqlite:///portner.sqlite"
_log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every Portner process on one PostgreSQL.
_MIGRATION_LOCK_KEY = 0x706F72746E6572  # "portner"


def normalise_url(url: str | URL) -> URL:
    """Parse `url`, pointing plain `postgresql://` (and `postgres://`) URLs at psycopg 3."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(url: str | URL = DEFAULT_URL, **kwargs: Any) -> Engine:
    """Create an engine: a SQLite file (WAL, foreign keys on), SQLite memory, or PostgreSQL."""
    parsed = normalise_url(url)
    # Errors must not carry SQL parameters into logs: they hold names, phone numbers, tokens.
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, **kwargs)
    engine = create_engine(parsed, **kwargs)
    if not kwargs.get("pool_pre_ping"):
        event.listen(engine, "checkout", _open_connections_only(engine))
    event.listen(engine, "before_cursor_execute", send_pending_begin)
    return engine


def _open_connections_only(engine: Engine) -> Callable[[Any, Any, Any], None]:
    """A checkout hook that hands out no pooled connection the server has closed (a restart, an
    idle timeout, a terminated backend): the pool opens a new one instead.

    What pool_pre_ping finds with a query, found without a round trip in the usual case (the
    ping cost one on every request): an idle connection has nothing to read. One that has (its
    end, the error before it, or a NOTIFY or a changed server setting, which leave it open) is
    read, and if libpq has not seen its end, pinged as pool_pre_ping would: an error can arrive
    well before the end when a proxy sits between."""

    def check(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if dbapi_connection.closed or dbapi_connection.broken:
            raise DisconnectionError("the connection is closed")
        pgconn = dbapi_connection.pgconn
        readable = _readable_now(pgconn.socket)
        if not readable():
            return
        try:
            while readable() and pgconn.status == ConnStatus.OK:
                pgconn.consume_input()  # each read takes what has come: an error, then the end
            if pgconn.status == ConnStatus.OK:
                engine.dialect.do_ping(dbapi_connection)
        except dbapi_connection.Error as exc:
            raise DisconnectionError(f"the server closed the connection ({type(exc).__name__})") from exc
        if pgconn.status != ConnStatus.OK:
            raise DisconnectionError("the server closed the connection")

    return check


def _readable_now(fd: int) -> Callable[[], bool]:
    """Whether the socket has something to read, asked without waiting: poll (select() takes no
    descriptor above 1023, which a server with many phones connected reaches), or select where
    there is no poll (Windows)."""
    if not hasattr(select, "poll"):
        return lambda: bool(select.select([fd], [], [], 0)[0])
    idle = select.poll()
    idle.register(fd, select.POLLIN | select.POLLPRI)
    return lambda: bool(idle.poll(0))


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_engine(url: URL, **kwargs: Any) -> Engine:
    memory = _is_memory(url)
    if memory:
        # One shared connection, or every checkout would see its own empty database.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite, which would only BEGIN before writes (so
        # SELECTs ran outside the transaction and SAVEPOINTs broke); we emit BEGIN ourselves below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            # Wait for a competing writer instead of failing at once with "database is locked".
            cursor.execute("PRAGMA busy_timeout=30000")
            if not memory:
                # WAL: readers never block the writer, and the writer never blocks readers.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")

    return engine


def _alembic_config(connection: Connection | None = None) -> Config:
    """The packaged alembic.ini, with script_location pointing at the packaged migrations."""
    storage = resources.files("portner.storage")
    cfg = Config(str(storage / "alembic.ini"))
    cfg.set_main_option("script_location", str(storage / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default head) with Alembic, in one transaction."""
    with engine.connect() as conn:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations copy and rename tables; foreign keys must be off meanwhile, and the
            # pragma is ignored inside a transaction, so set it on the raw connection before BEGIN.
            _raw_pragma(conn, "PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    # Two replicas starting at once must not both run the same migration.
                    conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_KEY})")
                command.upgrade(_alembic_config(conn), revision)
                if sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(
                            f"migration left {len(broken)} rows violating foreign keys"
                        )
        finally:
            if sqlite:
                _raw_pragma(conn, "PRAGMA foreign_keys=ON")


def _raw_pragma(conn: Connection, pragma: str) -> None:
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(pragma)
    finally:
        cursor.close()


def current_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at, or None when it was never migrated."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    """The newest revision shipped with this Portner."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def open_database(url: str | URL = DEFAULT_URL, **kwargs: Any) -> Engine:
    """Create an engine for `url` and migrate its database to head."""
    engine = make_engine(url, **kwargs)
    # A database already at head needs no migration run (nor its checks): the common case.
    if current_revision(engine) != head_revision():
        migrate(engine)
    return engine


def refresh_statistics(engine: Engine, tables: list[str]) -> None:
    """After a bulk load on PostgreSQL, the planner's statistics of the tables it filled.

    Until autovacuum's next pass (up to a minute, longer on a busy server) the server plans on
    guesses: right after the demo's import, the nurse's lock check for an upload drove from all
    her grants instead of the one lock (380 us a statement instead of 134, measured). PostgreSQL
    advises ANALYZE after a bulk load; it samples, so a national table costs it well under a
    second. SQLite plans from its indexes and needs nothing here. A failure is logged, not raised:
    the load has committed.
    """
    if engine.dialect.name != "postgresql" or not tables:
        return
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE " + ", ".join(conn.dialect.identifier_preparer.quote(n) for n in tables))
    except SQLAlchemyError as exc:
        # The load itself committed: only the plans wait for autovacuum, which is no reason to
        # tell the caller that it failed.
        _log.warning("ANALYZE after a bulk load failed (autovacuum will do it): %s", type(exc).__name__)
