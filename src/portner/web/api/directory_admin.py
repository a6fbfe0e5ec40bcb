"""The administrator's write API: settings, residents, homes and door paths, locks, staff,
accounts, import status and the quarantine (admin role only; integrations never).

Updates are conditional: PATCH and DELETE need If-Match with the ETag of the resource's GET
(web/api/directory.py builds the same representations from services.directory_queries, and
both use common.etag_for), checked in the transaction that makes the change. POSTs honour
Idempotency-Key: the change, its audit entry and the remembered answer commit together.
Refusals are problem details naming the field (`body/<field>`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Connection

from portner.domain.access import AccountRole, Principal
from portner.domain.model import DoorKind, Role, ServiceModel
from portner.locks.registry import ADAPTERS
from portner.services import directory_queries as dq
from portner.services.accounts import get_account, sign_in_issuers
from portner.services.administration import (
    Administration,
    InTransaction,
    InvalidChange,
    NotFound,
    QuarantineEntry,
    Refused,
    Taken,
)
from portner.storage.repository import Repository
from portner.web.api.common import (
    NO_CONTROL,
    AccountOut,
    DoorOut,
    HomeOut,
    IdempotencyKeyHeader,
    IfMatchHeader,
    LockOut,
    MultilineText,
    MunicipalityOut,
    Page,
    PageParams,
    ResidentOut,
    StaffOut,
    Text,
    etag_for,
    idempotent,
    municipality_out,
    page_params,
    paginate,
    require_if_match,
)
from portner.web.deps import portner, require
from portner.web.problems import Problem, field_problem, not_found

router = APIRouter(tags=["administration"])
Id = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]
AdminOnly = Annotated[Principal, Depends(require(AccountRole.ADMIN))]
UPDATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"headers": {"ETag": {"description": "The new version.", "schema": {"type": "string"}}}},
    412: {"description": "If-Match names an older version: GET again."},
    428: {"description": "If-Match is missing."},
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MunicipalityPatch(_Body):
    service_model: ServiceModel | None = None
    lead_minutes: int | None = Field(None, ge=0, le=120, description="Door opens this long before a visit.")
    grace_minutes: int | None = Field(None, ge=0, le=240, description="Door still opens this long after.")
    baseline_key_minutes_per_shift: float | None = Field(None, ge=0, le=600)


class ResidentPatch(_Body):
    display_name: Text | None = Field(None, min_length=1, max_length=200)
    zone_id: Text | None = Field(None, max_length=64, description="An existing zone's id; null clears it.")


class HomePatch(_Body):
    address: Text | None = Field(None, max_length=400)
    elock_system: Text | None = Field(None, max_length=200, description="null: no e-lock (physical key).")


class DoorIn(_Body):
    kind: DoorKind
    position: int | None = Field(None, ge=1, le=16, description="Place on the path, 1 = street; default last.")


class DoorPatch(_Body):
    kind: DoorKind | None = None
    position: int | None = Field(None, ge=1, le=16, description="Move to this place (1 = street).")


# The registry's adapter names, so that the document lists what a deployment can serve.
LockBackendName = Literal[tuple(sorted(ADAPTERS))]  # type: ignore[valid-type]
LockAddress = Annotated[Text, Field(min_length=1, max_length=200)]


class LockIn(_Body):
    backend: LockBackendName = Field("simulated", description="The adapter that serves the lock.")
    model: Text = Field("", max_length=200)
    address: LockAddress | None = Field(
        None, description="How the backend finds the lock: a Zigbee2MQTT friendly name, a Matter \"node\" or "
                    "\"node/endpoint\", a Nuki smartlock id. Required for every backend but simulated; "
                    "unique among the backend's mounted locks (409 otherwise).")
    enforcement: Literal["lock", "server"] | None = Field(
        None, description="Where keypad code windows are kept: the lock's own schedules, or the server "
                          "adding and removing codes. Null: chosen from the lock's capabilities.")


class StaffIn(_Body):
    display_name: Text = Field(min_length=1, max_length=200)
    role: Role
    organisation: Text = Field(min_length=1, max_length=200)
    hpr_number: str | None = Field(None, pattern=r"^[0-9]{1,32}$", description="Lets plans name them.")
    her_id: str | None = Field(None, pattern=r"^[0-9]{1,32}$")


class StaffPatch(_Body):
    display_name: Text | None = Field(None, min_length=1, max_length=200)
    organisation: Text | None = Field(None, min_length=1, max_length=200)
    role: Role | None = None
    active: bool | None = None


class AccountIn(_Body):
    role: AccountRole
    issuer: Text = Field(min_length=1, max_length=300, description="The OpenID provider's issuer.")
    subject: Text = Field(min_length=1, max_length=200, description="The person's subject at that provider.")
    actor_id: Text | None = Field(None, max_length=64)
    resident_id: Text | None = Field(None, max_length=64)
    display_name: Text = Field("", max_length=200)
    scopes: list[str] = Field(default_factory=list, max_length=10)


class CorrectionIn(_Body):
    resource: MultilineText = Field(min_length=1, max_length=1_000_000,
                          description="The corrected FHIR resource as JSON or XML text.")


class DismissIn(_Body):
    reason: Text = Field(min_length=1, max_length=400)


class QuarantineOut(BaseModel):
    id: int
    file: str
    resource: str
    field: str
    message: str
    severity: str
    created_at: datetime
    resolved_at: datetime | None = None
    raw: str | None = Field(None, description="The entry as read, national ids masked.")


class FieldProblemOut(BaseModel):
    field: str
    message: str


class CorrectionOut(BaseModel):
    resolved: bool
    resolved_ids: list[int]
    problems: list[FieldProblemOut]
    visits_added: int
    visits_moved: int
    visits_cancelled: int
    grants_created: int
    grants_revoked: int


class ImportOut(BaseModel):
    plan_key: str
    source_file: str
    version: str | None = None
    imported_at: datetime
    visits: int


def _admin(request: Request, who: Principal, conn: Connection | None = None) -> Administration:
    p = portner(request)
    return Administration(InTransaction(conn) if conn is not None else p.engine, p.municipality.id,
                          who.audit_actor, p.now(), p.ids, account_id=who.account_id,
                          issuers=sign_in_issuers(p.settings.oidc_issuer, development=p.settings.development))


@contextmanager
def _refusals() -> Iterator[None]:
    """The service's refusals as problem details."""
    try:
        yield
    except InvalidChange as exc:
        raise field_problem(f"body/{exc.field}", exc.message) from None
    except NotFound as exc:
        raise not_found(str(exc)) from None
    except Taken as exc:
        raise field_problem(f"body/{exc.field}", str(exc), status=409) from None
    except Refused as exc:
        raise Problem(409, "Refused", str(exc), kind="refused") from None


