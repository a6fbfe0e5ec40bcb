"""Lock alarms an operator must see: raised, escalated and cleared, each with its audit entry.

One open row per (lock, kind, subject): raising an alarm that is already open changes nothing, so
a redelivered event or a repeated check cannot stack alarms. An alarm is cleared when its
condition ends (a successful operation after a jam) or by an operator, never by a timer (F29);
time only escalates it (portner.locks.attribution.ESCALATE_AFTER). Every change is audited in the
caller's transaction.

The periodic checks that raise alarms from what did not happen live here too:
`check_unconfirmed_remote` (F26: a commanded remote unlock the device never reported) and
`check_attribution` (F11: a lock whose state toggles without saying who). A worker runs them with
`escalate_due` every few seconds; portner.services.lock_activity re-exports them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, func, insert, or_, select, text, update

from portner.locks import attribution as rules
from portner.locks.attribution import escalation_due
from portner.locks.port import Operation, Source
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import dialect_insert

SYSTEM_ACTOR = "system:locks"


@dataclass(frozen=True, slots=True)
class Alarm:
    id: int
    lock_id: str
    kind: str
    subject: str
    detail: str
    raised_at: datetime
    escalated_at: datetime | None
    cleared_at: datetime | None


def _columns() -> tuple[Any, ...]:
    a = t.lock_alarms
    return (
        a.c.id,
        a.c.lock_id,
        a.c.kind,
        a.c.subject,
        a.c.detail,
        a.c.raised_at,
        a.c.escalated_at,
        a.c.cleared_at,
    )


def _alarm(r: Any) -> Alarm:
    return Alarm(
        r.id, r.lock_id, r.kind, r.subject, r.detail, r.raised_at, r.escalated_at, r.cleared_at
    )


def _require(value: str, name: str) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")


def _serialise(conn: Connection, lock_id: str, kind: str, subject: str) -> None:
    """Writers of one (lock, kind, subject) take turns, so two replicas cannot both open it."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"portner.alarm:{lock_id}:{kind}:{subject}".encode()).digest()
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k)"),
            {"k": int.from_bytes(digest[:8], "big", signed=True)},
        )
    # SQLite has one writer; the caller's transaction already holds it once it has written.


def find_open(conn: Connection, lock_id: str, kind: str, subject: str = "") -> Alarm | None:
    a = t.lock_alarms
    row = conn.execute(
        select(*_columns())
        .where(
            a.c.lock_id == lock_id,
            a.c.kind == kind,
            a.c.subject == subject,
            a.c.cleared_at.is_(None),
        )
        .order_by(a.c.id)
        .limit(1)
    ).first()
    return _alarm(row) if row is not None else None


def raise_alarm(
    conn: Connection,
    lock_id: str,
    kind: str,
    *,
    at: datetime,
    subject: str = "",
    detail: str = "",
    actor: str = SYSTEM_ACTOR,
) -> tuple[int, bool]:
    """Open an alarm unless the same one is open; return (its id, whether it is new).

    `detail` is for operators and must never contain a code.
    """
    _require(lock_id, "lock_id")
    _require(kind, "kind")
    if at.utcoffset() is None:
        raise ValueError("at must be an aware datetime")
    _serialise(conn, lock_id, kind, subject)
    existing = find_open(conn, lock_id, kind, subject)
    if existing is not None:
        return existing.id, False
    alarm_id = conn.execute(
        insert(t.lock_alarms).values(
            lock_id=lock_id, kind=kind, subject=subject, detail=detail[:400], raised_at=at
        )
    ).inserted_primary_key[0]
    append_audit(
        conn,
        [
            AuditEntry(
                at,
                actor,
                "lock_alarm:raised",
                lock_id,
                {"alarm": alarm_id, "kind": kind, "subject": subject},
            )
        ],
    )
    return int(alarm_id), True


