"""The response center's API: one-time access by SMS, lost phones, who can open a door, live events.

Operators and administrators only (a nurse or relative gets 403), except the two visitor
endpoints, which the one-time link's token authorises:

- POST /one-time-access                 give a person time-boxed access; the SMS is queued
- GET  /one-time-access                 the accesses given, phone numbers masked
- POST /one-time-access/{id}/revoke     revoke it (grant, credentials, the visitor's phone)
- POST /devices/{id}/revoke             a lost phone, in one action: revoked and published
- GET  /doors/{door_id}/who-can-open    now and later, and why
- GET  /physical-keys?date=             visits at homes without an e-lock (someone brings a key)
- GET  /events/stream                   Server-Sent Events of the municipality's door events and
                                        what keypad and vendor locks report (lock_activity)
- GET  /visit/{token}/challenge         (visitor) a registration challenge for the phone
- POST /visit/{token}/redeem            (visitor) register the phone once, get the credentials

The event stream polls the door_events table by a (received_at, lock_id, seq) cursor and the
lock_activity table by id (web.api.activity_lines; every SSE id carries both), so any of
several stateless replicas can serve a reconnecting console (Last-Event-ID). Every poll looks the
caller up again (disabled account, signed out, session older than a shift, phone revoked): the
stream then sends `event: signed-out` and ends. A stream lives at most an hour; the EventSource
reconnects and is authorised afresh.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from datetime import time as dtime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection, and_, or_, select
from starlette.concurrency import run_in_threadpool

from portner.domain.access import AccountRole, Principal
from portner.services.accounts import AccountDisabled
from portner.services.device_registration import RegistrationRefused
from portner.services.messaging import deliver_messages, gateway_from_setting
from portner.services.one_time import (
    InvitationRefused,
    OneTimeRefused,
    UnknownInvitation,
    find_invitation,
    grant_one_time_access_in,
    holder_of,
    list_invitations,
    mask_phone,
    redeem_invitation,
    redemption_challenge,
    revoke_invitation,
)
from portner.services.queries import physical_key_list
from portner.services.revocation import (
    latest_revocation_list,
    publish_revocation_list,
    revoke_device,
)
from portner.storage import tables as t
from portner.storage.repository import Repository
from portner.web.api import activity_lines as activity
from portner.web.api.activity_lines import EPOCH, Cursor, encode_event_id
from portner.web.api.activity_lines import decode_event_id as decode_event_id  # noqa: F401 - its home was here
from portner.web.api.common import (
    IDEMPOTENT_RESPONSES,
    NO_CONTROL,
    PROBLEM_RESPONSES,
    IdempotencyKeyHeader,
    Page,
    PageParams,
    Text,
    check_day,
    idempotent,
    page_params,
    paginate,
    problem_response,
    resident_or_404,
)
from portner.web.api.encoding import b64url, from_b64url
from portner.web.deps import (
    SESSION_LIFETIME,
    SESSION_SIGNED_IN_AT,
    current_principal,
    portner,
    require,
)
from portner.web.i18n import pick_language, translate
from portner.web.problems import Problem, field_problem, not_found
from portner.web.state import Portner

log = logging.getLogger(__name__)
router = APIRouter(tags=["response center"], responses=PROBLEM_RESPONSES)
REFUSED = {409: problem_response("The link has been used, has expired or was revoked.")}
STAFF = require(AccountRole.OPERATOR, AccountRole.ADMIN)
PathId = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]

# How soon a revocation reaches the doors: the demo's lock bridge installs a new list every
# 5 seconds (portner.web.bridge.DEFAULT_REFRESH_S); real lock gateways are held to 60 s.
BRIDGE_REFRESH_S = 5
ONLINE_WITHIN_S = 60
SMS_EVERY_S = 2.0
POLL_S = 1.0
HEARTBEAT_S = 15.0
OVERLAP = timedelta(seconds=5)
EVENT_ACTIONS = ("unlock", "denied", "jammed")
# A stream ends after this long; the EventSource reconnects with Last-Event-ID and is checked anew.
STREAM_LIFETIME_S = 3600.0
STREAM_ROLES = (AccountRole.OPERATOR, AccountRole.ADMIN)


def _words(key: str, lang: str, fallback: str) -> str:
    text = translate(key, lang)
    return fallback if text == key else text


# --- one-time access ----------------------------------------------------------------------------


class OneTimeAccessIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    resident_id: Text = Field(max_length=64)
    door_ids: list[Annotated[Text, Field(max_length=64)]] = Field(min_length=1, max_length=10)
    name: Text = Field(max_length=100, description="The person's name, as the SMS greets them.")
    phone: Text = Field(max_length=40, description="Mobile number; 8 digits mean +47 (Norway).")
    starts: datetime = Field(description="With offset. At most 12 hours before `ends`.")
    ends: datetime = Field(description="With offset; in the future.")
    language: Literal["nb", "en"] = Field("nb", description="Language of the SMS.")


class OneTimeAccessOut(BaseModel):
    id: str
    grant_id: str
    resident_id: str | None
    name: str
    phone: str = Field(description="Masked: only the last two digits are shown.")
    door_ids: list[str]
    not_before: datetime
    not_after: datetime
    state: str = Field(description="open, redeemed, expired or revoked.")
    message: str = Field(description="The SMS: queued, sent, failed or none.")
    message_error: str | None = None
    created_at: datetime


def _access_out(line: Any) -> OneTimeAccessOut:
    return OneTimeAccessOut(
        id=line.invitation_id, grant_id=line.grant_id, resident_id=line.resident_id, name=line.name,
        phone=line.phone_masked, door_ids=list(line.door_ids), not_before=line.not_before,
        not_after=line.not_after, state=line.state, message=line.message,
        message_error=line.message_error, created_at=line.created_at,
    )


@router.post("/one-time-access", status_code=201, response_model=OneTimeAccessOut, responses=IDEMPOTENT_RESPONSES)
async def give_one_time_access(
    request: Request, body: OneTimeAccessIn, idempotency_key: IdempotencyKeyHeader = None,
    who: Principal = Depends(STAFF),
) -> Response:
    """Give a person time-boxed access (at most 12 hours) to some of a resident's doors, and
    queue an SMS with a one-time link that makes their phone the key. Operators and
    administrators only, for a resident they may see; send an Idempotency-Key so that a retry
    sends one SMS, not two. Audited; the answer shows the phone number masked."""
    p = portner(request)
    now = p.now()

    def handler(conn: Connection) -> OneTimeAccessOut:
        resident_or_404(conn, who, body.resident_id, now=now)
        try:
            access = grant_one_time_access_in(
                conn, municipality_id=p.municipality.id, by=who.audit_actor,
                resident_id=body.resident_id, door_ids=body.door_ids, name=body.name,
                phone=body.phone, starts=body.starts, ends=body.ends,
                public_url=p.settings.public_url, now=now, ids=p.ids, language=body.language,
            )
        except OneTimeRefused as exc:
            raise field_problem(f"body/{exc.field}", exc.message) from None
        row = conn.execute(select(t.invitations.c.phone).where(t.invitations.c.id == access.invitation_id)).scalar()
        return OneTimeAccessOut(
            id=access.invitation_id, grant_id=access.grant_id, resident_id=body.resident_id,
            name=" ".join(body.name.split()), phone=mask_phone(row or ""), door_ids=list(dict.fromkeys(body.door_ids)),
            not_before=access.not_before, not_after=access.not_after, state="open", message="queued",
            created_at=now,
        )

    return await idempotent(request, who, handler, status_code=201)


@router.get("/one-time-access", response_model=Page[OneTimeAccessOut])
def one_time_accesses(
    request: Request, response: Response, params: PageParams = Depends(page_params),
    who: Principal = Depends(STAFF),
) -> Page[OneTimeAccessOut]:
    """The one-time accesses given (the newest 2,000), newest first, one page at a time: state
    (open, redeemed, expired or revoked) and whether the SMS went out, phone numbers masked.
    Operators and administrators only."""
    p = portner(request)
    items = [_access_out(line) for line in list_invitations(p.engine, p.municipality.id, now=p.now(), limit=2000)]
    return paginate(request, response, params, items, key=lambda o: (-o.created_at.timestamp(), o.id))


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Text = Field("", max_length=200)


class RevokedOut(BaseModel):
    revoked: bool = Field(description="False when it was revoked already.")
    credentials_revoked: int
    revoked_at: datetime
    revocation_list_version: int
    locks_updated_within_s: int = Field(description="How soon connected locks have the new list.")
    explanation: str


def _publish(p: Portner, who: Principal, now: datetime) -> int:
    published = publish_revocation_list(p.engine, p.secrets.issuer, p.municipality.id, now=now, by=who.audit_actor)
    return published.version


def _current_version(p: Portner) -> int:
    latest = latest_revocation_list(p.engine, p.municipality.id)
    return latest[0] if latest else 0


def _within(p: Portner) -> int:
    return BRIDGE_REFRESH_S if p.settings.development else ONLINE_WITHIN_S


def revoke_access(p: Portner, who: Principal, invitation_id: str, reason: str, lang: str) -> RevokedOut:
    """Revoke a one-time access and publish the revocation list (API and console)."""
    now = p.now()
    try:
        done = revoke_invitation(p.engine, invitation_id, municipality_id=p.municipality.id,
                                 by=who.audit_actor, now=now,
                                 reason=reason or "revoked by the response center")
    except UnknownInvitation:
        raise not_found(f"no one-time access {invitation_id}") from None
    revoked_at = now
    if done.already:
        # Revoked before: nothing changed, so no new list (and no audit entry); say how it stands.
        with p.engine.connect() as conn:
            revoked_at = conn.execute(select(t.grants.c.revoked_at)
                                      .where(t.grants.c.id == done.grant_id)).scalar() or now
        version = _current_version(p)
    else:
        version = _publish(p, who, now)
    return RevokedOut(
        revoked=not done.already, credentials_revoked=done.credentials, revoked_at=revoked_at,
        revocation_list_version=version, locks_updated_within_s=_within(p),
        explanation=translate("console.revoke.effect", lang, seconds=_within(p)),
    )


def revoke_phone(p: Portner, who: Principal, device_id: str, reason: str, lang: str) -> RevokedOut:
    """A lost phone in one action (API and console): the device and its credentials are revoked,
    no credential is issued to it again, and a new signed revocation list is published."""
    now = p.now()
    with p.engine.connect() as conn:
        repo = Repository(conn)
        device = repo.get_device(device_id)
        owner = repo.get_actor(device.actor_id) if device else None
    if device is None or owner is None or owner.municipality_id != p.municipality.id:
        raise not_found(f"no device {device_id}")
    if device.status.value == "revoked":
        # Revoked before: answer with how it stands; no new list, no second audit entry.
        with p.engine.connect() as conn:
            revoked_at = conn.execute(select(t.devices.c.revoked_at)
                                      .where(t.devices.c.id == device_id)).scalar() or now
        return RevokedOut(
            revoked=False, credentials_revoked=0, revoked_at=revoked_at,
            revocation_list_version=_current_version(p), locks_updated_within_s=_within(p),
            explanation=translate("console.revoke.effect", lang, seconds=_within(p)),
        )
    count = revoke_device(p.engine, device_id, now=now, by=who.audit_actor, reason=reason or "lost phone")
    version = _publish(p, who, now)
    return RevokedOut(
        revoked=True, credentials_revoked=count, revoked_at=now, revocation_list_version=version,
        locks_updated_within_s=_within(p),
        explanation=translate("console.revoke.effect", lang, seconds=_within(p)),
    )


@router.post("/one-time-access/{invitation_id}/revoke", response_model=RevokedOut)
def revoke_one_time_access(
    request: Request, invitation_id: PathId, body: RevokeIn | None = Body(None),
    who: Principal = Depends(STAFF),
) -> RevokedOut:
    """Revoke a one-time access, with an optional reason: its grant, its credentials and the
    visitor's phone, and publish a new signed revocation list for the locks. Operators and
    administrators only; audited, and safe to repeat (revoking again changes nothing and answers
    `revoked: false`)."""
    return revoke_access(portner(request), who, invitation_id, body.reason if body else "",
                         pick_language(request))


@router.post("/devices/{device_id}/revoke", response_model=RevokedOut)
def revoke_lost_phone(
    request: Request, device_id: PathId, body: RevokeIn | None = Body(None),
    who: Principal = Depends(STAFF),
) -> RevokedOut:
    """A lost phone in one action: the phone and its credentials are revoked, it is refused new
    credentials, and a new signed revocation list is published for the locks. Operators and
    administrators only; audited, and safe to repeat (a phone revoked already answers
    `revoked: false` and changes nothing)."""
    return revoke_phone(portner(request), who, device_id, body.reason if body else "",
                        pick_language(request))


# --- who can open, physical keys ----------------------------------------------------------------


class DoorAccessOut(BaseModel):
    actor_id: str
    name: str
    role: str
    origin: str = Field(description="visit, manual, one_time or emergency.")
    why: str = Field(description="In plain words, in the reader's language.")
    visit_id: str | None = None
    visit_start: datetime | None = None
    visit_end: datetime | None = None
    not_before: datetime
    not_after: datetime
    now: bool = Field(description="May open at this moment.")


class WhoCanOpenOut(BaseModel):
    door_id: str
    door: str
    resident_id: str
    at: datetime
    items: list[DoorAccessOut]


def _door_row(conn: Connection, door_id: str) -> Any:
    return conn.execute(
        select(t.doors.c.id, t.doors.c.kind, t.homes.c.resident_id, t.residents.c.municipality_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .where(t.doors.c.id == door_id)
    ).first()


def door_access(p: Portner, who: Principal, door_id: str, lang: str) -> WhoCanOpenOut:
    """Who may open this door now or later today, and why (as services.queries.who_can_open,
    with the grant's start, origin and visit time, for one door)."""
    now = p.now()
    zone = ZoneInfo(p.municipality.timezone)
    with p.engine.connect() as conn:
        door = _door_row(conn, door_id)
        if door is None or door.municipality_id != p.municipality.id:
            raise not_found(f"no door {door_id}")
        resident_or_404(conn, who, door.resident_id, now=now)
        repo = Repository(conn)
        grants = repo.active_grants_for_doors([door_id], now)
        actors = {a.id: a for a in (repo.get_actor(i) for i in {g.actor_id for g in grants}) if a}
        visit_ids = sorted({g.visit_id for g in grants if g.visit_id})
        visits = {
            v.id: v for v in conn.execute(
                select(t.visits.c.id, t.visits.c.planned_start, t.visits.c.planned_end)
                .where(t.visits.c.id.in_(visit_ids)))
        } if visit_ids else {}
    items = []
    for g in grants:
        actor = actors.get(g.actor_id)
        visit = visits.get(g.visit_id) if g.visit_id else None
        if visit is not None:
            why = translate("console.why.visit", lang, start=visit.planned_start.astimezone(zone).strftime("%H:%M"),
                            end=visit.planned_end.astimezone(zone).strftime("%H:%M"))
        else:
            why = _words(f"console.why.{g.origin.value}", lang, g.origin.value)
        items.append(DoorAccessOut(
            actor_id=g.actor_id, name=actor.display_name if actor else g.actor_id,
            role=_words(f"console.role.{actor.role.value}", lang, actor.role.value) if actor else "",
            origin=g.origin.value, why=why, visit_id=g.visit_id,
            visit_start=visit.planned_start if visit else None, visit_end=visit.planned_end if visit else None,
            not_before=g.not_before, not_after=g.not_after, now=g.not_before <= now < g.not_after,
        ))
    items.sort(key=lambda i: (not i.now, i.not_before, i.name))
    return WhoCanOpenOut(door_id=door_id, door=_words(f"console.door.{door.kind}", lang, door.kind),
                         resident_id=door.resident_id, at=now, items=items)


@router.get("/doors/{door_id}/who-can-open", response_model=WhoCanOpenOut)
def who_can_open_door(request: Request, door_id: PathId, who: Principal = Depends(STAFF)) -> WhoCanOpenOut:
    """Who may open a door now or later, and why: every active grant on it that has not ended,
    with origin, visit times and an explanation in the reader's language (`lang`, the language
    cookie or Accept-Language). Operators and administrators only; a door of another
    municipality is a 404."""
    return door_access(portner(request), who, door_id, pick_language(request))


class PhysicalKeyOut(BaseModel):
    visit_id: str
    resident_id: str
    name: str
    address: str
    start: str = Field(description="Local time HH:MM.")
    staff: list[str] = Field(description="Who must bring the key (names).")


def physical_keys_for(p: Portner, day: date) -> list[PhysicalKeyOut]:
    check_day(day)  # the day after 9999-12-31 does not exist
    zone = ZoneInfo(p.municipality.timezone)
    start = datetime.combine(day, dtime(0), zone)
    end = datetime.combine(day + timedelta(days=1), dtime(0), zone)
    visits = physical_key_list(p.engine, p.municipality.id, start, end, p.municipality.timezone)
    staff_ids = sorted({s for v in visits for s in v.staff_ids})
    with p.engine.connect() as conn:
        names = dict(conn.execute(
            select(t.actors.c.id, t.actors.c.display_name).where(t.actors.c.id.in_(staff_ids))).all()) if staff_ids else {}
    return [
        PhysicalKeyOut(visit_id=v.visit_id, resident_id=v.resident_id, name=v.name, address=v.address,
                       start=v.start_local, staff=[names.get(s, s) for s in v.staff_ids])
        for v in visits
    ]


@router.get("/physical-keys", response_model=list[PhysicalKeyOut])
def physical_keys(
    request: Request, day: Annotated[date | None, Query(alias="date", description="YYYY-MM-DD; today if left out")] = None,
    who: Principal = Depends(STAFF),
) -> list[PhysicalKeyOut]:
    """The visits of a day (`date` in the municipality's time zone, today if left out) at homes
    without an e-lock, where someone must bring a physical key: resident, address, start time
    and who brings it. Operators and administrators only."""
    p = portner(request)
    return physical_keys_for(p, day or p.now().astimezone(ZoneInfo(p.municipality.timezone)).date())


# --- live door events (Server-Sent Events) ------------------------------------------------------

# The stream's ids (door-event cursor and lock_activity place) live in web.api.activity_lines.
_EPOCH = EPOCH


def _session_still_valid(request: Request) -> bool:
    """Is the stream's caller still allowed to watch? Looked up again as at every request: the
    account may have been disabled, the session signed out or expired, a phone revoked."""
    request.state.principal = None  # current_principal caches per request
    try:
        who = current_principal(request)
    except (AccountDisabled, Problem):  # a Problem: the Bearer token no longer verifies (expired)
        return False
    if who is None or who.role not in STREAM_ROLES:
        return False
    if who.via == "bearer":
        return True
    try:
        signed_in = datetime.fromisoformat(request.session.get(SESSION_SIGNED_IN_AT, ""))
    except ValueError:
        return False
    if signed_in.tzinfo is None:
        return False
    return portner(request).now() - signed_in < SESSION_LIFETIME


def _event_query(municipality_id: str) -> Any:
    e = t.door_events
    return (
        select(e.c.lock_id, e.c.seq, e.c.lock_time, e.c.received_at, e.c.action, e.c.allowed, e.c.reason,
               e.c.actor_id, t.doors.c.id.label("door_id"), t.doors.c.kind.label("door_kind"),
               t.residents.c.id.label("resident_id"), t.residents.c.display_name.label("resident_name"),
               t.actors.c.display_name.label("actor_name"), t.actors.c.role.label("actor_role"))
        .join(t.locks, t.locks.c.id == e.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .outerjoin(t.actors, t.actors.c.id == e.c.actor_id)
        .where(t.residents.c.municipality_id == municipality_id, e.c.action.in_(EVENT_ACTIONS))
    )


def recent_events(engine: Any, municipality_id: str, limit: int) -> list[Any]:
    e = t.door_events
    rows = engine_rows(engine, _event_query(municipality_id)
                       .order_by(e.c.received_at.desc(), e.c.lock_id.desc(), e.c.seq.desc()).limit(limit))
    return list(reversed(rows))


def events_after(engine: Any, municipality_id: str, after: Cursor, *, limit: int = 200) -> list[Any]:
    """Events after the cursor, in cursor order."""
    e = t.door_events
    at, lock_id, seq = after
    cond = or_(e.c.received_at > at,
               and_(e.c.received_at == at, or_(e.c.lock_id > lock_id, and_(e.c.lock_id == lock_id, e.c.seq > seq))))
    return engine_rows(engine, _event_query(municipality_id).where(cond)
                       .order_by(e.c.received_at, e.c.lock_id, e.c.seq).limit(limit))


def late_events(engine: Any, municipality_id: str, after: Cursor, *, limit: int = 500) -> list[Any]:
    """Events at or up to OVERLAP before the cursor: a transaction that began earlier may commit
    an older received_at after newer events were sent. The caller drops those already sent."""
    e = t.door_events
    at = after[0]
    return engine_rows(engine, _event_query(municipality_id)
                       .where(e.c.received_at >= at - OVERLAP, e.c.received_at <= at)
                       .order_by(e.c.received_at.desc(), e.c.lock_id, e.c.seq).limit(limit))


def _poll(engine: Any, municipality_id: str, cursor: Cursor, late: bool) -> list[Any]:
    rows = events_after(engine, municipality_id, cursor)
    return (late_events(engine, municipality_id, cursor) if late else []) + rows


def engine_rows(engine: Any, query: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(query))


def event_out(row: Any, lang: str, zone: ZoneInfo, activity_cursor: int = 0) -> dict[str, Any]:
    opened = bool(row.allowed) and row.action == "unlock"
    key = encode_event_id((row.received_at, row.lock_id, row.seq))
    return {
        "id": activity.stream_id(key, activity_cursor),
        "key": key,
        "kind": "door_event",
        "at": row.lock_time.isoformat(),
        "time": row.lock_time.astimezone(zone).strftime("%H:%M:%S"),
        "resident_id": row.resident_id,
        "resident": row.resident_name or "",
        "door_id": row.door_id,
        "door": _words(f"console.door.{row.door_kind}", lang, row.door_kind),
        "opened": opened,
        "state": "opened" if opened else "refused",
        "source": "phone",
        "outcome": translate("console.event.opened" if opened else "console.event.refused", lang),
        "reason_code": row.reason,
        "reason": "" if opened else _words(f"console.reason.{row.reason}", lang, row.reason),
        "who": row.actor_name or translate("console.event.unknown_key", lang),
        "role": _words(f"console.role.{row.actor_role}", lang, "") if row.actor_role else "",
    }


def _sse(data: dict[str, Any]) -> str:
    return f"id: {data['id']}\nevent: door\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get("/events/stream", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "door events, newest last"}})
async def door_event_stream(
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=200)] = None,
    backlog: Annotated[int, Query(ge=0, le=200, description="Recent events sent first on a new connection")] = 20,
    who: Principal = Depends(STAFF),
) -> StreamingResponse:
    """Live door events of the municipality as Server-Sent Events: openings, refusals and jams
    on the phone-credential locks and what keypad and vendor locks report, after up to `backlog`
    recent ones on a new connection; send Last-Event-ID to resume after a reconnect. Operators
    and administrators only, checked again at every poll: when the caller may no longer watch,
    the stream sends a signed-out event and ends. A stream ends after an hour; reconnect."""
    p = portner(request)
    lang = pick_language(request)
    zone = ZoneInfo(p.municipality.timezone)
    municipality_id = p.municipality.id
    resume, resume_activity = activity.resume(last_event_id)

    async def stream() -> AsyncIterator[str]:
        seen: dict[tuple[str, int], datetime] = {}
        cursor: Cursor | None = resume
        lines: list[str] = []
        if resume_activity is None:  # from the newest stored row: only new ones come
            follower = activity.ActivityFollower(await run_in_threadpool(activity.newest_activity_id, p.engine))
        else:
            follower = activity.ActivityFollower(resume_activity)
        if cursor is None:
            # Start at the newest stored event (not at "now": an event stored meanwhile, with a
            # received_at from another clock or a slow transaction, would fall behind the cursor).
            doors = await run_in_threadpool(recent_events, p.engine, municipality_id, backlog + 1)
            cursor = activity.door_key(doors[-1]) if doors else activity.NO_DOOR_EVENT
            if backlog:
                reports = await run_in_threadpool(activity.recent_activity, p.engine, municipality_id, backlog + 1)
                for kind, row, door_part, activity_at in activity.backlog_lines(doors, reports, backlog):
                    if kind == "door":
                        seen[(row.lock_id, row.seq)] = row.received_at
                        lines.append(_sse(event_out(row, lang, zone, activity_at)))
                    else:
                        lines.append(_sse(activity.activity_out(row, door_part, lang, zone)))
        yield "retry: 3000\n\n"
        for line in lines:
            yield line
        quiet_since = started = time.monotonic()
        late = False  # after a reconnect, nothing before the resumed cursor is resent
        while not await request.is_disconnected():
            if time.monotonic() - started >= STREAM_LIFETIME_S:
                return  # the EventSource reconnects (Last-Event-ID) and is authorised afresh
            rows = await run_in_threadpool(_poll, p.engine, municipality_id, cursor, late)
            reports = await run_in_threadpool(follower.poll, p.engine, municipality_id)
            # Checked after reading and before sending: an event stored after the account was
            # disabled (or the session ran out) is never sent, however the two interleave.
            if not await run_in_threadpool(_session_still_valid, request):
                yield "event: signed-out\ndata: {}\n\n"
                return
            fresh = [r for r in rows if (r.lock_id, r.seq) not in seen]
            for row in fresh:
                seen[(row.lock_id, row.seq)] = row.received_at
                yield _sse(event_out(row, lang, zone, follower.cursor))
                quiet_since = time.monotonic()
            if fresh:
                newest = max((r.received_at, r.lock_id, r.seq) for r in fresh)
                cursor = max(cursor, newest)
                late = True
                floor = cursor[0] - OVERLAP
                seen = {k: v for k, v in seen.items() if v >= floor}
            for row in reports:
                yield _sse(activity.activity_out(row, activity.door_part(cursor), lang, zone))
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since >= HEARTBEAT_S:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()
            if len(fresh) < 100 and len(reports) < 100:
                await asyncio.sleep(POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --- the visitor's phone (no sign-in: the link's token authorises) -------------------------------


