"""The municipality administrator's app (/admin): residents and their door paths, locks, staff and
their phones, accounts, settings, import status and the quarantine.

Server-rendered forms with the session's CSRF token. A form that succeeds redirects (303) back
with a status message; one that is refused is shown again with the input kept and each error tied
to its field. Every change goes through services.administration (one transaction with its audit
entry). National ids never reach a page: quarantined text is shown masked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import and_, func, select
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from portner.domain.access import INTEGRATION_SCOPES, AccountRole, Principal
from portner.domain.model import DoorKind, ServiceModel
from portner.locks.registry import ADAPTERS
from portner.services import directory_queries as dq
from portner.services.accounts import DEV_ISSUER, list_accounts, sign_in_issuers
from portner.services.administration import (
    STAFF_ROLES,
    Administration,
    InvalidChange,
    NotFound,
    Refused,
    Taken,
)
from portner.services.revocation import publish_revocation_list
from portner.storage import tables as t
from portner.storage.repository import Repository
from portner.web.deps import check_form_csrf, portner, require_page
from portner.web.i18n import pick_language, translate
from portner.web.state import Portner
from portner.web.templating import render

router = APIRouter(prefix="/admin", include_in_schema=False)
admin_user = require_page(AccountRole.ADMIN)
Form = Depends(check_form_csrf)
MAX_UPLOAD = 1_000_000
LOW_BATTERY = 20.0
STALE_SYNC = timedelta(hours=48)
SECTIONS = [("admin.overview", "/admin"), ("admin.nav.residents", "/admin/residents"),
            ("admin.nav.locks", "/admin/locks"), ("admin.nav.staff", "/admin/staff"),
            ("admin.nav.accounts", "/admin/accounts"), ("admin.nav.settings", "/admin/settings"),
            ("admin.nav.imports", "/admin/imports"), ("admin.nav.quarantine", "/admin/quarantine")]
DONE = {"saved", "door_added", "door_moved", "door_removed", "lock_installed", "lock_removed", "staff_added",
        "device_revoked", "account_created", "account_disabled", "account_enabled", "corrected", "dismissed"}


BUTTON_FORMS = ("move-", "remove-", "unlock-", "toggle-")


class PageNotFound(Exception):
    """An id that is not this municipality's (or does not exist): a 404 page."""


def install(app: FastAPI, runtime: Portner) -> None:
    @app.exception_handler(PageNotFound)
    async def _not_found(request: Request, exc: PageNotFound) -> Response:
        return render(request, "error.html", {"message": translate("error.not_found", pick_language(request))},
                      status_code=404)


def _admin(request: Request, who: Principal) -> Administration:
    p = portner(request)
    return Administration(p.engine, p.municipality.id, who.audit_actor, p.now(), p.ids, account_id=who.account_id,
                          issuers=sign_in_issuers(p.settings.oidc_issuer, development=p.settings.development))


def _page(request: Request, template: str, context: dict[str, Any], *, status_code: int = 200) -> Response:
    done = request.query_params.get("done")
    base = {"sections": SECTIONS, "done": done if done in DONE else None, "errors": {}, "values": {},
            "page_error": None}
    return render(request, f"admin/{template}", {**base, **context}, status_code=status_code)


def _error_text(request: Request, exc: InvalidChange | Refused) -> str:
    lang = pick_language(request)
    params = getattr(exc, "params", {}) or {"detail": str(exc)}
    key = f"admin.err.{exc.code}"
    text = translate(key, lang, **params) if exc.code else key
    return str(exc) if text == key else text


async def _submit(request: Request, who: Principal, change: Callable[[Administration, FormData], Any],
                  back: str, done: str, again: Callable[..., Response]) -> Response:
    """Run a form's change; redirect with a status message, or show the form again with errors."""
    form = await request.form()
    try:
        await run_in_threadpool(change, _admin(request, who), form)
    except NotFound:
        raise PageNotFound() from None
    except InvalidChange as exc:
        if str(form.get("form", "")).startswith(BUTTON_FORMS):  # no field to point at
            return await run_in_threadpool(again, page_error=_error_text(request, exc), status_code=422)
        errors = {exc.field: _error_text(request, exc)}
        return await run_in_threadpool(again, errors=errors, values=dict(form), status_code=422)
    except Taken as exc:  # a value another record holds: said next to its field
        return await run_in_threadpool(again, errors={exc.field: _error_text(request, exc)}, values=dict(form),
                                       status_code=409)
    except Refused as exc:
        return await run_in_threadpool(again, page_error=_error_text(request, exc), values=dict(form),
                                       status_code=409)
    sep = "&" if "?" in back else "?"
    return RedirectResponse(f"{back}{sep}done={done}", status_code=303)


