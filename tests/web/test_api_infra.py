"""What every API resource shares (web/api/common.py): cursors, ETags, If-Match, idempotency keys,
and an OpenAPI document that tells integrators what each operation is."""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, func, select, text

from portner.storage import tables as t
from portner.web.api import common
from portner.web.api.common import IfMatchHeader, encode_cursor, etag_for, require_if_match
from portner.web.problems import Problem, install_problem_handlers

API = "/api/v1"
Client = Callable[[str | None], TestClient]
MY_MODULES = ("portner.web.api.directory", "portner.web.api.planning", "portner.web.api.records")


# --- pagination ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cursor", [
    "not-base64!!",
    "e30",  # {}: valid base64 and JSON, not a key
    encode_cursor(["only-one-part"]),  # residents are ordered by (name, id)
    encode_cursor([1, 2]),  # numbers where names are
    encode_cursor([{"t": "2026-12-03T08:00:00"}, "x"]),  # a naive instant
])
def test_a_cursor_this_server_did_not_give_is_a_422_naming_query_cursor(client_for: Client, cursor: str) -> None:
    answer = client_for("demo-admin").get(f"{API}/residents", params={"cursor": cursor})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in answer.json()["errors"]] == ["query/cursor"]


def test_a_cursor_from_another_list_is_refused_not_a_server_error(client_for: Client) -> None:
    admin = client_for("demo-admin")
    cursor = admin.get(f"{API}/residents?limit=1").json()["next_cursor"]
    for path in ("/locks", "/audit", "/visits", "/grants", "/staff", "/accounts"):
        answer = admin.get(f"{API}{path}", params={"cursor": cursor})
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["errors"][0]["field"] == "query/cursor"


@pytest.mark.parametrize("limit", ["0", "501", "-1", "many"])
def test_limit_is_1_to_500(client_for: Client, limit: str) -> None:
    answer = client_for("demo-admin").get(f"{API}/locks", params={"limit": limit})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "query/limit"


def test_pages_keep_other_filters_in_the_next_link(client_for: Client) -> None:
    answer = client_for("demo-operator").get(f"{API}/visits?date=2026-12-03&limit=2")
    assert "date=2026-12-03" in answer.headers["link"] and "limit=2" in answer.headers["link"]


# --- ETags and If-Match -------------------------------------------------------------------------


def test_etags_are_strong_and_follow_content_not_key_order() -> None:
    a = etag_for({"id": "x", "n": 1, "when": datetime(2026, 12, 3, tzinfo=UTC)})
    assert a == etag_for({"when": datetime(2026, 12, 3, tzinfo=UTC), "n": 1, "id": "x"})
    assert a != etag_for({"id": "x", "n": 2, "when": datetime(2026, 12, 3, tzinfo=UTC)})
    assert a.startswith('"') and a.endswith('"')


def _conditional_app() -> tuple[FastAPI, dict[str, Any]]:
    """A resource updated the way the admin API does it (require_if_match on the current ETag)."""
    app = FastAPI()
    install_problem_handlers(app)
    state: dict[str, Any] = {"name": "first"}

    @app.put("/thing")
    def put(request: Request, body: dict[str, Any], if_match: IfMatchHeader = None) -> dict[str, Any]:
        require_if_match(request, etag_for(state))
        state.update(body)
        return state

    return app, state


def test_an_update_needs_if_match_428_stale_412_current_200() -> None:
    app, state = _conditional_app()
    client = TestClient(app)
    missing = client.put("/thing", json={"name": "second"})
    assert missing.status_code == 428
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["errors"][0]["field"] == "header/If-Match"
    current = etag_for(state)
    stale = client.put("/thing", json={"name": "second"}, headers={"If-Match": '"0123"'})
    assert stale.status_code == 412 and stale.json()["errors"][0]["field"] == "header/If-Match"
    assert stale.headers["etag"] == current
    weak = client.put("/thing", json={"name": "second"}, headers={"If-Match": f"W/{current}"})
    assert weak.status_code == 412, "If-Match compares strongly"
    assert state == {"name": "first"}
    done = client.put("/thing", json={"name": "second"}, headers={"If-Match": f'"other", {current}'})
    assert done.status_code == 200 and state == {"name": "second"}
    again = client.put("/thing", json={"name": "third"}, headers={"If-Match": current})
    assert again.status_code == 412, "the old ETag is stale after the change"


def test_single_resources_answer_if_none_match_with_304(client_for: Client) -> None:
    operator = client_for("demo-operator")
    lock = operator.get(f"{API}/locks?limit=1").json()["items"][0]
    first = operator.get(f"{API}/locks/{lock['id']}")
    etag = first.headers["etag"]
    assert operator.get(f"{API}/locks/{lock['id']}", headers={"If-None-Match": etag}).status_code == 304
    assert operator.get(f"{API}/locks/{lock['id']}", headers={"If-None-Match": f"W/{etag}"}).status_code == 304
    assert operator.get(f"{API}/locks/{lock['id']}", headers={"If-None-Match": "*"}).status_code == 304
    resident = operator.get(f"{API}/residents?limit=1").json()["items"][0]["id"]
    assert operator.get(f"{API}/residents/{resident}", headers={"If-None-Match": etag}).status_code == 200


