"""Answer "may this principal see this resident?" against the store.

Role x organisation x relationship: operators and administrators see their municipality's
residents; a nurse sees the residents she has served in the last 30 days or will serve in the next
14 (her visit grants say so); a relative sees the residents the care record relates them to; a
resident sees themself. Anything else sees no one. An integration with the directory scope sees
its municipality.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from portner.domain.access import (
    MUNICIPALITY_WIDE,
    SCOPE_DIRECTORY_READ,
    AccountRole,
    NotPermitted,
    Principal,
)
from portner.storage import tables as t

SERVED_BACK = timedelta(days=30)
SERVED_AHEAD = timedelta(days=14)


def visible_residents(conn: Connection, who: Principal, *, now: datetime) -> frozenset[str] | None:
    """The resident ids `who` may see, or None for "every resident of their municipality"."""
    if who.role in MUNICIPALITY_WIDE:
        return None
    if who.role is AccountRole.INTEGRATION:
        return None if SCOPE_DIRECTORY_READ in who.scopes else frozenset()
    if who.role is AccountRole.RESIDENT:
        return frozenset({who.resident_id}) if who.resident_id else frozenset()
    if who.actor_id is None:
        return frozenset()
    if who.role is AccountRole.RELATIVE:
        rows = conn.execute(select(t.relations.c.resident_id).where(t.relations.c.actor_id == who.actor_id))
        return frozenset(r.resident_id for r in rows)
    if who.role is AccountRole.NURSE:
        rows = conn.execute(
            select(t.visits.c.resident_id)
            .join(t.grants, t.grants.c.visit_id == t.visits.c.id)
            .where(
                t.grants.c.actor_id == who.actor_id,
                t.visits.c.planned_start >= now - SERVED_BACK,
                t.visits.c.planned_start <= now + SERVED_AHEAD,
            )
            .distinct()
        )
        return frozenset(r.resident_id for r in rows)
    return frozenset()


def may_see_resident(conn: Connection, who: Principal, resident_id: str, *, now: datetime) -> bool:
    row = conn.execute(
        select(t.residents.c.municipality_id).where(t.residents.c.id == resident_id)
    ).first()
    if row is None or row.municipality_id != who.municipality_id:
        return False
    visible = visible_residents(conn, who, now=now)
    return visible is None or resident_id in visible


def require_resident(conn: Connection, who: Principal, resident_id: str, *, now: datetime) -> None:
    """Raise NotPermitted unless `who` may see the resident. The same message whether the
    resident exists or not, so that ids cannot be probed."""
    if not may_see_resident(conn, who, resident_id, now=now):
        raise NotPermitted(f"no resident {resident_id} that you may see")


def require_role(who: Principal, *roles: AccountRole) -> None:
    if who.role not in roles:
        wanted = " or ".join(r.value for r in roles)
        raise NotPermitted(f"this needs the {wanted} role")
