"""Take in what locks upload: verify their log chain, store door events, log the visits.

A lock uploads everything since the last sequence number the platform verified. Events that extend
the verified chain are stored and audited in one transaction with the visit updates they cause;
gaps, duplicates, reordering and tampering are recorded as anomalies for an operator.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, insert, select, update

from portner.domain.lock_log import LockEvent, LogAnomaly, check_upload, head_attestation_mac
from portner.domain.model import VisitStatus
from portner.services.writeback import queue_encounter
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository

OPEN_KINDS = frozenset({"unlock"})
LOCK_EVENT_KINDS = frozenset(
    {
        "boot", "locked", "jammed", "revocation_applied", "revocation_rejected", "clock_set",
        "clock_rejected", "battery_low", "battery_replaced",
    }
)
# A departure is the door locked from inside or with the phone on the way out; automatic
# relocks after an opening ("auto_relock") and reboots are not departures.
DEPARTURES = frozenset({("locked", "inside"), ("locked", "credential")})


@dataclass(slots=True)
class IngestReport:
    lock_id: str
    accepted: int = 0
    opened: int = 0
    denied: int = 0
    anomalies: list[str] = field(default_factory=list)
    arrivals: int = 0
    departures: int = 0


def ingest_upload(
    engine: Engine,
    lock_id: str,
    events: Sequence[LockEvent],
    *,
    lock_key: bytes,
    now: datetime,
    battery_percent: float | None = None,
    clock_offset_s: float | None = None,
    head: HeadAttestation | None = None,
) -> IngestReport:
    """Verify and store one lock's upload; match openings to visits; queue finished visits.

    With `head` (the lock's MACed answer to a fresh platform nonce) a relay that withholds the
    newest events is caught too: the chain cannot show what it never received.
    """
    if not isinstance(lock_key, bytes) or len(lock_key) < 16:
        # Without the lock's key a relay could forge any event; never accept an upload unchecked.
        raise ValueError("ingesting a lock upload needs the lock's log key")
    report = IngestReport(lock_id)
    with engine.begin() as conn:
        lock = conn.execute(
            select(t.locks, t.doors.c.home_id)
            .join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .where(t.locks.c.id == lock_id)
        ).first()
        if lock is None:
            raise KeyError(f"unknown lock {lock_id}")
        check = check_upload(
            lock_id,
            events,
            synced_seq=lock.synced_seq,
            synced_hash=lock.synced_hash or bytes(32),
            lock_key=lock_key,
        )
        audit: list[AuditEntry] = []
        anomalies = list(check.anomalies)
        if head is not None:
            # Events past a gap are pending, not withheld: count them as seen.
            seen = max([check.new_synced_seq, *(e.seq for e in check.pending)])
            anomalies.extend(
                _head_anomalies(lock_id, lock_key, head, seen, check.new_synced_seq, check.new_synced_hash)
            )
        for anomaly in anomalies:
            report.anomalies.append(anomaly.kind)
            conn.execute(
                insert(t.lock_log_anomalies).values(
                    lock_id=lock_id,
                    kind=anomaly.kind,
                    first_seq=anomaly.first_seq,
                    last_seq=anomaly.last_seq,
                    detail=anomaly.detail[:400],
                    detected_at=now,
                )
            )
            audit.append(
                AuditEntry(
                    now,
                    f"lock:{lock_id}",
                    f"locklog:{anomaly.kind}",
                    lock_id,
                    {"first_seq": anomaly.first_seq, "last_seq": anomaly.last_seq},
                )
            )
        rows = []
        owners = Repository(conn).credential_owners(
            [ev.credential_id for ev in check.accepted if ev.credential_id]
        )
        for ev in check.accepted:
            owner = owners.get(ev.credential_id) if ev.credential_id else None
            actor_id, visit_id = owner if owner else (ev.subject, None)
            rows.append(
                {
                    "lock_id": lock_id,
                    "seq": ev.seq,
                    "lock_time": ev.at,
                    "received_at": now,
                    "action": ev.kind,
                    "allowed": bool(ev.allowed),
                    "reason": ev.reason[:64],
                    "credential_id": ev.credential_id,
                    "actor_id": actor_id,
                    "visit_id": visit_id,
                    "hash": ev.hash,
                }
            )
            audit.append(_audit_for(ev, lock_id, actor_id, visit_id, now))
            if ev.kind in OPEN_KINDS and ev.allowed:
                report.opened += 1
                if visit_id and _arrive(conn, visit_id, ev.at):
                    report.arrivals += 1
            elif ev.allowed is False:
                report.denied += 1
            elif (ev.kind, ev.reason) in DEPARTURES and _depart(conn, lock.home_id, ev.at, now, audit):
                report.departures += 1
        if rows:
            conn.execute(insert(t.door_events), rows)
        report.accepted = len(rows)
        values: dict[str, object] = {
            "synced_seq": check.new_synced_seq,
            "synced_hash": check.new_synced_hash,
            "last_sync_at": now,
        }
        if battery_percent is not None:
            values["battery_percent"] = battery_percent
        if clock_offset_s is not None:
            values["clock_offset_s"] = clock_offset_s
        conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(**values))
        if audit:
            append_audit(conn, audit)
    return report


@dataclass(frozen=True, slots=True)
class HeadAttestation:
    """The lock's log head as it MACed it for the platform's nonce (SimulatedLock.attest_head)."""

    nonce: bytes
    seq: int
    hash: bytes
    mac: bytes


def _head_anomalies(
    lock_id: str,
    lock_key: bytes,
    head: HeadAttestation,
    seen_seq: int,
    synced_seq: int,
    synced_hash: bytes,
) -> list[LogAnomaly]:
    expected = head_attestation_mac(lock_key, lock_id, head.nonce, head.seq, head.hash)
    if not hmac.compare_digest(expected, head.mac):
        return [LogAnomaly("bad_head_mac", head.seq, head.seq, "head attestation does not verify")]
    if head.seq > seen_seq:
        detail = f"the lock's log reaches {head.seq}; the upload stopped at {seen_seq}"
        return [LogAnomaly("withheld", seen_seq + 1, head.seq, detail)]
    if head.seq == synced_seq and head.hash != synced_hash:
        return [LogAnomaly("forked", head.seq, head.seq, "head hash differs from the verified chain")]
    return []


def _audit_for(
    ev: LockEvent, lock_id: str, actor_id: str | None, visit_id: str | None, now: datetime
) -> AuditEntry:
    if ev.kind in OPEN_KINDS:
        action = "door:opened" if ev.allowed else "door:denied"
    elif ev.allowed is False:
        action = "door:denied"
    else:
        # The lock names its own event kinds; only ones we know become audit tags.
        action = f"lock:{ev.kind}" if ev.kind in LOCK_EVENT_KINDS else "lock:event"
    return AuditEntry(
        now,
        f"lock:{lock_id}",
        action,
        f"{lock_id}#{ev.seq}",
        {
            "at": ev.at.isoformat(),
            "actor": actor_id,
            "visit": visit_id,
            "reason": ev.reason,
            "credential": ev.credential_id,
        },
    )


def _arrive(conn: Connection, visit_id: str, at: datetime) -> bool:
    visit = Repository(conn).get_visit(visit_id)
    if visit is None or visit.status not in (VisitStatus.PLANNED, VisitStatus.IN_PROGRESS):
        return False
    if visit.arrived_at is not None and visit.arrived_at <= at:
        return False  # the second door of the path, or a second opening: arrival is the first
    Repository(conn).update_visit(visit_id, arrived_at=at, status=VisitStatus.IN_PROGRESS)
    return True


def _depart(
    conn: Connection, home_id: str, at: datetime, now: datetime, audit: list[AuditEntry]
) -> bool:
    """Close the visit in progress at this home that began most recently before `at`."""
    row = conn.execute(
        select(t.visits)
        .join(t.homes, t.homes.c.resident_id == t.visits.c.resident_id)
        .where(
            and_(
                t.homes.c.id == home_id,
                t.visits.c.status == VisitStatus.IN_PROGRESS.value,
                t.visits.c.arrived_at <= at,
            )
        )
        .order_by(t.visits.c.arrived_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return False
    repo = Repository(conn)
    repo.update_visit(row.id, departed_at=at, status=VisitStatus.COMPLETED)
    visit = repo.get_visit(row.id)
    assert visit is not None
    queue_encounter(conn, visit, now=now)
    audit.append(
        AuditEntry(
            now,
            "system:visits",
            "visit:completed",
            visit.id,
            {"arrived": visit.arrived_at.isoformat() if visit.arrived_at else None, "departed": at.isoformat()},
        )
    )
    return True
