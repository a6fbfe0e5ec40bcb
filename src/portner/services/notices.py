"""Notices for residents and relatives: access was granted, or a door was used outside a visit.

`sweep_notices` looks at what happened in the last LOOKBACK (grants made, door events received)
and makes a notice for each thing no notice covers yet. Nothing is kept in memory and no cursor
row is needed: every notice names its sources in `params["keys"]` ("grant:<id>:<resident>",
"door:<lock>:<seq>", "activity:<id>" for keypad code openings), and a sweep skips every source that an existing notice names. So a restart
loses nothing younger than LOOKBACK, and running the sweep again, or on several replicas, makes
nothing twice (on PostgreSQL the sweeps of one municipality take turns on an advisory lock; on
SQLite the database's single writer does the same).

Routine visit grants of the home-care service are not news; manual, one-time and emergency
grants are. Keypad code openings (lock_activity) follow the same rule, except codes whose holder
asked not to be told of their uses (keypad_codes.notify false, F28). An opening is "outside a
planned visit" when it carries no visit, or happens outside
the visit's window (planned start minus the lead time to planned end plus the grace time).

Each notice queues an SMS to every relative with a phone number, in the same transaction, and is
written to the audit log. Notices store no wording: the portal renders kind + params in the
reader's language. The SMS, which must be stored as text, is in bokmål and names no one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, and_, func, insert, or_, select, text, update

from portner.domain.model import GrantOrigin, Role
from portner.services.door_events import OPEN_KINDS
from portner.services.messaging import queue_message
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit

KIND_GRANTED = "access_granted"
KIND_OUTSIDE_VISIT = "door_outside_visit"
# A keypad code opened the door outside a planned visit (issue 4): the code's holder, or an unknown
# credential (a code Portner did not place, F12). Same params as KIND_OUTSIDE_VISIT plus "source".
KIND_CODE_OUTSIDE_VISIT = "code_outside_visit"
KINDS = (KIND_GRANTED, KIND_OUTSIDE_VISIT, KIND_CODE_OUTSIDE_VISIT)
# Keypad entries that make code notices: a named holder, or a code nobody was given. Unidentified
# entries (the lock did not say which code) are left out: they name no one and may be the visit.
CODE_NOTICE_ATTRIBUTIONS = ("event", "legacy_alarm", "unknown_credential")

# How far back a sweep looks. Sweeps run every few seconds; this only bounds the work and says
# how long the server may be down (or an upload may be late) without a notice going missing.
LOOKBACK = timedelta(days=2)
# Openings of one person at one home this close together are one passage: one notice, one SMS
# ("opened the building door and the flat door"), not one per door.
PASSAGE = timedelta(minutes=10)
NOTICED_ORIGINS = (GrantOrigin.MANUAL.value, GrantOrigin.ONE_TIME.value, GrantOrigin.EMERGENCY.value)
SWEEP_ACTOR = "system:notices"
SMS_CHANNEL = "sms"

STAFF_ROLES = frozenset({Role.HOME_NURSING.value, Role.HOME_HELP.value, Role.OTHER_MUNICIPAL.value})


@dataclass(frozen=True, slots=True)
class Notice:
    id: int
    resident_id: str
    kind: str
    params: dict[str, Any]
    created_at: datetime
    read_at: datetime | None

    @property
    def unread(self) -> bool:
        return self.read_at is None


@dataclass(frozen=True, slots=True)
class SweepResult:
    notices: int
    messages: int


def who_kind(role: str | None, origin: str | None) -> str:
    """How to name who had access, in plain words, without national ids: one of
    one_time, emergency, response_center, staff, relative, other, unknown."""
    if origin == GrantOrigin.ONE_TIME.value:
        return "one_time"
    if origin == GrantOrigin.EMERGENCY.value or role == Role.EMERGENCY_SERVICE.value:
        return "emergency"
    if role == Role.RESPONSE_CENTER.value:
        return "response_center"
    if role in STAFF_ROLES:
        return "staff"
    if role == Role.RELATIVE.value:
        return "relative"
    return "other" if role else "unknown"


# --- the sweep ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Draft:
    resident_id: str
    kind: str
    params: dict[str, Any]


def sweep_notices(engine: Engine, municipality_id: str, *, now: datetime) -> SweepResult:
    """Make the notices (and relatives' SMS) for what happened since the last sweep."""
    if now.utcoffset() is None:
        raise ValueError("sweep_notices needs an aware `now`")
    # Look first without writing (the usual answer is "nothing new"); only then take the
    # municipality's turn and look again inside the writing transaction.
    with engine.connect() as conn:
        if not _drafts(conn, municipality_id, now)[0]:
            return SweepResult(0, 0)
    with engine.begin() as conn:
        _take_turn(conn, municipality_id)
        drafts, zone = _drafts(conn, municipality_id, now)
        if not drafts:
            return SweepResult(0, 0)
        conn.execute(insert(t.notices), [
            {"resident_id": d.resident_id, "kind": d.kind, "params": d.params, "created_at": now}
            for d in drafts
        ])
        phones = _relative_phones(conn, {d.resident_id for d in drafts})
        sent = 0
        audit = []
        for d in drafts:
            recipients = phones.get(d.resident_id, [])
            for phone in recipients:
                queue_message(conn, municipality_id, SMS_CHANNEL, phone, sms_text(d.kind, d.params, zone), now)
            sent += len(recipients)
            # Keys and counts only: no names, and never the phone numbers.
            audit.append(AuditEntry(now, SWEEP_ACTOR, "notice:created", d.resident_id,
                                    {"kind": d.kind, "keys": d.params["keys"], "sms": len(recipients)}))
        append_audit(conn, audit)
    return SweepResult(len(drafts), sent)


def _drafts(conn: Connection, municipality_id: str, now: datetime) -> tuple[list[_Draft], ZoneInfo]:
    since = now - LOOKBACK
    zone, lead, grace = _settings(conn, municipality_id)
    known = _known_keys(conn, municipality_id, since - LOOKBACK)
    drafts = [
        *_granted(conn, municipality_id, since, known),
        *_outside_visits(conn, municipality_id, since, known, lead, grace),
        *_codes_outside_visits(conn, municipality_id, since, known, lead, grace),
    ]
    return drafts, zone


def _take_turn(conn: Connection, municipality_id: str) -> None:
    """Sweeps of one municipality write one at a time, also across replicas. Called first in
    the transaction, before it reads anything."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"portner.notices:{municipality_id}".encode()).digest()
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"),
                     {"k": int.from_bytes(digest[:8], "big", signed=True)})
    else:
        # An UPDATE that matches nothing still takes SQLite's single write lock, now: a second
        # sweep waits here instead of reading what the first is about to change.
        conn.execute(update(t.notices).where(text("1 = 0")).values(read_at=t.notices.c.read_at))


def _settings(conn: Connection, municipality_id: str) -> tuple[ZoneInfo, timedelta, timedelta]:
    row = conn.execute(
        select(t.municipalities.c.timezone, t.municipalities.c.window_lead_s,
               t.municipalities.c.window_grace_s)
        .where(t.municipalities.c.id == municipality_id)
    ).first()
    if row is None:
        raise LookupError(f"no municipality {municipality_id}")
    return ZoneInfo(row.timezone), timedelta(seconds=row.window_lead_s), timedelta(seconds=row.window_grace_s)


def _known_keys(conn: Connection, municipality_id: str, since: datetime) -> set[str]:
    # A notice is made after its source, so its created_at is no older than the source itself:
    # notices older than the look-back (and a margin for clock skew) cannot cover a new source.
    rows = conn.execute(
        select(t.notices.c.params)
        .join(t.residents, t.residents.c.id == t.notices.c.resident_id)
        .where(t.residents.c.municipality_id == municipality_id, t.notices.c.created_at >= since)
    )
    return {key for (params,) in rows for key in (params or {}).get("keys", ())}


def _doors(conn: Connection, door_ids: Iterable[str]) -> dict[str, tuple[str, int, str]]:
    """door id -> (resident id, position, kind)."""
    wanted = sorted(set(door_ids))
    if not wanted:
        return {}
    rows = conn.execute(
        select(t.doors.c.id, t.doors.c.position, t.doors.c.kind, t.homes.c.resident_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .where(t.doors.c.id.in_(wanted))
    )
    return {r.id: (r.resident_id, r.position, r.kind) for r in rows}


def _granted(conn: Connection, municipality_id: str, since: datetime, known: set[str]) -> list[_Draft]:
    rows = conn.execute(
        select(t.grants, t.actors.c.role.label("actor_role"), t.actors.c.display_name)
        .join(t.actors, t.actors.c.id == t.grants.c.actor_id)
        .where(
            t.actors.c.municipality_id == municipality_id,
            t.grants.c.created_at >= since,
            t.grants.c.origin.in_(NOTICED_ORIGINS),
        )
        .order_by(t.grants.c.created_at, t.grants.c.id)
    ).all()
    doors = _doors(conn, (d for r in rows for d in r.door_ids))
    drafts = []
    for r in rows:
        # One notice per resident whose doors the grant names (a grant normally names one home).
        by_resident: dict[str, list[tuple[int, str]]] = {}
        for door_id in r.door_ids:
            if door_id in doors:
                resident_id, position, kind = doors[door_id]
                by_resident.setdefault(resident_id, []).append((position, kind))
        for resident_id, path in sorted(by_resident.items()):
            key = f"grant:{r.id}:{resident_id}"
            if key in known:
                continue
            drafts.append(_Draft(resident_id, KIND_GRANTED, {
                "keys": [key],
                "grant": r.id,
                "origin": r.origin,
                "role": r.actor_role,
                "name": r.display_name or "",
                "doors": [kind for _, kind in sorted(path)],
                "from": _iso(r.not_before),
                "until": _iso(r.not_after),
            }))
    return drafts


def _outside_visits(
    conn: Connection, municipality_id: str, since: datetime, known: set[str],
    lead: timedelta, grace: timedelta,
) -> list[_Draft]:
    ev = t.door_events
    rows = conn.execute(
        select(
            ev.c.lock_id, ev.c.seq, ev.c.lock_time, ev.c.actor_id, ev.c.visit_id,
            t.doors.c.kind.label("door_kind"), t.doors.c.position, t.homes.c.resident_id,
            t.actors.c.role.label("actor_role"), t.actors.c.display_name,
            t.visits.c.planned_start, t.visits.c.planned_end, t.grants.c.origin,
        )
        .join(t.locks, t.locks.c.id == ev.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .outerjoin(t.actors, t.actors.c.id == ev.c.actor_id)
        .outerjoin(t.visits, t.visits.c.id == ev.c.visit_id)
        .outerjoin(t.credentials, t.credentials.c.id == ev.c.credential_id)
        .outerjoin(t.grants, t.grants.c.id == t.credentials.c.grant_id)
        .where(
            t.residents.c.municipality_id == municipality_id,
            ev.c.received_at >= since,
            ev.c.action.in_(sorted(OPEN_KINDS)),
            ev.c.allowed.is_(True),
        )
        .order_by(t.homes.c.resident_id, ev.c.actor_id, ev.c.lock_time, ev.c.lock_id, ev.c.seq)
    ).all()
    fresh = [
        r for r in rows
        if f"door:{r.lock_id}:{r.seq}" not in known and not _inside_visit(r, lead, grace)
    ]
    return _passages(fresh, _passage_draft)


def _inside_visit(r: Any, lead: timedelta, grace: timedelta) -> bool:
    if r.visit_id is None or r.planned_start is None:
        return False
    return r.planned_start - lead <= r.lock_time <= r.planned_end + grace


def _same_passage(a: Any, b: Any) -> bool:
    return (a.resident_id, a.actor_id) == (b.resident_id, b.actor_id) and b.lock_time - a.lock_time <= PASSAGE


def _passage_draft(rows: Sequence[Any]) -> _Draft:
    return _draft_of(rows, KIND_OUTSIDE_VISIT, [f"door:{r.lock_id}:{r.seq}" for r in rows])


def _draft_of(rows: Sequence[Any], kind: str, keys: list[str], **extra: Any) -> _Draft:
    """One passage's notice: its first opening, and the doors it went through, street first."""
    first = rows[0]
    path = sorted({(r.position, r.door_kind) for r in rows})
    return _Draft(first.resident_id, kind, {
        "keys": keys,
        "at": _iso(first.lock_time),
        "origin": first.origin,
        "role": first.actor_role,
        "name": first.display_name or "",
        "doors": [door for _, door in path],
        "visit": first.visit_id,
        **extra,
    })


def _codes_outside_visits(
    conn: Connection, municipality_id: str, since: datetime, known: set[str],
    lead: timedelta, grace: timedelta,
) -> list[_Draft]:
    act, code = t.lock_activity, t.keypad_codes
    happened = func.coalesce(act.c.lock_time, act.c.received_at)
    rows = conn.execute(
        select(
            act.c.id, act.c.lock_id, happened.label("lock_time"), act.c.actor_id, act.c.visit_id,
            act.c.attribution, t.doors.c.kind.label("door_kind"), t.doors.c.position,
            t.homes.c.resident_id, t.actors.c.role.label("actor_role"), t.actors.c.display_name,
            t.visits.c.planned_start, t.visits.c.planned_end, t.grants.c.origin,
        )
        .join(t.locks, t.locks.c.id == act.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .outerjoin(code, code.c.id == act.c.code_id)
        .outerjoin(t.actors, t.actors.c.id == act.c.actor_id)
        .outerjoin(t.visits, t.visits.c.id == act.c.visit_id)
        .outerjoin(t.grants, t.grants.c.id == code.c.grant_id)
        .where(
            t.residents.c.municipality_id == municipality_id,
            act.c.received_at >= since,
            act.c.operation == "unlock",
            act.c.source == "keypad",
            act.c.success.is_(True),
            act.c.attribution.in_(CODE_NOTICE_ATTRIBUTIONS),
            # No code (an unknown credential) is always told; a code only when it may be (F28).
            or_(act.c.code_id.is_(None), code.c.notify.is_(True)),
        )
        .order_by(t.homes.c.resident_id, act.c.actor_id, happened, act.c.lock_id, act.c.id)
    ).all()
    fresh = [
        r for r in rows
        if f"activity:{r.id}" not in known and not _inside_visit(r, lead, grace)
    ]
    return _passages(fresh, _code_passage_draft)


def _passages(rows: Sequence[Any], draft: Callable[[Sequence[Any]], _Draft]) -> list[_Draft]:
    """One notice per passage: consecutive openings by one person at one home belong together."""
    drafts: list[_Draft] = []
    passage: list[Any] = []
    for r in rows:
        if passage and not _same_passage(passage[-1], r):
            drafts.append(draft(passage))
            passage = []
        passage.append(r)
    if passage:
        drafts.append(draft(passage))
    return drafts


def _code_passage_draft(rows: Sequence[Any]) -> _Draft:
    return _draft_of(rows, KIND_CODE_OUTSIDE_VISIT, [f"activity:{r.id}" for r in rows],
                     source="keypad", attribution=rows[0].attribution)


def _relative_phones(conn: Connection, resident_ids: set[str]) -> dict[str, list[str]]:
    rows = conn.execute(
        select(t.relations.c.resident_id, t.relations.c.phone)
        .where(t.relations.c.resident_id.in_(sorted(resident_ids)), t.relations.c.phone.is_not(None))
        .order_by(t.relations.c.resident_id, t.relations.c.actor_id)
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        if r.phone.strip():
            out.setdefault(r.resident_id, []).append(r.phone.strip())
    return out


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def instant(params: dict[str, Any], name: str) -> datetime | None:
    """A time stored in a notice's params, back as an aware datetime."""
    value = params.get(name)
    return datetime.fromisoformat(value) if value else None


# --- the SMS (bokmål; relatives have no language setting) --------------------------------------

_SMS_WHO = {
    "one_time": "en person med engangstilgang",
    "emergency": "nødetaten",
    "response_center": "responssenteret",
    "staff": "hjemmetjenesten",
    "relative": "en pårørende",
    "other": "en person med tilgang",
    "unknown": "en ukjent nøkkel",
}
_MONTHS_NB = ("januar", "februar", "mars", "april", "mai", "juni", "juli", "august", "september",
              "oktober", "november", "desember")


def _nb_time(at: datetime, zone: ZoneInfo) -> str:
    local = at.astimezone(zone)
    return f"{local.day}. {_MONTHS_NB[local.month - 1]} kl. {local:%H:%M}"


def sms_text(kind: str, params: dict[str, Any], zone: ZoneInfo) -> str:
    """The SMS to relatives: what happened and when, who only by kind (no names, no health)."""
    who = _SMS_WHO[who_kind(params.get("role"), params.get("origin"))]
    if kind == KIND_GRANTED:
        start, end = instant(params, "from"), instant(params, "until")
        assert start is not None and end is not None
        return (f"Portner: {who.capitalize()} har fått tilgang til døren fra {_nb_time(start, zone)} "
                f"til {_nb_time(end, zone)}. Logg inn i Portner for å se mer.")
    when = instant(params, "at")
    assert when is not None
    return (f"Portner: Døren ble åpnet utenom et planlagt besøk {_nb_time(when, zone)}, av {who}. "
            "Logg inn i Portner for å se mer.")


# --- reading and marking ------------------------------------------------------------------------


def _notice(r: Any) -> Notice:
    return Notice(r.id, r.resident_id, r.kind, dict(r.params or {}), r.created_at, r.read_at)


def notices_for(conn: Connection, resident_id: str, *, limit: int = 100) -> list[Notice]:
    """The resident's notices, newest first."""
    rows = conn.execute(
        select(t.notices).where(t.notices.c.resident_id == resident_id)
        .order_by(t.notices.c.created_at.desc(), t.notices.c.id.desc()).limit(limit)
    )
    return [_notice(r) for r in rows]


def unread_count(conn: Connection, resident_id: str) -> int:
    return int(conn.execute(
        select(func.count()).select_from(t.notices)
        .where(t.notices.c.resident_id == resident_id, t.notices.c.read_at.is_(None))
    ).scalar() or 0)


def mark_read(engine: Engine, resident_id: str, notice_ids: Sequence[int] | None, *,
              now: datetime, by: str) -> int:
    """Mark the resident's notices read (None: all of them); return how many changed.

    Ids of another resident's notices change nothing: the resident id is part of the match.
    """
    where = [t.notices.c.resident_id == resident_id, t.notices.c.read_at.is_(None)]
    if notice_ids is not None:
        where.append(t.notices.c.id.in_(list(notice_ids)))
    with engine.begin() as conn:
        ids = [r.id for r in conn.execute(select(t.notices.c.id).where(and_(*where)))]
        if not ids:
            return 0
        conn.execute(update(t.notices).where(t.notices.c.id.in_(ids)).values(read_at=now))
        append_audit(conn, [AuditEntry(now, by, "notice:read", resident_id, {"notices": ids})])
    return len(ids)
