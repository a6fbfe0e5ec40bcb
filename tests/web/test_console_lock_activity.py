"""What keypad and vendor locks report (lock_activity) in the console's live stream and the door-log API.

The live stream sends lock_activity rows in the door events' line format, resumes both logs from
one Last-Event-ID, and catches a row whose smaller id commits late. The access-log API lists the
lock's reports as lines with a `source`, merged in time order, and every read is audited.
"""

from __future__ import annotations

import json
import secrets
from types import SimpleNamespace
from typing import Any

import httpx
from sqlalchemy import insert, select

from portner.storage import tables as t
from portner.web.api import access
from portner.web.api import activity_lines as activity
from tests.web.conftest import sign_in
from tests.web.test_api_directory import API, walk
from tests.web.test_console import DemoLock, _events, live_app  # noqa: F401 - live_app is a fixture
from tests.web.test_portal import _relative_resident
from tests.web.test_portal_lock_activity import SLOT, add_activity, at, lock_of, nurse

# --- ids and backlog (pure) ---------------------------------------------------------------------


def test_a_stream_id_resumes_both_logs() -> None:
    door = (at(7, 0), "l-000041", 7)
    value = activity.stream_id(activity.encode_event_id(door), 12345)
    assert activity.resume(value) == (door, 12345)
    # Before any door event: the door part is empty and the door log resumes from its start.
    assert activity.resume(activity.stream_id("", 9)) == (activity.NO_DOOR_EVENT, 9)
    # A door event id from before lock_activity was streamed resumes the door log only.
    assert activity.resume(activity.encode_event_id(door)) == (door, None)


def test_a_forged_stream_id_starts_afresh() -> None:
    door = activity.encode_event_id((at(7, 0), "l-1", 1))
    for forged in [f"{door}~", f"{door}~-1", f"{door}~ZZ", f"{door}~" + "z" * 14, "~", "x~1", f"{door}~1~2",
                   None, ""]:
        assert activity.resume(forged) == (None, None), forged


def _door_row(minute: int, seq: int) -> Any:
    return SimpleNamespace(received_at=at(7, minute), lock_id="l-1", seq=seq)


def _activity_row(minute: int, ident: int) -> Any:
    return SimpleNamespace(received_at=at(7, minute), id=ident)


def test_the_backlog_merges_both_logs_and_each_line_knows_both_places() -> None:
    doors = [_door_row(1, 1), _door_row(3, 2), _door_row(5, 3)]
    reports = [_activity_row(2, 10), _activity_row(4, 11), _activity_row(6, 12)]
    lines = activity.backlog_lines(doors, reports, 4)
    first_door = activity.encode_event_id(activity.door_key(doors[0]))
    second_door = activity.encode_event_id(activity.door_key(doors[1]))
    third_door = activity.encode_event_id(activity.door_key(doors[2]))
    assert [(kind, part, act) for kind, _, part, act in lines] == [
        ("door", second_door, 10),  # 07:01 and 07:02 are dropped but are the places before
        ("activity", second_door, 11),
        ("door", third_door, 11),
        ("activity", third_door, 12),
    ]
    assert first_door not in {part for _, _, part, _ in lines}
    # Nothing before: the places start empty.
    assert [(kind, part, act) for kind, _, part, act in activity.backlog_lines([], [_activity_row(1, 5)], 3)] == [
        ("activity", "", 5)]
    assert activity.backlog_lines(doors, reports, 0) == []


# --- the follower on a real database --------------------------------------------------------------


