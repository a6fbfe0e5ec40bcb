"""Reads and writes of domain objects over one SQLAlchemy connection (one transaction).

Services open a transaction with `engine.begin()`, wrap the connection in `Repository`, and write
the audit entries of their change through the same connection, so a change and its audit record
commit or roll back together. Bulk methods exist because a national day has ~50,000 visits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, insert, or_, select, update

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

_CHUNK = 500  # keeps IN (...) lists well under SQLite's variable limit


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


# -- the fast path for bulk rows -------------------------------------------------------------
# A national morning writes and reads tens of thousands of visits, grants and credentials in one
# transaction; SQLAlchemy's per-row type processing then costs more than the database itself. The
# bulk methods below therefore talk to the driver directly, in the caller's transaction, and
# convert values here exactly as the column types in tables.py would: instants as UtcDateTime
# stores them (naive UTC text on SQLite, aware UTC on PostgreSQL), JSON as json.dumps writes it.


def _sqlite_instant(value: datetime) -> str:
    if value.tzinfo is not UTC:
        if value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
        value = value.astimezone(UTC)
    return _sqlite_utc_text(value)


@lru_cache(maxsize=65536)
def _sqlite_utc_text(value: datetime) -> str:
    # Only UTC datetimes come here: for them equal keys are equal instants. (Two wall times in
    # one zone compare equal across a DST fold, so zoned values must not be cache keys.)
    # SQLAlchemy's SQLite DATETIME storage format, naive UTC with always six fraction digits.
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pg_instant(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    if value.utcoffset() is None:
        raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
    return value.astimezone(UTC)


def instant_writer(conn: Connection) -> Callable[[datetime], Any]:
    """Return the function that turns an aware instant into what the driver stores for it."""
    return _sqlite_instant if conn.dialect.name == "sqlite" else _pg_instant


@lru_cache(maxsize=65536)
def _instant_from_text(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _read_instant(value: Any) -> datetime | None:
    """What UtcDateTime returns for a stored value: an aware UTC datetime (or None)."""
    if value is None:
        return None
    if type(value) is str:  # SQLite
        return _instant_from_text(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@lru_cache(maxsize=65536)
def json_id_list(ids: tuple[str, ...]) -> str:
    """A list of ids as a JSON column stores it (json.dumps with its default format)."""
    return json.dumps(list(ids))


_json_id_list = json_id_list


@lru_cache(maxsize=65536)
def _id_tuple_from_text(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _id_tuple(value: Any) -> tuple[str, ...]:
    # SQLite hands back the JSON text; psycopg has already parsed it.
    return _id_tuple_from_text(value) if type(value) is str else tuple(value)


def insert_rows(conn: Connection, table: Table, columns: Sequence[str], rows: list[Any]) -> None:
    """Insert tuples of driver-ready values: one executemany on SQLite, one COPY on PostgreSQL."""
    if not rows:
        return
    names = ", ".join(columns)
    if conn.dialect.name == "sqlite":
        marks = ", ".join("?" * len(columns))
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
        return
    copy_rows(conn, f"COPY {table.name} ({names}) FROM STDIN", rows)


def copy_rows(conn: Connection, statement: str, rows: list[Any]) -> None:
    """Stream rows to a PostgreSQL COPY ... FROM STDIN (text format) in the caller's transaction.

    The text is built here in one pass and written in large pieces: psycopg's write_row, one
    Python call per row, cost more than the server's work.
    """
    # The same DBAPI connection, so the same transaction as the rest of the caller's change.
    dbapi_connection: Any = conn.connection.dbapi_connection
    with dbapi_connection.cursor() as cursor, cursor.copy(statement) as copy:
        for start in range(0, len(rows), 2000):
            chunk = rows[start : start + 2000]
            copy.write("".join(["\t".join(map(_copy_field, row)) + "\n" for row in chunk]))


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def _copy_field(value: Any) -> str:
    """One value in COPY text format (NULL is \\N; backslash, newline, CR and tab escaped)."""
    kind = type(value)
    if kind is str:
        if "\\" in value or "\n" in value or "\r" in value or "\t" in value:
            return value.translate(_COPY_ESCAPES)
        return value
    if value is None:
        return "\\N"
    if kind is int:
        return str(value)
    if kind is datetime:
        if value.tzinfo is UTC:
            return _copy_utc_instant(value)
        if value.utcoffset() is None:
            raise ValueError(f"refusing to store a naive datetime: {value.isoformat()}")
        return value.isoformat(sep=" ")
    if kind is bytes:
        return "\\\\x" + value.hex()  # bytea hex input, its backslash escaped for COPY
    if kind is bool:
        return "t" if value else "f"
    if isinstance(value, str):  # a str subclass: its plain text
        return _copy_field(str(value))
    raise TypeError(f"cannot COPY a value of type {kind.__name__}")


@lru_cache(maxsize=65536)
def _copy_utc_instant(value: datetime) -> str:
    return value.isoformat(sep=" ")


def fetch_rows(conn: Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run a query written with "?" placeholders straight on the driver; return plain tuples."""
    if conn.dialect.name != "sqlite":
        sql = sql.replace("?", "%s")
    dbapi_connection: Any = conn.connection.dbapi_connection
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(sql, tuple(params))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_GRANT_COLUMNS = "id, actor_id, door_ids, not_before, not_after, origin, visit_id, status, reason"


