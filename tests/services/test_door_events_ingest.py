"""Door-event ingest for the HTTP API: uploads in any order and late, retries, batches, the wire.

Runs on SQLite and PostgreSQL (the `engine` fixture), with real simulated locks and their MACs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select, update

from portner.domain.lock_log import LockEvent
from portner.locks.simulated import SimulatedLock
from portner.services.checkpoints import cross_check
from portner.services.door_events import (
    LocksRefused,
    LockUpload,
    UploadAuthority,
    ingest_upload,
    ingest_uploads,
    ingest_uploads_in,
    open_log_anomalies,
)
from portner.services.issuing import issue_for_shift
from portner.services.lock_wire import WireError, event_from_wire, event_to_wire
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from tests.services.test_door_day import _open, day  # noqa: F401 - `day` is the fixture
from tests.services.test_importing import at


def _six_events(fx: dict[str, Any]) -> tuple[SimulatedLock, list[LockEvent]]:
    """The flat door's log: boot, the nurse's opening, relock, her leaving, a reboot, a lock."""
    secrets = fx["secrets"]
    creds = issue_for_shift(fx["engine"], secrets.issuer, [fx["device"].id],
                            window_start=at(0), window_end=at(23), now=at(6), ids=fx["ids"])
    morning = next(c for c in creds if c.grant.not_before < at(9).astimezone(UTC))
    lock, clock = fx["locks"]["d-2"], fx["clock"]
    clock.now = at(8, 2)
    assert _open(lock, fx["phone"], morning.blob).allowed  # seq 2
    clock.now = at(8, 3)  # seq 3: the automatic relock, logged when the lock next looks
    clock.now = at(8, 25)
    lock.record_exit(source="inside")  # seq 4: a departure
    lock.power_cycle()  # seq 5
    lock.record_exit(source="inside")  # seq 6: nobody in progress any more
    events = lock.events_since(0)
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert [e.kind for e in events[1:4]] == ["unlock", "locked", "locked"]
    return lock, events


@pytest.fixture
def ready(engine: Engine, day: dict[str, Any]) -> dict[str, Any]:  # noqa: F811
    day["engine"] = engine
    lock, events = _six_events(day)
    key = day["secrets"].lock_key(lock.lock_id)
    return {**day, "lock": lock, "events": events, "key": key}


def _ingest(r: dict[str, Any], events: list[LockEvent], now: datetime) -> Any:
    return ingest_upload(r["engine"], r["lock"].lock_id, events, lock_key=r["key"], now=now)


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_uploads_out_of_order_complete_one_chain(ready: dict[str, Any]) -> None:
    engine, events = ready["engine"], ready["events"]
    late = _ingest(ready, events[3:], at(9))
    assert (late.accepted, late.pending, late.anomalies) == (0, 3, ["gap"])
    assert _count(engine, t.door_events) == 0
    assert _count(engine, t.door_event_pending) == 3
    early = _ingest(ready, events[:3], at(10))
    assert (early.accepted, early.pending, early.anomalies) == (6, 0, [])
    assert (early.opened, early.arrivals, early.departures, early.gaps_filled) == (1, 1, 1, 1)
    with engine.connect() as conn:
        stored = conn.execute(select(t.door_events).order_by(t.door_events.c.seq)).all()
        lock = conn.execute(select(t.locks).where(t.locks.c.id == ready["lock"].lock_id)).one()
        visit = conn.execute(select(t.visits).where(t.visits.c.source_key == "k1")).one()
        anomalies = conn.execute(select(t.lock_log_anomalies)).all()
        assert open_log_anomalies(conn) == []
        gap_filled = conn.execute(
            select(t.audit_events.c.details).where(t.audit_events.c.action == "locklog:gap_filled")
        ).scalars().all()
        assert verify_audit(conn).ok
        assert cross_check(conn) == []
    assert [(r.seq, bytes(r.hash)) for r in stored] == [(e.seq, e.hash) for e in events]
    assert (lock.synced_seq, bytes(lock.synced_hash)) == (6, events[-1].hash)
    # The events that waited keep the time they first arrived; the others arrived now.
    nine, ten = at(9).astimezone(UTC), at(10).astimezone(UTC)
    assert [r.received_at for r in stored] == [ten] * 3 + [nine] * 3
    assert (visit.status, visit.arrived_at) == ("completed", events[1].at)
    assert visit.departed_at == events[3].at
    # The gap stays as history; nothing contradicts it, and it is no longer an open problem.
    assert [(a.kind, a.first_seq, a.last_seq) for a in anomalies] == [("gap", 1, 3)]
    assert [json.loads(d) if isinstance(d, str) else d for d in gap_filled] == [
        {"first_seq": 1, "last_seq": 3}
    ]
    assert _count(engine, t.door_event_pending) == 0
    assert _count(engine, t.outbox) == 1  # the finished visit goes back to the care record


@pytest.mark.parametrize("written_by", ["pipeline", "copy"])
def test_events_are_stored_as_sent_whatever_the_zone(ready: dict[str, Any], written_by: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Each stored row is the event's fields (its time in UTC) plus who and which visit; the
    audit entry gives the time as the event had it. A zone does not change an event's hash.
    On PostgreSQL a few events go in by a pipelined INSERT (their audit entries chained by the
    server), many by a COPY written by hand: both are held to this."""
    if written_by == "copy":
        from portner.services import door_events
        from portner.storage import audit

        monkeypatch.setattr(door_events, "_FEW_EVENTS", 0)
        monkeypatch.setattr(audit, "_FEW", 0)
    engine, events, lock_id = ready["engine"], ready["events"], ready["lock"].lock_id
    oslo = ZoneInfo("Europe/Oslo")
    sent = [replace(e, at=e.at.astimezone(oslo)) if e.seq % 2 else e for e in events]
    assert _ingest(ready, sent, at(9)).accepted == len(events)
    with engine.connect() as conn:
        stored = conn.execute(select(t.door_events).order_by(t.door_events.c.seq)).all()
        visit = conn.execute(select(t.visits).where(t.visits.c.source_key == "k1")).one()
        owner = conn.execute(
            select(t.grants.c.actor_id).join(t.credentials, t.credentials.c.grant_id == t.grants.c.id)
            .where(t.credentials.c.id == events[1].credential_id)
        ).scalar_one()
        audited = conn.execute(
            select(t.audit_events.c.subject, t.audit_events.c.details)
            .where(t.audit_events.c.subject.like(f"{lock_id}#%"))
        ).all()
    want = [
        (lock_id, e.seq, e.at, at(9).astimezone(UTC), e.kind, bool(e.allowed), e.reason,
         e.credential_id, owner if e.credential_id else e.subject,
         visit.id if e.credential_id else None, e.hash)
        for e in events
    ]
    got = [(r.lock_id, r.seq, r.lock_time, r.received_at, r.action, r.allowed, r.reason,
            r.credential_id, r.actor_id, r.visit_id, bytes(r.hash)) for r in stored]
    assert got == want
    assert all(r.lock_time.utcoffset() == timedelta(0) for r in stored)
    details = {s: json.loads(d) if isinstance(d, str) else d for s, d in audited}
    assert [details[f"{lock_id}#{e.seq}"]["at"] for e in sent] == [e.at.isoformat() for e in sent]