def _changes(body: BaseModel) -> dict[str, Any]:
    changes = body.model_dump(mode="json", exclude_unset=True)
    if not changes:
        raise field_problem("body", "name at least one field to change")
    return changes


def _found(value: Any, what: str) -> Any:
    if value is None:
        raise not_found(what)
    return value


def _answer(response: Response, model: BaseModel) -> BaseModel:
    response.headers["ETag"] = etag_for(model)
    return model


# -- municipality -------------------------------------------------------------------------------

@router.patch("/municipalities/current", response_model=MunicipalityOut, responses=UPDATE_RESPONSES,
              summary="Change the municipality's settings (admin)", tags=["municipality"])
def patch_municipality(request: Request, response: Response, body: MunicipalityPatch, who: AdminOnly,
                       if_match: IfMatchHeader = None) -> Any:
    """Change the municipality's service model, how early and how late a visit's door opens, or
    the baseline minutes spent on physical keys; send only the fields to change. Administrators
    only, with If-Match set to the ETag of GET /municipalities/current (428 without, 412 when
    stale). The change is audited and the answer carries the new ETag."""
    p = portner(request)
    with p.engine.begin() as conn:
        repo = Repository(conn)
        require_if_match(request, etag_for(municipality_out(repo.get_municipality(p.municipality.id))))
        with _refusals():
            _admin(request, who, conn).update_municipality(_changes(body))
        updated = repo.get_municipality(p.municipality.id)
    assert updated is not None
    p.municipality = updated  # the running server's imports and pages use the new windows
    return _answer(response, municipality_out(updated))


# -- residents and homes ------------------------------------------------------------------------

@router.patch("/residents/{resident_id}", response_model=ResidentOut, responses=UPDATE_RESPONSES,
              summary="Change a resident's name or zone (admin; the next import may overwrite)")
def patch_resident(request: Request, response: Response, resident_id: Id, body: ResidentPatch,
                   who: AdminOnly, if_match: IfMatchHeader = None) -> Any:
    """Change a resident's display name or zone; the next plan import may overwrite it.
    Administrators only, with If-Match set to the ETag of GET /residents/{resident_id} (428
    without, 412 when stale). Audited (which fields changed, never their values); the answer
    carries the new ETag."""
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        current = _found(dq.resident(conn, mid, resident_id), f"no resident {resident_id}")
        require_if_match(request, etag_for(ResidentOut(**current)))
        with _refusals():
            _admin(request, who, conn).update_resident(resident_id, _changes(body))
        return _answer(response, ResidentOut(**dq.resident(conn, mid, resident_id)))  # type: ignore[arg-type]


