"""Shared test infrastructure: migrated SQLite and PostgreSQL engines, and the no-skips-in-CI rule.

Fixtures:
- `sqlite_engine`: a migrated SQLite file in a temporary directory, fresh per test.
- `pg_engine`: PostgreSQL at $PORTNER_TEST_PG_URL, in a random schema made for this test session
  (dropped at the end); migrated once, every table emptied after each test.
- `engine`: both of the above, one after the other (the postgresql run is marked `postgres`).
- `empty_engine`: an unmigrated database on both backends, for migration tests.
- `shared_fixtures`: the HL7 Norway files in ../shared/fixtures.

PostgreSQL unreachable: its tests are skipped with the reason, except under CI=true, where they
fail. Under CI=true any skipped test fails the run; otherwise the skips are listed with reasons.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine, make_url

from portner.storage.db import make_engine, migrate
from portner.storage.tables import audit_head, metadata

pytest_plugins = ["tests.support.oidc"]

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _pg_url() -> str:
    return os.environ.get("PORTNER_TEST_PG_URL", DEFAULT_PG_URL)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _unavailable(reason: str) -> None:
    """Skip on a laptop, fail in CI: a CI run without PostgreSQL has not tested PostgreSQL."""
    if _in_ci():
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


# --- SQLite -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite file per session; tests get copies (much faster than migrating)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "portner.sqlite"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection closing checkpoints the WAL into the main file
    return path


@pytest.fixture
def sqlite_engine(tmp_path: Path, _sqlite_template: Path) -> Iterator[Engine]:
    """A migrated SQLite database file, fresh for each test."""
    path = tmp_path / "portner.sqlite"
    shutil.copyfile(_sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield engine
    engine.dispose()


# --- PostgreSQL ---------------------------------------------------------------------------------


class _PgServer:
    """The test PostgreSQL: reachable or not (checked once), and its per-session schemas."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.error: str | None = None
        self.admin: Engine | None = None
        self.schemas: list[str] = []
        try:
            self.admin = make_engine(url, connect_args={"connect_timeout": 3})
            with self.admin.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure to connect means "no server" for the tests
            self.error = f"PostgreSQL unreachable at {_shown(url)}: {type(exc).__name__}"
            self.admin = None

    def new_schema(self) -> tuple[str, Engine]:
        """Create an empty schema and an engine whose search_path is that schema."""
        assert self.admin is not None
        name = f"portner_test_{secrets.token_hex(6)}"
        with self.admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{name}"'))
        self.schemas.append(name)
        # synchronous_commit=off: tests need no durability, and it makes each COMMIT cheap.
        options = f"-csearch_path={name} -csynchronous_commit=off"
        engine = make_engine(self.url, connect_args={"options": options})
        return name, engine

    def drop(self, name: str) -> None:
        assert self.admin is not None
        with self.admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        self.schemas.remove(name)

    def close(self) -> None:
        if self.admin is not None:
            for name in list(self.schemas):
                self.drop(name)
            self.admin.dispose()


@pytest.fixture(scope="session")
def _pg_server() -> Iterator[_PgServer]:
    server = _PgServer(_pg_url())
    yield server
    server.close()


@pytest.fixture(scope="session")
def _pg_session_engine(_pg_server: _PgServer) -> Iterator[Engine]:
    if _pg_server.error is not None:
        _unavailable(_pg_server.error)
    name, engine = _pg_server.new_schema()
    migrate(engine)
    yield engine
    engine.dispose()
    _pg_server.drop(name)


@pytest.fixture
def pg_engine(_pg_session_engine: Engine) -> Iterator[Engine]:
    """A migrated PostgreSQL schema of this session; emptied again after each test."""
    yield _pg_session_engine
    # DELETE, children first: on a few rows it is much faster than TRUNCATE.
    with _pg_session_engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
        # The migration's genesis row, which every fresh database starts with.
        conn.execute(insert(audit_head).values(id=1, seq=0, hash=bytes(32)))


BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]


@pytest.fixture(params=BACKENDS)
def engine(request: pytest.FixtureRequest) -> Engine:
    """A migrated, empty database on each backend in turn."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    result: Engine = request.getfixturevalue(name)
    return result


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An unmigrated, empty database on each backend in turn."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
        yield engine
        engine.dispose()
        return
    server: _PgServer = request.getfixturevalue("_pg_server")
    if server.error is not None:
        _unavailable(server.error)
    name, engine = server.new_schema()
    yield engine
    engine.dispose()
    server.drop(name)


# --- Shared FHIR fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """The read-only HL7 Norway files (../shared/fixtures); skipped on a laptop without them."""
    if not SHARED_FIXTURES.is_dir():
        pytest.skip(f"no shared fixtures folder at {SHARED_FIXTURES}")
    return SHARED_FIXTURES


# --- Markers and the skip policy ----------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    """Register our markers when pyproject.toml does not (e.g. pytest run with another ini)."""
    known = {line.split(":", 1)[0].strip() for line in config.getini("markers")}
    if "postgres" not in known:
        config.addinivalue_line("markers", "postgres: needs the PostgreSQL server")
    if "fixtures" not in known:
        config.addinivalue_line("markers", "fixtures: reads the HL7 Norway files")


_PG_FIXTURES = {"pg_engine", "_pg_session_engine", "_pg_server", "pg_url"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests that use PostgreSQL or the shared files, so `-m "not postgres"` works."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _PG_FIXTURES:
            item.add_marker(pytest.mark.postgres)
        if "shared_fixtures" in names:
            item.add_marker(pytest.mark.fixtures)


_SKIPPED: list[tuple[str, str]] = []


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr: Any = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[Any]:
    """Under CI=true a skipped test is reported as failed: CI must test everything."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = _reason(report)
        _SKIPPED.append((report.nodeid, reason))
        if _in_ci():
            report.outcome = "failed"
            report.longrepr = f"CI=true: skipped tests count as failures. Skip reason: {reason}"
    return report


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """Module-level skips never reach makereport; remember them for the summary and exit code."""
    if report.skipped:
        _SKIPPED.append((report.nodeid, _reason(report)))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """List every skip with its reason, so a skip is never silent."""
    if not _SKIPPED:
        return
    title = "skipped tests (failures under CI=true)" if _in_ci() else "skipped tests"
    terminalreporter.section(title, sep="-")
    for nodeid, reason in _SKIPPED:
        terminalreporter.write_line(f"{nodeid}: {reason}")
    if _in_ci():
        terminalreporter.write_line(f"CI=true: {len(_SKIPPED)} skip(s) above make this run fail")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true, fail the run if anything was skipped (collection-level skips included)."""
    if _in_ci() and _SKIPPED and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def pg_url(_pg_server: _PgServer) -> Iterator[str]:
    """A URL to an empty PostgreSQL schema of its own, for code that opens its own engine."""
    if _pg_server.error is not None:
        _unavailable(_pg_server.error)
    name, engine = _pg_server.new_schema()
    engine.dispose()
    url = make_url(_pg_url()).update_query_dict({"options": f"-csearch_path={name}"})
    yield url.render_as_string(hide_password=False)
    _pg_server.drop(name)


# --- async tests and the MQTT broker ------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    """`@pytest.mark.anyio` tests run on asyncio (aiomqtt and uvicorn need it)."""
    return "asyncio"


MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


@pytest.fixture(scope="session")
def mqtt_broker() -> tuple[str, int]:
    """The real Mosquitto broker on 127.0.0.1:1883 as (host, port); skipped (failed in CI) when
    nothing listens there. Tests isolate themselves by a random topic prefix, not a broker."""
    import socket

    try:
        socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=2).close()
    except OSError as exc:
        _unavailable(f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT} ({exc})")
    return MQTT_HOST, MQTT_PORT