def test_a_held_opening_still_names_its_nurse_when_an_upload_without_credentials_fills_the_gap(
        ready: dict[str, Any]) -> None:
    # The opening's credential is not in the upload that completes the chain: who holds it is
    # read for the held event (on PostgreSQL the first reads go with the locks' heads).
    engine, events = ready["engine"], ready["events"]
    assert _ingest(ready, events[1:], at(9)).pending == 5  # beyond the gap, the opening too
    filled = _ingest(ready, events[:1], at(10))  # the boot alone
    assert (filled.accepted, filled.opened, filled.arrivals, filled.departures) == (6, 1, 1, 1)
    with engine.connect() as conn:
        opening = conn.execute(select(t.door_events).where(t.door_events.c.seq == 2)).one()
        visit = conn.execute(select(t.visits).where(t.visits.c.source_key == "k1")).one()
        owner = conn.execute(
            select(t.grants.c.actor_id).join(t.credentials, t.credentials.c.grant_id == t.grants.c.id)
            .where(t.credentials.c.id == events[1].credential_id)
        ).scalar_one()
    assert (opening.credential_id, opening.actor_id, opening.visit_id) == (events[1].credential_id, owner, visit.id)
    assert (visit.status, visit.arrived_at) == ("completed", events[1].at)


def test_a_retried_upload_changes_nothing(ready: dict[str, Any]) -> None:
    engine, events = ready["engine"], ready["events"]
    first = _ingest(ready, events[3:], at(9))
    assert first.anomalies == ["gap"]
    before = (_count(engine, t.audit_events), _count(engine, t.lock_log_anomalies))
    again = _ingest(ready, events[3:], at(9, 5))  # the relay retries the late part
    assert (again.accepted, again.pending, again.anomalies) == (0, 3, [])
    assert (_count(engine, t.audit_events), _count(engine, t.lock_log_anomalies)) == before
    assert _count(engine, t.door_event_pending) == 3
    full = _ingest(ready, events, at(10))
    assert full.accepted == 6
    before = (_count(engine, t.audit_events), _count(engine, t.lock_log_anomalies),
              _count(engine, t.door_events), _count(engine, t.outbox))
    for retry in (events, events[2:4], [events[0], events[0]]):
        report = _ingest(ready, retry, at(11))
        assert (report.accepted, report.anomalies, report.opened) == (0, [], 0)
    after = (_count(engine, t.audit_events), _count(engine, t.lock_log_anomalies),
             _count(engine, t.door_events), _count(engine, t.outbox))
    assert after == before
    with engine.connect() as conn:
        assert verify_audit(conn).ok


