"""Schemathesis over every /api/v1 operation of the OpenAPI document, in-process (ASGI).

Signed in as the demo administrator (session cookie + X-CSRF-Token), so that the requests reach
the handlers instead of stopping at 401/403. Few examples per operation (derandomized, so a run
is repeatable): this finds server errors and answers that do not match the document, it is not
a load test. One test per operation, so a failure names the operation.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, time
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance
from sqlalchemy import select

from portner.config import Settings
from portner.storage import tables as t
from portner.web.app import create_app
from tests.support.clock import RunningClock
from tests.web.conftest import DEMO_DAY, OSLO, copy_demo, sign_in

MAX_EXAMPLES = 8
# No server error; the body matches the documented schema; the media type is a documented one
# (errors are application/problem+json, so the document must say so).
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed_app(demo_template: Settings, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    target: Path = tmp_path_factory.mktemp("schemathesis") / "serve"
    settings = copy_demo(demo_template, target)
    return create_app(replace(settings), clock=RunningClock(datetime.combine(DEMO_DAY, time(8, 0), OSLO)))


@pytest.fixture(scope="module")
def admin_session(fuzzed_app: FastAPI) -> requests.Session:
    # Not entered as a context manager: schemathesis runs the app's lifespan itself.
    client = TestClient(fuzzed_app, base_url="http://testserver")
    sign_in(client, "demo-admin")
    session = requests.Session()
    session.headers["X-CSRF-Token"] = client.headers["X-CSRF-Token"]
    session.cookies.set("portner_session", client.cookies["portner_session"])
    return session


def real_ids(app: FastAPI) -> dict[str, list[Any]]:
    """Ids that exist, per path parameter name, so that requests get past the 404s."""
    columns = {
        "resident_id": t.residents.c.id, "home_id": t.homes.c.id, "door_id": t.doors.c.id,
        "lock_id": t.locks.c.id, "actor_id": t.actors.c.id, "visit_id": t.visits.c.id,
        "grant_id": t.grants.c.id, "device_id": t.devices.c.id, "invitation_id": t.invitations.c.id,
        "entry_id": t.quarantine.c.id,
    }
    with app.state.portner.engine.connect() as conn:
        pools = {name: list(conn.execute(select(c).order_by(c).limit(40)).scalars()) for name, c in columns.items()}
        # Never the fuzzing admin's own account: disabling it would end the run.
        pools["account_id"] = list(conn.execute(
            select(t.accounts.c.id).where(t.accounts.c.subject != "demo-admin").order_by(t.accounts.c.id)).scalars())
    return {name: pool for name, pool in pools.items() if pool}


@pytest.fixture(scope="module")
def api_schema(fuzzed_app: FastAPI) -> Iterator[Any]:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app).include(path_regex="^/api/v1/")
    pools = real_ids(fuzzed_app)

    @schema.hook
    def map_path_parameters(context: Any, path_parameters: dict[str, Any]) -> dict[str, Any]:
        # Half of the cases get a real id (chosen from the generated value, so runs repeat).
        if not path_parameters:
            return path_parameters
        mapped = dict(path_parameters)
        for name, value in path_parameters.items():
            digest = zlib.crc32(str(value).encode())
            if name in pools and digest % 2 == 0:
                mapped[name] = pools[name][digest // 2 % len(pools[name])]
        return mapped

    yield schema


def _streams(operation: Any) -> bool:
    """A server-push (text/event-stream) answer stays open until the stream is cut: one example."""
    responses = operation.definition.raw.get("responses", {})
    return any("text/event-stream" in (r.get("content") or {}) for r in responses.values() if isinstance(r, dict))


def _fuzz(operation: Any, session: requests.Session, statuses: list[int]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=1 if _streams(operation) else MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        response = case.call(session=session)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    run()


def test_no_operation_fails_or_breaks_its_schema(api_schema: Any, admin_session: requests.Session) -> None:
    # One loop rather than one test per operation: schemathesis' lazy pytest loader does not run on
    # pytest 9. Every operation is tried; the failure lists each one that failed, with its example.
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    answered: dict[str, list[int]] = {}
    for operation in operations:
        try:
            _fuzz(operation, admin_session, answered.setdefault(operation.label, []))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # schemathesis' FailureGroup is a BaseExceptionGroup: collect them all
            failures.append(f"{operation.label}: {exc}")
    # Signed in for real: the admin's reads get through (not only 401/403).
    for label in ("GET /api/v1/residents", "GET /api/v1/locks", "GET /api/v1/audit", "GET /api/v1/accounts"):
        assert 200 in answered[label], (label, answered[label])
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n\n" + "\n\n".join(failures)


def test_the_document_covers_the_api(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/api/v1/residents", "/api/v1/visits", "/api/v1/grants", "/api/v1/fhir", "/api/v1/audit"} <= paths