@router.patch("/homes/{home_id}", response_model=HomeOut, responses=UPDATE_RESPONSES,
              summary="Change a home's address or e-lock system (admin)")
def patch_home(request: Request, response: Response, home_id: Id, body: HomePatch, who: AdminOnly,
               if_match: IfMatchHeader = None) -> Any:
    """Change a home's address or e-lock system (null: no e-lock, a physical key is used);
    switching between the two updates the coming visits' grants. Administrators only, with
    If-Match set to the ETag of GET /homes/{home_id} (428 without, 412 when stale). Audited; the
    answer carries the new ETag."""
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        current = _found(dq.home(conn, mid, home_id), f"no home {home_id}")
        require_if_match(request, etag_for(HomeOut(**current)))
        with _refusals():
            _admin(request, who, conn).update_home(home_id, _changes(body))
        return _answer(response, HomeOut(**dq.home(conn, mid, home_id)))  # type: ignore[arg-type]


# -- door paths and locks -----------------------------------------------------------------------

def _door_out(conn: Connection, mid: str, door_id: str) -> DoorOut:
    found = _found(dq.door(conn, mid, door_id), f"no door {door_id}")
    return DoorOut(**found[1])


@router.post("/homes/{home_id}/doors", response_model=DoorOut, status_code=201,
             summary="Add a door to a home's path (admin)")