def _grant_from_tuple(r: tuple[Any, ...]) -> Grant:
    return Grant(
        id=r[0],
        actor_id=r[1],
        door_ids=_id_tuple(r[2]),
        not_before=_read_instant(r[3]),  # type: ignore[arg-type]
        not_after=_read_instant(r[4]),  # type: ignore[arg-type]
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

    def list_municipalities(self) -> list[Municipality]:
        rows = self.conn.execute(select(t.municipalities).order_by(t.municipalities.c.id))
        return [municipality_from_row(r) for r in rows]

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

    def residents_by_national_id(self, municipality_id: str) -> dict[str, Resident]:
        rows = self.conn.execute(
            select(t.residents).where(t.residents.c.municipality_id == municipality_id)
        )
        return {r.national_id: self._resident(r) for r in rows if r.national_id}

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

    def residents_by_source_ref(self, municipality_id: str) -> dict[str, Resident]:
        rows = self.conn.execute(
            select(t.residents).where(t.residents.c.municipality_id == municipality_id)
        )
        return {r.source_ref: self._resident(r) for r in rows if r.source_ref}

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
                .join(t.doors, t.doors.c.id == t.locks.c.door_id)
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

    def device_with_owner(self, device_id: str) -> tuple[Device, bool] | None:
        """Return the device and whether its owner's account is active."""
        r = self.conn.execute(
            select(t.devices, t.actors.c.active.label("owner_active"))
            .join(t.actors, t.actors.c.id == t.devices.c.actor_id)
            .where(t.devices.c.id == device_id)
        ).first()
        if r is None:
            return None
        device = Device(
            id=DeviceId(r.id),
            actor_id=ActorId(r.actor_id),
            public_key=r.public_key,
            status=DeviceStatus(r.status),
            registered_at=r.registered_at,
        )
        return device, bool(r.owner_active)

    def devices_with_owners(self, device_ids: Sequence[str]) -> dict[str, tuple[Device, bool]]:
        """`device_with_owner` for many devices at once, by device id (unknown ones absent)."""
        out: dict[str, tuple[Device, bool]] = {}
        for chunk in _chunks(list(device_ids)):
            rows = fetch_rows(
                self.conn,
                "SELECT d.id, d.actor_id, d.public_key, d.status, d.registered_at, a.active"
                f" FROM devices d JOIN actors a ON a.id = d.actor_id"
                f" WHERE d.id IN ({_marks(len(chunk))})",
                chunk,
            )
            for r in rows:
                device = Device(
                    id=DeviceId(r[0]),
                    actor_id=ActorId(r[1]),
                    public_key=bytes(r[2]),
                    status=DeviceStatus(r[3]),
                    registered_at=_read_instant(r[4]),
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

    def insert_visits(self, visits: Sequence[Visit], plan_keys: Sequence[str]) -> None:
        if not visits:
            return
        stored = instant_writer(self.conn)
        self.insert_visit_rows(
            [
                (v.id, v.municipality_id, v.resident_id, pk, v.source_key, stored(v.planned_start),
                 stored(v.planned_end), _json_id_list(tuple(v.staff_ids)), v.status.value,
                 v.description)
                for v, pk in zip(visits, plan_keys, strict=True)
            ]
        )

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

    def insert_grants(self, grants: Sequence[Grant], at: datetime) -> None:
        if not grants:
            return
        stored = instant_writer(self.conn)
        created = stored(at)
        self.insert_grant_rows(
            [
                (g.id, g.actor_id, _json_id_list(tuple(g.door_ids)), stored(g.not_before),
                 stored(g.not_after), g.origin.value, g.visit_id, g.status.value, g.reason,
                 created)
                for g in grants
            ]
        )

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

    def active_grants_for_actor(
        self, actor_id: str, start: datetime, end: datetime
    ) -> list[Grant]:
        rows = self.conn.execute(
            select(t.grants)
            .where(
                and_(
                    t.grants.c.actor_id == actor_id,
                    t.grants.c.status == GrantStatus.ACTIVE.value,
                    t.grants.c.not_before < end,
                    t.grants.c.not_after > start,
                )
            )
            .order_by(t.grants.c.not_before, t.grants.c.id)
        )
        return [grant_from_row(r) for r in rows]

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
                f"SELECT {_GRANT_COLUMNS} FROM grants WHERE actor_id IN ({_marks(len(chunk))})"
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
                f" ON g.id = c.grant_id WHERE g.actor_id IN ({_marks(len(chunk))})"
                " AND g.status = ? AND g.not_before < ? AND g.not_after > ?"
                " AND c.revoked_at IS NULL",
                (*chunk, *bounds),
            )
            pairs.update((r[0], r[1]) for r in rows)
        return pairs

    def live_credential_pairs(self, grant_ids: Sequence[str]) -> set[tuple[str, str]]:
        """Return (grant id, device id) of every unrevoked credential for these grants."""
        pairs: set[tuple[str, str]] = set()
        for chunk in _chunks(list(grant_ids)):
            rows = self.conn.execute(
                select(t.credentials.c.grant_id, t.credentials.c.device_id).where(
                    and_(t.credentials.c.grant_id.in_(chunk), t.credentials.c.revoked_at.is_(None))
                )
            )
            pairs.update((r.grant_id, r.device_id) for r in rows)
        return pairs

    def grants_for_doors(self, door_ids: Iterable[str]) -> list[Grant]:
        """Return every grant that names any of the doors (for 'who can open my door')."""
        wanted = set(door_ids)
        rows = self.conn.execute(select(t.grants).order_by(t.grants.c.not_before))
        return [g for g in map(grant_from_row, rows) if wanted.intersection(g.door_ids)]

    # -- credentials ---------------------------------------------------------------------------
    CREDENTIAL_COLUMNS = ("id", "grant_id", "device_id", "issued_at", "not_before", "not_after",
                          "size")

    def insert_credentials(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        stored = instant_writer(self.conn)
        self.insert_credential_rows(
            [
                (r["id"], r["grant_id"], r["device_id"], stored(r["issued_at"]),
                 stored(r["not_before"]), stored(r["not_after"]), r["size"])
                for r in rows
            ]
        )

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

    def credential_owner(self, credential_id: str) -> Row[Any] | None:
        return self.conn.execute(
            select(t.credentials, t.grants.c.visit_id, t.grants.c.actor_id)
            .join(t.grants, t.grants.c.id == t.credentials.c.grant_id)
            .where(t.credentials.c.id == credential_id)
        ).first()

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
    def door_events_for_doors(
        self, door_ids: Sequence[str], since: datetime | None = None
    ) -> list[Row[Any]]:
        cond = t.locks.c.door_id.in_(list(door_ids))
        if since is not None:
            cond = and_(cond, or_(t.door_events.c.lock_time >= since))
        return list(
            self.conn.execute(
                select(t.door_events, t.locks.c.door_id)
                .join(t.locks, t.locks.c.id == t.door_events.c.lock_id)
                .where(cond)
                .order_by(t.door_events.c.lock_time, t.door_events.c.lock_id, t.door_events.c.seq)
            )
        )
