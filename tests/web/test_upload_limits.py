"""POST /door-events against a flood: who may upload for which lock, size bounds, one anomaly per
kind and upload, and last_sync_at moving only when the lock is proven to have spoken."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from portner.domain.access import SCOPE_EVENTS_UPLOAD, AccountRole
from portner.domain.lock_log import head_attestation_mac
from portner.services.accounts import DEV_ISSUER, create_account
from portner.services.door_events import ingest_upload
from portner.services.lock_wire import event_from_wire
from portner.storage import tables as t
from tests.web.test_phone_api import API, actor_of, counts, fields, lock_with_opening, register


def junk_event(seq: int) -> dict[str, Any]:
    """Well formed on the wire, but its MAC was never made with the lock's key."""
    return {"seq": seq, "at": "2026-12-03T07:30:00+00:00", "kind": "unlock", "allowed": True, "reason": "ok",
            "credential_id": None, "subject": None, "prev_hash": "11" * 32, "hash": "33" * 32, "mac": "22" * 32}


def gateway(client_for, p, clock) -> Any:
    create_account(p.engine, municipality_id=p.municipality.id, issuer=DEV_ISSUER, subject="gateway-1",
                   role=AccountRole.INTEGRATION, now=clock(), ids=p.ids, by="test", scopes=[SCOPE_EVENTS_UPLOAD])
    return client_for("gateway-1")


def her_lock(client) -> str:
    _, device_id = register(client)
    shift = client.get(f"{API}/me/credentials", params={"device_id": device_id}).json()
    return next(d["lock_id"] for c in shift["credentials"] for d in c["visit"]["doors"] if d["lock_id"])


def foreign_lock(p, subject: str) -> str:
    """A lock of a home none of this nurse's visit grants, at any time, leads her to."""
    actor = actor_of(p.engine, subject)
    served = (select(t.visits.c.resident_id).join(t.grants, t.grants.c.visit_id == t.visits.c.id)
              .where(t.grants.c.actor_id == actor))
    with p.engine.connect() as conn:
        return conn.execute(
            select(t.locks.c.id).join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id)
            .where(t.homes.c.resident_id.not_in(served)).order_by(t.locks.c.id).limit(1)
        ).scalar_one()


def lock_state(p, lock_id: str) -> tuple[Any, ...]:
    lk = t.locks
    with p.engine.connect() as conn:
        return tuple(conn.execute(select(lk.c.synced_seq, lk.c.last_sync_at, lk.c.battery_percent,
                                         lk.c.clock_offset_s).where(lk.c.id == lock_id)).one())


def audited(p, action: str, subject: str) -> int:
    a = t.audit_events
    with p.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(a)
                            .where(a.c.action == action, a.c.subject == subject)).scalar()


# --- who may upload for which lock --------------------------------------------------------------


def test_a_nurse_uploads_only_for_the_homes_of_her_visits(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine, theirs = her_lock(nurse), foreign_lock(p, "demo-nurse-1")
    before = counts(p.engine)
    assert nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": mine, "events": []}]}).status_code == 200
    not_hers = nurse.post(f"{API}/door-events", json={"uploads": [
        {"lock_id": mine, "events": []}, {"lock_id": theirs, "events": [junk_event(1)]}]})
    no_such = nurse.post(f"{API}/door-events", json={"uploads": [
        {"lock_id": mine, "events": []}, {"lock_id": "lock-nope", "events": [junk_event(1)]}]})
    assert not_hers.status_code == no_such.status_code == 403
    assert fields(not_hers) == ["body/uploads/1/lock_id"]
    # The very same answer: whether a lock id exists is not told.
    assert not_hers.json() == no_such.json()
    assert counts(p.engine) == before, "nothing of a refused batch is written"
    # A gateway with the upload scope relays for any lock of its municipality, and no other.
    relay = gateway(client_for, p, clock)
    assert relay.post(f"{API}/door-events", json={"uploads": [{"lock_id": theirs, "events": []}]}).status_code == 200
    unknown = relay.post(f"{API}/door-events", json={"uploads": [{"lock_id": "lock-nope", "events": []}]})
    assert unknown.status_code == 403 and fields(unknown) == ["body/uploads/0/lock_id"]


def test_her_visits_of_three_days_ago_no_longer_let_her_upload(client_for, portner_app, clock) -> None:
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    clock.advance(timedelta(days=1))  # tomorrow she may still hand in what her phone holds
    assert nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": mine, "events": []}]}).status_code == 200
    clock.advance(timedelta(days=2))
    late = client_for("demo-nurse-1").post(f"{API}/door-events", json={"uploads": [{"lock_id": mine, "events": []}]})
    assert late.status_code == 403 and fields(late) == ["body/uploads/0/lock_id"]


# --- size ---------------------------------------------------------------------------------------


def padded(lock_id: str, size: int) -> bytes:
    """A valid batch, made `size` bytes long with JSON whitespace."""
    body = b'{"uploads": [{"lock_id": "%s", "events": []}]' % lock_id.encode()
    return body + b" " * (size - len(body) - 1) + b"}"


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]