async def add_door(request: Request, home_id: Id, body: DoorIn, who: AdminOnly,
                   idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Add a door to a home's path at `position` (1 = street), or last when left out.
    Administrators only; send an Idempotency-Key so that a retry does not add a second door.
    Audited."""
    mid = portner(request).municipality.id

    def handler(conn: Connection) -> DoorOut:
        with _refusals():
            door_id = _admin(request, who, conn).add_door(home_id, body.kind.value, body.position)
        return _door_out(conn, mid, door_id)

    return await idempotent(request, who, handler, status_code=201)


@router.patch("/doors/{door_id}", response_model=DoorOut, responses=UPDATE_RESPONSES,
              summary="Change a door's kind or move it on the path (admin)")
def patch_door(request: Request, response: Response, door_id: Id, body: DoorPatch, who: AdminOnly,
               if_match: IfMatchHeader = None) -> Any:
    """Change a door's kind, or move it to another place on its home's path (1 = street).
    Administrators only, with If-Match set to the ETag of GET /doors/{door_id} (428 without, 412
    when stale). Audited; the answer carries the new ETag."""
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        require_if_match(request, etag_for(_door_out(conn, mid, door_id)))
        with _refusals():
            _admin(request, who, conn).update_door(door_id, _changes(body))
        return _answer(response, _door_out(conn, mid, door_id))


@router.delete("/doors/{door_id}", status_code=204, responses={412: {}, 428: {}, 409: {}},
               summary="Remove a door that has no lock (admin)")
def delete_door(request: Request, door_id: Id, who: AdminOnly, if_match: IfMatchHeader = None) -> Response:
    """Remove a door from its home's path; the doors behind it move up. Administrators only,
    with If-Match set to the door's ETag; audited. Refused (409) while the door has a lock, for
    the last door of a home with an e-lock, and for a door a removed lock's event log names."""
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        require_if_match(request, etag_for(_door_out(conn, mid, door_id)))
        with _refusals():
            _admin(request, who, conn).remove_door(door_id)
    return Response(status_code=204)


@router.post("/doors/{door_id}/lock", response_model=LockOut, status_code=201,
             responses={409: {"description": "The door has a lock, or another mounted lock of the backend "
                                             "has this address (errors name body/address)."}},
             summary="Install a lock on a door (admin); coming visits get keys for it")
async def install_lock(request: Request, door_id: Id, body: LockIn, who: AdminOnly,
                       idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Mount a lock on a door that has none: its backend, model, address (how the backend finds
    it) and where keypad code windows are kept. Administrators only; send an Idempotency-Key so
    that a retry does not fail on the lock it installed. Audited; the coming visits' grants are
    brought up to date to open it, and a door with a lock or an address in use is a 409."""
    mid = portner(request).municipality.id

    def handler(conn: Connection) -> LockOut:
        with _refusals():
            lock_id = _admin(request, who, conn).install_lock(door_id, body.backend, body.model,
                                                              address=body.address, enforcement=body.enforcement)
        return LockOut(**dq.lock(conn, mid, lock_id))  # type: ignore[arg-type]

    return await idempotent(request, who, handler, status_code=201)


@router.delete("/locks/{lock_id}", status_code=204, responses={412: {}, 428: {}},
               summary="Remove a lock; the door stays, and so does the lock's event log (admin)",
               description="Take a lock off its door. A lock with history keeps its row, marked removed "
                           "(removed_at), and its address may then be given to a lock installed "
                           "elsewhere; keypad codes meant for it are withdrawn. Administrators only, with "
                           "If-Match set to the ETag of GET /locks/{lock_id} (428 without, 412 when "
                           "stale); audited.")
def delete_lock(request: Request, lock_id: Id, who: AdminOnly, if_match: IfMatchHeader = None) -> Response:
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        current = _found(dq.lock(conn, mid, lock_id), f"no lock {lock_id}")
        require_if_match(request, etag_for(LockOut(**current)))
        with _refusals():
            _admin(request, who, conn).remove_lock(lock_id)
    return Response(status_code=204)


# -- staff and accounts -------------------------------------------------------------------------

@router.post("/staff", response_model=StaffOut, status_code=201, summary="Add a staff member (admin)")
async def add_staff(request: Request, body: StaffIn, who: AdminOnly,
                    idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Add a person who may be given door access: display name, role, organisation, and the HPR
    number or HER id by which visit plans name them. Administrators only; send an
    Idempotency-Key so that a retry does not add them twice. Audited (the role, never the
    identifiers)."""
    mid = portner(request).municipality.id

    def handler(conn: Connection) -> StaffOut:
        with _refusals():
            actor_id = _admin(request, who, conn).add_staff(
                body.display_name, body.role.value, body.organisation, hpr_number=body.hpr_number,
                her_id=body.her_id)
        return StaffOut(**dq.staff_member(conn, mid, actor_id))  # type: ignore[arg-type]

    return await idempotent(request, who, handler, status_code=201)


@router.patch("/staff/{actor_id}", response_model=StaffOut, responses=UPDATE_RESPONSES,
              summary="Change a staff member, or deactivate them (admin)")
def patch_staff(request: Request, response: Response, actor_id: Id, body: StaffPatch, who: AdminOnly,
                if_match: IfMatchHeader = None) -> Any:
    """Change a person's display name, organisation or role, or deactivate them (`active:
    false`): a deactivated person gets no new credentials, while those issued run out (12 hours
    at most; revoke the phone to stop them at once). Administrators only, with If-Match set to
    the ETag of GET /staff/{actor_id} (428 without, 412 when stale). Audited."""
    mid = portner(request).municipality.id
    with portner(request).engine.begin() as conn:
        current = _found(dq.staff_member(conn, mid, actor_id), f"no staff member {actor_id}")
        require_if_match(request, etag_for(StaffOut(**current)))
        with _refusals():
            _admin(request, who, conn).update_staff(actor_id, _changes(body))
        return _answer(response, StaffOut(**dq.staff_member(conn, mid, actor_id)))  # type: ignore[arg-type]


def _account_out(conn: Connection, mid: str, account_id: str) -> AccountOut:
    return AccountOut(**_found(get_account(conn, mid, account_id), f"no account {account_id}"))


@router.post("/accounts", response_model=AccountOut, status_code=201, tags=["accounts"],
             summary="Create a sign-in account for a staff member, relative, resident or integration")
async def create_account(request: Request, body: AccountIn, who: AdminOnly,
                         idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Create a sign-in account: the issuer (one this server signs in with) and the subject
    there, the role, and whom it stands for: a person for a nurse or relative, a resident for a
    resident, scopes for an integration. Administrators only; send an Idempotency-Key for safe
    retries. Audited."""
    mid = portner(request).municipality.id

    def handler(conn: Connection) -> AccountOut:
        with _refusals():
            account_id = _admin(request, who, conn).create_account(
                role=body.role.value, issuer=body.issuer, subject=body.subject, actor_id=body.actor_id,
                resident_id=body.resident_id, display_name=body.display_name, scopes=body.scopes)
        return _account_out(conn, mid, account_id)

    return await idempotent(request, who, handler, status_code=201)


async def _set_disabled(request: Request, who: Principal, account_id: str, disabled: bool) -> Response:
    mid = portner(request).municipality.id

    def handler(conn: Connection) -> AccountOut:
        with _refusals():
            _admin(request, who, conn).set_account_disabled(account_id, disabled)
        return _account_out(conn, mid, account_id)

    return await idempotent(request, who, handler)


@router.post("/accounts/{account_id}/disable", response_model=AccountOut, tags=["accounts"],
             summary="Disable an account: refused at its next request, no new door credentials")
async def disable_account(request: Request, account_id: Id, who: AdminOnly,
                          idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Disable an account: it is refused at its next request, by session or token, and gets no
    new door credentials. Administrators only, who cannot disable their own account; audited,
    and an Idempotency-Key is honoured."""
    return await _set_disabled(request, who, account_id, True)


@router.post("/accounts/{account_id}/enable", response_model=AccountOut, tags=["accounts"],
             summary="Enable a disabled account again")
async def enable_account(request: Request, account_id: Id, who: AdminOnly,
                         idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Enable a disabled account, so that it may sign in and act again. Administrators only;
    audited, and an Idempotency-Key is honoured."""
    return await _set_disabled(request, who, account_id, False)


# -- import status and quarantine ---------------------------------------------------------------

def _quarantine_out(e: QuarantineEntry) -> QuarantineOut:
    return QuarantineOut(id=e.id, file=e.file, resource=e.resource, field=e.field, message=e.message,
                         severity=e.severity, created_at=e.created_at, resolved_at=e.resolved_at, raw=e.raw_masked)


@router.get("/imports", response_model=Page[ImportOut], tags=["import"],
            summary="Imported visit plans: file, version, when, visits (admin)")
def list_imports(request: Request, response: Response, who: AdminOnly,
                 params: PageParams = Depends(page_params)) -> Page[ImportOut]:
    """The visit plans imported so far: each plan's source file, version, when it was imported
    and how many visits it holds now, one page at a time. Administrators only."""
    items = [ImportOut(**row) for row in _admin(request, who).import_status()]
    return paginate(request, response, params, items, key=lambda i: (i.plan_key,))


@router.get("/quarantine", response_model=Page[QuarantineOut], tags=["import"],
            summary="Rejected plan entries waiting for correction (admin)")
def list_quarantine(request: Request, response: Response, who: AdminOnly,
                    include_resolved: Annotated[bool, Query(description="Also corrected and dismissed ones.")] = False,
                    params: PageParams = Depends(page_params)) -> Page[QuarantineOut]:
    """Plan entries the import rejected, waiting to be corrected or dismissed: the resource,
    field, message, and the entry as read with national ids masked; `include_resolved` adds the
    corrected and dismissed ones. Administrators only; one page at a time."""
    entries = _admin(request, who).quarantine(include_resolved=include_resolved)
    return paginate(request, response, params, [_quarantine_out(e) for e in entries], key=lambda q: (q.id,))


QuarantineId = Annotated[int, Path(ge=1, le=2**62)]


@router.post("/quarantine/{entry_id}/correct", response_model=CorrectionOut, tags=["import"],
             summary="Import a corrected resource in place of a quarantined one (admin)")
async def correct_entry(request: Request, entry_id: QuarantineId, body: CorrectionIn, who: AdminOnly,
                        idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Import a corrected FHIR resource (JSON or XML text) in place of a quarantined one; the
    answer says whether the entry is resolved and what the import changed. Administrators only;
    send an Idempotency-Key for safe retries. Audited."""
    def handler(conn: Connection) -> CorrectionOut:
        with _refusals():
            result = _admin(request, who, conn).correct_quarantine(entry_id, body.resource)
        r = result.report
        return CorrectionOut(
            resolved=result.resolved, resolved_ids=list(result.resolved_ids),
            problems=[FieldProblemOut(field=f, message=m) for f, m in result.problems],
            visits_added=r.visits_added, visits_moved=r.visits_moved, visits_cancelled=r.visits_cancelled,
            grants_created=r.grants_created, grants_revoked=r.grants_revoked)

    return await idempotent(request, who, handler)


@router.post("/quarantine/{entry_id}/dismiss", response_model=QuarantineOut, tags=["import"],
             summary="Dismiss a quarantined entry with a reason (admin; audited)")
async def dismiss_entry(request: Request, entry_id: QuarantineId, body: DismissIn, who: AdminOnly,
                        idempotency_key: IdempotencyKeyHeader = None) -> Response:
    """Dismiss a quarantined plan entry that will not be corrected, giving a reason.
    Administrators only; audited, and an Idempotency-Key is honoured."""
    def handler(conn: Connection) -> QuarantineOut:
        admin = _admin(request, who, conn)
        with _refusals():
            admin.dismiss_quarantine(entry_id, body.reason)
            return _quarantine_out(admin.quarantine_entry(entry_id))

    return await idempotent(request, who, handler)
