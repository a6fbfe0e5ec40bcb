"""What the municipality's administrator changes: settings, residents, homes and door paths, locks,
staff, accounts, and the quarantine of rejected plan entries.

Each change is one transaction with its audit entry, named by the administrator's audit actor
("account:<id>"). Bad input raises `InvalidChange` naming the field before anything is written.
Door keys follow the door path: installing a lock on a door that coming visits' grants do not name,
or giving a home an e-lock, re-grants those visits; taking the e-lock away revokes them (fail
closed, as the import does). The care record stays the source of truth for names, zones and
addresses: the next import of a resident's Patient overwrites what is edited here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from portner.credentials.cwt import MAX_DOORS
from portner.domain.access import INTEGRATION_SCOPES, AccountRole
from portner.domain.care_record import ParsedSource, Severity
from portner.domain.errors import PortnerError
from portner.domain.model import DoorKind, GrantOrigin, GrantStatus, Role, ServiceModel, Visit
from portner.domain.national_id import redact_national_ids
from portner.domain.windows import visit_window
from portner.locks.registry import ADAPTERS
from portner.services import accounts as account_service
from portner.services import revocation
from portner.services.ids import IdSource
from portner.services.importing import ImportReport, import_sources
from portner.services.keypad.model import Enforcement
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import instant_writer, json_id_list
from portner.storage.repository import Repository

# Sane bounds: a window shorter than nothing or longer than a shift is a typo, not a policy.
LEAD_MINUTES = (0, 120)
GRACE_MINUTES = (0, 240)
BASELINE_MINUTES = (0.0, 600.0)
LOCK_BACKENDS = frozenset(ADAPTERS)  # the registry's adapter names, nowhere else
# The simulated lock is found by its id; every real backend needs the lock's own address there.
ADDRESS_OPTIONAL = frozenset({"simulated"})
MAX_ADDRESS = 200
STAFF_ROLES = frozenset(r for r in Role if r is not Role.RELATIVE)
MAX_REASON = 400


class InvalidChange(PortnerError):
    """The change is refused; `field` names what to correct (the message never echoes input)."""

    def __init__(self, field: str, message: str, code: str = "", **params: Any) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.code = code  # for the pages' translated wording; `params` fill it
        self.params = params


class NotFound(PortnerError):
    """No such thing in this municipality (same answer whether it exists elsewhere or not)."""


class Refused(PortnerError):
    """The change contradicts the current state (a door that still has a lock, ...)."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class Taken(Refused):
    """A value another record already holds (a 409 naming `field`, not a malformed field)."""

    def __init__(self, field: str, message: str, code: str = "") -> None:
        super().__init__(message, code)
        self.field = field


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """A rejected entry as the administrator sees it: national ids masked everywhere."""

    id: int
    file: str
    resource: str
    field: str
    message: str
    severity: str
    created_at: datetime
    resolved_at: datetime | None
    raw_masked: str | None


@dataclass(frozen=True, slots=True)
class CorrectionResult:
    resolved: bool
    resolved_ids: tuple[int, ...]
    problems: tuple[tuple[str, str], ...]  # (field, message) still wrong in the correction
    report: ImportReport = field(repr=False)


Reader = Callable[..., ParsedSource]


class InTransaction:
    """Lets services written for an Engine run inside a caller's open transaction (an API's
    idempotent POST stores its answer in the same transaction as the change): `begin()` is a
    savepoint on that connection, `connect()` the connection itself."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.conn.begin_nested():
            yield self.conn

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        yield self.conn


def _text(changes: Mapping[str, Any], name: str, limit: int, *, required: bool = True) -> str:
    value = changes[name]
    if not isinstance(value, str):
        raise InvalidChange(name, "must be text", "text")
    value = value.strip()
    if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in value):  # PostgreSQL refuses NUL
        raise InvalidChange(name, "must not contain control characters", "control")
    if required and not value:
        raise InvalidChange(name, "must not be empty", "required")
    if len(value) > limit:
        raise InvalidChange(name, f"at most {limit} characters", "too_long", limit=limit)
    return value


def _lock_address(value: Any, backend: str) -> str | None:
    """A lock's address as stored (trimmed), or None for a simulated lock given none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if backend in ADDRESS_OPTIONAL:
            return None
        raise InvalidChange("address", f"a {backend} lock needs its address (how the backend finds it)",
                            "address_required", backend=backend)
    if not isinstance(value, str):
        raise InvalidChange("address", "must be text", "text")
    value = value.strip()
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):  # the backend's topic or URL, one line
        raise InvalidChange("address", "must not contain control characters", "control")
    if len(value) > MAX_ADDRESS:
        raise InvalidChange("address", f"at most {MAX_ADDRESS} characters", "too_long", limit=MAX_ADDRESS)
    return value