def test_the_body_is_bounded_before_parsing(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    headers = {"Content-Type": "application/json"}
    big = padded(mine, 1_500_000)
    declared = nurse.post(f"{API}/door-events", content=big, headers=headers)
    assert declared.status_code == 413 and fields(declared) == ["body"]
    assert declared.headers["content-type"].startswith("application/problem+json")
    # Chunked: no Content-Length to refuse by, the bytes are counted while read.
    streamed = nurse.post(f"{API}/door-events", content=chunks(big), headers=headers)
    assert streamed.status_code == 413 and fields(streamed) == ["body"]
    # A gateway relays for many locks: the same body is within its bound, 8 MB is not.
    relay = gateway(client_for, p, clock)
    assert relay.post(f"{API}/door-events", content=big, headers=headers).status_code == 200
    huge = relay.post(f"{API}/door-events", content=chunks(padded(mine, 8_100_000)), headers=headers)
    assert huge.status_code == 413


def test_uploads_and_events_per_request_are_bounded(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    relay = gateway(client_for, p, clock)
    before = counts(p.engine)

    def post(uploads: list[dict[str, Any]]) -> Any:
        return relay.post(f"{API}/door-events", json={"uploads": uploads})

    many = post([{"lock_id": f"lock-{n}", "events": []} for n in range(51)])
    assert many.status_code == 422 and fields(many) == ["body/uploads"]
    one_lock = post([{"lock_id": "lock-a", "events": [junk_event(s) for s in range(1, 502)]}])
    assert one_lock.status_code == 422 and fields(one_lock) == ["body/uploads/0/events"]
    # Split over two uploads of one lock, it is still more than 500 events of that lock.
    split = post([{"lock_id": "lock-a", "events": [junk_event(s) for s in range(1, 301)]},
                  {"lock_id": "lock-a", "events": [junk_event(s) for s in range(301, 602)]}])
    assert split.status_code == 422 and fields(split) == ["body/uploads/1/events"]
    total = post([*({"lock_id": f"lock-{n}", "events": [junk_event(s) for s in range(1, 401)]} for n in range(5)),
                  {"lock_id": "lock-5", "events": [junk_event(1)]}])
    assert total.status_code == 422 and fields(total) == ["body/uploads/5/events"]
    assert counts(p.engine) == before


# --- anomalies and last_sync_at -----------------------------------------------------------------


def test_bad_macs_of_one_upload_are_one_anomaly_and_leave_the_lock_unsynced(client_for, portner_app) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    mine = her_lock(nurse)
    state = lock_state(p, mine)
    batch = {"uploads": [{"lock_id": mine, "events": [junk_event(s) for s in range(1, 1000, 2)]}]}
    answer = nurse.post(f"{API}/door-events", json=batch)
    assert answer.status_code == 200, answer.text
    assert answer.json()["results"][0]["anomalies"] == ["bad_mac"]
    a = t.lock_log_anomalies
    with p.engine.connect() as conn:
        rows = conn.execute(select(a.c.kind, a.c.first_seq, a.c.last_seq, a.c.detail).where(a.c.lock_id == mine)).all()
    assert [(r.kind, r.first_seq, r.last_seq) for r in rows] == [("bad_mac", 1, 999)]
    assert rows[0].detail.startswith("500 events")
    assert audited(p, "locklog:bad_mac", mine) == 1
    assert lock_state(p, mine) == state, "garbage does not make the lock look synced"
    # Sent again, it is the same finding: nothing more is recorded.
    before = counts(p.engine)
    assert nurse.post(f"{API}/door-events", json=batch).json()["results"][0]["anomalies"] == []
    assert counts(p.engine) == before


def test_last_sync_moves_on_verified_events_or_a_verified_head(client_for, portner_app, clock) -> None:
    p = portner_app.state.portner
    nurse = client_for("demo-nurse-1")
    lock_id, events, _ = lock_with_opening(p, nurse)
    assert nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": events}]}).status_code == 200
    seq, synced_at = lock_state(p, lock_id)[:2]
    assert seq == len(events) and synced_at is not None
    # Nothing new, but the lock's MACed head for a fresh nonce: it spoke, so it synced now.
    key, nonce, head_hash = p.secrets.lock_key(lock_id), bytes(range(16)), bytes.fromhex(events[-1]["hash"])
    head = {"nonce": nonce.hex(), "seq": seq, "hash": head_hash.hex(),
            "mac": head_attestation_mac(key, lock_id, nonce, seq, head_hash).hex()}
    clock.advance(timedelta(hours=1))
    assert nurse.post(f"{API}/door-events", json={"uploads": [{"lock_id": lock_id, "events": [], "head": head}]}
                      ).json()["results"][0]["anomalies"] == []
    headed_at = lock_state(p, lock_id)[1]
    assert headed_at > synced_at
    # A forged head, re-sent old events and junk prove nothing: the lock stays as it was.
    clock.advance(timedelta(hours=1))
    forged = {**head, "mac": "00" * 32}
    answer = nurse.post(f"{API}/door-events", json={"uploads": [
        {"lock_id": lock_id, "events": [*events, junk_event(seq + 2)], "head": forged}]})
    assert set(answer.json()["results"][0]["anomalies"]) == {"bad_head_mac", "bad_mac"}
    assert lock_state(p, lock_id)[1] == headed_at
    # The same holds for what a gateway reports about the lock itself (battery, clock).
    state = lock_state(p, lock_id)
    ingest_upload(p.engine, lock_id, [event_from_wire(junk_event(seq + 1), lock_id)], lock_key=key,
                  now=clock(), battery_percent=3.0, clock_offset_s=-999.0)
    assert lock_state(p, lock_id) == state
