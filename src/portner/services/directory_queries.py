"""Read-only questions about the directory (residents, homes, doors, locks, staff) for the API.

Each list is a SQLAlchemy `Select` ordered by a unique key, so that the caller can add keyset
pagination; single lookups return a plain dict (or None). None of them selects a national id,
HPR number, HER-id or key material: what is never read cannot leak.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Select, and_, exists, func, or_, select

from portner.services.one_time import ONE_TIME_ID_PREFIX
from portner.services.one_time import ORGANISATION as ONE_TIME_ORGANISATION
from portner.storage import tables as t

# Columns that describe a lock's health; shared by the lock list and the door path.
_anomalies = (
    select(t.lock_log_anomalies.c.lock_id, func.count().label("n"))
    .group_by(t.lock_log_anomalies.c.lock_id)
    .subquery("anomaly_counts")
)
LOCK_COLUMNS = (
    t.locks.c.id,
    t.locks.c.door_id,
    t.locks.c.backend,
    t.locks.c.model,
    t.locks.c.battery_percent,
    t.locks.c.last_sync_at,
    t.locks.c.synced_seq,
    t.locks.c.clock_offset_s,
    func.coalesce(_anomalies.c.n, 0).label("open_anomalies"),
    t.locks.c.address,
    t.locks.c.enforcement,
)


def _in_municipality(municipality_id: str) -> Any:
    return t.residents.c.municipality_id == municipality_id


def residents_select(municipality_id: str, visible: Iterable[str] | None) -> Select[Any]:
    """Residents by (display_name, id); `visible` None means all of the municipality."""
    has_elock = exists().where(t.homes.c.resident_id == t.residents.c.id, t.homes.c.elock_system.is_not(None))
    stmt = (
        select(t.residents.c.id, t.residents.c.display_name, t.zones.c.path.label("zone"),
               has_elock.label("has_elock"))
        .outerjoin(t.zones, t.zones.c.id == t.residents.c.zone_id)
        .where(_in_municipality(municipality_id))
        .order_by(t.residents.c.display_name, t.residents.c.id)
    )
    if visible is not None:
        stmt = stmt.where(t.residents.c.id.in_(sorted(visible)))
    return stmt


def residents_named(conn: Connection, municipality_id: str, q: str) -> list[str]:
    """Ids of residents whose name contains `q`, ignoring case.

    Compared in Python: SQLite's lower() and LIKE fold ASCII only, and Norwegian names start with
    Æ, Ø and Å as often as not.
    """
    wanted = q.casefold()
    rows = conn.execute(select(t.residents.c.id, t.residents.c.display_name).where(_in_municipality(municipality_id)))
    return [r.id for r in rows if wanted in (r.display_name or "").casefold()]


def resident(conn: Connection, municipality_id: str, resident_id: str) -> dict[str, Any] | None:
    stmt = residents_select(municipality_id, None).where(t.residents.c.id == resident_id)
    row = conn.execute(stmt).first()
    return dict(row._mapping) if row else None


def _lock_dict(row: Any) -> dict[str, Any] | None:
    if row.lock_row_id is None:
        return None
    return {
        "id": row.lock_row_id, "door_id": row.id, "backend": row.backend, "model": row.model or "",
        "battery_percent": row.battery_percent, "last_sync_at": row.last_sync_at,
        "synced_seq": int(row.synced_seq or 0), "clock_offset_s": row.clock_offset_s,
        "open_anomalies": int(row.open_anomalies or 0),
        "address": row.lock_address, "enforcement": row.enforcement,
    }


def _doors_of(conn: Connection, home_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Each home's doors in path order (street first), with the lock's health."""
    if not home_ids:
        return {}
    rows = conn.execute(
        select(t.doors.c.id, t.doors.c.home_id, t.doors.c.position, t.doors.c.kind, t.doors.c.lock_id,
               t.locks.c.id.label("lock_row_id"), t.locks.c.backend, t.locks.c.model, t.locks.c.battery_percent,
               t.locks.c.last_sync_at, t.locks.c.synced_seq, t.locks.c.clock_offset_s,
               t.locks.c.address.label("lock_address"), t.locks.c.enforcement,
               func.coalesce(_anomalies.c.n, 0).label("open_anomalies"))
        .outerjoin(t.locks, t.locks.c.id == t.doors.c.lock_id)
        .outerjoin(_anomalies, _anomalies.c.lock_id == t.locks.c.id)
        .where(t.doors.c.home_id.in_(home_ids))
        .order_by(t.doors.c.home_id, t.doors.c.position, t.doors.c.id)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r.home_id, []).append({
            "id": r.id, "home_id": r.home_id, "position": r.position + 1, "kind": r.kind,
            "lock_id": r.lock_id, "lock": _lock_dict(r),
        })
    return out