def _int(form: FormData, name: str) -> int | str:
    """A number field as an int when it is one (else the text, which the service refuses by name)."""
    value = str(form.get(name, "")).strip()
    try:
        return int(value)
    except ValueError:
        return value


def _float(form: FormData, name: str) -> float | str:
    value = str(form.get(name, "")).strip().replace(",", ".")
    try:
        return float(value)
    except ValueError:
        return value


# -- overview -----------------------------------------------------------------------------------

def _counts(p: Portner) -> dict[str, int]:
    mid = p.municipality.id
    in_m = t.residents.c.municipality_id == mid
    with p.engine.connect() as conn:
        def count(stmt: Any) -> int:
            return int(conn.execute(stmt).scalar() or 0)
        locks = select(func.count()).select_from(t.doors).join(t.homes, t.homes.c.id == t.doors.c.home_id).join(
            t.residents, t.residents.c.id == t.homes.c.resident_id).where(in_m, t.doors.c.lock_id.is_not(None))
        return {
            "residents": count(select(func.count()).select_from(t.residents).where(in_m)),
            "no_elock": count(select(func.count()).select_from(t.homes).join(
                t.residents, t.residents.c.id == t.homes.c.resident_id).where(in_m, t.homes.c.elock_system.is_(None))),
            "locks": count(locks),
            "locks_attention": sum(1 for lock in _locks(conn, mid, p.now()) if lock["attention"]),
            "staff": count(select(func.count()).select_from(t.actors).where(
                t.actors.c.municipality_id == mid, t.actors.c.role != "relative", t.actors.c.active.is_(True))),
            "accounts": count(select(func.count()).select_from(t.accounts).where(t.accounts.c.municipality_id == mid)),
            "quarantine": count(select(func.count()).select_from(t.quarantine).where(
                t.quarantine.c.municipality_id == mid, t.quarantine.c.resolved_at.is_(None))),
            "plans": count(select(func.count()).select_from(t.visit_plans).where(t.visit_plans.c.municipality_id == mid)),
        }


@router.get("")
def overview(request: Request, who: Principal = Depends(admin_user)) -> Response:
    links = {"residents": "/admin/residents", "no_elock": "/admin/residents", "locks": "/admin/locks",
             "locks_attention": "/admin/locks", "staff": "/admin/staff", "accounts": "/admin/accounts",
             "quarantine": "/admin/quarantine", "plans": "/admin/imports"}
    return _page(request, "overview.html", {"counts": _counts(portner(request)), "links": links})


# -- residents, homes, doors, locks -------------------------------------------------------------

@router.get("/residents")
def residents(request: Request, q: str = "", who: Principal = Depends(admin_user)) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        # Name search folds Æ, Ø and Å too (directory_queries compares in Python).
        named = dq.residents_named(conn, p.municipality.id, q[:100]) if q.strip() else None
        rows = conn.execute(dq.residents_select(p.municipality.id, named).limit(101)).all()
    return _page(request, "residents.html", {"rows": rows[:100], "more": len(rows) > 100, "q": q[:100]})


def _lock_row(r: Any, now: datetime) -> dict[str, Any]:
    """A lock's health; it needs attention with a gap or fork in its log, a low battery, or no
    sync for two days (a lock that has never synced is new, not stale)."""
    battery = r.battery_percent
    stale = r.last_sync_at is not None and now - r.last_sync_at > STALE_SYNC
    attention = bool(r.anomalies) or (battery is not None and battery < LOW_BATTERY) or stale
    return {"id": r.lock_id, "model": r.model or "", "backend": r.backend, "lock_address": r.lock_address,
            "battery": battery, "low": battery is not None and battery < LOW_BATTERY,
            "last_sync": r.last_sync_at, "stale": stale, "anomalies": int(r.anomalies or 0), "attention": attention}