# --- idempotency keys ---------------------------------------------------------------------------

NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def _run(engine: Engine, handler: Callable[[Connection], Any], *, key: str = "k", digest: str = "d" * 64,
         now: datetime = NOW, path: str = "POST /api/v1/things") -> tuple[int, str, bool]:
    return common._run_once(engine, "account:a", key, path, digest, handler, 201, now)


def test_a_key_is_answered_once_and_kept_a_day(engine: Engine) -> None:
    calls: list[int] = []

    def handler(conn: Connection) -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    assert _run(engine, handler) == (201, '{"n":1}', False)
    assert _run(engine, handler) == (201, '{"n":1}', True)
    with pytest.raises(Problem) as refused:
        _run(engine, handler, digest="e" * 64)
    assert refused.value.status == 422 and refused.value.errors[0]["field"] == "header/Idempotency-Key"
    with pytest.raises(Problem):
        _run(engine, handler, path="POST /api/v1/other")
    # Another key, another answer; after 24 hours the key is forgotten.
    assert _run(engine, handler, key="k2") == (201, '{"n":2}', False)
    assert _run(engine, handler, digest="e" * 64, now=NOW + timedelta(hours=24, seconds=1)) == (201, '{"n":3}', False)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.idempotency_keys)).scalar_one() == 1


def test_a_failed_request_does_not_keep_its_key(engine: Engine) -> None:
    def failing(conn: Connection) -> None:
        conn.execute(t.idempotency_keys.insert().values(  # a change that must roll back with the key
            principal="account:x", key="side-effect", method_path="-", request_hash="-", status_code=1,
            response="", created_at=NOW))
        raise Problem(409, "Refused", "no")

    with pytest.raises(Problem):
        _run(engine, failing)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.idempotency_keys)).scalar_one() == 0
    assert _run(engine, lambda conn: {"ok": True}) == (201, '{"ok":true}', False)


def test_a_call_with_its_own_transaction_forgets_the_key_when_it_fails(engine: Engine) -> None:
    def boom() -> None:
        raise Problem(422, "Invalid", "bad")

    with pytest.raises(Problem):
        common._call_once(engine, "account:a", "k", "POST /x", "d", boom, 200, NOW)
    assert common._call_once(engine, "account:a", "k", "POST /x", "d", lambda: [1], 200, NOW) == (200, "[1]", False)
    assert common._call_once(engine, "account:a", "k", "POST /x", "d", lambda: [2], 200, NOW) == (200, "[1]", True)


@pytest.mark.postgres
def test_concurrent_retries_on_postgresql_run_the_handler_once(pg_engine: Engine) -> None:
    calls: list[str] = []
    results: dict[str, Any] = {}
    with pg_engine.connect() as conn:
        schema = conn.execute(text("SELECT current_schema()")).scalar_one()

    def waiting_for_retry(conn: Connection) -> dict[str, str]:
        calls.append("first")
        # Hold the transaction open until the retry is blocked on our key row (it waits on a lock).
        with pg_engine.connect() as watch:
            for _ in range(3000):
                waiting = watch.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%idempotency_keys%' AND datname = current_database()")).scalar_one()
                watch.rollback()  # pg_stat_activity is a snapshot per transaction
                if waiting:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError(f"the retry never waited on the key ({schema})")
        return {"answer": "once"}

    def first() -> None:
        results["first"] = _run(pg_engine, waiting_for_retry)

    def retry() -> None:
        try:
            results["retry"] = _run(pg_engine, lambda conn: calls.append("retry") or {"answer": "twice"})
        except Exception as exc:  # report it in the main thread
            results["retry"] = exc

    one = threading.Thread(target=first)
    one.start()
    while not calls:
        time.sleep(0.005)
    two = threading.Thread(target=retry)
    two.start()
    one.join(60)
    two.join(60)
    assert calls == ["first"]
    assert results["first"] == (201, '{"answer":"once"}', False)
    assert results["retry"] == (201, '{"answer":"once"}', True)


def test_a_malformed_idempotency_key_names_the_header(client_for: Client) -> None:
    answer = client_for("demo-operator").post(f"{API}/grants/grt-x/revoke", headers={"Idempotency-Key": "a b"})
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["field"] == "header/Idempotency-Key"


# --- the OpenAPI document -----------------------------------------------------------------------