def test_a_late_committed_smaller_id_is_still_sent_once(portner_app) -> None:
    p = portner_app.state.portner
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    follower = activity.ActivityFollower(activity.newest_activity_id(p.engine))
    assert follower.poll(p.engine, p.municipality.id) == []
    # Ids 50 and 52 commit; 51 (taken by a slower transaction) commits after them.
    base = follower.cursor + 50
    for ident in (base, base + 2):
        add_activity(portner_app, lock_id, lock_time=at(7, 0))
        with p.engine.begin() as conn:  # give the row the id we want
            newest = conn.execute(select(t.lock_activity.c.id).order_by(t.lock_activity.c.id.desc())).first()
            conn.execute(t.lock_activity.update().where(t.lock_activity.c.id == newest.id).values(id=ident))
    assert [r.id for r in follower.poll(p.engine, p.municipality.id)] == [base, base + 2]
    add_activity(portner_app, lock_id, lock_time=at(7, 0))
    with p.engine.begin() as conn:
        newest = conn.execute(select(t.lock_activity.c.id).order_by(t.lock_activity.c.id.desc())).first()
        conn.execute(t.lock_activity.update().where(t.lock_activity.c.id == newest.id).values(id=base + 1))
    assert [r.id for r in follower.poll(p.engine, p.municipality.id)] == [base + 1]
    assert follower.poll(p.engine, p.municipality.id) == []
    # A stream resumed at base + 2 never resends what came at or before it.
    assert activity.ActivityFollower(base + 2).poll(p.engine, p.municipality.id) == []


# --- the live stream, on a real server ------------------------------------------------------------


def test_the_live_stream_sends_lock_reports_and_resumes_both_logs(live_app) -> None:  # noqa: F811
    url, p = live_app
    door_lock = DemoLock(p)
    resident = _relative_resident_of(p)
    lock_id, _ = _lock_of(p, resident)
    actor_id, name = _nurse_of(p)
    with httpx.Client(base_url=url, timeout=httpx.Timeout(30.0)) as client:
        sign_in(client, "demo-operator")  # type: ignore[arg-type]
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 0}) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("retry:")
            _add(p, lock_id, lock_time=at(8, 1), attribution="event", actor_id=actor_id, slot=SLOT)
            code = next(_events(lines))
        assert code["kind"] == "lock_activity" and code["who"] == name and code["role"] == "hjemmesykepleie"
        assert code["outcome"] == "åpnet med kode" and code["opened"] and code["state"] == "opened"
        assert code["source"] == "keypad" and code["door"] == "leilighetsdør" and code["resident"]
        assert code["time"] == "08:01:00" and str(SLOT) not in json.dumps(code)
        # Resumed from the lock report: a door event and a failed attempt that came meanwhile.
        door_lock.refuse()
        _add(p, lock_id, lock_time=at(8, 2), success=False, failure="wrong_code")
        with client.stream("GET", "/api/v1/events/stream", headers={"Last-Event-ID": code["id"]}) as stream:
            lines = stream.iter_lines()
            next(lines)
            events = _events(lines)
            door, wrong = next(events), next(events)
        assert door["kind"] == "door_event" and door["source"] == "phone" and not door["opened"]
        assert wrong["kind"] == "lock_activity" and wrong["state"] == "refused"
        assert (wrong["outcome"], wrong["reason"], wrong["who"]) == ("avvist", "feil kode", "ukjent hvem")
        # A thumb-turn and an auto-lock, in English, resumed from the door event.
        _add(p, lock_id, lock_time=at(8, 3), source="manual")
        _add(p, lock_id, lock_time=at(8, 4), operation="lock", source="auto")
        with client.stream("GET", "/api/v1/events/stream?lang=en", headers={"Last-Event-ID": wrong["id"]}) as stream:
            lines = stream.iter_lines()
            next(lines)
            events = _events(lines)
            turn, auto = next(events), next(events)
        assert (turn["who"], turn["outcome"]) == ("someone", "opened from inside or with a key")
        assert (auto["who"], auto["outcome"], auto["state"], auto["opened"]) == (
            "the lock itself", "locked automatically", "locked", False)
        # A new connection's backlog: both logs, oldest first, each line once.
        with client.stream("GET", "/api/v1/events/stream", params={"backlog": 5}) as stream:
            lines = stream.iter_lines()
            next(lines)
            recent = _events(lines)
            keys = [next(recent)["key"] for _ in range(5)]
        assert keys == [code["key"], door["key"], wrong["key"], turn["key"], auto["key"]]


def _relative_resident_of(p: Any) -> str:
    return _relative_resident(SimpleNamespace(state=SimpleNamespace(portner=p)))  # type: ignore[arg-type]


