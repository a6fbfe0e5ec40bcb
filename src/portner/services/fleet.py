"""What an operator sees of the lock fleet: open alarms, quarantined slots, and where each keypad
code stands on each lock (intended versus confirmed). Read models plus the two operator actions
that need no radio traffic: acknowledging an alarm, and resolving a quarantined slot by adopting
the code found there or releasing a slot the operator has checked is empty.

Nothing here selects a code, a code's MAC or key material; a code's holder is shown by the
pseudonymous display name the directory already shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Select, and_, func, select, update

from portner.domain.errors import PortnerError
from portner.services.lock_alarms import clear_alarm
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit


class FleetError(PortnerError):
    """An operator action that cannot be taken (the message says why)."""


class Resolution(StrEnum):
    ADOPTED = "adopted"  # the code is the resident's own (or a known one): keep it, never allocate
    RELEASED = "released"  # checked at the door and empty: the slot may be used again
    CLEARED = "cleared"  # Portner was asked to remove the code (the reconciler does it)


def municipality_lock_ids(municipality_id: str) -> Select[Any]:
    """Ids of the municipality's locks (through door, home and resident): the one place that says
    which locks a municipality has."""
    return (
        select(t.locks.c.id)
        .join(t.doors, t.doors.c.lock_id == t.locks.c.id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.residents.c.municipality_id == municipality_id)
    )


def _where_lock(municipality_id: str) -> Any:
    return t.locks.c.id.in_(municipality_lock_ids(municipality_id).scalar_subquery())


def served_locks(conn: Connection, municipality_id: str) -> list[dict[str, Any]]:
    """Locks an adapter has met (they have a status row): backend, address, whether online, the
    battery, and how many codes the plan wants on each."""
    s, p = t.lock_status.c, t.code_placements.c
    wanted = (select(p.lock_id, func.count().label("codes")).where(p.intent == "present", p.state != "removed")
              .group_by(p.lock_id).subquery("wanted"))
    rows = conn.execute(
        select(t.locks.c.id, t.locks.c.backend, t.locks.c.address, s.online, t.locks.c.battery_percent,
               func.coalesce(wanted.c.codes, 0).label("codes"))
        .join(t.lock_status, s.lock_id == t.locks.c.id)
        .outerjoin(wanted, wanted.c.lock_id == t.locks.c.id)
        .where(_where_lock(municipality_id), t.locks.c.removed_at.is_(None))
        .order_by(t.locks.c.id)
    )
    return [dict(r._mapping) for r in rows]


def open_alarms(conn: Connection, municipality_id: str, *, lock_id: str | None = None) -> list[dict[str, Any]]:
    """Alarms not yet cleared, newest first, with the lock's door and resident for context."""
    a = t.lock_alarms.c
    stmt = (
        select(a.id, a.lock_id, a.kind, a.subject, a.detail, a.raised_at, a.escalated_at,
               a.acknowledged_by, t.doors.c.id.label("door_id"), t.doors.c.kind.label("door_kind"),
               t.doors.c.position.label("door_position"),
               t.residents.c.id.label("resident_id"), t.residents.c.display_name.label("resident_name"))
        .join(t.locks, t.locks.c.id == a.lock_id)
        .join(t.doors, t.doors.c.lock_id == t.locks.c.id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.residents.c.municipality_id == municipality_id, a.cleared_at.is_(None))
        .order_by(a.escalated_at.is_(None), a.raised_at.desc(), a.id.desc())
    )
    if lock_id is not None:
        stmt = stmt.where(a.lock_id == lock_id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def quarantined_slots(conn: Connection, municipality_id: str, *, lock_id: str | None = None) -> list[dict[str, Any]]:
    """Slots holding a code Portner did not set, or that never answered: never written by Portner
    until an operator resolves them."""
    s = t.lock_slots.c
    stmt = (
        select(s.lock_id, s.slot, s.observed, s.quarantined_at, s.quarantine_reason, s.unreadable_reads,
               s.observed_at)
        .where(s.quarantined_at.is_not(None), s.resolved_at.is_(None),
               s.lock_id.in_(municipality_lock_ids(municipality_id).scalar_subquery()))
        .order_by(s.quarantined_at, s.lock_id, s.slot)
    )
    if lock_id is not None:
        stmt = stmt.where(s.lock_id == lock_id)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def placements(conn: Connection, municipality_id: str, lock_id: str) -> list[dict[str, Any]]:
    """Every keypad code meant for one lock: what the plan intends, what the lock confirmed, the
    window, and the last refusal. Never the code."""
    p, k = t.code_placements.c, t.keypad_codes.c
    stmt = (
        select(p.id, p.code_id, p.slot, p.intent, p.state, p.enforcement, p.attempts, p.last_refusal,
               p.next_attempt_at, p.confirmed_at, p.removal_due_at, p.removed_at, k.purpose,
               k.not_before, k.not_after, k.revoked_at, t.actors.c.display_name.label("holder"))
        .join(t.keypad_codes, t.keypad_codes.c.id == p.code_id)
        .outerjoin(t.actors, t.actors.c.id == k.actor_id)
        .where(p.lock_id == lock_id, k.municipality_id == municipality_id)
        .order_by(p.slot.is_(None), p.slot, p.id)
    )
    return [dict(r._mapping) for r in conn.execute(stmt)]


def acknowledge_alarm(conn: Connection, municipality_id: str, alarm_id: int, *, actor: str,
                      now: datetime) -> None:
    """An operator has seen an alarm. It stays open until its condition ends (acknowledging a jam
    does not unjam the door); the acknowledgement is audited."""
    a = t.lock_alarms.c
    row = conn.execute(
        select(a.id, a.lock_id, a.kind, a.acknowledged_by)
        .where(a.id == alarm_id, a.cleared_at.is_(None),
               a.lock_id.in_(municipality_lock_ids(municipality_id).scalar_subquery()))
    ).first()
    if row is None:
        raise FleetError(f"no open alarm {alarm_id}")
    if row.acknowledged_by is not None:
        return  # acknowledging twice changes nothing and is not audited twice
    conn.execute(update(t.lock_alarms).where(a.id == alarm_id).values(acknowledged_by=actor))
    append_audit(conn, [AuditEntry(at=now, actor=actor, action="lock_alarm:acknowledged",
                                   subject=f"lock:{row.lock_id}",
                                   details={"alarm_id": row.id, "kind": row.kind})])


def resolve_quarantine(conn: Connection, municipality_id: str, lock_id: str, slot: int,
                       resolution: Resolution, *, actor: str, now: datetime) -> None:
    """Resolve a quarantined slot without radio traffic: ADOPTED keeps the code as a known foreign
    code (the slot is never allocated), RELEASED frees a slot the operator checked is empty.
    CLEARED needs the reconciler (portner.services.keypad), which writes the removal command."""
    if resolution is Resolution.CLEARED:
        raise FleetError("clearing a foreign code is a lock command; use the reconciler's clear_foreign")
    s = t.lock_slots.c
    where = and_(s.lock_id == lock_id, s.slot == slot, s.quarantined_at.is_not(None), s.resolved_at.is_(None),
                 s.lock_id.in_(municipality_lock_ids(municipality_id).scalar_subquery()))
    row = conn.execute(select(s.quarantine_reason).where(where)).first()
    if row is None:
        raise FleetError(f"slot {slot} of lock {lock_id} is not in quarantine")
    values: dict[str, Any] = {"resolved_at": now, "resolved_by": actor, "resolution": resolution.value}
    if resolution is Resolution.RELEASED:
        values |= {"observed": "empty", "code_mac": None, "unreadable_reads": 0, "observed_at": now}
    conn.execute(update(t.lock_slots).where(where).values(**values))
    # The alarm the quarantine raised (services.keypad) ends with the operator's decision.
    clear_alarm(conn, lock_id, f"slot_{row.quarantine_reason}", at=now, subject=str(slot),
                reason=f"resolved by an operator: {resolution.value}", actor=actor)
    append_audit(conn, [AuditEntry(at=now, actor=actor, action="lock_slot:resolved", subject=f"lock:{lock_id}",
                                   details={"slot": slot, "reason": row.quarantine_reason,
                                            "resolution": resolution.value})])


def lock_ids_of(conn: Connection, municipality_id: str, lock_ids: Iterable[str]) -> set[str]:
    """The subset of `lock_ids` that belong to the municipality (for authority checks)."""
    wanted = sorted(set(lock_ids))
    if not wanted:
        return set()
    return set(conn.execute(
        select(t.locks.c.id).where(_where_lock(municipality_id), t.locks.c.id.in_(wanted))
    ).scalars())