def _anomaly_counts() -> Any:
    return (select(t.lock_log_anomalies.c.lock_id, func.count().label("n"))
            .group_by(t.lock_log_anomalies.c.lock_id).subquery("anomalies"))


def _doors(conn: Any, home_id: str, now: datetime) -> list[dict[str, Any]]:
    """The home's doors, street first, with the lock now on each (doors.lock_id: a removed lock is
    not on the door any more, even though its row and log stay)."""
    anomalies = _anomaly_counts()
    rows = conn.execute(
        select(t.doors.c.id, t.doors.c.position, t.doors.c.kind, t.doors.c.lock_id, t.locks.c.model,
               t.locks.c.backend, t.locks.c.address.label("lock_address"), t.locks.c.battery_percent,
               t.locks.c.last_sync_at, func.coalesce(anomalies.c.n, 0).label("anomalies"))
        .outerjoin(t.locks, t.locks.c.id == t.doors.c.lock_id)
        .outerjoin(anomalies, anomalies.c.lock_id == t.doors.c.lock_id)
        .where(t.doors.c.home_id == home_id).order_by(t.doors.c.position)).all()
    return [{"id": r.id, "place": i + 1, "kind": r.kind, "lock": _lock_row(r, now) if r.lock_id else None}
            for i, r in enumerate(rows)]


def _resident_page(request: Request, resident_id: str, *, errors: dict[str, str] | None = None,
                   values: dict[str, Any] | None = None, page_error: str | None = None,
                   status_code: int = 200) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        resident = dq.resident(conn, p.municipality.id, resident_id)
        if resident is None:
            raise PageNotFound()
        current_zone = conn.execute(select(t.residents.c.zone_id).where(t.residents.c.id == resident_id)).scalar()
        zones = conn.execute(select(t.zones.c.id, t.zones.c.path).where(
            t.zones.c.municipality_id == p.municipality.id).order_by(t.zones.c.path)).all()
        homes = [{**h, "doors": _doors(conn, h["id"], p.now())} for h in dq.homes_of_resident(conn, p.municipality.id, resident_id)]
    return _page(request, "resident.html", {
        "resident": resident, "zone_id": current_zone, "zones": zones, "homes": homes, "kinds": list(DoorKind),
        "backends": list(ADAPTERS),
        "errors": errors or {}, "values": values or {}, "page_error": page_error}, status_code=status_code)


@router.get("/residents/{resident_id}")
def resident_page(request: Request, resident_id: str, who: Principal = Depends(admin_user)) -> Response:
    return _resident_page(request, resident_id)


def _home_resident(request: Request, *, home_id: str | None = None, door_id: str | None = None,
                   lock_id: str | None = None) -> str:
    """The resident whose page a home, door or lock form goes back to."""
    p = portner(request)
    with p.engine.connect() as conn:
        if lock_id is not None:
            door_id = conn.execute(select(t.doors.c.id).where(t.doors.c.lock_id == lock_id)).scalar()
        if door_id is not None:
            home_id = conn.execute(select(t.doors.c.home_id).where(t.doors.c.id == door_id)).scalar()
        found = dq.home(conn, p.municipality.id, home_id) if home_id else None
    if found is None:
        raise PageNotFound()
    return str(found["resident_id"])


def _resident_form(request: Request, who: Principal, resident_id: str, change: Callable[[Administration, FormData], Any],
                   done: str) -> Any:
    def again(**kw: Any) -> Response:
        return _resident_page(request, resident_id, **kw)
    return _submit(request, who, change, f"/admin/residents/{resident_id}", done, again)


@router.post("/residents/{resident_id}", dependencies=[Form])
async def edit_resident(request: Request, resident_id: str, who: Principal = Depends(admin_user)) -> Response:
    def change(a: Administration, f: FormData) -> None:
        a.update_resident(resident_id, {"display_name": str(f.get("display_name", "")),
                                        "zone_id": str(f.get("zone_id") or "") or None})
    return await _resident_form(request, who, resident_id, change, "saved")


@router.post("/homes/{home_id}", dependencies=[Form])
async def edit_home(request: Request, home_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, home_id=home_id)

    def change(a: Administration, f: FormData) -> None:
        a.update_home(home_id, {"address": str(f.get("address", "")), "elock_system": str(f.get("elock_system", ""))})
    return await _resident_form(request, who, resident_id, change, "saved")


