"""Visits and grants: read the day's plan, give a manual time-boxed grant, revoke a grant.

A nurse sees her own visits and grants; a relative or resident the visits and grants at their
resident's doors; operators and administrators the municipality. Manual grants are given and
revoked by operators and administrators only, with an Idempotency-Key, in one transaction with
their audit entry; revoking a grant revokes its live credentials and publishes a new revocation
list so that offline locks learn it from the next phone that passes.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Connection, exists, insert, select, update
from starlette.concurrency import run_in_threadpool

from portner.credentials.cwt import MAX_DOORS
from portner.domain.access import MUNICIPALITY_WIDE, AccountRole, Principal
from portner.domain.model import GrantOrigin, GrantStatus, Role
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME
from portner.services import directory_queries as dq
from portner.services.authority import visible_residents
from portner.services.revocation import publish_revocation_list
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository
from portner.web.api.common import (
    IDEMPOTENT_RESPONSES,
    NO_CONTROL,
    PROBLEM_RESPONSES,
    REPLAYED_HEADER,
    SINGLE_RESPONSES,
    GrantOut,
    IdempotencyKeyHeader,
    Page,
    PageParams,
    Text,
    VisitOut,
    check_day,
    conditional,
    grant_out,
    idempotent,
    keyset,
    page_of,
    page_params,
    paginate,
    resident_or_404,
    visit_out,
)
from portner.web.deps import portner, principal, require
from portner.web.problems import Problem, field_problem, not_found

log = logging.getLogger(__name__)
router = APIRouter(responses=PROBLEM_RESPONSES)

Id = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]
WIDE_ROLES = tuple(MUNICIPALITY_WIDE)


# --- visits -------------------------------------------------------------------------------------


def _day_bounds(day: date, zone: str) -> tuple[datetime, datetime]:
    check_day(day)  # near year 1 or 9999 the next day (or UTC) overflows
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(0), tz)
    return start, datetime.combine(day + timedelta(days=1), time(0), tz)


def _has_grant_of(actor_id: str) -> Any:
    return exists().where(t.grants.c.visit_id == t.visits.c.id, t.grants.c.actor_id == actor_id)


def _visits_for(conn: Connection, who: Principal, now: datetime, municipality_id: str) -> Any:
    """The visits `who` may see, as a statement to narrow further."""
    stmt = select(t.visits).where(t.visits.c.municipality_id == municipality_id)
    if who.role is AccountRole.NURSE:
        # Her own visits: the ones she holds a grant for (the plan named her).
        return stmt.where(_has_grant_of(who.actor_id or ""))
    visible = visible_residents(conn, who, now=now)
    if visible is not None:
        stmt = stmt.where(t.visits.c.resident_id.in_(sorted(visible)))
    return stmt


@router.get("/visits", response_model=Page[VisitOut], tags=["visits"],
            summary="Planned visits (a nurse sees her own), by start time")
def list_visits(
    request: Request, response: Response,
    day: Annotated[date | None, Query(alias="date", description="A day in the municipality's zone (YYYY-MM-DD).")] = None,
    resident: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL, description="Only this resident's visits.")] = None,
    staff: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL, description="Only visits this staff member holds a grant for.")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(principal),
) -> Page[VisitOut]:
    """Planned visits by start time, one page at a time; filter by `date` (in the municipality's
    time zone), `resident` or `staff`. Any signed-in caller, cut to what they may see: a nurse
    her own visits (those she holds a grant for), anyone else the visits of the residents they
    may see (see GET /residents); naming a resident one may not see is a 404."""
    p = portner(request)
    now = p.now()
    with p.engine.connect() as conn:
        if resident is not None:
            resident_or_404(conn, who, resident, now=now)
        stmt = _visits_for(conn, who, now, p.municipality.id)
        if resident is not None:
            stmt = stmt.where(t.visits.c.resident_id == resident)
        if staff is not None:
            stmt = stmt.where(_has_grant_of(staff))
        if day is not None:
            start, end = _day_bounds(day, p.municipality.timezone)
            stmt = stmt.where(t.visits.c.planned_start >= start, t.visits.c.planned_start < end)
        stmt = stmt.order_by(t.visits.c.planned_start, t.visits.c.id)
        rows = conn.execute(keyset(stmt, params, t.visits.c.planned_start, t.visits.c.id)).all()
    items = [visit_out(r) for r in rows]
    return page_of(request, response, params, items, key=lambda v: (v.planned_start, v.id))


@router.get("/visits/{visit_id}", response_model=VisitOut, responses=SINGLE_RESPONSES, tags=["visits"],
            summary="One visit")
def get_visit(request: Request, response: Response, visit_id: Id, who: Principal = Depends(principal)) -> Any:
    """One visit: resident, planned and actual times, staff and status. Any signed-in caller who
    may see it (as in GET /visits); otherwise 404. Answers with an ETag (If-None-Match gives
    304)."""
    p = portner(request)
    with p.engine.connect() as conn:
        stmt = _visits_for(conn, who, p.now(), p.municipality.id).where(t.visits.c.id == visit_id)
        row = conn.execute(stmt).first()
    if row is None:
        raise not_found(f"no visit {visit_id} that you may see")
    return conditional(request, response, visit_out(row))


# --- grants -------------------------------------------------------------------------------------


def _grant_filter(conn: Connection, who: Principal, now: datetime, municipality_id: str) -> Any:
    """A predicate on a grant row: may `who` see it? (None: every grant of the municipality)."""
    if who.role in MUNICIPALITY_WIDE:
        return None
    if who.role is AccountRole.NURSE:
        mine = who.actor_id
        return lambda g: g.actor_id == mine
    visible = visible_residents(conn, who, now=now)
    if visible is None:
        return None
    doors = dq.doors_of_residents(conn, visible)
    return lambda g: bool(doors.intersection(g.door_ids))


def _municipality_grants() -> Any:
    # Grants carry no municipality; their actor does.
    return select(t.grants).join(t.actors, t.actors.c.id == t.grants.c.actor_id)


@router.get("/grants", response_model=Page[GrantOut], tags=["grants"],
            summary="Grants: who may open which doors, when and why")
def list_grants(
    request: Request, response: Response,
    resident: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL, description="Only grants on this resident's doors.")] = None,
    actor: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL, description="Only this person's grants.")] = None,
    active: Annotated[bool | None, Query(description="true: only active grants that have not ended.")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(principal),
) -> Page[GrantOut]:
    """Grants: who may open which doors, from when to when, why, and whether still active;
    filter by `resident`, `actor` and `active`, one page at a time. Any signed-in caller, cut to
    what they may see: a nurse her own grants; operators, administrators and integrations with
    the portner.directory.read scope the municipality's; relatives and residents those on their
    resident's doors."""
    p = portner(request)
    now = p.now()
    with p.engine.connect() as conn:
        stmt = _municipality_grants().where(t.actors.c.municipality_id == p.municipality.id)
        if actor is not None:
            stmt = stmt.where(t.grants.c.actor_id == actor)
        if active is True:
            stmt = stmt.where(t.grants.c.status == GrantStatus.ACTIVE.value, t.grants.c.not_after > now)
        elif active is False:
            stmt = stmt.where((t.grants.c.status != GrantStatus.ACTIVE.value) | (t.grants.c.not_after <= now))
        if who.role is AccountRole.NURSE:  # her own grants: the database can say so
            stmt = stmt.where(t.grants.c.actor_id == (who.actor_id or ""))
            allowed = None
        else:
            allowed = _grant_filter(conn, who, now, p.municipality.id)
        wanted_doors: set[str] | None = None
        if resident is not None:
            resident_or_404(conn, who, resident, now=now)
            wanted_doors = dq.doors_of_residents(conn, [resident])
        if allowed is None and wanted_doors is None:
            stmt = stmt.order_by(t.grants.c.not_before, t.grants.c.id)
            rows = conn.execute(keyset(stmt, params, t.grants.c.not_before, t.grants.c.id)).all()
            items = [grant_out(r) for r in rows]
            return page_of(request, response, params, items, key=lambda g: (g.not_before, g.id))
        # Door lists are JSON, and JSON containment is not portable: the door match is done here.
        rows = conn.execute(stmt).all()
    items = [grant_out(r) for r in rows]
    if allowed is not None:
        items = [g for g in items if allowed(g)]
    if wanted_doors is not None:
        items = [g for g in items if wanted_doors.intersection(g.door_ids)]
    return paginate(request, response, params, items, key=lambda g: (g.not_before, g.id))