class VisitChallengeOut(BaseModel):
    challenge: str = Field(description="base64url; sign it within 5 minutes")
    holder: str = Field(description="Part of the signed message: invitation:<id>.")


class VisitRedeemIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    public_key: str = Field(max_length=64, description="base64url of the raw 32-byte Ed25519 public key")
    challenge: str = Field(max_length=200)
    signature: str = Field(max_length=100, description='base64url Ed25519 signature over CBOR '
                           '["portner-device-registration-v1", challenge, public_key, holder]')


class VisitDoorOut(BaseModel):
    door_id: str
    kind: str
    door: str
    position: int
    lock_id: str | None


class VisitCredentialOut(BaseModel):
    credential: str
    credential_id: str
    door_ids: list[str]
    not_before: datetime
    not_after: datetime


class VisitRedeemOut(BaseModel):
    id: str = Field(description="The registered device (as POST /devices answers).")
    device_id: str
    doors: list[VisitDoorOut]
    not_before: datetime
    not_after: datetime
    credentials: list[VisitCredentialOut]
    bridge_url: str


def _open_invitation(p: Portner, token: str) -> Any:
    view = find_invitation(p.engine, token, now=p.now())
    if view is None:
        raise not_found("this link is not valid")
    if view.state != "open":
        raise Problem(409, "Link used or closed", f"this link is {view.state}", kind="invitation-closed")
    return view


