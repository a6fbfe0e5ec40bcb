"""Small reads and writes the keypad service and the reconciler share (one transaction each)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from portner.locks.port import Capabilities
from portner.services import lock_alarms
from portner.services.keypad.model import capabilities_from_json, capabilities_to_json
from portner.storage import tables as t

RECONCILER = "system:reconciler"


def lock_municipality(conn: Connection, lock_id: str) -> tuple[str, str]:
    """(municipality id, its time zone) of a lock, through door, home and resident."""
    row = conn.execute(
        select(t.municipalities.c.id, t.municipalities.c.timezone)
        .select_from(
            t.locks.join(t.doors, t.doors.c.id == t.locks.c.door_id)
            .join(t.homes, t.homes.c.id == t.doors.c.home_id)
            .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
            .join(t.municipalities, t.municipalities.c.id == t.residents.c.municipality_id)
        )
        .where(t.locks.c.id == lock_id)
    ).first()
    if row is None:
        raise LookupError(f"lock_id: no lock {lock_id!r} (or it belongs to no municipality)")
    return row.id, row.timezone


def status_row(conn: Connection, lock_id: str, now: datetime) -> Any:
    """The lock's status row, made on first use."""
    row = conn.execute(select(t.lock_status).where(t.lock_status.c.lock_id == lock_id)).first()
    if row is None:
        conn.execute(insert(t.lock_status).values(lock_id=lock_id, budget_used=0, updated_at=now))
        row = conn.execute(select(t.lock_status).where(t.lock_status.c.lock_id == lock_id)).one()
    return row


def update_status(conn: Connection, lock_id: str, now: datetime, **values: Any) -> None:
    status_row(conn, lock_id, now)
    conn.execute(
        update(t.lock_status).where(t.lock_status.c.lock_id == lock_id).values(updated_at=now, **values)
    )


def stored_capabilities(conn: Connection, lock_id: str) -> Capabilities | None:
    row = conn.execute(
        select(t.lock_status.c.capabilities).where(t.lock_status.c.lock_id == lock_id)
    ).first()
    return None if row is None else capabilities_from_json(row.capabilities)


def record_capabilities(conn: Connection, lock_id: str, caps: Capabilities, now: datetime) -> None:
    update_status(conn, lock_id, now, capabilities=capabilities_to_json(caps), capabilities_at=now)


def raise_alarm(
    conn: Connection, lock_id: str, kind: str, subject: str, detail: str, now: datetime
) -> bool:
    """Open an alarm unless the same (lock, kind, subject) is already open; True when new. The
    reconciler's alarms go through the same audited path as every other (services.lock_alarms)."""
    return lock_alarms.raise_alarm(conn, lock_id, kind, at=now, subject=subject, detail=detail,
                                   actor=RECONCILER)[1]


def clear_alarm(conn: Connection, lock_id: str, kind: str, subject: str, now: datetime, *,
                reason: str = "the lock confirmed it") -> None:
    lock_alarms.clear_alarm(conn, lock_id, kind, at=now, subject=subject, reason=reason, actor=RECONCILER)


def slot_row(conn: Connection, lock_id: str, slot: int) -> Any:
    return conn.execute(
        select(t.lock_slots).where(t.lock_slots.c.lock_id == lock_id, t.lock_slots.c.slot == slot)
    ).first()


def observe_slot(conn: Connection, lock_id: str, slot: int, now: datetime, **values: Any) -> None:
    """Upsert what was observed in a slot (observed, code_mac, code_id, unreadable_reads...)."""
    if slot_row(conn, lock_id, slot) is None:
        values.setdefault("observed", "unreadable")
        values.setdefault("unreadable_reads", 0)
        conn.execute(insert(t.lock_slots).values(lock_id=lock_id, slot=slot, observed_at=now, **values))
    else:
        conn.execute(
            update(t.lock_slots)
            .where(t.lock_slots.c.lock_id == lock_id, t.lock_slots.c.slot == slot)
            .values(observed_at=now, **values)
        )


def quarantine_slot(
    conn: Connection, lock_id: str, slot: int, reason: str, now: datetime, detail: str
) -> None:
    """Quarantine a slot (never allocated or overwritten until an operator resolves it) and raise
    the alarm that shows it to an operator."""
    row = slot_row(conn, lock_id, slot)
    if row is None or row.quarantined_at is None or row.resolved_at is not None:
        observe_slot(
            conn, lock_id, slot, now, quarantined_at=now, quarantine_reason=reason,
            resolved_at=None, resolved_by=None, resolution=None,
        )
    raise_alarm(conn, lock_id, f"slot_{reason}", str(slot), detail, now)


def quarantined_slots(conn: Connection, lock_id: str) -> set[int]:
    rows = conn.execute(
        select(t.lock_slots.c.slot).where(
            t.lock_slots.c.lock_id == lock_id,
            t.lock_slots.c.quarantined_at.is_not(None),
            t.lock_slots.c.resolved_at.is_(None),
        )
    )
    return {r.slot for r in rows}