@router.post("/homes/{home_id}/doors", dependencies=[Form])
async def add_door(request: Request, home_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, home_id=home_id)

    def change(a: Administration, f: FormData) -> None:
        a.add_door(home_id, str(f.get("kind", "")), _int(f, "position"))  # type: ignore[arg-type]
    return await _resident_form(request, who, resident_id, change, "door_added")


@router.post("/doors/{door_id}/move", dependencies=[Form])
async def move_door(request: Request, door_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, door_id=door_id)

    def change(a: Administration, f: FormData) -> None:
        a.update_door(door_id, {"position": _int(f, "position")})
    return await _resident_form(request, who, resident_id, change, "door_moved")


@router.post("/doors/{door_id}/remove", dependencies=[Form])
async def remove_door(request: Request, door_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, door_id=door_id)
    return await _resident_form(request, who, resident_id, lambda a, f: a.remove_door(door_id), "door_removed")


@router.post("/doors/{door_id}/lock", dependencies=[Form])
async def install_lock(request: Request, door_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, door_id=door_id)

    def change(a: Administration, f: FormData) -> None:
        # No backend sent: the simulated lock, as the API's default.
        a.install_lock(door_id, str(f.get("backend") or "simulated"), str(f.get("model", "")),
                       address=str(f.get("address", "")).strip() or None)
    return await _resident_form(request, who, resident_id, change, "lock_installed")


@router.post("/locks/{lock_id}/remove", dependencies=[Form])
async def remove_lock(request: Request, lock_id: str, who: Principal = Depends(admin_user)) -> Response:
    resident_id = await run_in_threadpool(_home_resident, request, lock_id=lock_id)
    return await _resident_form(request, who, resident_id, lambda a, f: a.remove_lock(lock_id), "lock_removed")


def _locks(conn: Any, mid: str, now: datetime) -> list[dict[str, Any]]:
    anomalies = _anomaly_counts()
    rows = conn.execute(
        select(t.doors.c.lock_id, t.doors.c.kind, t.locks.c.model, t.locks.c.backend,
               t.locks.c.address.label("lock_address"), t.locks.c.battery_percent, t.locks.c.last_sync_at,
               func.coalesce(anomalies.c.n, 0).label("anomalies"), t.residents.c.id.label("resident_id"),
               t.residents.c.display_name, t.homes.c.address)
        .join(t.locks, t.locks.c.id == t.doors.c.lock_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, and_(t.residents.c.id == t.homes.c.resident_id, t.residents.c.municipality_id == mid))
        .outerjoin(anomalies, anomalies.c.lock_id == t.doors.c.lock_id)).all()
    out = [{**_lock_row(r, now), "kind": r.kind, "resident_id": r.resident_id, "resident": r.display_name,
            "address": r.address} for r in rows]
    return sorted(out, key=lambda lock: (not lock["attention"], -lock["anomalies"],
                                         lock["battery"] if lock["battery"] is not None else 101, lock["id"]))


@router.get("/locks")
def locks(request: Request, who: Principal = Depends(admin_user)) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        rows = _locks(conn, p.municipality.id, p.now())
    return _page(request, "locks.html", {"rows": rows})


# -- staff and devices --------------------------------------------------------------------------

def _staff_page(request: Request, **kw: Any) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        rows = conn.execute(dq.staff_select(p.municipality.id, exclude_roles=["relative"])).all()
        phones = dict(conn.execute(select(t.devices.c.actor_id, func.count()).where(
            t.devices.c.status == "active").group_by(t.devices.c.actor_id)).all())
    status_code = kw.pop("status_code", 200)
    return _page(request, "staff.html", {"rows": rows, "phones": phones, "roles": sorted(STAFF_ROLES), **kw},
                 status_code=status_code)


@router.get("/staff")
def staff(request: Request, who: Principal = Depends(admin_user)) -> Response:
    return _staff_page(request)


@router.post("/staff", dependencies=[Form])
async def add_staff(request: Request, who: Principal = Depends(admin_user)) -> Response:
    def change(a: Administration, f: FormData) -> None:
        a.add_staff(str(f.get("display_name", "")), str(f.get("role", "")), str(f.get("organisation", "")),
                    hpr_number=str(f.get("hpr_number", "")).strip() or None,
                    her_id=str(f.get("her_id", "")).strip() or None)
    return await _submit(request, who, change, "/admin/staff", "staff_added", lambda **kw: _staff_page(request, **kw))