@router.get("/visit/{token}/challenge", response_model=VisitChallengeOut, responses=REFUSED)
def visit_challenge(request: Request, token: Annotated[str, Path(max_length=200, pattern=NO_CONTROL)]) -> VisitChallengeOut:
    """The first step of a one-time visitor's link: a challenge for the visitor's phone to sign
    with a new key within 5 minutes. No sign-in: the link's token in the path is the authority;
    an unknown link is a 404, one used, expired or revoked a 409."""
    p = portner(request)
    view = _open_invitation(p, token)
    challenge = redemption_challenge(p.secrets, view.invitation_id, now=p.now())
    return VisitChallengeOut(challenge=b64url(challenge), holder=holder_of(view.invitation_id))


@router.post("/visit/{token}/redeem", response_model=VisitRedeemOut, status_code=201,
             responses={**REFUSED, 401: problem_response("The proof of possession does not verify.")})
def visit_redeem(request: Request, token: Annotated[str, Path(max_length=200, pattern=NO_CONTROL)], body: VisitRedeemIn) -> VisitRedeemOut:
    """Redeem a one-time visitor's link, once: register the phone's key with its signature over
    the challenge from GET /visit/{token}/challenge, and get its credentials for the
    invitation's doors. No sign-in: the link's token is the authority; a link used, expired or
    revoked is a 409, a proof that does not verify a 401, and the redemption is audited."""
    p = portner(request)
    lang = pick_language(request)
    try:
        done = redeem_invitation(
            p.engine, token, public_key=from_b64url(body.public_key, "body/public_key"),
            challenge=from_b64url(body.challenge, "body/challenge"),
            proof=from_b64url(body.signature, "body/signature"), secrets=p.secrets, now=p.now(), ids=p.ids,
        )
    except RegistrationRefused as exc:
        raise field_problem(f"body/{exc.field}", str(exc), status=exc.status) from None
    except InvitationRefused as exc:
        raise Problem(409, "Link used or closed", str(exc), kind="invitation-closed") from None
    return VisitRedeemOut(
        id=done.device_id, device_id=done.device_id,
        doors=[VisitDoorOut(door_id=d.id, kind=d.kind.value, door=_words(f"console.door.{d.kind.value}", lang, d.kind.value),
                            position=d.position, lock_id=d.lock_id) for d in done.doors],
        not_before=done.not_before, not_after=done.not_after,
        credentials=[VisitCredentialOut(credential=b64url(c.blob), credential_id=c.credential_id,
                                        door_ids=list(c.grant.door_ids), not_before=c.grant.not_before,
                                        not_after=c.grant.not_after) for c in done.credentials],
        bridge_url=p.settings.bridge_url,
    )


# --- start-up: the SMS gateway and its worker ---------------------------------------------------


def install(app: Any, p: Portner) -> None:
    """Choose the SMS gateway by configuration, once (a test may have injected one)."""
    if "sms" not in p.adapters:
        p.adapters["sms"] = gateway_from_setting(p.settings.sms_gateway)


async def send_messages(p: Portner) -> None:
    """Send queued SMS and e-mail every 2 seconds; a failure is recorded and retried."""
    while True:
        try:
            gateway = p.adapters.get("sms") or gateway_from_setting(p.settings.sms_gateway)
            await run_in_threadpool(deliver_messages, p.engine, gateway, p.now(), 20,
                                    municipality_id=p.municipality.id)
        except Exception:  # never die: log (no numbers, no bodies) and try again
            log.exception("sending queued messages failed")
        await asyncio.sleep(SMS_EVERY_S)


workers = [send_messages]
