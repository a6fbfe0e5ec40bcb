"""The response center's view of the lock fleet (/console/locks): open alarms, the slots Portner
will not touch until someone decides, and per lock, where each keypad code stands.

Same functions as the API (services.fleet), so the page and the API cannot disagree. Forms post with
the session's hidden CSRF field.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import RedirectResponse, Response

from portner.domain.access import AccountRole, Principal
from portner.services import fleet
from portner.services.remote_operation import Reason
from portner.web.api.common import awaited_once, valid_idempotency_key
from portner.web.api.fleet import RemoteUnlockOut, unlock_answer
from portner.web.deps import check_form_csrf, portner, require_page
from portner.web.i18n import pick_language, translate
from portner.web.problems import Problem
from portner.web.templating import render

router = APIRouter(include_in_schema=False)
operator = require_page(AccountRole.OPERATOR, AccountRole.ADMIN)


def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    return render(request, f"console/{template}", {"section": "locks", **context}, status_code=status_code)


def _not_found(request: Request) -> Response:
    return render(request, "error.html", {"message": translate("error.not_found", pick_language(request))},
                  status_code=404)


@router.get("/console/locks")
def fleet_page(request: Request, who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        alarms = fleet.open_alarms(conn, p.municipality.id)
        quarantine = fleet.quarantined_slots(conn, p.municipality.id)
        served = fleet.served_locks(conn, p.municipality.id)
    return _page(request, "locks.html", alarms=alarms, quarantine=quarantine, served=served)


@router.get("/console/locks/{lock_id}")
async def lock_page(request: Request, lock_id: str, who: Principal = Depends(operator)) -> Response:
    return await _lock_page(request, portner(request), lock_id)


@router.post("/console/locks/alarms/{alarm_id}/acknowledge", dependencies=[Depends(check_form_csrf)])
def acknowledge_page(request: Request, alarm_id: Annotated[int, Path(ge=1, le=2**62)], who: Principal = Depends(operator)) -> Response:
    p = portner(request)
    try:
        with p.engine.begin() as conn:
            fleet.acknowledge_alarm(conn, p.municipality.id, alarm_id, actor=who.audit_actor, now=p.now())
    except fleet.FleetError:
        return _not_found(request)
    return RedirectResponse("/console/locks", status_code=303)


@router.post("/console/locks/{lock_id}/quarantine/{slot}", dependencies=[Depends(check_form_csrf)])
async def resolve_page(request: Request, lock_id: str, slot: Annotated[int, Path(ge=1, le=100_000)], who: Principal = Depends(operator)) -> Response:
    form = await request.form()
    try:
        resolution = fleet.Resolution(str(form.get("resolution", "")))
    except ValueError:
        return _not_found(request)
    p = portner(request)
    try:
        with p.engine.begin() as conn:
            fleet.resolve_quarantine(conn, p.municipality.id, lock_id, slot, resolution,
                                     actor=who.audit_actor, now=p.now())
    except fleet.FleetError:
        return _not_found(request)
    return RedirectResponse(f"/console/locks/{lock_id}", status_code=303)


@router.post("/console/locks/{lock_id}/remote-unlock", dependencies=[Depends(check_form_csrf)])
async def remote_unlock_page(request: Request, lock_id: str, who: Principal = Depends(operator)) -> Response:
    form = await request.form()
    p = portner(request)
    try:
        reason = Reason(str(form.get("reason", "")))
    except ValueError:
        return await _lock_page(request, p, lock_id, status_code=400, remote_error="fleet.remote.choose_reason")
    # The form's attempt, made when the page was: a double click or a reload of the answer sends
    # it again and is answered with the first outcome instead of opening the door again.
    attempt = str(form.get("attempt", ""))
    if not valid_idempotency_key(attempt):
        return await _lock_page(request, p, lock_id, status_code=400, remote_error="fleet.remote.reload")
    try:
        _, answer, _ = await awaited_once(request, who, f"console:{attempt}",
                                          lambda: unlock_answer(p, who, lock_id, reason),
                                          body=reason.value.encode())
    except Problem as problem:
        if problem.status == 404:
            return _not_found(request)
        error = "fleet.remote.cannot" if problem.kind == "cannot-open-remotely" else "fleet.remote.busy"
        return await _lock_page(request, p, lock_id, status_code=409, remote_error=error)
    return await _lock_page(request, p, lock_id, remote=RemoteUnlockOut.model_validate_json(answer))


async def _lock_page(request: Request, p: Any, lock_id: str, status_code: int = 200, **extra: Any) -> Response:
    with p.engine.connect() as conn:
        if not fleet.lock_ids_of(conn, p.municipality.id, [lock_id]):
            return _not_found(request)
        codes = fleet.placements(conn, p.municipality.id, lock_id)
        alarms = fleet.open_alarms(conn, p.municipality.id, lock_id=lock_id)
        quarantine = fleet.quarantined_slots(conn, p.municipality.id, lock_id=lock_id)
    return _page(request, "lock.html", status_code, lock_id=lock_id, codes=codes, alarms=alarms,
                 quarantine=quarantine, reasons=[r.value for r in Reason], attempt=secrets.token_urlsafe(16),
                 **extra)