def test_a_rewritten_resend_is_still_caught(ready: dict[str, Any]) -> None:
    """Idempotent means the same event again: another event under a verified seq is not."""
    events = ready["events"]
    _ingest(ready, events, at(9))
    forged = replace(events[1], reason="forged")
    report = _ingest(ready, [forged], at(10))
    assert report.accepted == 0
    assert "rewritten" in report.anomalies


def test_pending_events_survive_across_calls(ready: dict[str, Any]) -> None:
    engine, events, lock_id = ready["engine"], ready["events"], ready["lock"].lock_id
    assert _ingest(ready, events[4:], at(9)).pending == 2
    assert _ingest(ready, events[2:4], at(9, 30)).pending == 4  # 1-2 still missing
    with engine.connect() as conn:
        rows = conn.execute(select(t.door_event_pending).order_by(t.door_event_pending.c.seq)).all()
    assert [(r.lock_id, r.seq, bytes(r.hash)) for r in rows] == [
        (lock_id, e.seq, e.hash) for e in events[2:]
    ]
    payloads = [r.payload if isinstance(r.payload, dict) else json.loads(r.payload) for r in rows]
    assert payloads == [event_to_wire(e) for e in events[2:]]
    assert [event_from_wire(p, lock_id) for p in payloads] == events[2:]
    done = _ingest(ready, events[:2], at(10))
    assert (done.accepted, done.pending) == (6, 0)
    assert _count(engine, t.door_event_pending) == 0


def test_a_tampered_pending_event_is_not_accepted_when_the_gap_fills(ready: dict[str, Any]) -> None:
    engine, events, lock_id = ready["engine"], ready["events"], ready["lock"].lock_id
    _ingest(ready, events[3:], at(9))
    # Someone with database access rewrites a waiting event and its hash, but has no lock key.
    ev = events[4]
    evil = replace(ev, subject="stf-evil", reason="ok")
    evil = replace(evil, hash=evil.computed_hash())
    p = t.door_event_pending
    with engine.begin() as conn:
        conn.execute(update(p).where(p.c.lock_id == lock_id, p.c.seq == ev.seq)
                     .values(payload=event_to_wire(evil)))
    report = _ingest(ready, events[:3], at(10))
    assert report.accepted == 4  # up to the event before the tampered one
    assert set(report.anomalies) == {"bad_mac", "gap"}
    with engine.connect() as conn:
        head = select(t.locks.c.synced_seq).where(t.locks.c.id == lock_id)
        assert conn.execute(head).scalar() == 4
        assert "stf-evil" not in conn.execute(select(t.door_events.c.actor_id)).scalars().all()
        assert conn.execute(select(p.c.seq)).scalars().all() == [6]  # the forgery is dropped
    # The lock still has the genuine event; its next upload completes the chain.
    last = _ingest(ready, events[4:], at(11))
    assert (last.accepted, last.pending) == (2, 0)


