"""Read models for people: a resident's door log, who can open a door, the physical-key list.

Every read of a resident's door log is itself written to the audit log (Normen: the patient's right
to see who looked), in the same transaction as the read.

The door log merges two sources: `door_events` (the phone-credential locks' own chained logs,
source "phone") and `lock_activity` (what keypad, Matter and vendor-cloud locks report: codes,
thumb-turns, remote unlocks, failed attempts). Only openings and attempts to open are "who came";
a lock being locked again is not. A failed attempt is a refused line, never a visit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, select

from portner.domain.model import VisitStatus
from portner.locks.attribution import UNIDENTIFIED, UNKNOWN_CREDENTIAL
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository

ROLE_WORDS = {
    "home_nursing": "home nurse",
    "home_help": "home helper",
    "other_municipal": "municipal service",
    "external_provider": "external provider",
    "relative": "relative",
    "response_center": "response center",
    "emergency_service": "emergency service",
    "locksmith": "locksmith",
    "caretaker": "caretaker",
}


@dataclass(frozen=True, slots=True)
class AccessLogLine:
    at_local: str
    door: str
    who: str
    role: str
    outcome: str
    reason: str
    visit_id: str | None
    planned: bool
    # How the door was opened: "phone" for door_events, else lock_activity's source (keypad,
    # remote, manual, auto, rfid, phone, unknown).
    source: str = "phone"
    # lock_activity's attribution (event, legacy_alarm, unidentified, unknown_credential);
    # empty for a door event, whose credential names its holder.
    attribution: str = ""
    at: datetime | None = None  # the instant (lock time, else when Portner received it)

    @property
    def from_lock_activity(self) -> bool:
        return bool(self.attribution)

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at_local,
            "door": self.door,
            "who": self.who,
            "role": self.role,
            "outcome": self.outcome,
            "reason": self.reason,
            "visit": self.visit_id,
            "planned_visit": self.planned,
            "source": self.source,
        }


class UnknownResident(LookupError):
    """No resident with that id."""


def access_log(
    engine: Engine,
    resident_id: str,
    *,
    municipality_id: str,
    reader: str,
    now: datetime,
    timezone: str = "Europe/Oslo",
) -> list[AccessLogLine]:
    """Return who came to the resident's doors and when, newest last; log the read itself."""
    zone = ZoneInfo(timezone)
    with engine.begin() as conn:
        repo = Repository(conn)
        resident = repo.get_resident(resident_id)
        if resident is None or resident.municipality_id != municipality_id:
            raise UnknownResident(resident_id)
        rows = list(conn.execute(_door_event_rows(resident_id)))
        activity = list(conn.execute(_lock_activity_rows(resident_id)))
        append_audit(
            conn,
            [AuditEntry(now, reader, "accesslog:read", resident_id,
                        {"lines": len(rows) + len(activity), "lock_activity": len(activity)})],
        )
    lines = [(r.lock_time, 0, r.seq, _door_event_line(r, zone)) for r in rows]
    lines += [(r.lock_time or r.received_at, 1, r.id, _lock_activity_line(r, zone)) for r in activity]
    lines.sort(key=lambda item: item[:3])
    return [line for *_, line in lines]