def _visible_grant(conn: Connection, who: Principal, now: datetime, municipality_id: str, grant_id: str) -> GrantOut:
    row = conn.execute(
        _municipality_grants().where(t.grants.c.id == grant_id, t.actors.c.municipality_id == municipality_id)
    ).first()
    allowed = _grant_filter(conn, who, now, municipality_id) if row is not None else None
    if row is None or (allowed is not None and not allowed(grant_out(row))):
        raise not_found(f"no grant {grant_id} that you may see")
    return grant_out(row)


@router.get("/grants/{grant_id}", response_model=GrantOut, responses=SINGLE_RESPONSES, tags=["grants"],
            summary="One grant")
def get_grant(request: Request, response: Response, grant_id: Id, who: Principal = Depends(principal)) -> Any:
    """One grant: the person, doors, time window, origin (visit, manual, one_time or emergency)
    and status. Any signed-in caller who may see it (as in GET /grants); otherwise 404. Answers
    with an ETag (If-None-Match gives 304)."""
    p = portner(request)
    with p.engine.connect() as conn:
        found = _visible_grant(conn, who, p.now(), p.municipality.id, grant_id)
    return conditional(request, response, found)


class GrantIn(BaseModel):
    """A manual grant: this person may open these doors in this window (at most 12 hours)."""

    model_config = ConfigDict(extra="forbid")

    actor_id: Text = Field(min_length=1, max_length=64, description="The staff member (an actor id).")
    door_ids: list[Text] = Field(min_length=1, max_length=MAX_DOORS, description="Door ids, street first.")
    not_before: AwareDatetime
    not_after: AwareDatetime = Field(description="At most 12 hours after not_before.")
    reason: Text = Field(min_length=1, max_length=400, description="Why; shown to the resident.")

    @field_validator("door_ids")
    @classmethod
    def _doors(cls, value: list[str]) -> list[str]:
        if any(not 1 <= len(d) <= 64 for d in value):
            raise ValueError("each door id has 1 to 64 characters")
        if len(set(value)) != len(value):
            raise ValueError("a door is named twice")
        return value

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("say why the grant is given")
        return value.strip()