def test_a_batch_is_one_transaction(engine: Engine, day: dict[str, Any]) -> None:  # noqa: F811
    """Both doors of a home in one batch: the building door's opening is the arrival."""
    creds = issue_for_shift(engine, day["secrets"].issuer, [day["device"].id], window_start=at(0),
                            window_end=at(23), now=at(6), ids=day["ids"])
    morning = next(c for c in creds if c.grant.not_before < at(9).astimezone(UTC))
    building, flat, clock = day["locks"]["d-1"], day["locks"]["d-2"], day["clock"]
    clock.now = at(8, 1)
    assert _open(building, day["phone"], morning.blob).allowed
    clock.now = at(8, 2)
    assert _open(flat, day["phone"], morning.blob).allowed
    clock.now = at(8, 25)
    flat.record_exit(source="inside")
    key_of = day["secrets"].lock_key
    ups = [LockUpload(x.lock_id, x.events_since(0), key_of(x.lock_id)) for x in (building, flat)]
    with pytest.raises(KeyError, match="unknown lock l-nowhere"):
        ingest_uploads(engine, [*ups, LockUpload("l-nowhere", [], bytes(32))], now=at(9))
    assert _count(engine, t.door_events) == 0  # nothing half-written
    with pytest.raises(ValueError, match="twice"):
        ingest_uploads(engine, [ups[0], ups[0]], now=at(9))
    reports = ingest_uploads(engine, ups, now=at(9))
    assert [r.lock_id for r in reports] == [u.lock_id for u in ups]
    assert [r.accepted for r in reports] == [len(u.events) for u in ups]
    assert [(r.opened, r.arrivals, r.departures) for r in reports] == [(1, 1, 0), (1, 0, 1)]
    with engine.connect() as conn:
        visit = conn.execute(select(t.visits).where(t.visits.c.source_key == "k1")).one()
        assert verify_audit(conn).ok
        assert cross_check(conn) == []
    assert (visit.status, visit.arrived_at) == ("completed", at(8, 1).astimezone(UTC))
    assert visit.departed_at == at(8, 25).astimezone(UTC)
    assert _count(engine, t.outbox) == 1


def test_a_batch_can_join_the_callers_transaction(ready: dict[str, Any]) -> None:
    """ingest_uploads_in writes in the caller's transaction: rolled back, nothing of it stays
    (events, audit, the lock's head); committed, it is what ingest_uploads would have stored."""
    engine, events = ready["engine"], ready["events"]
    upload = LockUpload(ready["lock"].lock_id, events, ready["key"])
    audit_before = _count(engine, t.audit_events)
    with engine.connect() as conn:
        (report,) = ingest_uploads_in(conn, [upload], now=at(9))
        assert report.accepted == len(events)
        conn.rollback()
    assert (_count(engine, t.door_events), _count(engine, t.audit_events)) == (0, audit_before)
    with engine.connect() as conn:
        assert conn.execute(select(t.locks.c.synced_seq)
                            .where(t.locks.c.id == upload.lock_id)).scalar_one() == 0
    with engine.begin() as conn:
        (report,) = ingest_uploads_in(conn, [upload], now=at(9))
    assert (report.accepted, report.opened, report.arrivals, report.departures) == (6, 1, 1, 1)
    assert _count(engine, t.door_events) == len(events)
    with engine.connect() as conn:
        assert verify_audit(conn).ok


def test_an_authority_decides_with_the_first_reads_which_locks_may_be_uploaded_for(
        ready: dict[str, Any]) -> None:
    """UploadAuthority: its reads come back to its check before anything is stored; a lock its
    condition does not keep is refused (LocksRefused, nothing stored); a check may name another
    authority to read the locks by, in the same transaction; one that raises refuses the batch."""
    engine, events = ready["engine"], ready["events"]
    upload = LockUpload(ready["lock"].lock_id, events, ready["key"])
    resident = "SELECT resident_id FROM homes h2 WHERE h2.id = h.id"
    seen: list[Any] = []

    def stored(authority: UploadAuthority) -> list[Any]:
        with engine.begin() as conn:
            return ingest_uploads_in(conn, [upload], now=at(9), authority=authority)

    nobody = UploadAuthority(f"({resident}) = ?", ("no-such-resident",), reads=[("SELECT ?", None, ("me",))],
                             check=lambda first: seen.append(first) or None)
    with pytest.raises(LocksRefused) as refused:
        stored(nobody)
    assert refused.value.lock_ids == {upload.lock_id} and seen == [[[("me",)]]]
    assert _count(engine, t.door_events) == 0

    def refuse(first: Any) -> None:
        raise PermissionError("not you")

    with pytest.raises(PermissionError):
        stored(replace(nobody, check=refuse))
    assert _count(engine, t.door_events) == 0

    anyone = UploadAuthority("TRUE", ())
    (report,) = stored(replace(nobody, check=lambda first: anyone))  # read again by `anyone`
    assert report.accepted == len(events) and _count(engine, t.door_events) == len(events)
    with engine.connect() as conn:
        assert verify_audit(conn).ok