def _door_event_rows(resident_id: str) -> Any:
    return (
        select(t.door_events, t.doors.c.kind.label("door_kind"), t.actors.c.display_name, t.actors.c.role)
        .join(t.locks, t.locks.c.id == t.door_events.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .outerjoin(t.actors, t.actors.c.id == t.door_events.c.actor_id)
        .where(and_(t.homes.c.resident_id == resident_id, t.door_events.c.action.in_(["unlock", "denied"])))
        .order_by(t.door_events.c.lock_time, t.door_events.c.seq)
    )


def _lock_activity_rows(resident_id: str) -> Any:
    a = t.lock_activity
    # Never the slot or the code: the log says who, not which code.
    return (
        select(a.c.id, a.c.source, a.c.success, a.c.actor_id, a.c.visit_id, a.c.attribution, a.c.failure,
               a.c.lock_time, a.c.received_at, t.doors.c.kind.label("door_kind"), t.actors.c.display_name,
               t.actors.c.role)
        .join(t.locks, t.locks.c.id == a.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .outerjoin(t.actors, t.actors.c.id == a.c.actor_id)
        .where(and_(t.homes.c.resident_id == resident_id, a.c.operation == "unlock"))
        .order_by(a.c.id)
    )


def _door_event_line(r: Any, zone: ZoneInfo) -> AccessLogLine:
    return AccessLogLine(
        at_local=r.lock_time.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        door=f"{r.door_kind} door",
        who=r.display_name or (r.actor_id or "unknown credential"),
        role=ROLE_WORDS.get(r.role or "", r.role or ""),
        outcome="opened" if r.allowed else "refused",
        reason=r.reason,
        visit_id=r.visit_id,
        planned=r.visit_id is not None,
        at=r.lock_time,
    )


def _lock_activity_line(r: Any, zone: ZoneInfo) -> AccessLogLine:
    at = r.lock_time or r.received_at
    nameless = "unknown credential" if r.attribution == UNKNOWN_CREDENTIAL else UNIDENTIFIED
    return AccessLogLine(
        at_local=at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
        door=f"{r.door_kind} door",
        who=r.display_name or r.actor_id or nameless,
        role=ROLE_WORDS.get(r.role or "", r.role or ""),
        outcome="opened" if r.success else "refused",
        reason=(r.failure or "unknown") if not r.success else "ok",
        visit_id=r.visit_id,
        planned=r.visit_id is not None,
        source=r.source,
        attribution=r.attribution,
        at=at,
    )


def resident_overview(conn: Connection, municipality_id: str) -> list[dict[str, object]]:
    """List residents with zone, e-lock and number of doors (no national ids)."""
    doors = (
        select(t.doors.c.home_id, func.count().label("n")).group_by(t.doors.c.home_id).subquery()
    )
    rows = conn.execute(
        select(
            t.residents.c.id,
            t.residents.c.display_name,
            t.zones.c.path,
            t.homes.c.elock_system,
            doors.c.n,
        )
        .outerjoin(t.zones, t.zones.c.id == t.residents.c.zone_id)
        .outerjoin(t.homes, t.homes.c.resident_id == t.residents.c.id)
        .outerjoin(doors, doors.c.home_id == t.homes.c.id)
        .where(t.residents.c.municipality_id == municipality_id)
        .order_by(t.zones.c.path, t.residents.c.id)
    )
    return [
        {
            "id": r.id,
            "name": r.display_name,
            "zone": (r.path or "").split("|")[-1],
            "elock": r.elock_system,
            "doors": int(r.n or 0),
        }
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class PhysicalKeyVisit:
    visit_id: str
    resident_id: str
    start_local: str
    staff_ids: tuple[str, ...]
    name: str = ""
    address: str = ""


def physical_key_list(
    engine: Engine, municipality_id: str, start: datetime, end: datetime, timezone: str
) -> list[PhysicalKeyVisit]:
    """Visits starting in [start, end) at homes without an e-lock: someone must bring a key.

    By start, not overlap: a visit from 23:40 to 00:40 belongs to the evening it starts in.
    """
    zone = ZoneInfo(timezone)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                t.visits.c.id,
                t.visits.c.resident_id,
                t.visits.c.planned_start,
                t.visits.c.staff_ids,
                t.residents.c.display_name,
                t.homes.c.address,
            )
            .join(t.homes, t.homes.c.resident_id == t.visits.c.resident_id)
            .join(t.residents, t.residents.c.id == t.visits.c.resident_id)
            .where(
                and_(
                    t.visits.c.municipality_id == municipality_id,
                    t.visits.c.planned_start >= start,
                    t.visits.c.planned_start < end,
                    t.visits.c.status != VisitStatus.CANCELLED.value,
                    t.homes.c.elock_system.is_(None),
                )
            )
            .order_by(t.visits.c.planned_start)
        )
        return [
            PhysicalKeyVisit(
                r.id,
                r.resident_id,
                r.planned_start.astimezone(zone).strftime("%H:%M"),
                tuple(r.staff_ids),
                r.display_name,
                r.address,
            )
            for r in rows
        ]


@dataclass(frozen=True, slots=True)
class WhoCanOpen:
    actor_id: str
    name: str
    role: str
    doors: tuple[str, ...]
    until_local: str
    why: str
    # The grant itself, for callers that say "now" or "later today" and why in their own words.
    not_before: datetime | None = None
    not_after: datetime | None = None
    origin: str | None = None
    visit_id: str | None = None
    grant_id: str | None = None


def who_can_open(
    engine: Engine, resident_id: str, *, at: datetime, timezone: str
) -> list[WhoCanOpen]:
    """List active grants on the resident's doors that are valid at or after `at`."""
    zone = ZoneInfo(timezone)
    with engine.connect() as conn:
        repo = Repository(conn)
        home = conn.execute(select(t.homes.c.id).where(t.homes.c.resident_id == resident_id)).scalar()
        if home is None:
            return []
        doors = [d.id for d in repo.doors_of_home(home)]
        out = []
        for g in repo.active_grants_for_doors(doors, at):
            actor = repo.get_actor(g.actor_id)
            out.append(
                WhoCanOpen(
                    g.actor_id,
                    actor.display_name if actor else g.actor_id,
                    ROLE_WORDS.get(actor.role.value, "") if actor else "",
                    g.door_ids,
                    g.not_after.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                    f"planned visit {g.visit_id}" if g.visit_id else g.origin.value,
                    g.not_before, g.not_after, g.origin.value, g.visit_id, g.id,
                )
            )
        return out
