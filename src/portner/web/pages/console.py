"""The response center's console, and the one-time visitor's page (/visit/{token}).

For operators and administrators: live door events (EventSource on /api/v1/events/stream), find a
resident, who can open each of their doors now and why, give one-time access by SMS, revoke a lost
phone in one action (with a confirm step), and the visits that need a physical key today. Forms
post with the session's hidden CSRF field; the work is done by the same functions as the API
(web.api.access), so the console and the API cannot disagree.

The visitor's page needs no sign-in: the link's token is the authority. Its script makes a key in
the browser, redeems the invitation once (POST /api/v1/visit/{token}/redeem) and opens the doors
through the lock bridge with the nurse app's door module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select

from portner.credentials import DenyReason
from portner.domain.access import AccountRole, Principal
from portner.services.authority import require_resident
from portner.services.one_time import (
    OneTimeRefused,
    find_invitation,
    grant_one_time_access,
    list_invitations,
    mask_phone,
)
from portner.storage import tables as t
from portner.web.api.access import (
    door_access,
    physical_keys_for,
    revoke_access,
    revoke_phone,
)
from portner.web.api.common import day_in_range
from portner.web.deps import check_form_csrf, portner, require_page
from portner.web.i18n import pick_language, translate
from portner.web.problems import Problem
from portner.web.state import Portner
from portner.web.templating import render

router = APIRouter(include_in_schema=False)
operator = require_page(AccountRole.OPERATOR, AccountRole.ADMIN)

SEARCH_LIMIT = 50
DEFAULT_BOX = timedelta(hours=3)
_LINK = re.compile(r"https?://\S+")
LOCAL_INPUT = "%Y-%m-%dT%H:%M"
REASON_CODES = tuple(reason.value for reason in DenyReason)


def _zone(p: Portner) -> ZoneInfo:
    return ZoneInfo(p.municipality.timezone)


def _page(request: Request, template: str, section: str, status_code: int = 200, **context: Any) -> Response:
    return render(request, f"console/{template}", {"section": section, **context}, status_code=status_code)


def _not_found(request: Request, key: str = "error.not_found") -> Response:
    return render(request, "error.html", {"message": translate(key, pick_language(request))}, status_code=404)


# --- the dashboard: live events and search ------------------------------------------------------


@router.get("/console")
def dashboard(request: Request, who: Principal = Depends(operator)) -> Response:
    return _page(request, "live.html", "live")


# --- residents ----------------------------------------------------------------------------------


@router.get("/console/residents")
def find_resident(request: Request, q: str = Query("", max_length=100),
                  who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    query = " ".join(q.split())
    results: list[Any] = []
    if query:
        r = t.residents
        with p.engine.connect() as conn:
            results = list(conn.execute(
                select(r.c.id, r.c.display_name, t.zones.c.path, t.homes.c.address, t.homes.c.elock_system)
                .outerjoin(t.zones, t.zones.c.id == r.c.zone_id)
                .outerjoin(t.homes, t.homes.c.resident_id == r.c.id)
                .where(r.c.municipality_id == p.municipality.id, r.c.display_name.ilike(f"%{query}%"))
                .order_by(r.c.display_name, r.c.id).limit(SEARCH_LIMIT)
            ))
    return _page(request, "residents.html", "residents", q=query, results=results)


@dataclass
class OneTimeForm:
    name: str = ""
    phone: str = ""
    door_ids: tuple[str, ...] = ()
    starts: str = ""
    ends: str = ""
    language: str = "nb"


def _resident_context(p: Portner, who: Principal, resident_id: str, lang: str) -> dict[str, Any] | None:
    now = p.now()
    with p.engine.connect() as conn:
        row = conn.execute(
            select(t.residents.c.id, t.residents.c.display_name, t.residents.c.municipality_id,
                   t.zones.c.path, t.homes.c.id.label("home_id"), t.homes.c.address, t.homes.c.elock_system)
            .outerjoin(t.zones, t.zones.c.id == t.residents.c.zone_id)
            .outerjoin(t.homes, t.homes.c.resident_id == t.residents.c.id)
            .where(t.residents.c.id == resident_id)
        ).first()
        if row is None or row.municipality_id != p.municipality.id:
            return None
        require_resident(conn, who, resident_id, now=now)
        doors = list(conn.execute(
            select(t.doors.c.id, t.doors.c.kind, t.doors.c.position, t.doors.c.lock_id)
            .where(t.doors.c.home_id == row.home_id).order_by(t.doors.c.position)
        )) if row.home_id else []
    access = {d.id: door_access(p, who, d.id, lang) for d in doors}
    return {"resident": row, "doors": doors, "access": access}


def _default_form(p: Portner, doors: list[Any]) -> OneTimeForm:
    zone = _zone(p)
    # From this minute: the person is often at the door already when the operator is called.
    start = p.now().astimezone(zone).replace(second=0, microsecond=0)
    return OneTimeForm(door_ids=tuple(d.id for d in doors if d.lock_id),
                       starts=start.strftime(LOCAL_INPUT), ends=(start + DEFAULT_BOX).strftime(LOCAL_INPUT))


@router.get("/console/residents/{resident_id}")
def resident_page(request: Request, resident_id: str, who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    context = _resident_context(p, who, resident_id, pick_language(request))
    if context is None:
        return _not_found(request)
    return _page(request, "resident.html", "residents", form=_default_form(p, context["doors"]),
                 errors=[], **context)


def _local(value: str, zone: ZoneInfo, field: str) -> datetime:
    try:
        naive = datetime.strptime(value.strip(), LOCAL_INPUT)
    except ValueError:
        raise OneTimeRefused(field, "give a date and time") from None
    return naive.replace(tzinfo=zone)


@router.post("/console/residents/{resident_id}/one-time", dependencies=[Depends(check_form_csrf)])
async def give_one_time(request: Request, resident_id: str, who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    lang = pick_language(request)
    data = await request.form()
    form = OneTimeForm(
        name=str(data.get("name", ""))[:100], phone=str(data.get("phone", ""))[:40],
        door_ids=tuple(str(v)[:64] for v in data.getlist("door_ids"))[:10],
        starts=str(data.get("starts", ""))[:20], ends=str(data.get("ends", ""))[:20],
        language="en" if data.get("language") == "en" else "nb",
    )
    context = _resident_context(p, who, resident_id, lang)
    if context is None:
        return _not_found(request)
    try:
        access = grant_one_time_access(
            p.engine, municipality_id=p.municipality.id, by=who.audit_actor, resident_id=resident_id,
            door_ids=form.door_ids, name=form.name, phone=form.phone,
            starts=_local(form.starts, _zone(p), "starts"), ends=_local(form.ends, _zone(p), "ends"),
            public_url=p.settings.public_url, now=p.now(), ids=p.ids, language=form.language,
        )
    except OneTimeRefused as exc:
        errors = [{"field": exc.field, "message": exc.message}]
        return _page(request, "resident.html", "residents", status_code=422, form=form, errors=errors, **context)
    return RedirectResponse(f"/console/one-time?given={access.invitation_id}", status_code=303)


# --- one-time accesses --------------------------------------------------------------------------


def _outbox(p: Portner) -> list[dict[str, Any]]:
    """Development only: the newest queued messages, with the link clickable (no gateway)."""
    m = t.messages
    with p.engine.connect() as conn:
        rows = conn.execute(select(m).where(m.c.municipality_id == p.municipality.id)
                            .order_by(m.c.id.desc()).limit(20)).all()
    out = []
    for r in rows:
        link = _LINK.search(r.body)
        out.append({"to": mask_phone(r.recipient), "body": r.body, "link": link.group(0) if link else None,
                    "created_at": r.created_at, "sent": r.sent_at is not None})
    return out


@router.get("/console/one-time")
def one_time_page(request: Request, given: str | None = Query(None, max_length=64),
                  revoked: str | None = Query(None, max_length=64),
                  who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    lines = list_invitations(p.engine, p.municipality.id, now=p.now())
    resident_ids = sorted({line.resident_id for line in lines if line.resident_id})
    with p.engine.connect() as conn:
        names = dict(conn.execute(select(t.residents.c.id, t.residents.c.display_name)
                                  .where(t.residents.c.id.in_(resident_ids))).all()) if resident_ids else {}
    by_id = {line.invitation_id: line for line in lines}
    show_outbox = p.settings.development and p.settings.sms_gateway == "outbox"
    return _page(request, "one_time.html", "one_time", lines=lines, residents=names,
                 given=by_id.get(given or ""), revoked=by_id.get(revoked or ""),
                 outbox=_outbox(p) if show_outbox else None)


@router.post("/console/one-time/{invitation_id}/revoke", dependencies=[Depends(check_form_csrf)])
def revoke_one_time(request: Request, invitation_id: str, who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    try:
        revoke_access(p, who, invitation_id, "", pick_language(request))
    except Problem:
        return _not_found(request)
    return RedirectResponse(f"/console/one-time?revoked={invitation_id}", status_code=303)


# --- lost phone ---------------------------------------------------------------------------------


def _phones(p: Portner, query: str, device_id: str | None = None) -> list[Any]:
    d, a = t.devices, t.actors
    stmt = (
        select(d.c.id, d.c.status, d.c.registered_at, d.c.revoked_at, a.c.id.label("actor_id"),
               a.c.display_name, a.c.role)
        .join(a, a.c.id == d.c.actor_id)
        .where(a.c.municipality_id == p.municipality.id)
        .order_by(a.c.display_name, d.c.registered_at.desc(), d.c.id)
    )
    if device_id is not None:
        stmt = stmt.where(d.c.id == device_id)
    elif query:
        stmt = stmt.where(a.c.display_name.ilike(f"%{query}%"))
    with p.engine.connect() as conn:
        return list(conn.execute(stmt.limit(200)))


@router.get("/console/devices")
def devices_page(request: Request, q: str = Query("", max_length=100),
                 who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    query = " ".join(q.split())
    phones = _phones(p, query)
    staff: dict[str, dict[str, Any]] = {}
    for row in phones:
        staff.setdefault(row.actor_id, {"name": row.display_name, "role": row.role, "devices": []})["devices"].append(row)
    return _page(request, "devices.html", "devices", q=query, staff=list(staff.values()))


@router.get("/console/devices/{device_id}/revoke")
def confirm_revoke(request: Request, device_id: str, who: Principal = Depends(operator)) -> Response:
    phones = _phones(portner(request), "", device_id)
    if not phones:
        return _not_found(request, "console.devices.unknown")
    return _page(request, "revoke.html", "devices", phone=phones[0], result=None)


@router.post("/console/devices/{device_id}/revoke", dependencies=[Depends(check_form_csrf)])
def revoke_device_page(request: Request, device_id: str, who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    phones = _phones(p, "", device_id)
    if not phones:
        return _not_found(request, "console.devices.unknown")
    result = revoke_phone(p, who, device_id, "lost phone", pick_language(request))
    return _page(request, "revoke.html", "devices", phone=_phones(p, "", device_id)[0], result=result)


# --- physical keys ------------------------------------------------------------------------------


@router.get("/console/keys")
def keys_page(request: Request, day: str | None = Query(None, alias="date", max_length=10),
              who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    today = p.now().astimezone(_zone(p)).date()
    try:
        chosen = date.fromisoformat(day) if day else today
    except ValueError:
        chosen = today
    if not day_in_range(chosen):  # like a typo: today (near year 1 or 9999 day sums overflow)
        chosen = today
    return _page(request, "keys.html", "keys", day=chosen, visits=physical_keys_for(p, chosen))


# --- the one-time visitor's page ----------------------------------------------------------------


@router.get("/visit/{token}")
def visit_page(request: Request, token: str) -> Response:
    p = portner(request)
    view = find_invitation(p.engine, token, now=p.now()) if len(token) <= 200 else None
    lang = pick_language(request)
    if view is None:
        return render(request, "console/visit.html", {"view": None, "state": "invalid"}, status_code=404)
    doors = [{"id": d.id, "kind": d.kind.value,
              "words": translate(f"console.door.{d.kind.value}", lang)} for d in view.doors]
    reasons = {code: translate(f"console.reason.{code}", lang) for code in REASON_CODES}
    response = render(request, "console/visit.html", {"view": view, "state": view.state, "doors": doors,
                                                      "bridge_url": p.settings.bridge_url,
                                                      "reasons": reasons})
    # The link is a secret: keep it out of caches and out of the Referer of anything it loads.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