def _number(changes: Mapping[str, Any], name: str, bounds: tuple[float, float], *, whole: bool) -> float:
    value = changes[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and value != int(value)):
        raise InvalidChange(name, "must be a whole number" if whole else "must be a number",
                            "whole" if whole else "number")
    if not bounds[0] <= value <= bounds[1]:
        raise InvalidChange(name, f"must be between {bounds[0]:g} and {bounds[1]:g}", "range",
                            low=f"{bounds[0]:g}", high=f"{bounds[1]:g}")
    return value


def _only(changes: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for name in changes:
        if name not in allowed:
            raise InvalidChange(name, "cannot be changed here; known fields: " + ", ".join(allowed), "unknown_field")
    if not changes:
        raise InvalidChange(allowed[0], "nothing to change", "nothing")


def _enum(enum: Any, value: Any, name: str, allowed: Any = None) -> Any:
    choices = list(allowed if allowed is not None else enum)
    try:
        member = enum(value)
    except ValueError:
        member = None
    if member is None or member not in choices:
        raise InvalidChange(name, "must be one of " + ", ".join(c.value for c in choices), "choice")
    return member


@dataclass(frozen=True, slots=True)
class Administration:
    """One administrator's changes to one municipality, at one instant."""

    engine: Engine | InTransaction
    municipality_id: str
    by: str  # Principal.audit_actor
    now: datetime
    ids: IdSource
    account_id: str | None = None  # the administrator's own account (they cannot disable it)
    # The issuers an account may be of: those whose accounts can sign in here
    # (accounts.sign_in_issuers); None: any.
    issuers: frozenset[str] | None = None

    def _audit(self, conn: Connection, action: str, subject: str, **details: Any) -> None:
        append_audit(conn, [AuditEntry(self.now, self.by, action, subject, details)])

    # -- municipality ---------------------------------------------------------------------
    def update_municipality(self, changes: Mapping[str, Any]) -> None:
        _only(changes, ("service_model", "lead_minutes", "grace_minutes",
                        "baseline_key_minutes_per_shift"))
        values: dict[str, Any] = {}
        if "service_model" in changes:
            values["service_model"] = _enum(ServiceModel, changes["service_model"], "service_model").value
        if "lead_minutes" in changes:
            values["window_lead_s"] = int(_number(changes, "lead_minutes", LEAD_MINUTES, whole=True)) * 60
        if "grace_minutes" in changes:
            values["window_grace_s"] = int(_number(changes, "grace_minutes", GRACE_MINUTES, whole=True)) * 60
        if "baseline_key_minutes_per_shift" in changes:
            values["baseline_key_minutes_per_shift"] = float(
                _number(changes, "baseline_key_minutes_per_shift", BASELINE_MINUTES, whole=False))
        with self.engine.begin() as conn:
            conn.execute(update(t.municipalities).where(t.municipalities.c.id == self.municipality_id)
                         .values(**values))
            self._audit(conn, "municipality:updated", self.municipality_id, **values)

    # -- residents and homes --------------------------------------------------------------
    def update_resident(self, resident_id: str, changes: Mapping[str, Any]) -> None:
        _only(changes, ("display_name", "zone_id"))
        values: dict[str, Any] = {}
        if "display_name" in changes:
            values["display_name"] = _text(changes, "display_name", 200)
        with self.engine.begin() as conn:
            self._resident_row(conn, resident_id)
            if "zone_id" in changes:
                zone = changes["zone_id"]
                if zone is not None and not conn.execute(select(t.zones.c.id).where(
                        t.zones.c.id == zone, t.zones.c.municipality_id == self.municipality_id)).first():
                    raise InvalidChange("zone_id", "no such zone in this municipality", "unknown_zone")
                values["zone_id"] = zone
            conn.execute(update(t.residents).where(t.residents.c.id == resident_id).values(**values))
            # Which fields, never their values: names stay out of the audit log.
            self._audit(conn, "resident:updated", resident_id, fields=sorted(values))

    def _resident_row(self, conn: Connection, resident_id: str) -> Any:
        row = conn.execute(select(t.residents).where(t.residents.c.id == resident_id)).first()
        if row is None or row.municipality_id != self.municipality_id:
            raise NotFound(f"no resident {resident_id}")
        return row

    def _home_row(self, conn: Connection, home_id: str) -> Any:
        row = conn.execute(
            select(t.homes, t.residents.c.municipality_id)
            .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
            .where(t.homes.c.id == home_id)
        ).first()
        if row is None or row.municipality_id != self.municipality_id:
            raise NotFound(f"no home {home_id}")
        return row

    def update_home(self, home_id: str, changes: Mapping[str, Any]) -> None:
        _only(changes, ("address", "elock_system"))
        values: dict[str, Any] = {}
        if "address" in changes:
            values["address"] = _text(changes, "address", 400, required=False)
        if "elock_system" in changes:
            # None (or empty) means the home has no e-lock: its visits need a physical key.
            empty = changes["elock_system"] is None or changes["elock_system"] == ""
            values["elock_system"] = None if empty else _text(changes, "elock_system", 200)
        with self.engine.begin() as conn:
            home = self._home_row(conn, home_id)
            conn.execute(update(t.homes).where(t.homes.c.id == home_id).values(**values))
            self._audit(conn, "home:updated", home_id, fields=sorted(values))
            if "elock_system" in values and (home.elock_system is None) != (values["elock_system"] is None):
                self._refresh_grants(conn, home_id, "e-lock changed")

    # -- door paths -----------------------------------------------------------------------
    def _door_row(self, conn: Connection, door_id: str) -> Any:
        row = conn.execute(select(t.doors).where(t.doors.c.id == door_id)).first()
        if row is None:
            raise NotFound(f"no door {door_id}")
        self._home_row(conn, row.home_id)  # tenant check
        return row

    def _door_ids(self, conn: Connection, home_id: str) -> list[str]:
        return list(conn.execute(select(t.doors.c.id).where(t.doors.c.home_id == home_id)
                                 .order_by(t.doors.c.position)).scalars())

    def _place(self, conn: Connection, home_id: str, order: Sequence[str]) -> None:
        """Store `order` as positions 0.. (street first), without tripping the unique position."""
        for i, door_id in enumerate(order):
            conn.execute(update(t.doors).where(t.doors.c.id == door_id).values(position=-1 - i))
        for i, door_id in enumerate(order):
            conn.execute(update(t.doors).where(t.doors.c.id == door_id).values(position=i))

    @staticmethod
    def _position(value: Any, count: int) -> int:
        """A 1-based place on the path (1 = street door) as a 0-based index."""
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= count:
            raise InvalidChange("position", f"must be a whole number from 1 to {count}", "position", count=count)
        return value - 1

    def add_door(self, home_id: str, kind: Any, position: int | None = None) -> str:
        door_kind = _enum(DoorKind, kind, "kind")
        with self.engine.begin() as conn:
            self._home_row(conn, home_id)
            order = self._door_ids(conn, home_id)
            if len(order) >= MAX_DOORS:
                raise InvalidChange("position", f"a door path has at most {MAX_DOORS} doors", "path_full", count=MAX_DOORS)
            index = len(order) if position is None else self._position(position, len(order) + 1)
            door_id = self.ids.new("d")
            conn.execute(insert(t.doors).values(id=door_id, home_id=home_id, position=len(order) + 1000,
                                                kind=door_kind.value, lock_id=None))
            order.insert(index, door_id)
            self._place(conn, home_id, order)
            self._audit(conn, "door:added", door_id, home=home_id, position=index + 1, kind=door_kind.value)
        return door_id

    def update_door(self, door_id: str, changes: Mapping[str, Any]) -> None:
        _only(changes, ("kind", "position"))
        with self.engine.begin() as conn:
            door = self._door_row(conn, door_id)
            values: dict[str, Any] = {}
            if "kind" in changes:
                values["kind"] = _enum(DoorKind, changes["kind"], "kind").value
                conn.execute(update(t.doors).where(t.doors.c.id == door_id).values(kind=values["kind"]))
            if "position" in changes:
                order = self._door_ids(conn, door.home_id)
                index = self._position(changes["position"], len(order))
                order.remove(door_id)
                order.insert(index, door_id)
                self._place(conn, door.home_id, order)
                values["position"] = index + 1
            self._audit(conn, "door:updated", door_id, home=door.home_id, **values)

    def reorder_doors(self, home_id: str, door_ids: Sequence[str]) -> None:
        with self.engine.begin() as conn:
            self._home_row(conn, home_id)
            current = self._door_ids(conn, home_id)
            if sorted(door_ids) != sorted(current):
                raise InvalidChange("door_ids", "must list each of the home's doors exactly once", "door_ids")
            self._place(conn, home_id, list(door_ids))
            self._audit(conn, "door:reordered", home_id, doors=list(door_ids))

    def remove_door(self, door_id: str) -> None:
        with self.engine.begin() as conn:
            door = self._door_row(conn, door_id)
            if door.lock_id is not None:
                raise Refused("the door has a lock; remove the lock first", "door_has_lock")
            order = self._door_ids(conn, door.home_id)
            home = self._home_row(conn, door.home_id)
            if len(order) == 1 and home.elock_system is not None:
                raise Refused("a home with an e-lock keeps at least one door; "
                              "set its e-lock system to none first", "last_door")
            if conn.execute(select(t.locks.c.id).where(t.locks.c.door_id == door_id)).first():
                raise Refused("a removed lock's event log names this door, so the door stays on record", "door_history")
            conn.execute(delete(t.doors).where(t.doors.c.id == door_id))
            order.remove(door_id)
            self._place(conn, door.home_id, order)
            self._audit(conn, "door:removed", door_id, home=door.home_id)

    # -- locks ----------------------------------------------------------------------------
    def install_lock(self, door_id: str, backend: str = "simulated", model: str = "", *,
                     address: str | None = None, enforcement: str | None = None) -> str:
        """Mount a lock on a door. `address` is how the backend finds it (a Zigbee2MQTT friendly
        name, a Matter "node" or "node/endpoint", a Nuki smartlock id), required for every backend
        but the simulated one and unique among the backend's mounted locks; `enforcement` "lock"
        or "server" fixes where keypad windows are kept (None: chosen from the capabilities)."""
        if backend not in LOCK_BACKENDS:
            raise InvalidChange("backend", "must be one of " + ", ".join(sorted(LOCK_BACKENDS)), "choice")
        model = _text({"model": model}, "model", 200, required=False)
        address = _lock_address(address, backend)
        chosen = None if enforcement is None or enforcement == "" else _enum(Enforcement, enforcement, "enforcement").value
        with self.engine.begin() as conn:
            door = self._door_row(conn, door_id)
            if door.lock_id is not None:
                raise Refused("the door already has a lock; remove it first", "has_lock")
            if address is not None:
                self._address_free(conn, backend, address)
            lock_id = self.ids.new("l")
            conn.execute(insert(t.locks).values(id=lock_id, door_id=door_id, backend=backend, model=model,
                                                address=address, enforcement=chosen, synced_seq=0))
            conn.execute(update(t.doors).where(t.doors.c.id == door_id).values(lock_id=lock_id))
            self._audit(conn, "lock:installed", lock_id, door=door_id, home=door.home_id,
                        position=door.position, backend=backend, enforcement=chosen,
                        # Whether, not what: integrators sometimes name devices after the resident.
                        addressed=address is not None)
            self._refresh_grants(conn, door.home_id, "lock installed")
        return lock_id

    def _address_free(self, conn: Connection, backend: str, address: str) -> None:
        # Across every municipality: one backend (one Zigbee2MQTT broker, one Matter fabric)
        # serves the deployment, and its events name the address only. A removed lock's address
        # may be used again (the lock was moved); its old events keep its own id.
        mounted = conn.execute(
            select(t.locks.c.id).join(t.doors, t.doors.c.lock_id == t.locks.c.id)
            .where(t.locks.c.backend == backend, t.locks.c.address == address, t.locks.c.removed_at.is_(None))
        ).first()
        if mounted is not None:
            raise Taken("address", f"another mounted {backend} lock already has this address", "address_taken")

    def remove_lock(self, lock_id: str) -> None:
        """Take the lock off its door. A lock with history (events, anomalies, uploads waiting)
        keeps its row, marked removed, so that the log stays readable; one without any is
        deleted, so that its door can still be removed (the row names the door)."""
        with self.engine.begin() as conn:
            door = conn.execute(select(t.doors).where(t.doors.c.lock_id == lock_id)).first()
            if door is None:
                raise NotFound(f"no installed lock {lock_id}")
            self._home_row(conn, door.home_id)
            conn.execute(update(t.doors).where(t.doors.c.id == door.id).values(lock_id=None))
            history = any(
                conn.execute(select(table.c.lock_id).where(table.c.lock_id == lock_id).limit(1)).first()
                for table in (t.door_events, t.lock_log_anomalies, t.door_event_pending, t.lock_status,
                              t.lock_activity, t.lock_alarms, t.lock_commands, t.lock_slots, t.code_placements)
            )
            # Codes meant for this lock stop here: Portner never speaks to a removed lock again (its
            # address may be another lock's soon), so the installer clears its memory on site.
            conn.execute(update(t.code_placements)
                         .where(t.code_placements.c.lock_id == lock_id, t.code_placements.c.state != "removed")
                         .values(intent="absent", state="removed", removed_at=self.now, updated_at=self.now,
                                 last_detail="the lock was taken off its door"))
            if history:
                conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(removed_at=self.now))
            else:
                conn.execute(delete(t.locks).where(t.locks.c.id == lock_id))
            self._audit(conn, "lock:removed", lock_id, door=door.id, home=door.home_id, log_kept=history)

    # -- door keys follow the door path ---------------------------------------------------
    def _refresh_grants(self, conn: Connection, home_id: str, reason: str) -> None:
        """Make coming visits' grants match the home: all doors when it has an e-lock and a lock,
        none when it has no e-lock. Grants that already name every locked door are kept (their
        credentials may be all a nurse has offline)."""
        repo = Repository(conn)
        home = self._home_row(conn, home_id)
        doors = conn.execute(select(t.doors.c.id, t.doors.c.lock_id).where(t.doors.c.home_id == home_id)
                             .order_by(t.doors.c.position)).all()
        path = [d.id for d in doors]
        locked = {d.id for d in doors if d.lock_id}
        wanted = home.elock_system is not None and bool(locked)
        visits = repo.coming_visits_of_resident(home.resident_id, self.now)
        grants: dict[str, list[Any]] = {}
        for g in repo.active_grants_of_visits([v.id for v in visits]):
            grants.setdefault(g.visit_id or "", []).append(g)
        m = repo.get_municipality(self.municipality_id)
        assert m is not None
        for visit in visits:
            have = grants.get(visit.id, [])
            if wanted and have and all(locked <= set(g.door_ids) for g in have):
                continue
            if have:
                self._revoke(conn, have, reason)
            if wanted:
                self._grant(conn, visit, path, m.window_lead, m.window_grace)

    def _revoke(self, conn: Connection, grants: Sequence[Any], reason: str) -> None:
        repo = Repository(conn)
        ids = [g.id for g in grants]
        repo.revoke_grants(ids, self.now, reason)
        repo.revoke_credentials([c.id for c in repo.credentials_of_grants(ids)], self.now)
        append_audit(conn, [AuditEntry(self.now, self.by, "grant:revoked", g, {"reason": reason}) for g in ids])

    def _grant(self, conn: Connection, visit: Visit, path: Sequence[str], lead: timedelta,
               grace: timedelta) -> None:
        not_before, not_after = visit_window(visit.planned_start, visit.planned_end, lead, grace)
        stored = instant_writer(conn)
        rows, audit = [], []
        for actor_id in visit.staff_ids:
            grant_id = self.ids.new("grt")
            rows.append((grant_id, actor_id, json_id_list(tuple(path)), stored(not_before), stored(not_after),
                         GrantOrigin.VISIT.value, visit.id, GrantStatus.ACTIVE.value, "", stored(self.now)))
            audit.append(AuditEntry(self.now, self.by, "grant:created", grant_id, {
                "actor": actor_id, "visit": visit.id, "doors": list(path),
                "not_before": not_before.isoformat(), "not_after": not_after.isoformat()}))
        Repository(conn).insert_grant_rows(rows)
        if audit:
            append_audit(conn, audit)

    # -- staff and devices ----------------------------------------------------------------
    def _actor_row(self, conn: Connection, actor_id: str) -> Any:
        row = conn.execute(select(t.actors).where(t.actors.c.id == actor_id)).first()
        if row is None or row.municipality_id != self.municipality_id or row.role == Role.RELATIVE.value:
            raise NotFound(f"no staff member {actor_id}")
        return row

    def add_staff(self, display_name: str, role: Any, organisation: str, *,
                  hpr_number: str | None = None, her_id: str | None = None) -> str:
        """Register a staff member; an HPR number or HER-id lets plans name them as performer."""
        data = {"display_name": display_name, "organisation": organisation}
        name = _text(data, "display_name", 200)
        org = _text(data, "organisation", 200)
        staff_role = _enum(Role, role, "role", STAFF_ROLES)
        numbers = {}
        for label, value in (("hpr_number", hpr_number), ("her_id", her_id)):
            if value:
                if not (isinstance(value, str) and value.isdigit() and len(value) <= 32):
                    raise InvalidChange(label, "must be digits only", "digits")
                numbers[label] = value
        actor_id = self.ids.new("stf")
        with self.engine.begin() as conn:
            for label, value in numbers.items():
                column = t.actors.c[label]
                if conn.execute(select(t.actors.c.id).where(column == value,
                                t.actors.c.municipality_id == self.municipality_id)).first():
                    raise InvalidChange(label, "another staff member already has this number", "duplicate_number")
            conn.execute(insert(t.actors).values(id=actor_id, municipality_id=self.municipality_id,
                                                 role=staff_role.value, organisation=org, display_name=name,
                                                 active=True, **numbers))
            self._audit(conn, "actor:registered", actor_id, role=staff_role.value)
        return actor_id

    def update_staff(self, actor_id: str, changes: Mapping[str, Any]) -> None:
        _only(changes, ("display_name", "organisation", "role", "active"))
        values: dict[str, Any] = {}
        for name in ("display_name", "organisation"):
            if name in changes:
                values[name] = _text(changes, name, 200)
        if "role" in changes:
            values["role"] = _enum(Role, changes["role"], "role", STAFF_ROLES).value
        if "active" in changes:
            if not isinstance(changes["active"], bool):
                raise InvalidChange("active", "must be true or false", "boolean")
            values["active"] = changes["active"]
        with self.engine.begin() as conn:
            self._actor_row(conn, actor_id)
            conn.execute(update(t.actors).where(t.actors.c.id == actor_id).values(**values))
            # A deactivated actor gets no new credentials; those issued run out (12 h at most).
            # To stop them at once, revoke the devices too.
            self._audit(conn, "actor:updated", actor_id, fields=sorted(values),
                        **({"active": values["active"]} if "active" in values else {}))

    def devices_of(self, actor_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            self._actor_row(conn, actor_id)
            rows = conn.execute(select(t.devices.c.id, t.devices.c.status, t.devices.c.registered_at,
                                       t.devices.c.revoked_at)
                                .where(t.devices.c.actor_id == actor_id).order_by(t.devices.c.id))
            return [dict(r._mapping) for r in rows]

    def revoke_device(self, device_id: str, reason: str) -> int:
        """Revoke a phone and its credentials; return how many credentials that stopped."""
        reason = _text({"reason": reason}, "reason", MAX_REASON)
        with self.engine.connect() as conn:
            row = conn.execute(select(t.devices.c.actor_id).where(t.devices.c.id == device_id)).first()
            if row is None:
                raise NotFound(f"no device {device_id}")
            try:
                self._actor_row(conn, row.actor_id)
            except NotFound:
                raise NotFound(f"no device {device_id}") from None
        return revocation.revoke_device(self.engine, device_id, now=self.now, by=self.by,  # type: ignore[arg-type]
                                        reason=redact_national_ids(reason))

    # -- accounts -------------------------------------------------------------------------
    def create_account(self, *, role: Any, issuer: str, subject: str, actor_id: str | None = None,
                       resident_id: str | None = None, display_name: str = "",
                       scopes: Sequence[str] = ()) -> str:
        account_role = _enum(AccountRole, role, "role")
        data = {"issuer": issuer, "subject": subject, "display_name": display_name}
        issuer = _text(data, "issuer", 300)
        if self.issuers is not None and issuer not in self.issuers:
            # Sign-in matches the issuer exactly: an account of another could never sign in.
            accepted = ", ".join(sorted(self.issuers))
            if not accepted:
                raise InvalidChange("issuer", "no sign-in provider is configured: set PORTNER_OIDC_ISSUER",
                                    "no_provider")
            raise InvalidChange("issuer", f"must be one this server signs in with (PORTNER_OIDC_ISSUER), "
                                f"exactly, a trailing / too: {accepted}", "issuer_not_provider",
                                issuers=accepted)
        subject = _text(data, "subject", 200)
        display_name = _text(data, "display_name", 200, required=False)
        if account_role in (AccountRole.NURSE, AccountRole.RELATIVE) and not actor_id:
            raise InvalidChange("actor_id", f"a {account_role.value} account needs the person it is", "needs_actor")
        if account_role is AccountRole.RESIDENT and not resident_id:
            raise InvalidChange("resident_id", "a resident account needs its resident", "needs_resident")
        for scope in scopes:
            if scope not in INTEGRATION_SCOPES:
                raise InvalidChange("scopes", "known scopes: " + ", ".join(sorted(INTEGRATION_SCOPES)), "scopes")
        if scopes and account_role is not AccountRole.INTEGRATION:
            raise InvalidChange("scopes", "only integration accounts carry scopes", "scopes_role")
        with self.engine.connect() as conn:
            if actor_id is not None and not conn.execute(select(t.actors.c.id).where(
                    t.actors.c.id == actor_id, t.actors.c.municipality_id == self.municipality_id)).first():
                raise InvalidChange("actor_id", "no such person in this municipality", "unknown_person")
            if resident_id is not None:
                try:
                    self._resident_row(conn, resident_id)
                except NotFound:
                    raise InvalidChange("resident_id", "no such resident in this municipality",
                                        "unknown_resident") from None
        try:
            return account_service.create_account(
                self.engine, municipality_id=self.municipality_id, issuer=issuer, subject=subject,  # type: ignore[arg-type]
                role=account_role, now=self.now, ids=self.ids, by=self.by, actor_id=actor_id,
                resident_id=resident_id, display_name=display_name, scopes=scopes)
        except account_service.AccountError as exc:
            raise Refused(str(exc), "account") from None

    def set_account_disabled(self, account_id: str, disabled: bool) -> None:
        if disabled and account_id == self.account_id:
            raise Refused("you cannot disable your own account", "own_account")
        with self.engine.connect() as conn:
            row = conn.execute(select(t.accounts.c.municipality_id).where(t.accounts.c.id == account_id)).first()
        if row is None or row.municipality_id != self.municipality_id:
            raise NotFound(f"no account {account_id}")
        account_service.set_account_disabled(self.engine, account_id, disabled, now=self.now,  # type: ignore[arg-type]
                                             by=self.by)

    # -- import status and quarantine -----------------------------------------------------
    def import_status(self) -> list[dict[str, Any]]:
        """Each imported plan: its file, version, when, and how many visits it holds now."""
        live = func.count(t.visits.c.id)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.visit_plans.c.plan_key, t.visit_plans.c.source_file, t.visit_plans.c.version,
                       t.visit_plans.c.imported_at, live.label("visits"))
                .outerjoin(t.visits, and_(t.visits.c.municipality_id == t.visit_plans.c.municipality_id,
                                          t.visits.c.plan_key == t.visit_plans.c.plan_key,
                                          t.visits.c.status != "cancelled"))
                .where(t.visit_plans.c.municipality_id == self.municipality_id)
                .group_by(t.visit_plans.c.plan_key, t.visit_plans.c.source_file, t.visit_plans.c.version,
                          t.visit_plans.c.imported_at)
                .order_by(t.visit_plans.c.plan_key)
            )
            return [{**r._mapping, "source_file": redact_national_ids(r.source_file)} for r in rows]

    def quarantine(self, *, include_resolved: bool = False) -> list[QuarantineEntry]:
        with self.engine.connect() as conn:
            rows = Repository(conn).quarantine(self.municipality_id, include_resolved=include_resolved)
        return [_entry(r) for r in rows]

    def quarantine_entry(self, entry_id: int) -> QuarantineEntry:
        with self.engine.connect() as conn:
            return _entry(self._quarantine_row(conn, entry_id))

    def _quarantine_row(self, conn: Connection, entry_id: int) -> Any:
        row = conn.execute(select(t.quarantine).where(t.quarantine.c.id == entry_id)).first()
        if row is None or row.municipality_id != self.municipality_id:
            raise NotFound(f"no quarantine entry {entry_id}")
        return row

    def dismiss_quarantine(self, entry_id: int, reason: str) -> None:
        reason = redact_national_ids(_text({"reason": reason}, "reason", MAX_REASON))
        with self.engine.begin() as conn:
            row = self._quarantine_row(conn, entry_id)
            if row.resolved_at is not None:
                raise Refused("this entry is no longer waiting for correction", "entry_closed")
            conn.execute(update(t.quarantine).where(t.quarantine.c.id == entry_id).values(resolved_at=self.now))
            self._audit(conn, "quarantine:dismissed", f"quarantine-{entry_id}", resource=row.resource, reason=reason)

    def correct_quarantine(self, entry_id: int, text: str, *, reader: Reader | None = None) -> CorrectionResult:
        """Import a corrected resource in place of a quarantined one, through the same import.

        The entry (and any other open entry for the same file and resource) is resolved only
        when the correction imported with no error of its own; the import and the resolution
        commit together. A correction that still has errors is imported like any file (its
        other parts land, a persisting problem keeps its entry) and the entry stays open.
        """
        if reader is None:
            from portner.fhir import read_text as reader
        if not isinstance(text, str) or not text.strip():
            raise InvalidChange("resource", "paste or upload the corrected FHIR resource (JSON or XML)", "resource_empty")
        with self.engine.connect() as conn:
            row = self._quarantine_row(conn, entry_id)
            m = Repository(conn).get_municipality(self.municipality_id)
        assert m is not None
        if row.resolved_at is not None:
            raise Refused("this entry is no longer waiting for correction", "entry_closed")
        # Read under the entry's own file name: a problem that persists matches its open entry
        # instead of adding a second one.
        source = reader(text, row.file, timezone=m.timezone, horizon_start=self.now - timedelta(days=1),
                        horizon_end=self.now + m.plan_horizon, accept_synthetic_ids=m.accept_synthetic_ids)
        target, readable = _corrected_resource(source, row.resource)
        with self.engine.begin() as conn:
            report = import_sources(InTransaction(conn), m, [source], now=self.now,  # type: ignore[arg-type]
                                    ids=self.ids)
            problems = tuple(
                (p.field, p.message) for p in report.problems
                if p.source.resource_type != "-" and f"{p.source.resource_type}/{p.source.resource_id}" == target
                and (p.severity is Severity.ERROR or not readable)
            )
            if problems:
                return CorrectionResult(False, (), problems, report)
            ids = tuple(conn.execute(select(t.quarantine.c.id).where(
                t.quarantine.c.municipality_id == self.municipality_id, t.quarantine.c.file == row.file,
                t.quarantine.c.resource == row.resource, t.quarantine.c.resolved_at.is_(None))).scalars())
            conn.execute(update(t.quarantine).where(t.quarantine.c.id.in_(ids)).values(resolved_at=self.now))
            self._audit(conn, "quarantine:corrected", f"quarantine-{entry_id}", resource=row.resource, resolved=list(ids))
        return CorrectionResult(True, ids, (), report)