def _check_grant(conn: Connection, body: GrantIn, municipality_id: str, now: datetime) -> None:
    if body.not_after <= body.not_before:
        raise field_problem("body/not_after", "must be after not_before")
    if body.not_after - body.not_before > MAX_CREDENTIAL_LIFETIME:
        raise field_problem("body/not_after", "a manual grant lasts at most 12 hours")
    if body.not_after <= now:
        raise field_problem("body/not_after", "is already past")
    actor = conn.execute(
        select(t.actors.c.municipality_id, t.actors.c.active, t.actors.c.role).where(t.actors.c.id == body.actor_id)
    ).first()
    if actor is None or actor.municipality_id != municipality_id or actor.role == Role.RELATIVE.value:
        raise field_problem("body/actor_id", "no such staff member")
    if not actor.active:
        raise field_problem("body/actor_id", "this person is disabled")
    known = dq.door_residents(conn, municipality_id, body.door_ids)
    for index, door_id in enumerate(body.door_ids):
        if door_id not in known:
            raise field_problem(f"body/door_ids/{index}", "no such door")


@router.post("/grants", response_model=GrantOut, status_code=201, tags=["grants"], responses=IDEMPOTENT_RESPONSES,
             summary="Give a manual time-boxed grant (operator, admin; idempotent)")