def clear_alarm(
    conn: Connection,
    lock_id: str,
    kind: str,
    *,
    at: datetime,
    subject: str = "",
    reason: str,
    actor: str = SYSTEM_ACTOR,
) -> int | None:
    """Clear the open alarm (lock, kind, subject), if any; return its id. `reason` says what
    ended the condition ("locked successfully", "acknowledged by operator")."""
    _require(reason, "reason")
    if at.utcoffset() is None:
        raise ValueError("at must be an aware datetime")
    _serialise(conn, lock_id, kind, subject)
    existing = find_open(conn, lock_id, kind, subject)
    if existing is None:
        return None
    values: dict[str, object] = {"cleared_at": at}
    if not actor.startswith("system:"):
        values["acknowledged_by"] = actor[:100]
    conn.execute(update(t.lock_alarms).where(t.lock_alarms.c.id == existing.id).values(**values))
    append_audit(
        conn,
        [
            AuditEntry(
                at,
                actor,
                "lock_alarm:cleared",
                lock_id,
                {"alarm": existing.id, "kind": kind, "subject": subject, "reason": reason},
            )
        ],
    )
    return existing.id


def escalate_due(conn: Connection, now: datetime) -> list[int]:
    """Escalate every open alarm whose kind escalates and whose time has come; return their ids.
    Escalation never clears: a jam stays jammed until the lock says otherwise."""
    if now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    a = t.lock_alarms
    rows = conn.execute(
        select(*_columns())
        .where(a.c.cleared_at.is_(None), a.c.escalated_at.is_(None))
        .order_by(a.c.id)
    ).all()
    due = [r for r in rows if escalation_due(r.kind, r.raised_at, now)]
    if not due:
        return []
    ids = [r.id for r in due]
    conn.execute(
        update(a).where(a.c.id.in_(ids), a.c.escalated_at.is_(None)).values(escalated_at=now)
    )
    append_audit(
        conn,
        [
            AuditEntry(
                now,
                SYSTEM_ACTOR,
                "lock_alarm:escalated",
                r.lock_id,
                {"alarm": r.id, "kind": r.kind, "subject": r.subject},
            )
            for r in due
        ],
    )
    return ids


def open_alarms(conn: Connection, municipality_id: str) -> list[Alarm]:
    """The municipality's open alarms, escalated first, then oldest first."""
    a = t.lock_alarms
    rows = conn.execute(
        select(*_columns())
        .join(t.locks, t.locks.c.id == a.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.residents.c.municipality_id == municipality_id, a.c.cleared_at.is_(None))
        .order_by(a.c.escalated_at.is_(None), a.c.raised_at, a.c.id)
    ).all()
    return [_alarm(r) for r in rows]


# How far back the periodic checks look for commands and toggles.
CHECK_LOOKBACK = timedelta(days=1)


# --- periodic checks -------------------------------------------------------------------------------