def _lock_of(p: Any, resident: str) -> tuple[str, str]:
    return lock_of(SimpleNamespace(state=SimpleNamespace(portner=p)), resident)  # type: ignore[arg-type]


def _nurse_of(p: Any) -> tuple[str, str]:
    return nurse(SimpleNamespace(state=SimpleNamespace(portner=p)))  # type: ignore[arg-type]


def _add(p: Any, lock_id: str, **fields: Any) -> int:
    fields.setdefault("received_at", p.now())  # arrival order is the stream's order
    return add_activity(SimpleNamespace(state=SimpleNamespace(portner=p)), lock_id, **fields)  # type: ignore[arg-type]


def test_the_stream_keeps_the_door_event_id_functions() -> None:
    """access.encode_event_id / decode_event_id still answer for door cursors (moved, not changed)."""
    key = (at(7, 0), "l-000041", 3)
    assert access.decode_event_id(access.encode_event_id(key)) == key


# --- the access-log API -------------------------------------------------------------------------


def test_the_door_log_api_lists_lock_reports_with_their_source_and_audits_the_read(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    actor_id, name = nurse(portner_app)
    p = portner_app.state.portner
    add_activity(portner_app, lock_id, lock_time=at(3, 10), success=False, failure="wrong_code")
    add_activity(portner_app, lock_id, lock_time=at(7, 2), attribution="event", actor_id=actor_id, slot=SLOT)
    add_activity(portner_app, lock_id, lock_time=at(6, 0), attribution="unknown_credential", slot=SLOT)
    add_activity(portner_app, lock_id, lock_time=at(7, 5), operation="lock", source="auto")
    add_activity(portner_app, lock_id, lock_time=None, received_at=at(7, 40), source="manual")
    reads = t.audit_events.c.action == "accesslog:read"
    with p.engine.connect() as conn:
        before = len(conn.execute(select(t.audit_events).where(reads)).all())
    lines = walk(client_for("demo-relative"), f"{API}/residents/{resident}/access-log?limit=2")
    assert [(ln["at"], ln["source"], ln["who"], ln["outcome"], ln["reason"]) for ln in lines] == [
        ("2026-12-03 03:10", "keypad", "unidentified", "refused", "wrong_code"),
        ("2026-12-03 06:00", "keypad", "unknown credential", "opened", "ok"),
        ("2026-12-03 07:02", "keypad", name, "opened", "ok"),
        ("2026-12-03 07:40", "manual", "unidentified", "opened", "ok"),
    ]
    assert lines[2]["role"] == "home nurse" and lines[2]["door"] == "flat door" and not lines[2]["planned_visit"]
    assert [ln["position"] for ln in lines] == [0, 1, 2, 3]
    assert all("slot" not in ln and str(SLOT) not in json.dumps(ln) for ln in lines)
    with p.engine.connect() as conn:
        entries = conn.execute(select(t.audit_events).where(reads).order_by(t.audit_events.c.seq)).all()
    assert len(entries) == before + 2  # two pages, two reads
    assert entries[-1].subject == resident and entries[-1].details == {"lines": 4, "lock_activity": 4}


def test_the_door_log_api_gives_phone_door_events_their_source(portner_app, client_for) -> None:
    resident = _relative_resident(portner_app)
    lock_id, _ = lock_of(portner_app, resident)
    actor_id, _ = nurse(portner_app)
    with portner_app.state.portner.engine.begin() as conn:
        conn.execute(insert(t.door_events).values(
            lock_id=lock_id, seq=1, lock_time=at(6, 45), received_at=at(6, 45), action="unlock", allowed=True,
            reason="ok", credential_id=None, actor_id=actor_id, visit_id=None, hash=secrets.token_bytes(32)))
    add_activity(portner_app, lock_id, lock_time=at(6, 50))
    lines = walk(client_for("demo-relative"), f"{API}/residents/{resident}/access-log")
    assert [(ln["at"], ln["source"]) for ln in lines] == [("2026-12-03 06:45", "phone"), ("2026-12-03 06:50", "keypad")]