async def create_grant(
    request: Request,
    body: GrantIn,
    idempotency_key: IdempotencyKeyHeader = None,
    who: Principal = Depends(require(*WIDE_ROLES)),
) -> Any:
    """Give an active person of the municipality (not a relative) a manual grant: these doors,
    for at most 12 hours, with a reason. Operators and administrators only; send an
    Idempotency-Key so that a retry gives one grant, not two. Audited; the person's phone gets
    its credential at its next GET /me/credentials."""
    p = portner(request)
    now = p.now()

    def give(conn: Connection) -> GrantOut:
        _check_grant(conn, body, p.municipality.id, now)
        grant_id = p.ids.new("grt")
        values = {
            "id": grant_id, "actor_id": body.actor_id, "door_ids": list(body.door_ids),
            "not_before": body.not_before.astimezone(UTC), "not_after": body.not_after.astimezone(UTC), "origin": GrantOrigin.MANUAL.value,
            "visit_id": None, "status": GrantStatus.ACTIVE.value, "reason": body.reason, "created_at": now,
        }
        conn.execute(insert(t.grants).values(**values))
        # The reason is free text (it may say more than the log should hold); the grant keeps it.
        append_audit(conn, [AuditEntry(now, who.audit_actor, "grant:created", grant_id, {
            "actor": body.actor_id, "origin": GrantOrigin.MANUAL.value, "doors": list(body.door_ids),
            "not_before": body.not_before.isoformat(), "not_after": body.not_after.isoformat()})])
        return GrantOut(**{**values, "revoked_at": None})

    return await idempotent(request, who, give, status_code=201)


class RevokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Text = Field("revoked", min_length=1, max_length=400, description="Why (kept on the grant).")


@router.post("/grants/{grant_id}/revoke", response_model=GrantOut, tags=["grants"], responses=IDEMPOTENT_RESPONSES,
             summary="Revoke a grant and its live credentials (operator, admin; idempotent)")
async def revoke_grant(
    request: Request,
    grant_id: Id,
    body: Annotated[RevokeIn | None, Body()] = None,
    idempotency_key: IdempotencyKeyHeader = None,
    who: Principal = Depends(require(*WIDE_ROLES)),
) -> Any:
    """Revoke an active grant and its live credentials, with an optional reason, and publish a
    new signed revocation list so that offline locks learn it from the next phone that passes.
    Operators and administrators only; send an Idempotency-Key for safe retries (a grant revoked
    already is a 409). Audited."""
    p = portner(request)
    now = p.now()
    reason = (body or RevokeIn()).reason
    revoked: list[str] = []

    def revoke(conn: Connection) -> GrantOut:
        current = _visible_grant(conn, who, now, p.municipality.id, grant_id)
        if current.status != GrantStatus.ACTIVE.value:
            raise Problem(409, "Refused", f"grant {grant_id} is already revoked", kind="refused")
        repo = Repository(conn)
        conn.execute(update(t.grants).where(t.grants.c.id == grant_id).values(
            status=GrantStatus.REVOKED.value, revoked_at=now, reason=reason))
        live = [c.id for c in repo.credentials_of_grants([grant_id])
                if c.revoked_at is None and c.not_after > now]
        repo.revoke_credentials(live, now)
        revoked.extend(live)
        append_audit(conn, [AuditEntry(now, who.audit_actor, "grant:revoked", grant_id,
                                       {"credentials": len(live)})])
        return current.model_copy(update={"status": GrantStatus.REVOKED.value, "revoked_at": now, "reason": reason})

    answer = await idempotent(request, who, revoke)
    if revoked and answer.headers.get(REPLAYED_HEADER) != "true":
        # Online checks see the revocation at once; offline locks need the signed list.
        try:
            await run_in_threadpool(publish_revocation_list, p.engine, p.secrets.issuer, p.municipality.id,
                                    now=now, by=who.audit_actor)
        except Exception:  # the revocation stands; the next publication carries it
            log.exception("publishing the revocation list after revoking a grant failed")
    return answer