def test_every_operation_of_these_modules_is_documented(portner_app: FastAPI) -> None:
    doc = TestClient(portner_app).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    mine = {(API + route.path, method) for name in MY_MODULES
            for route in importlib.import_module(name).router.routes for method in route.methods}
    assert len(mine) == 21
    answered: list[Any] = []
    for path, method in mine:
        operation = doc["paths"][path][method.lower()]
        assert operation.get("summary") and operation.get("tags"), (path, method)
        success = next(code for code in operation["responses"] if code.startswith("2"))
        assert operation["responses"][success].get("content"), (path, method, "no response model")
        answered.append(operation["responses"][success]["content"])
    # No answer of these operations can carry a national id, HPR number or HER-id.
    fields = _properties(answered, doc["components"]["schemas"], set())
    assert {"id", "display_name", "door_ids", "items"} <= fields
    assert not fields & {"national_id", "hpr_number", "her_id", "public_key"}


def test_the_document_says_how_each_operation_is_authenticated(portner_app: FastAPI) -> None:
    doc = TestClient(portner_app).get("/openapi.json").json()
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}
    assert doc["components"]["securitySchemes"]["session"]["name"] == "portner_session"
    security = {(path, method): operation.get("security")
                for path, item in doc["paths"].items() if path.startswith(API)
                for method, operation in item.items()}
    # Only a visitor's link and a lock vendor's signed callback need no signed-in caller.
    assert {key for key, needs in security.items() if needs == []} == {
        (f"{API}/visit/{{token}}/door-events", "post"), (f"{API}/visit/{{token}}/challenge", "get"),
        (f"{API}/visit/{{token}}/redeem", "post"), (f"{API}/lock-callbacks/{{backend_name}}", "post"),
    }
    assert security[(f"{API}/me/credentials", "get")] == [{"bearer": []}, {"session": []}]
    assert None not in security.values()  # every API operation says one or the other
    assert len(security) > 50


def _properties(node: Any, schemas: dict[str, Any], seen: set[str]) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                seen.add(name)
                found |= _properties(schemas[name], schemas, seen)
        found |= set(node.get("properties", {})) if isinstance(node.get("properties"), dict) else set()
        for value in node.values():
            found |= _properties(value, schemas, seen)
    elif isinstance(node, list):
        for value in node:
            found |= _properties(value, schemas, seen)
    return found


def test_the_etag_of_a_get_is_the_if_match_of_the_update(client_for: Client) -> None:
    """The admin API's PATCH checks If-Match against the representation these GETs return."""
    admin = client_for("demo-admin")
    url = f"{API}/municipalities/current"
    read = admin.get(url)
    etag = read.headers["etag"]
    assert admin.patch(url, json={"lead_minutes": 20}).status_code == 428
    assert admin.patch(url, json={"lead_minutes": 20}, headers={"If-Match": '"stale"'}).status_code == 412
    done = admin.patch(url, json={"lead_minutes": 20}, headers={"If-Match": etag})
    assert done.status_code == 200 and done.json()["lead_minutes"] == 20
    assert admin.patch(url, json={"lead_minutes": 25}, headers={"If-Match": etag}).status_code == 412
    after = admin.get(url)
    assert after.json()["lead_minutes"] == 20 and after.headers["etag"] == done.headers["etag"] != etag
    resident = admin.get(f"{API}/residents?limit=1").json()["items"][0]
    current = admin.get(f"{API}/residents/{resident['id']}").headers["etag"]
    renamed = admin.patch(f"{API}/residents/{resident['id']}", json={"display_name": "Ny Navnesen"},
                          headers={"If-Match": current})
    assert renamed.status_code == 200
    assert admin.get(f"{API}/residents/{resident['id']}").json()["display_name"] == "Ny Navnesen"


def test_no_two_routes_match_the_same_request() -> None:
    """So the order of app.FEATURES (the busiest first) decides only how soon a request's route
    is found, never which route answers it."""
    import re

    from starlette.routing import compile_path

    from portner.web.app import FEATURES

    routes = []
    for name, prefix in FEATURES:
        module = importlib.import_module(name)
        for router in (module.router, getattr(module, "dev_router", None)):
            for route in getattr(router, "routes", []):
                path = prefix + route.path
                routes.append((name, path, set(getattr(route, "methods", None) or ()), compile_path(path)[0]))
    assert len(routes) > 100

    def concrete(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "x1", path)

    clashes = [
        (a[1], b[1], sorted(a[2] & b[2]))
        for i, a in enumerate(routes) for b in routes[i + 1:]
        if a[2] & b[2] and (b[3].match(concrete(a[1])) or a[3].match(concrete(b[1])))
    ]
    assert clashes == []
    # The check can fail: a parameter route matches a fixed one of the same method.
    probe = compile_path("/api/v1/devices/{device_id}")[0]
    assert probe.match(concrete("/api/v1/devices/registration-challenge"))