def _member_page(request: Request, actor_id: str, **kw: Any) -> Response:
    p = portner(request)
    member = None
    with p.engine.connect() as conn:
        member = dq.staff_member(conn, p.municipality.id, actor_id)
    if member is None or member["role"] == "relative":
        raise PageNotFound()
    devices = _admin(request, page_who(request)).devices_of(actor_id)
    status_code = kw.pop("status_code", 200)
    return _page(request, "staff_member.html", {"member": member, "devices": devices, "roles": sorted(STAFF_ROLES),
                                                **kw}, status_code=status_code)


def page_who(request: Request) -> Principal:
    return request.state.principal  # type: ignore[no-any-return]  # set by the page dependency


@router.get("/staff/{actor_id}")
def staff_member(request: Request, actor_id: str, who: Principal = Depends(admin_user)) -> Response:
    return _member_page(request, actor_id)


@router.post("/staff/{actor_id}", dependencies=[Form])
async def edit_staff(request: Request, actor_id: str, who: Principal = Depends(admin_user)) -> Response:
    def change(a: Administration, f: FormData) -> None:
        if "active" in f:
            a.update_staff(actor_id, {"active": f.get("active") == "true"})
        else:
            a.update_staff(actor_id, {name: str(f.get(name, "")) for name in ("display_name", "organisation", "role")})
    back = str((await request.form()).get("back", ""))
    target = "/admin/staff" if back == "list" else f"/admin/staff/{actor_id}"
    return await _submit(request, who, change, target, "saved", lambda **kw: _member_page(request, actor_id, **kw))


@router.post("/devices/{device_id}/revoke", dependencies=[Form])
async def revoke_device(request: Request, device_id: str, who: Principal = Depends(admin_user)) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        owner = conn.execute(select(t.devices.c.actor_id).where(t.devices.c.id == device_id)).scalar()
    if owner is None:
        raise PageNotFound()

    def change(a: Administration, f: FormData) -> None:
        a.revoke_device(device_id, str(f.get("reason", "")))
        # Offline locks learn of the phone from the next signed revocation list.
        publish_revocation_list(p.engine, p.secrets.issuer, p.municipality.id, now=a.now, by=a.by)
    return await _submit(request, who, change, f"/admin/staff/{owner}", "device_revoked",
                         lambda **kw: _member_page(request, str(owner), **kw))


# -- accounts -----------------------------------------------------------------------------------

def _accounts_page(request: Request, **kw: Any) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        accounts = list_accounts(conn, p.municipality.id)
    issuer = p.settings.oidc_issuer or (DEV_ISSUER if p.settings.development else "")
    status_code = kw.pop("status_code", 200)
    return _page(request, "accounts.html", {
        "accounts": accounts, "roles": list(AccountRole), "scopes": sorted(INTEGRATION_SCOPES),
        "default_issuer": issuer, "me": page_who(request).account_id, **kw}, status_code=status_code)


@router.get("/accounts")
def accounts(request: Request, who: Principal = Depends(admin_user)) -> Response:
    return _accounts_page(request)


@router.post("/accounts", dependencies=[Form])
async def create_account(request: Request, who: Principal = Depends(admin_user)) -> Response:
    def change(a: Administration, f: FormData) -> None:
        a.create_account(role=str(f.get("role", "")), issuer=str(f.get("issuer", "")),
                         subject=str(f.get("subject", "")), actor_id=str(f.get("actor_id", "")).strip() or None,
                         resident_id=str(f.get("resident_id", "")).strip() or None,
                         display_name=str(f.get("display_name", "")), scopes=[str(s) for s in f.getlist("scopes")])
    return await _submit(request, who, change, "/admin/accounts", "account_created",
                         lambda **kw: _accounts_page(request, **kw))


@router.post("/accounts/{account_id}/{action}", dependencies=[Form])
async def toggle_account(request: Request, account_id: str, action: str,
                         who: Principal = Depends(admin_user)) -> Response:
    if action not in ("disable", "enable"):
        raise PageNotFound()
    disabled = action == "disable"
    return await _submit(request, who, lambda a, f: a.set_account_disabled(account_id, disabled), "/admin/accounts",
                         f"account_{action}d", lambda **kw: _accounts_page(request, **kw))


