"""Development sign-in accounts for the demo municipality: one of each kind of user.

The accounts use the development issuer, which the server refuses outside development mode. They
are chosen from the imported data so that each one has something to see: nurses with visits on
the demo day, a relative the care record names, and that relative's resident.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select

from portner.domain.access import AccountRole
from portner.domain.model import Role
from portner.services.accounts import DEV_ISSUER, create_account
from portner.services.ids import IdSource
from portner.storage import tables as t

NURSES = 3


@dataclass(frozen=True, slots=True)
class DevAccount:
    subject: str
    role: AccountRole
    display_name: str


def create_dev_accounts(
    engine: Engine, municipality_id: str, *, day_start: datetime, now: datetime, ids: IdSource
) -> list[DevAccount]:
    """Create the development accounts and return them (subjects are what the sign-in lists)."""
    made: list[DevAccount] = []
    day_end = day_start + timedelta(days=1)
    with engine.connect() as conn:
        busiest = conn.execute(
            select(t.actors.c.id, t.actors.c.display_name, func.count().label("n"))
            .join(t.grants, t.grants.c.actor_id == t.actors.c.id)
            .where(
                t.actors.c.municipality_id == municipality_id,
                t.actors.c.role == Role.HOME_NURSING.value,
                t.grants.c.not_before >= day_start,
                t.grants.c.not_before < day_end,
            )
            .group_by(t.actors.c.id, t.actors.c.display_name)
            .order_by(func.count().desc(), t.actors.c.id)
            .limit(NURSES)
        ).all()
        # A relative whose resident has an e-lock and a visit on the day: something to see.
        relation = conn.execute(
            select(t.relations.c.actor_id, t.relations.c.resident_id, t.actors.c.display_name,
                   t.residents.c.display_name.label("resident_name"))
            .join(t.actors, t.actors.c.id == t.relations.c.actor_id)
            .join(t.residents, t.residents.c.id == t.relations.c.resident_id)
            .join(t.homes, t.homes.c.resident_id == t.residents.c.id)
            .where(
                t.actors.c.municipality_id == municipality_id,
                t.homes.c.elock_system.is_not(None),
                t.relations.c.resident_id.in_(
                    select(t.visits.c.resident_id).where(
                        t.visits.c.planned_start >= day_start, t.visits.c.planned_start < day_end,
                        t.visits.c.status != "cancelled",
                    )
                ),
            )
            .order_by(t.residents.c.display_name, t.relations.c.resident_id, t.relations.c.actor_id)
            .limit(1)
        ).first()

    def add(subject: str, role: AccountRole, name: str, **links: str | None) -> None:
        create_account(
            engine, municipality_id=municipality_id, issuer=DEV_ISSUER, subject=subject, role=role,
            now=now, ids=ids, by="demo:accounts", display_name=name, **links,
        )
        made.append(DevAccount(subject, role, name))

    for i, nurse in enumerate(busiest, start=1):
        add(f"demo-nurse-{i}", AccountRole.NURSE, nurse.display_name, actor_id=nurse.id)
    add("demo-operator", AccountRole.OPERATOR, "Operatør Responssenteret")
    add("demo-admin", AccountRole.ADMIN, "Administrator Demokommune")
    if relation is not None:
        add("demo-relative", AccountRole.RELATIVE, relation.display_name, actor_id=relation.actor_id)
        add("demo-resident", AccountRole.RESIDENT, relation.resident_name, resident_id=relation.resident_id)
    return made