def _homes(conn: Connection, where: Any, municipality_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(t.homes.c.id, t.homes.c.resident_id, t.homes.c.address, t.homes.c.elock_system)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(and_(where, _in_municipality(municipality_id)))
        .order_by(t.homes.c.id)
    ).all()
    doors = _doors_of(conn, [r.id for r in rows])
    return [{**dict(r._mapping), "address": r.address or "", "doors": doors.get(r.id, [])} for r in rows]


def homes_of_resident(conn: Connection, municipality_id: str, resident_id: str) -> list[dict[str, Any]]:
    """The resident's homes, each with its ordered door path and lock status."""
    return _homes(conn, t.homes.c.resident_id == resident_id, municipality_id)


def home(conn: Connection, municipality_id: str, home_id: str) -> dict[str, Any] | None:
    found = _homes(conn, t.homes.c.id == home_id, municipality_id)
    return found[0] if found else None


def door(conn: Connection, municipality_id: str, door_id: str) -> tuple[str, dict[str, Any]] | None:
    """(resident id, door) or None."""
    row = conn.execute(
        select(t.doors.c.home_id, t.homes.c.resident_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.doors.c.id == door_id, _in_municipality(municipality_id))
    ).first()
    if row is None:
        return None
    found = [d for d in _doors_of(conn, [row.home_id]).get(row.home_id, []) if d["id"] == door_id]
    return (row.resident_id, found[0]) if found else None


def door_residents(conn: Connection, municipality_id: str, door_ids: Iterable[str]) -> dict[str, str]:
    """door id -> resident id, for the doors of this municipality among `door_ids`."""
    wanted = sorted(set(door_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(t.doors.c.id, t.homes.c.resident_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.doors.c.id.in_(wanted), _in_municipality(municipality_id))
    )
    return {r.id: r.resident_id for r in rows}


def doors_of_residents(conn: Connection, resident_ids: Iterable[str]) -> set[str]:
    wanted = sorted(set(resident_ids))
    if not wanted:
        return set()
    rows = conn.execute(
        select(t.doors.c.id).join(t.homes, t.homes.c.id == t.doors.c.home_id).where(t.homes.c.resident_id.in_(wanted))
    )
    return {r.id for r in rows}


def locks_select(municipality_id: str) -> Select[Any]:
    """Every lock of the municipality by id, with battery, last sync and anomaly count."""
    return (
        select(*LOCK_COLUMNS)
        .join(t.doors, t.doors.c.lock_id == t.locks.c.id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .outerjoin(_anomalies, _anomalies.c.lock_id == t.locks.c.id)
        .where(_in_municipality(municipality_id))
        .order_by(t.locks.c.id)
    )


def lock(conn: Connection, municipality_id: str, lock_id: str) -> dict[str, Any] | None:
    row = conn.execute(locks_select(municipality_id).where(t.locks.c.id == lock_id)).first()
    return dict(row._mapping) if row else None


STAFF_COLUMNS = (t.actors.c.id, t.actors.c.role, t.actors.c.organisation, t.actors.c.display_name, t.actors.c.active)


def _one_time_actor() -> Any:
    # Visitors given one-time access (services.one_time): their own id prefix and organisation.
    return or_(t.actors.c.id.startswith(f"{ONE_TIME_ID_PREFIX}-", autoescape=True),
               t.actors.c.organisation == ONE_TIME_ORGANISATION)


def is_one_time(actor: dict[str, Any]) -> bool:
    return str(actor["id"]).startswith(f"{ONE_TIME_ID_PREFIX}-") or actor["organisation"] == ONE_TIME_ORGANISATION


def staff_select(municipality_id: str, *, roles: Iterable[str] | None = None, exclude_roles: Iterable[str] = (),
                 active: bool | None = None, exclude_one_time: bool = False) -> Select[Any]:
    """Actors by id (never their national id, HPR number or HER-id). `exclude_one_time` leaves out
    the visitors given one-time access (they are not the services' staff)."""
    stmt = select(*STAFF_COLUMNS).where(t.actors.c.municipality_id == municipality_id).order_by(t.actors.c.id)
    if exclude_one_time:
        stmt = stmt.where(~_one_time_actor())
    if roles is not None:
        stmt = stmt.where(t.actors.c.role.in_(sorted(set(roles))))
    excluded = sorted(set(exclude_roles))
    if excluded:
        stmt = stmt.where(t.actors.c.role.not_in(excluded))
    if active is not None:
        stmt = stmt.where(t.actors.c.active.is_(active))
    return stmt


def staff_member(conn: Connection, municipality_id: str, actor_id: str) -> dict[str, Any] | None:
    row = conn.execute(staff_select(municipality_id).where(t.actors.c.id == actor_id)).first()
    return dict(row._mapping) if row else None
