"""What a hostile tester found in the HTTP service, each fixed and held here.

The open event stream re-checks its caller; forged cursors, extreme dates, odd digits and control
characters are 422s naming the field (never a 500); a 404 never tells "exists, not yours" from
"does not exist"; nurses do not see one-time visitors; revoking twice changes nothing; the dev
bridge answers problem details, without echoing the credential, and rate-limits each door.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from portner.services.accounts import set_account_disabled
from portner.storage import tables as t
from portner.web.api import access
from portner.web.bridge import CHALLENGE_BURST, PRESENT_BURST, create_bridge_app
from tests.web.conftest import CSRF_META, sign_in
from tests.web.test_console import DemoLock, access_body, live_app, runtime  # noqa: F401 - live_app is a fixture
from tests.web.test_portal import _relative_resident


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def fields_of(answer: httpx.Response) -> list[str]:
    assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
    return [e["field"] for e in answer.json().get("errors") or []]


def walk_ids(client: Any, path: str) -> list[str]:
    ids, url = [], path
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        ids.extend(item["id"] for item in body["items"])
        url = f"{path}?cursor={body['next_cursor']}" if body["next_cursor"] else None
    return ids


def _lines_until_end_or_event(lines: Iterator[str]) -> list[str]:
    """Read the stream until it ends or a door event arrives (whichever comes first)."""
    seen = []
    for line in lines:
        seen.append(line)
        if line.startswith("data: ") and line != "data: {}":
            break
    return seen


# --- 1. the event stream checks its caller on every poll ------------------------------------------


def test_the_event_stream_ends_when_the_account_is_disabled(live_app) -> None:  # noqa: F811
    url, p = live_app
    lock = DemoLock(p)
    with p.engine.connect() as conn:
        account = conn.execute(select(t.accounts.c.id).where(t.accounts.c.subject == "demo-operator")).scalar_one()
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0)) as client:
        sign_in(client, "demo-operator")  # type: ignore[arg-type]
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 0}) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            set_account_disabled(p.engine, account, True, now=p.now(), by="test")
            lock.refuse()  # an event with a resident's name, after the account was disabled
            seen = _lines_until_end_or_event(lines)
    assert "event: signed-out" in seen, seen
    assert not any(line.startswith("data: {\"") for line in seen), "no door event after disabling"


def test_the_event_stream_ends_when_the_session_is_older_than_a_shift(live_app) -> None:  # noqa: F811
    url, p = live_app
    lock = DemoLock(p)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0)) as client:
        sign_in(client, "demo-operator")  # type: ignore[arg-type]
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 0}) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            p.clock.advance(timedelta(hours=12, minutes=1))
            lock.refuse()
            seen = _lines_until_end_or_event(lines)
    assert "event: signed-out" in seen, seen


def test_a_stream_ends_after_its_lifetime_so_the_browser_reconnects(client_for, monkeypatch) -> None:
    monkeypatch.setattr(access, "STREAM_LIFETIME_S", 0.0)
    c = client_for("demo-operator")
    answer = c.get("/api/v1/events/stream", params={"backlog": 0})
    assert answer.status_code == 200 and answer.text == "retry: 3000\n\n"


@pytest.mark.parametrize("value", ["1-99999999999999999999-x", "zzzzzzzzzzzzz-1-x", "1-1-", "1-1-a\x00", "-1-x",
                                   "zzzzzzzzzzzz-1-lock", "1-1-" + "x" * 65])
def test_a_forged_last_event_id_is_ignored(value: str) -> None:
    assert access.decode_event_id(value) is None


def test_a_last_event_id_we_gave_out_still_resumes() -> None:
    key = (access._EPOCH + timedelta(days=20000, microseconds=5), "lock-0001", 42)
    assert access.decode_event_id(access.encode_event_id(key)) == key


def test_a_stream_with_a_forged_last_event_id_starts_afresh(client_for, monkeypatch) -> None:
    monkeypatch.setattr(access, "STREAM_LIFETIME_S", 0.0)
    c = client_for("demo-operator")
    answer = c.get("/api/v1/events/stream", headers={"Last-Event-ID": "1-99999999999999999999-x"})
    assert answer.status_code == 200 and answer.text.startswith("retry:")


# --- 2. forged cursors, extreme dates and odd digits are 422s -------------------------------------


@pytest.mark.parametrize(("path", "key"), [
    ("/api/v1/visits", [{"t": "0001-01-01T00:00:00+01:00"}, "x"]),
    ("/api/v1/visits", [{"t": "9999-12-31T23:59:59-23:59"}, "x"]),
    ("/api/v1/grants", [{"t": "9999-12-31T23:59:59-23:59"}, "x"]),
    ("/api/v1/grants", [{"t": "2026-01-01T00:00:00+01:00"}, "a\x00b"]),
    ("/api/v1/audit", [9223372036854775808]),
    ("/api/v1/audit", [-9223372036854775809]),
    ("/api/v1/locks", ["\ud800"]),
    ("/api/v1/locks", ["x" * 1000]),
    ("/api/v1/staff", ["a\x00"]),
    ("/api/v1/one-time-access", [1e308 * 10, "x"]),
])
def test_a_forged_cursor_out_of_range_is_a_422(client_for, path: str, key: list[Any]) -> None:
    c = client_for("demo-admin")
    raw = json.dumps(key, ensure_ascii=True).replace("Infinity", "1e999")
    cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    answer = c.get(path, params={"cursor": cursor})
    assert answer.status_code == 422, (path, answer.status_code, answer.text[:200])
    assert fields_of(answer) == ["query/cursor"]


def test_a_cursor_the_server_gave_out_still_works(client_for) -> None:
    c = client_for("demo-admin")
    first = c.get("/api/v1/visits", params={"limit": 2}).json()
    assert first["next_cursor"]
    second = c.get("/api/v1/visits", params={"limit": 2, "cursor": first["next_cursor"]})
    assert second.status_code == 200 and second.json()["items"][0]["id"] not in {v["id"] for v in first["items"]}


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31", "1999-12-31", "2100-01-01"])
def test_days_out_of_range_are_a_422_naming_the_date(client_for, day: str) -> None:
    c = client_for("demo-operator")
    for path in ("/api/v1/visits", "/api/v1/physical-keys"):
        answer = c.get(path, params={"date": day})
        assert answer.status_code == 422, (path, day, answer.status_code)
        assert fields_of(answer) == ["query/date"]


@pytest.mark.parametrize("day", ["0001-01-01", "9999-12-31"])
def test_the_console_keys_page_shows_today_for_a_day_out_of_range(client_for, day: str) -> None:
    answer = client_for("demo-operator").get("/console/keys", params={"date": day})
    assert answer.status_code == 200


@pytest.mark.parametrize("notice", ["99999999999999999999", "²", "9" * 5000, "١٢"])
def test_marking_an_odd_notice_id_read_marks_nothing_and_does_not_fail(client_for, portner_app, notice: str) -> None:
    mine = _relative_resident(portner_app)
    client = client_for("demo-relative")
    token = CSRF_META.search(client.get(f"/portal/{mine}").text).group(1)  # type: ignore[union-attr]
    answer = client.post(f"/portal/{mine}/notices/read", data={"csrf": token, "notice": notice},
                         follow_redirects=False)
    assert answer.status_code == 303


# --- 3. control characters in free text -----------------------------------------------------------


def _grant_body(p: Any, **overrides: Any) -> dict[str, Any]:
    with p.engine.connect() as conn:
        actor = conn.execute(select(t.accounts.c.actor_id).where(t.accounts.c.subject == "demo-nurse-1")).scalar_one()
    body = access_body(p)
    start = p.now().replace(microsecond=0) + timedelta(minutes=5)
    grant = {"actor_id": actor, "door_ids": body["door_ids"], "not_before": start.isoformat(),
             "not_after": (start + timedelta(hours=1)).isoformat(), "reason": "covering a shift"}
    grant.update(overrides)
    return grant


@pytest.mark.parametrize("reason", ["a\u0000b", "a\u0007b", "line\nbreak", "a\u007fb"])
def test_a_grant_reason_with_a_control_character_is_a_422(client_for, portner_app, reason: str) -> None:
    p = runtime(portner_app)
    c = client_for("demo-operator")
    with p.engine.connect() as conn:
        before = conn.execute(select(func.count()).select_from(t.grants)).scalar_one()
    answer = c.post("/api/v1/grants", json=_grant_body(p, reason=reason))
    assert answer.status_code == 422, answer.text
    assert fields_of(answer) == ["body/reason"]
    assert "\u0000" not in answer.text
    with p.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.grants)).scalar_one() == before
    assert c.post("/api/v1/grants", json=_grant_body(p)).status_code == 201  # clean text still works


@pytest.mark.parametrize("field", ["name", "phone"])
def test_a_one_time_access_with_a_nul_is_a_422(client_for, portner_app, field: str) -> None:
    p = runtime(portner_app)
    body = access_body(p, **{field: "Berg\u0000"})
    answer = client_for("demo-operator").post("/api/v1/one-time-access", json=body)
    assert answer.status_code == 422 and fields_of(answer) == [f"body/{field}"]


def test_a_revocation_reason_with_a_nul_is_a_422(client_for, portner_app) -> None:
    p = runtime(portner_app)
    c = client_for("demo-operator")
    made = c.post("/api/v1/one-time-access", json=access_body(p)).json()
    answer = c.post(f"/api/v1/one-time-access/{made['id']}/revoke", json={"reason": "lost\u0000"})
    assert answer.status_code == 422 and fields_of(answer) == ["body/reason"]


# --- 4. one 404 for "not yours" and "does not exist" ----------------------------------------------


def test_a_nurse_cannot_tell_a_door_or_home_of_another_resident_from_none(client_for, portner_app) -> None:
    p = runtime(portner_app)
    c = client_for("demo-nurse-1")
    visible = set(walk_ids(c, "/api/v1/residents"))
    with p.engine.connect() as conn:
        other = conn.execute(select(t.doors.c.id, t.homes.c.id.label("home"))
                             .join(t.homes, t.homes.c.id == t.doors.c.home_id)
                             .where(t.homes.c.resident_id.not_in(sorted(visible))).limit(1)).one()
    for kind, real, fake in (("door", other.id, "d-999999"), ("home", other.home, "h-999999")):
        mine_not = c.get(f"/api/v1/{kind}s/{real}")
        missing = c.get(f"/api/v1/{kind}s/{fake}")
        assert mine_not.status_code == missing.status_code == 404
        assert mine_not.json()["detail"] == f"no {kind} {real} that you may see"
        assert missing.json()["detail"] == f"no {kind} {fake} that you may see"
        assert "res-" not in mine_not.text


# --- 5. nurses do not see one-time visitors -------------------------------------------------------


def test_nurses_do_not_see_one_time_visitors_in_the_staff_list(client_for, portner_app) -> None:
    p = runtime(portner_app)
    operator = client_for("demo-operator")
    assert operator.post("/api/v1/one-time-access", json=access_body(p)).status_code == 201
    with p.engine.connect() as conn:
        visitor = conn.execute(select(t.grants.c.actor_id).where(t.grants.c.origin == "one_time")).scalar_one()
    assert visitor.startswith("otp-")
    assert visitor in walk_ids(operator, "/api/v1/staff")
    nurse = client_for("demo-nurse-1")
    seen = walk_ids(nurse, "/api/v1/staff")
    assert seen and not any(i.startswith("otp-") for i in seen)
    assert nurse.get(f"/api/v1/staff/{visitor}").status_code == 404
    assert operator.get(f"/api/v1/staff/{visitor}").status_code == 200


# --- 6. revoking twice changes nothing ------------------------------------------------------------


def _counts(p: Any) -> tuple[int, int]:
    with p.engine.connect() as conn:
        lists = conn.execute(select(func.count()).select_from(t.revocation_lists)).scalar_one()
        audit = conn.execute(select(func.count()).select_from(t.audit_events)).scalar_one()
    return lists, audit


def test_revoking_a_one_time_access_twice_publishes_once(client_for, portner_app) -> None:
    p = runtime(portner_app)
    c = client_for("demo-operator")
    made = c.post("/api/v1/one-time-access", json=access_body(p)).json()
    first = c.post(f"/api/v1/one-time-access/{made['id']}/revoke")
    assert first.status_code == 200 and first.json()["revoked"] is True
    after_first = _counts(p)
    again = c.post(f"/api/v1/one-time-access/{made['id']}/revoke")
    assert again.status_code == 200 and again.json()["revoked"] is False
    assert again.json()["revocation_list_version"] == first.json()["revocation_list_version"]
    when = [datetime.fromisoformat(a.json()["revoked_at"].replace("Z", "+00:00")) for a in (first, again)]
    assert when[0] == when[1]  # the revocation's own time, not this request's
    assert _counts(p) == after_first


def test_revoking_a_phone_twice_publishes_once(client_for, portner_app) -> None:
    from tests.web.test_bridge import Nurse

    p = runtime(portner_app)
    device = Nurse(p).device_id
    c = client_for("demo-operator")
    first = c.post(f"/api/v1/devices/{device}/revoke")
    assert first.status_code == 200 and first.json()["revoked"] is True
    after_first = _counts(p)
    again = c.post(f"/api/v1/devices/{device}/revoke")
    assert again.status_code == 200 and again.json()["revoked"] is False
    assert again.json()["revocation_list_version"] == first.json()["revocation_list_version"]
    assert _counts(p) == after_first


# --- 7. the dev bridge --------------------------------------------------------------------------


def _bridge(p: Any) -> Any:
    from fastapi.testclient import TestClient

    # A clock that stands still: the buckets never refill, so the limits are exact.
    return TestClient(create_bridge_app(p, clock=lambda: 100.0), base_url="http://127.0.0.1:8001")


def _a_door(p: Any) -> str:
    with p.engine.connect() as conn:
        return conn.execute(select(t.locks.c.door_id).order_by(t.locks.c.id).limit(1)).scalar_one()


def test_the_bridge_answers_problem_details_without_echoing_the_credential(portner_app) -> None:
    p = runtime(portner_app)
    with _bridge(p) as bridge:
        door = _a_door(p)
        secret = "SECRETCREDENTIAL" * 200
        answer = bridge.post(f"/doors/{door}/present", json={"credential": secret, "proof": "x", "challenge": "y"})
        assert answer.status_code == 422 and fields_of(answer) == ["body/credential"]
        assert "SECRETCREDENTIAL" not in answer.text
        missing = bridge.get("/doors/no-such-door/challenge")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/problem+json")
        assert fields_of(bridge.get(f"/doors/{door}/events", params={"nonce": "zz"})) == ["query/nonce"]


def test_the_bridge_limits_challenges_per_door(portner_app) -> None:
    p = runtime(portner_app)
    with _bridge(p) as bridge:
        door = _a_door(p)
        for _ in range(CHALLENGE_BURST):
            assert bridge.get(f"/doors/{door}/challenge").status_code == 200
        refused = bridge.get(f"/doors/{door}/challenge")
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.headers["content-type"].startswith("application/problem+json")


def test_garbage_presents_cannot_grow_the_lock_log_without_bound(portner_app) -> None:
    p = runtime(portner_app)
    app = create_bridge_app(p, clock=lambda: 100.0)
    from fastapi.testclient import TestClient

    with TestClient(app, base_url="http://127.0.0.1:8001") as bridge:
        door = _a_door(p)
        lock = app.state.bridge.doors[door].lock
        garbage = {"credential": "AAAA", "proof": "AAAA", "challenge": "AAAA"}
        before = len(lock.log)
        for _ in range(PRESENT_BURST):
            assert bridge.post(f"/doors/{door}/present", json=garbage).json()["opened"] is False
        grown = len(lock.log)
        assert grown > before  # refusals are logged, by design
        for _ in range(20):
            assert bridge.post(f"/doors/{door}/present", json=garbage).status_code == 429
        assert len(lock.log) == grown


@pytest.mark.parametrize(("path", "field"), [
    ("/api/v1/visits?resident=res%00x", "query/resident"),
    ("/api/v1/grants?actor=a%00", "query/actor"),
    ("/api/v1/residents?q=a%00", "query/q"),
    ("/api/v1/doors/d%00x", "path/door_id"),
    ("/api/v1/grants/g%0Ax", "path/grant_id"),
])
def test_a_control_character_in_an_id_or_query_is_a_422(client_for, path: str, field: str) -> None:
    answer = client_for("demo-admin").get(path)
    assert answer.status_code == 422, (path, answer.status_code)
    assert fields_of(answer) == [field]


def test_a_control_character_in_a_console_path_id_is_a_422(client_for) -> None:
    c = client_for("demo-operator")
    assert fields_of(c.post("/api/v1/devices/d%00x/revoke")) == ["path/device_id"]
    assert fields_of(c.get("/api/v1/doors/d%00x/who-can-open")) == ["path/door_id"]