# -- settings -----------------------------------------------------------------------------------

def _settings_page(request: Request, **kw: Any) -> Response:
    p = portner(request)
    with p.engine.connect() as conn:
        m = Repository(conn).get_municipality(p.municipality.id)
    status_code = kw.pop("status_code", 200)
    return _page(request, "settings.html", {"m": m, "models": list(ServiceModel), **kw}, status_code=status_code)


@router.get("/settings")
def settings(request: Request, who: Principal = Depends(admin_user)) -> Response:
    return _settings_page(request)


@router.post("/settings", dependencies=[Form])
async def save_settings(request: Request, who: Principal = Depends(admin_user)) -> Response:
    p = portner(request)

    def change(a: Administration, f: FormData) -> None:
        a.update_municipality({"service_model": str(f.get("service_model", "")),
                               "lead_minutes": _int(f, "lead_minutes"), "grace_minutes": _int(f, "grace_minutes"),
                               "baseline_key_minutes_per_shift": _float(f, "baseline_key_minutes_per_shift")})
        with p.engine.connect() as conn:
            p.municipality = Repository(conn).get_municipality(p.municipality.id) or p.municipality
    return await _submit(request, who, change, "/admin/settings", "saved", lambda **kw: _settings_page(request, **kw))


# -- imports and quarantine ---------------------------------------------------------------------

@router.get("/imports")
def imports(request: Request, who: Principal = Depends(admin_user)) -> Response:
    rows = sorted(_admin(request, who).import_status(), key=lambda r: (r["imported_at"], r["plan_key"]), reverse=True)
    return _page(request, "imports.html", {"rows": rows})


@router.get("/quarantine")
def quarantine(request: Request, who: Principal = Depends(admin_user)) -> Response:
    return _page(request, "quarantine.html", {"entries": _admin(request, who).quarantine()})


def _pretty(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw


def _entry_page(request: Request, entry_id: int, **kw: Any) -> Response:
    try:
        entry = _admin(request, page_who(request)).quarantine_entry(entry_id)
    except NotFound:
        raise PageNotFound() from None
    status_code = kw.pop("status_code", 200)
    return _page(request, "entry.html", {"entry": entry, "raw": _pretty(entry.raw_masked), **kw},
                 status_code=status_code)


@router.get("/quarantine/{entry_id}")
def entry(request: Request, entry_id: int, who: Principal = Depends(admin_user)) -> Response:
    return _entry_page(request, entry_id)


async def _correction_text(form: FormData) -> str | InvalidChange:
    """The pasted text, or the uploaded file's (which wins when one was chosen)."""
    upload = form.get("file")
    data = b""
    if isinstance(upload, UploadFile):
        try:
            data = await upload.read(MAX_UPLOAD + 1) if upload.filename else b""
        finally:
            await upload.close()
    if not data:
        return str(form.get("resource", ""))
    if len(data) > MAX_UPLOAD:
        return InvalidChange("resource", "file too big", "file_too_big")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return InvalidChange("resource", "not UTF-8", "not_utf8")


@router.post("/quarantine/{entry_id}/correct", dependencies=[Form])
async def correct(request: Request, entry_id: int, who: Principal = Depends(admin_user)) -> Response:
    text = await _correction_text(await request.form())
    outcome: dict[str, Any] = {}

    def change(a: Administration, f: FormData) -> None:
        if isinstance(text, InvalidChange):
            raise text
        outcome["result"] = a.correct_quarantine(entry_id, text)

    def again(**kw: Any) -> Response:
        return _entry_page(request, entry_id, **kw)
    answer = await _submit(request, who, change, "/admin/quarantine", "corrected", again)
    result = outcome.get("result")
    if result is not None and not result.resolved:
        return await run_in_threadpool(again, still_bad=result.problems, values={"form": "correct", "resource": text})
    return answer


@router.post("/quarantine/{entry_id}/dismiss", dependencies=[Form])
async def dismiss(request: Request, entry_id: int, who: Principal = Depends(admin_user)) -> Response:
    return await _submit(request, who, lambda a, f: a.dismiss_quarantine(entry_id, str(f.get("reason", ""))),
                         "/admin/quarantine", "dismissed", lambda **kw: _entry_page(request, entry_id, **kw))
