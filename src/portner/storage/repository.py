"""Reads and writes of domain objects over one SQLAlchemy connection (one transaction).

Services open a transaction with `engine.begin()`, wrap the connection in `Repository`, and write
the audit entries of their change through the same connection, so a change and its audit record
commit or roll back together. Bulk methods exist because a national day has ~50,000 visits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, and_, insert, select, update

from portner.domain.model import (
    Actor,
    ActorId,
    Device,
    DeviceId,
    DeviceStatus,
    Door,
    DoorId,
    DoorKind,
    Grant,
    GrantId,
    GrantOrigin,
    GrantStatus,
    Home,
    HomeId,
    Lock,
    LockId,
    Municipality,
    MunicipalityId,
    Resident,
    ResidentId,
    Role,
    ServiceModel,
    Visit,
    VisitId,
    VisitStatus,
    ZoneId,
)
from portner.storage import tables as t
from portner.storage.bulk import (
    fetch_rows,
    id_tuple,
    insert_rows,
    instant_writer,
    marks,
    read_instant,
)

_CHUNK = 500  # keeps IN (...) lists well under SQLite's variable limit


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_GRANT_COLUMNS = "id, actor_id, door_ids, not_before, not_after, origin, visit_id, status, reason"


def _grant_from_tuple(r: tuple[Any, ...]) -> Grant:
    return Grant(
        id=r[0],
        actor_id=r[1],
        door_ids=id_tuple(r[2]),
        not_before=read_instant(r[3]),  # type: ignore[arg-type]
        not_after=read_instant(r[4]),  # type: ignore[arg-type]
        origin=GrantOrigin(r[5]),
        visit_id=r[6] or None,
        status=GrantStatus(r[7]),
        reason=r[8],
    )


def municipality_from_row(row: Row[Any]) -> Municipality:
    return Municipality(
        id=MunicipalityId(row.id),
        name=row.name,
        timezone=row.timezone,
        service_model=ServiceModel(row.service_model),
        window_lead=timedelta(seconds=row.window_lead_s),
        window_grace=timedelta(seconds=row.window_grace_s),
        baseline_key_minutes_per_shift=row.baseline_key_minutes_per_shift,
        accept_synthetic_ids=row.accept_synthetic_ids,
        plan_horizon=timedelta(seconds=row.plan_horizon_s),
    )


def visit_from_row(row: Row[Any]) -> Visit:
    return Visit(
        id=VisitId(row.id),
        municipality_id=MunicipalityId(row.municipality_id),
        resident_id=ResidentId(row.resident_id),
        source_key=row.source_key,
        planned_start=row.planned_start,
        planned_end=row.planned_end,
        staff_ids=tuple(ActorId(s) for s in row.staff_ids),
        status=VisitStatus(row.status),
        description=row.description,
        arrived_at=row.arrived_at,
        departed_at=row.departed_at,
    )


def grant_from_row(row: Row[Any]) -> Grant:
    return Grant(
        id=GrantId(row.id),
        actor_id=ActorId(row.actor_id),
        door_ids=tuple(DoorId(d) for d in row.door_ids),
        not_before=row.not_before,
        not_after=row.not_after,
        origin=GrantOrigin(row.origin),
        visit_id=VisitId(row.visit_id) if row.visit_id else None,
        status=GrantStatus(row.status),
        reason=row.reason,
    )


def actor_from_row(row: Row[Any]) -> Actor:
    return Actor(
        id=ActorId(row.id),
        municipality_id=MunicipalityId(row.municipality_id),
        role=Role(row.role),
        organisation=row.organisation,
        display_name=row.display_name,
        her_id=row.her_id,
        hpr_number=row.hpr_number,
        national_id=row.national_id,
        active=row.active,
    )


class Repository:
    """Domain-shaped access to the tables, bound to one open transaction."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- municipality -------------------------------------------------------------------------
    def get_municipality(self, municipality_id: str) -> Municipality | None:
        row = self.conn.execute(
            select(t.municipalities).where(t.municipalities.c.id == municipality_id)
        ).first()
        return municipality_from_row(row) if row else None

    def add_municipality(self, m: Municipality) -> None:
        self.conn.execute(
            insert(t.municipalities).values(
                id=m.id,
                name=m.name,
                timezone=m.timezone,
                service_model=m.service_model.value,
                window_lead_s=int(m.window_lead.total_seconds()),
                window_grace_s=int(m.window_grace.total_seconds()),
                baseline_key_minutes_per_shift=m.baseline_key_minutes_per_shift,
                accept_synthetic_ids=m.accept_synthetic_ids,
                plan_horizon_s=int(m.plan_horizon.total_seconds()),
            )
        )

    # -- zones, residents, homes, doors, locks ------------------------------------------------
    def zone_ids_by_path(self, municipality_id: str) -> dict[str, ZoneId]:
        rows = self.conn.execute(
            select(t.zones.c.id, t.zones.c.path).where(t.zones.c.municipality_id == municipality_id)
        )
        return {r.path: ZoneId(r.id) for r in rows}

    def add_zone(self, zone_id: str, municipality_id: str, path: str) -> None:
        self.conn.execute(
            insert(t.zones).values(id=zone_id, municipality_id=municipality_id, path=path)
        )

    def resident_indexes(
        self, municipality_id: str
    ) -> tuple[dict[str, Resident], dict[str, Resident]]:
        """`residents_by_national_id` and `residents_by_source_ref` from one query."""
        by_nid: dict[str, Resident] = {}
        by_ref: dict[str, Resident] = {}
        rows = fetch_rows(
            self.conn,
            "SELECT id, municipality_id, national_id, display_name, zone_id, source_ref"
            " FROM residents WHERE municipality_id = ?",
            (municipality_id,),
        )
        for r in rows:
            resident = Resident(
                id=ResidentId(r[0]),
                municipality_id=MunicipalityId(r[1]),
                national_id=r[2],
                display_name=r[3],
                zone_id=ZoneId(r[4]) if r[4] else None,
                source_ref=r[5],
            )
            if r[2]:
                by_nid[r[2]] = resident
            if r[5]:
                by_ref[r[5]] = resident
        return by_nid, by_ref

    def get_resident(self, resident_id: str) -> Resident | None:
        row = self.conn.execute(select(t.residents).where(t.residents.c.id == resident_id)).first()
        return self._resident(row) if row else None

    @staticmethod
    def _resident(r: Row[Any]) -> Resident:
        return Resident(
            id=ResidentId(r.id),
            municipality_id=MunicipalityId(r.municipality_id),
            national_id=r.national_id,
            display_name=r.display_name,
            zone_id=ZoneId(r.zone_id) if r.zone_id else None,
            source_ref=r.source_ref,
        )

    def upsert_resident(self, res: Resident) -> None:
        values = {
            "municipality_id": res.municipality_id,
            "national_id": res.national_id,
            "display_name": res.display_name,
            "zone_id": res.zone_id,
            "source_ref": res.source_ref,
        }
        done = self.conn.execute(
            update(t.residents).where(t.residents.c.id == res.id).values(**values)
        )
        if done.rowcount == 0:
            self.conn.execute(insert(t.residents).values(id=res.id, **values))

    def homes_by_resident(self, municipality_id: str) -> dict[ResidentId, Home]:
        rows = fetch_rows(
            self.conn,
            "SELECT h.id, h.resident_id, h.address, h.elock_system FROM homes h"
            " JOIN residents r ON r.id = h.resident_id WHERE r.municipality_id = ?",
            (municipality_id,),
        )
        return {
            ResidentId(r[1]): Home(
                id=HomeId(r[0]), resident_id=ResidentId(r[1]), address=r[2], elock_system=r[3]
            )
            for r in rows
        }

    def upsert_home(self, home: Home) -> None:
        values = {
            "resident_id": home.resident_id,
            "address": home.address,
            "elock_system": home.elock_system,
        }
        done = self.conn.execute(update(t.homes).where(t.homes.c.id == home.id).values(**values))
        if done.rowcount == 0:
            self.conn.execute(insert(t.homes).values(id=home.id, **values))

    def door_paths(self, municipality_id: str) -> dict[HomeId, tuple[DoorId, ...]]:
        """Return each home's doors in path order (street first), for homes that have any."""
        rows = fetch_rows(
            self.conn,
            "SELECT d.home_id, d.id FROM doors d JOIN homes h ON h.id = d.home_id"
            " JOIN residents r ON r.id = h.resident_id WHERE r.municipality_id = ?"
            " ORDER BY d.home_id, d.position",
            (municipality_id,),
        )
        paths: dict[HomeId, list[DoorId]] = {}
        for r in rows:
            paths.setdefault(HomeId(r[0]), []).append(DoorId(r[1]))
        return {k: tuple(v) for k, v in paths.items()}

    def doors_of_home(self, home_id: str) -> list[Door]:
        rows = self.conn.execute(
            select(t.doors).where(t.doors.c.home_id == home_id).order_by(t.doors.c.position)
        )
        return [
            Door(
                id=DoorId(r.id),
                home_id=HomeId(r.home_id),
                position=r.position,
                kind=DoorKind(r.kind),
                lock_id=LockId(r.lock_id) if r.lock_id else None,
            )
            for r in rows
        ]

    def add_door_with_lock(self, door: Door, lock: Lock) -> None:
        self.conn.execute(
            insert(t.doors).values(
                id=door.id,
                home_id=door.home_id,
                position=door.position,
                kind=door.kind.value,
                lock_id=lock.id,
            )
        )
        self.conn.execute(
            insert(t.locks).values(
                id=lock.id, door_id=door.id, backend=lock.backend, model=lock.model, synced_seq=0
            )
        )

    def all_locks(self, municipality_id: str) -> list[Row[Any]]:
        return list(
            self.conn.execute(
                select(t.locks, t.doors.c.home_id)
                .join(t.doors, t.doors.c.lock_id == t.locks.c.id)
                .join(t.homes, t.homes.c.id == t.doors.c.home_id)
                .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
                .where(t.residents.c.municipality_id == municipality_id)
                .order_by(t.locks.c.id)
            )
        )

    # -- actors and devices -------------------------------------------------------------------
    def actors(self, municipality_id: str) -> list[Actor]:
        rows = self.conn.execute(
            select(t.actors)
            .where(t.actors.c.municipality_id == municipality_id)
            .order_by(t.actors.c.id)
        )
        return [actor_from_row(r) for r in rows]

    def get_actor(self, actor_id: str) -> Actor | None:
        row = self.conn.execute(select(t.actors).where(t.actors.c.id == actor_id)).first()
        return actor_from_row(row) if row else None

    def upsert_actor(self, a: Actor) -> None:
        values = {
            "municipality_id": a.municipality_id,
            "role": a.role.value,
            "organisation": a.organisation,
            "display_name": a.display_name,
            "her_id": a.her_id,
            "hpr_number": a.hpr_number,
            "national_id": a.national_id,
            "active": a.active,
        }
        done = self.conn.execute(update(t.actors).where(t.actors.c.id == a.id).values(**values))
        if done.rowcount == 0:
            self.conn.execute(insert(t.actors).values(id=a.id, **values))

    def relatives_of(self, resident_id: str) -> dict[str, ActorId]:
        """Return the resident's relatives by display name."""
        rows = self.conn.execute(
            select(t.actors.c.id, t.actors.c.display_name)
            .join(t.relations, t.relations.c.actor_id == t.actors.c.id)
            .where(t.relations.c.resident_id == resident_id)
        )
        return {r.display_name: ActorId(r.id) for r in rows}

    def add_relation(
        self, resident_id: str, actor_id: str, relationship: str, phone: str | None
    ) -> None:
        self.conn.execute(
            insert(t.relations).values(
                resident_id=resident_id,
                actor_id=actor_id,
                relationship=relationship,
                phone=phone,
            )
        )

    def remove_relation(self, resident_id: str, actor_id: str) -> None:
        self.conn.execute(
            t.relations.delete().where(
                and_(t.relations.c.resident_id == resident_id, t.relations.c.actor_id == actor_id)
            )
        )

    def add_device(self, d: Device) -> None:
        self.conn.execute(
            insert(t.devices).values(
                id=d.id,
                actor_id=d.actor_id,
                public_key=d.public_key,
                status=d.status.value,
                registered_at=d.registered_at,
            )
        )

    def get_device(self, device_id: str) -> Device | None:
        r = self.conn.execute(select(t.devices).where(t.devices.c.id == device_id)).first()
        if r is None:
            return None
        return Device(
            id=DeviceId(r.id),
            actor_id=ActorId(r.actor_id),
            public_key=r.public_key,
            status=DeviceStatus(r.status),
            registered_at=r.registered_at,
        )

    def devices_with_owners(self, device_ids: Sequence[str]) -> dict[str, tuple[Device, bool]]:
        """`device_with_owner` for many devices at once, by device id (unknown ones absent)."""
        out: dict[str, tuple[Device, bool]] = {}
        for chunk in _chunks(list(device_ids)):
            rows = fetch_rows(
                self.conn,
                "SELECT d.id, d.actor_id, d.public_key, d.status, d.registered_at, a.active"
                f" FROM devices d JOIN actors a ON a.id = d.actor_id"
                f" WHERE d.id IN ({marks(len(chunk))})",
                chunk,
            )
            for r in rows:
                device = Device(
                    id=DeviceId(r[0]),
                    actor_id=ActorId(r[1]),
                    public_key=bytes(r[2]),
                    status=DeviceStatus(r[3]),
                    registered_at=read_instant(r[4]),
                )
                out[r[0]] = (device, bool(r[5]))
        return out

    def set_device_revoked(self, device_id: str, at: datetime) -> None:
        self.conn.execute(
            update(t.devices)
            .where(t.devices.c.id == device_id)
            .values(status=DeviceStatus.REVOKED.value, revoked_at=at)
        )

    # -- visits and grants --------------------------------------------------------------------
    def plan_hashes(self, municipality_id: str) -> dict[str, str]:
        rows = self.conn.execute(
            select(t.visit_plans.c.plan_key, t.visit_plans.c.content_hash).where(
                t.visit_plans.c.municipality_id == municipality_id
            )
        )
        return {r.plan_key: r.content_hash for r in rows}

    def save_plan(
        self,
        municipality_id: str,
        plan_key: str,
        *,
        source_file: str,
        version: str | None,
        content_hash: str,
        at: datetime,
        known: bool,
    ) -> None:
        values = {
            "source_file": source_file,
            "version": version,
            "content_hash": content_hash,
            "imported_at": at,
        }
        if known:
            self.conn.execute(
                update(t.visit_plans)
                .where(
                    and_(
                        t.visit_plans.c.municipality_id == municipality_id,
                        t.visit_plans.c.plan_key == plan_key,
                    )
                )
                .values(**values)
            )
        else:
            self.conn.execute(
                insert(t.visit_plans).values(
                    municipality_id=municipality_id, plan_key=plan_key, **values
                )
            )

    _PLAN_COLUMNS = ("municipality_id", "plan_key", "source_file", "version", "content_hash",
                     "imported_at")

    def insert_plans(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        stored = instant_writer(self.conn)
        insert_rows(
            self.conn,
            t.visit_plans,
            self._PLAN_COLUMNS,
            [
                (r["municipality_id"], r["plan_key"], r["source_file"], r.get("version"),
                 r["content_hash"], stored(r["imported_at"]))
                for r in rows
            ],
        )

    def visits_of_plan(self, municipality_id: str, plan_key: str) -> list[Visit]:
        rows = self.conn.execute(
            select(t.visits).where(
                and_(
                    t.visits.c.municipality_id == municipality_id,
                    t.visits.c.plan_key == plan_key,
                )
            )
        )
        return [visit_from_row(r) for r in rows]

    _VISIT_COLUMNS = ("id", "municipality_id", "resident_id", "plan_key", "source_key",
                      "planned_start", "planned_end", "staff_ids", "status", "description")

    def insert_visit_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert visits as driver-ready tuples in `_VISIT_COLUMNS` order (instants converted
        with `instant_writer`, staff ids as JSON text)."""
        insert_rows(self.conn, t.visits, self._VISIT_COLUMNS, rows)

    def update_visit(self, visit_id: str, **values: Any) -> None:
        if "status" in values and isinstance(values["status"], VisitStatus):
            values["status"] = values["status"].value
        if "staff_ids" in values:
            values["staff_ids"] = list(values["staff_ids"])
        self.conn.execute(update(t.visits).where(t.visits.c.id == visit_id).values(**values))

    def get_visit(self, visit_id: str) -> Visit | None:
        row = self.conn.execute(select(t.visits).where(t.visits.c.id == visit_id)).first()
        return visit_from_row(row) if row else None

    def coming_visits_of_resident(self, resident_id: str, now: datetime) -> list[Visit]:
        """Planned visits of the resident that have not ended yet."""
        rows = self.conn.execute(
            select(t.visits).where(
                and_(
                    t.visits.c.resident_id == resident_id,
                    t.visits.c.status == VisitStatus.PLANNED.value,
                    t.visits.c.planned_end > now,
                )
            )
        )
        return [visit_from_row(r) for r in rows]

    def visits_between(
        self, municipality_id: str, start: datetime, end: datetime
    ) -> list[Visit]:
        rows = self.conn.execute(
            select(t.visits)
            .where(
                and_(
                    t.visits.c.municipality_id == municipality_id,
                    t.visits.c.planned_start < end,
                    t.visits.c.planned_end > start,
                )
            )
            .order_by(t.visits.c.planned_start, t.visits.c.id)
        )
        return [visit_from_row(r) for r in rows]

    _GRANT_INSERT_COLUMNS = ("id", "actor_id", "door_ids", "not_before", "not_after", "origin",
                             "visit_id", "status", "reason", "created_at")

    def insert_grant_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert grants given as driver-ready tuples in `_GRANT_INSERT_COLUMNS` order."""
        insert_rows(self.conn, t.grants, self._GRANT_INSERT_COLUMNS, rows)

    def active_grants_of_visits(self, visit_ids: Sequence[str]) -> list[Grant]:
        out: list[Grant] = []
        for chunk in _chunks(list(visit_ids)):
            rows = self.conn.execute(
                select(t.grants).where(
                    and_(
                        t.grants.c.visit_id.in_(chunk),
                        t.grants.c.status == GrantStatus.ACTIVE.value,
                    )
                )
            )
            out.extend(grant_from_row(r) for r in rows)
        return out

    def revoke_grants(self, grant_ids: Sequence[str], at: datetime, reason: str) -> None:
        for chunk in _chunks(list(grant_ids)):
            self.conn.execute(
                update(t.grants)
                .where(t.grants.c.id.in_(chunk))
                .values(status=GrantStatus.REVOKED.value, revoked_at=at, reason=reason)
            )

    def active_grants_for_actors(
        self, actor_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[ActorId, list[Grant]]:
        """Return each actor's active grants overlapping [start, end), in time order."""
        out: dict[ActorId, list[Grant]] = {}
        stored = instant_writer(self.conn)
        bounds = (GrantStatus.ACTIVE.value, stored(end), stored(start))
        for chunk in _chunks(list(actor_ids)):
            rows = fetch_rows(
                self.conn,
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE actor_id IN ({marks(len(chunk))})"
                " AND status = ? AND not_before < ? AND not_after > ?"
                " ORDER BY not_before, id",
                (*chunk, *bounds),
            )
            for r in rows:
                g = _grant_from_tuple(r)
                out.setdefault(g.actor_id, []).append(g)
        return out

    def live_credential_pairs_for_actors(
        self, actor_ids: Sequence[str], start: datetime, end: datetime
    ) -> set[tuple[str, str]]:
        """(grant id, device id) of every unrevoked credential for the grants that
        `active_grants_for_actors` returns for the same arguments."""
        pairs: set[tuple[str, str]] = set()
        stored = instant_writer(self.conn)
        bounds = (GrantStatus.ACTIVE.value, stored(end), stored(start))
        for chunk in _chunks(list(actor_ids)):
            rows = fetch_rows(
                self.conn,
                "SELECT c.grant_id, c.device_id FROM credentials c JOIN grants g"
                f" ON g.id = c.grant_id WHERE g.actor_id IN ({marks(len(chunk))})"
                " AND g.status = ? AND g.not_before < ? AND g.not_after > ?"
                " AND c.revoked_at IS NULL",
                (*chunk, *bounds),
            )
            pairs.update((r[0], r[1]) for r in rows)
        return pairs

    def active_grants_for_doors(self, door_ids: Iterable[str], after: datetime) -> list[Grant]:
        """Return active grants naming any of the doors that have not ended by `after`.

        The database narrows to active, unexpired grants; the door match on the JSON list is done
        here, because JSON containment is not portable between SQLite and PostgreSQL.
        """
        wanted = set(door_ids)
        rows = self.conn.execute(
            select(t.grants)
            .where(
                and_(t.grants.c.status == GrantStatus.ACTIVE.value, t.grants.c.not_after >= after)
            )
            .order_by(t.grants.c.not_before)
        )
        return [g for g in map(grant_from_row, rows) if wanted.intersection(g.door_ids)]

    # -- credentials ---------------------------------------------------------------------------
    CREDENTIAL_COLUMNS = ("id", "grant_id", "device_id", "issued_at", "not_before", "not_after",
                          "size")

    def insert_credential_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert credentials as driver-ready tuples in `CREDENTIAL_COLUMNS` order (instants
        converted with `instant_writer`)."""
        insert_rows(self.conn, t.credentials, self.CREDENTIAL_COLUMNS, rows)

    def credentials_of_grants(self, grant_ids: Sequence[str]) -> list[Row[Any]]:
        out: list[Row[Any]] = []
        for chunk in _chunks(list(grant_ids)):
            out.extend(
                self.conn.execute(select(t.credentials).where(t.credentials.c.grant_id.in_(chunk)))
            )
        return out

    def revoke_credentials(self, credential_ids: Sequence[str], at: datetime) -> None:
        for chunk in _chunks(list(credential_ids)):
            self.conn.execute(
                update(t.credentials)
                .where(and_(t.credentials.c.id.in_(chunk), t.credentials.c.revoked_at.is_(None)))
                .values(revoked_at=at)
            )

    def live_revoked_credentials(self, municipality_id: str, now: datetime) -> list[Row[Any]]:
        """Revoked credentials that have not expired yet: what a revocation list must carry."""
        return list(
            self.conn.execute(
                select(t.credentials.c.id, t.credentials.c.not_after)
                .join(t.devices, t.devices.c.id == t.credentials.c.device_id)
                .join(t.actors, t.actors.c.id == t.devices.c.actor_id)
                .where(
                    and_(
                        t.actors.c.municipality_id == municipality_id,
                        t.credentials.c.revoked_at.is_not(None),
                        t.credentials.c.not_after > now,
                    )
                )
                .order_by(t.credentials.c.id)
            )
        )

    def revoked_devices(self, municipality_id: str) -> list[Row[Any]]:
        return list(
            self.conn.execute(
                select(t.devices.c.id, t.devices.c.public_key, t.devices.c.revoked_at)
                .join(t.actors, t.actors.c.id == t.devices.c.actor_id)
                .where(
                    and_(
                        t.actors.c.municipality_id == municipality_id,
                        t.devices.c.status == DeviceStatus.REVOKED.value,
                    )
                )
                .order_by(t.devices.c.id)
            )
        )

    def credential_owners(self, credential_ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """Return (actor id, visit id) for each known credential id, in one query per chunk."""
        owners: dict[str, tuple[str, str | None]] = {}
        for chunk in _chunks(sorted(set(credential_ids))):
            rows = self.conn.execute(
                select(t.credentials.c.id, t.grants.c.actor_id, t.grants.c.visit_id)
                .join(t.grants, t.grants.c.id == t.credentials.c.grant_id)
                .where(t.credentials.c.id.in_(chunk))
            )
            owners.update((r.id, (r.actor_id, r.visit_id)) for r in rows)
        return owners

    # -- quarantine ------------------------------------------------------------------------
    def open_quarantine_keys(self, municipality_id: str) -> set[tuple[str, str, str, str]]:
        rows = self.conn.execute(
            select(
                t.quarantine.c.file,
                t.quarantine.c.resource,
                t.quarantine.c.field,
                t.quarantine.c.message,
            ).where(
                and_(
                    t.quarantine.c.municipality_id == municipality_id,
                    t.quarantine.c.resolved_at.is_(None),
                )
            )
        )
        return {(r.file, r.resource, r.field, r.message) for r in rows}

    def add_quarantine(self, rows: Sequence[dict[str, Any]]) -> None:
        if rows:
            self.conn.execute(insert(t.quarantine), list(rows))

    def quarantine(self, municipality_id: str, *, include_resolved: bool = False) -> list[Row[Any]]:
        cond = t.quarantine.c.municipality_id == municipality_id
        if not include_resolved:
            cond = and_(cond, t.quarantine.c.resolved_at.is_(None))
        return list(self.conn.execute(select(t.quarantine).where(cond).order_by(t.quarantine.c.id)))

    # -- door events -----------------------------------------------------------------------