def check_unconfirmed_remote(conn: Connection, now: datetime) -> list[str]:
    """F26: a remote unlock Portner commanded, that the API confirmed but the lock never reported
    within 60 s, is logged as "remote unlock commanded (unconfirmed by device)", and raises a
    remote_unconfirmed alarm when the door's state is unknown. Returns the command ids logged.

    Reads lock_commands of kind "operate" with args {"operation": "unlock"} in state confirmed.
    Idempotent: each command is logged once (activity key "command:<id>").
    """
    if now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    c, a = t.lock_commands, t.lock_activity
    rows = conn.execute(
        select(c.c.id, c.c.lock_id, c.c.args, c.c.created_at, c.c.sent_at, c.c.finished_at)
        .where(c.c.kind == "operate", c.c.state == "confirmed",
                        c.c.created_at >= now - CHECK_LOOKBACK).order_by(c.c.created_at, c.c.id)
    ).all()
    logged: list[str] = []
    for cmd in rows:
        if (cmd.args or {}).get("operation") != Operation.UNLOCK.value:
            continue
        answered = cmd.finished_at or cmd.sent_at or cmd.created_at
        deadline = answered + rules.REMOTE_CONFIRMATION
        if now < deadline:
            continue
        key = f"command:{cmd.id}"
        lo = cmd.created_at - rules.CLOCK_TOLERANCE
        confirmed = conn.execute(
            select(a.c.id).where(
                a.c.lock_id == cmd.lock_id, a.c.operation == Operation.UNLOCK.value, a.c.success.is_(True),
                or_(a.c.key == key, and_(
                    a.c.source.in_([Source.REMOTE.value, Source.UNKNOWN.value]),
                    or_(a.c.lock_time.between(lo, deadline),
                        and_(a.c.lock_time.is_(None), a.c.received_at.between(lo, deadline))),
                )),
            ).limit(1)
        ).first()
        if confirmed is not None:
            continue
        conn.execute(dialect_insert(conn)(a).values(
            lock_id=cmd.lock_id, key=key, operation=Operation.UNLOCK.value, source=Source.REMOTE.value,
            success=True, attribution=rules.COMMAND_UNCONFIRMED, failure="", lock_time=None,
            received_at=answered,
        ).on_conflict_do_nothing(index_elements=["lock_id", "key"]))
        append_audit(conn, [AuditEntry(now, SYSTEM_ACTOR, "lock_activity:recorded", cmd.lock_id, {
            "key": key, "operation": "unlock", "source": "remote", "success": True,
            "attribution": rules.COMMAND_UNCONFIRMED, "command": cmd.id,
            "text": rules.REMOTE_UNCONFIRMED_TEXT,
        })])
        logged.append(cmd.id)
        if _door_state_unknown(conn, cmd.lock_id, cmd.created_at):
            raise_alarm(conn, cmd.lock_id, "remote_unconfirmed", at=now, subject=cmd.id,
                        detail=rules.REMOTE_UNCONFIRMED_TEXT)
    return logged


def _door_state_unknown(conn: Connection, lock_id: str, since: datetime) -> bool:
    """Known only when the lock is online and has reported its bolt since the command."""
    s = t.lock_status
    row = conn.execute(select(s.c.online, s.c.bolt, s.c.last_event_at).where(s.c.lock_id == lock_id)).first()
    if row is None or row.bolt is None or row.online is not True or row.last_event_at is None:
        return True
    return row.last_event_at < since


def check_attribution(conn: Connection, now: datetime, *, lock_ids: Sequence[str] | None = None) -> list[str]:
    """F11: flag locks whose state toggles while, for 24 h, no event says who or how
    (attribution_unavailable). Returns the locks newly flagged; a user event clears the flag."""
    a, s = t.lock_activity, t.lock_status
    since = now - rules.ATTRIBUTION_SILENCE
    query = (
        select(a.c.lock_id, a.c.lock_time, a.c.received_at)
        .where(a.c.source == Source.UNKNOWN.value, a.c.success.is_(True), a.c.received_at >= since,
               a.c.attribution != rules.COMMAND_UNCONFIRMED)
    )
    if lock_ids is not None:
        query = query.where(a.c.lock_id.in_(list(lock_ids)))
    toggles: dict[str, list[datetime]] = {}
    for r in conn.execute(query):
        toggles.setdefault(r.lock_id, []).append(r.lock_time or r.received_at)
    flagged: list[str] = []
    for lock_id in sorted(toggles):
        last_user = conn.execute(select(s.c.last_user_event_at).where(s.c.lock_id == lock_id)).scalar()
        first = conn.execute(
            select(func.min(func.coalesce(a.c.lock_time, a.c.received_at))).where(a.c.lock_id == lock_id)
        ).scalar()
        if first is not None and first.tzinfo is None:  # SQLite's coalesce returns raw text/naive
            first = _utc(first)
        if rules.attribution_unavailable(toggles=toggles[lock_id], last_user_event_at=last_user,
                                         observed_since=first, now=now):
            _, new = raise_alarm(conn, lock_id, "attribution_unavailable", at=now,
                                 detail="state changes arrive without operation events for 24 h")
            if new:
                flagged.append(lock_id)
    return flagged


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