def _corrected_resource(source: ParsedSource, wanted: str) -> tuple[str, bool]:
    """The one resource the correction holds, as "Type/id" (masked as problems are), and whether
    the reader made a record of it; it must replace the entry's resource."""
    unreadable = [p for p in source.problems if p.source.resource_type == "-"]
    if unreadable:
        raise InvalidChange("resource", unreadable[0].message, "resource_unreadable", detail=unreadable[0].message)
    records = {f"{s.resource_type}/{s.resource_id}"
               for s in (r.source for r in (*source.patients, *source.practitioners, *source.plans))}
    found = records | {f"{p.source.resource_type}/{p.source.resource_id}" for p in source.problems}
    if len(found) != 1:
        raise InvalidChange("resource", "paste exactly one resource, not a Bundle or several", "resource_many")
    label = found.pop()
    kind, _, ident = wanted.partition("/")
    got_kind, _, got_ident = label.partition("/")
    if kind != "-" and got_kind != kind:
        raise InvalidChange("resource", f"the entry is a {kind}; the correction must be one too", "resource_kind",
                            kind=kind)
    positional = ident == "root" or any(c in ident for c in "[*")
    if kind != "-" and not positional and redact_national_ids(got_ident) != ident:
        raise InvalidChange("resource", f"the correction must keep the resource id {ident}", "resource_id",
                            ident=ident)
    return redact_national_ids(label), bool(records)


def _entry(r: Any) -> QuarantineEntry:
    return QuarantineEntry(
        id=r.id, file=redact_national_ids(r.file), resource=redact_national_ids(r.resource),
        field=redact_national_ids(r.field), message=redact_national_ids(r.message), severity=r.severity,
        created_at=r.created_at, resolved_at=r.resolved_at,
        raw_masked=redact_national_ids(r.raw) if r.raw is not None else None,
    )