# -- the wire ------------------------------------------------------------------------------------
def test_wire_round_trip(ready: dict[str, Any]) -> None:
    lock_id = ready["lock"].lock_id
    for ev in ready["events"]:
        wire = json.loads(json.dumps(event_to_wire(ev)))  # JSON-safe
        assert event_from_wire(wire, lock_id) == ev
        assert wire["at"].endswith("+00:00") and len(wire["hash"]) == 64
    # Optional fields may be left out; a zone other than UTC is accepted and stored as UTC.
    boot = {k: v for k, v in event_to_wire(ready["events"][0]).items()
            if k not in ("allowed", "credential_id", "subject")}
    boot["at"] = ready["events"][0].at.astimezone(at(0).tzinfo).isoformat()
    assert event_from_wire(boot, lock_id) == ready["events"][0]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hash": None}, "hash"),
        ({"mac": "zz" * 32}, "mac"),
        ({"prev_hash": "ab cd" + "0" * 59}, "prev_hash"),
        ({"prev_hash": "00" * 31}, "prev_hash"),
        ({"at": "2026-12-03T08:00:00"}, "at"),
        ({"at": "yesterday"}, "at"),
        ({"at": 1796281200}, "at"),
        ({"seq": "7"}, "seq"),
        ({"seq": True}, "seq"),
        ({"seq": 0}, "seq"),
        ({"allowed": "yes"}, "allowed"),
        ({"kind": "x" * 33}, "kind"),
        ({"kind": ""}, "kind"),
        ({"reason": None}, "reason"),
        ({"subject": 42}, "subject"),
        ({"credential_id": "\ud800"}, "credential_id"),
        ({"lock_id": "l-other"}, "lock_id"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_wire_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    good = {
        "seq": 7, "at": "2026-12-03T07:02:00+00:00", "kind": "unlock", "allowed": True,
        "reason": "ok", "credential_id": "ab" * 16, "subject": "stf-1",
        "prev_hash": "00" * 32, "hash": "11" * 32, "mac": "22" * 32,
    }
    assert event_from_wire(good, "l-1").seq == 7
    bad = {**good, **change}
    if change.get("hash", "") is None:
        del bad["hash"]  # missing, not null
    with pytest.raises(WireError, match=f"^{field}: ") as caught:
        event_from_wire(bad, "l-1")
    assert caught.value.field == field
    assert isinstance(caught.value, ValueError)


def test_wire_refuses_what_is_not_an_object() -> None:
    with pytest.raises(ValueError, match="^event: is not an object"):
        event_from_wire(["seq", 1], "l-1")  # type: ignore[arg-type]


def test_the_collector_pause_is_counted_across_overlapping_batches() -> None:
    """Batches run in several threads: the collector comes back when the last large batch ends,
    stays off if it was off before, and a phone's few events leave it alone."""
    import gc

    from portner.services.door_events import _FEW_EVENTS, _collector_paused

    assert gc.isenabled()
    try:
        with _collector_paused(_FEW_EVENTS):
            assert gc.isenabled()  # a few events: untouched
        first, second = _collector_paused(_FEW_EVENTS + 1), _collector_paused(10_000)
        first.__enter__()
        second.__enter__()
        assert not gc.isenabled()
        first.__exit__(None, None, None)
        assert not gc.isenabled()  # the other batch still runs
        second.__exit__(None, None, None)
        assert gc.isenabled()
        gc.disable()
        with _collector_paused(10_000):
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()
