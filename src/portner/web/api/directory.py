"""Read the directory: the municipality's settings, residents, homes and door paths, locks, staff.

Every answer is cut to what the caller may see (services.authority): a nurse sees the residents she
serves, a relative their own resident, operators and administrators the municipality. A resident,
home or door the caller may not see is a 404, exactly like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from portner.domain.access import (
    MUNICIPALITY_WIDE,
    STAFF_ROLES,
    AccountRole,
    NotPermitted,
    Principal,
)
from portner.domain.model import Role
from portner.services import directory_queries as dq
from portner.services.accounts import list_accounts
from portner.services.authority import may_see_resident, visible_residents
from portner.storage import tables as t
from portner.storage.repository import Repository
from portner.web.api.common import (
    NO_CONTROL,
    PROBLEM_RESPONSES,
    SINGLE_RESPONSES,
    AccountOut,
    DoorOut,
    HomeOut,
    LockOut,
    MunicipalityOut,
    Page,
    PageParams,
    ResidentOut,
    StaffOut,
    conditional,
    keyset,
    municipality_out,
    page_of,
    page_params,
    paginate,
    resident_or_404,
)
from portner.web.deps import portner, principal, require
from portner.web.problems import not_found

router = APIRouter(tags=["directory"], responses=PROBLEM_RESPONSES)

Id = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]
WIDE_ROLES = tuple(MUNICIPALITY_WIDE)


def _directory_reader(who: Principal = Depends(principal)) -> Principal:
    """Any signed-in caller: what each read shows is narrowed to the residents the caller may see
    (may_see_resident: staff by relationship, a relative or resident their own, an integration
    with the directory scope all of them), so one without any sees an empty directory."""
    return who


@router.get("/municipalities/current", response_model=MunicipalityOut, responses=SINGLE_RESPONSES,
            summary="The municipality's settings", tags=["municipality"])
def current_municipality(request: Request, response: Response, who: Principal = Depends(principal)) -> Any:
    """The settings of this server's municipality: time zone, service model, how early and how
    late a visit's door opens, and the plan horizon. Any signed-in caller. Answers with an ETag
    (If-None-Match gives 304), the If-Match for PATCH /municipalities/current."""
    p = portner(request)
    with p.engine.connect() as conn:
        m = Repository(conn).get_municipality(p.municipality.id)
    if m is None:  # pragma: no cover - the server starts only for an existing municipality
        raise not_found("this server's municipality is gone")
    return conditional(request, response, municipality_out(m))


@router.get("/residents", response_model=Page[ResidentOut], summary="Residents you may see")
def list_residents(
    request: Request, response: Response,
    q: Annotated[str | None, Query(max_length=100, pattern=NO_CONTROL, description="Part of the name (case-insensitive).")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(_directory_reader),
) -> Page[ResidentOut]:
    """Residents by name, one page at a time (`limit`, `cursor`); `q` searches part of the name.
    Any signed-in caller, cut to whom they may see: operators, administrators and integrations
    with the portner.directory.read scope every resident of the municipality, a nurse the
    residents of her visits (30 days back to 14 days ahead), a relative their resident, a
    resident themselves."""
    p = portner(request)
    with p.engine.connect() as conn:
        visible = visible_residents(conn, who, now=p.now())
        stmt = dq.residents_select(p.municipality.id, visible)
        if q:
            stmt = stmt.where(t.residents.c.id.in_(dq.residents_named(conn, p.municipality.id, q)))
        rows = conn.execute(keyset(stmt, params, t.residents.c.display_name, t.residents.c.id)).all()
    items = [ResidentOut(**dict(r._mapping)) for r in rows]
    return page_of(request, response, params, items, key=lambda o: (o.display_name, o.id))


@router.get("/residents/{resident_id}", response_model=ResidentOut, responses=SINGLE_RESPONSES,
            summary="One resident")
def get_resident(request: Request, response: Response, resident_id: Id,
                 who: Principal = Depends(_directory_reader)) -> Any:
    """One resident: display name, zone and whether the home has an e-lock. Any signed-in caller
    who may see the resident (see GET /residents); one they may not see is a 404, exactly like
    one that does not exist. Answers with an ETag (If-None-Match gives 304), the If-Match for
    PATCH."""
    p = portner(request)
    with p.engine.connect() as conn:
        resident_or_404(conn, who, resident_id, now=p.now())
        found = dq.resident(conn, p.municipality.id, resident_id)
    if found is None:
        raise not_found(f"no resident {resident_id} that you may see")
    return conditional(request, response, ResidentOut(**found))


@router.get("/residents/{resident_id}/homes", response_model=Page[HomeOut],
            summary="A resident's homes, each with its door path (street first) and lock status")
def resident_homes(request: Request, response: Response, resident_id: Id,
                   params: PageParams = Depends(page_params),
                   who: Principal = Depends(_directory_reader)) -> Page[HomeOut]:
    """A resident's homes, one page at a time, each with its address and door path from the
    street inwards, every door with its lock and the lock's status. Any signed-in caller who may
    see the resident (see GET /residents); otherwise 404."""
    p = portner(request)
    with p.engine.connect() as conn:
        resident_or_404(conn, who, resident_id, now=p.now())
        homes = [HomeOut(**h) for h in dq.homes_of_resident(conn, p.municipality.id, resident_id)]
    return paginate(request, response, params, homes, key=lambda h: (h.id,))


@router.get("/homes/{home_id}", response_model=HomeOut, responses=SINGLE_RESPONSES,
            summary="One home with its door path")
def get_home(request: Request, response: Response, home_id: Id,
             who: Principal = Depends(_directory_reader)) -> Any:
    """One home: address, e-lock system and door path (street first), every door with its lock.
    Any signed-in caller who may see the home's resident; otherwise 404, as for a home that does
    not exist. Answers with an ETag (If-None-Match gives 304), the If-Match for PATCH."""
    p = portner(request)
    with p.engine.connect() as conn:
        found = dq.home(conn, p.municipality.id, home_id)
        # One answer for "not yours" and "no such home", naming only the id asked for: ids are
        # sequential, and naming the resident would map homes to residents.
        if found is None or not may_see_resident(conn, who, found["resident_id"], now=p.now()):
            raise not_found(f"no home {home_id} that you may see")
    return conditional(request, response, HomeOut(**found))


@router.get("/doors/{door_id}", response_model=DoorOut, responses=SINGLE_RESPONSES,
            summary="One door with its lock")
def get_door(request: Request, response: Response, door_id: Id,
             who: Principal = Depends(_directory_reader)) -> Any:
    """One door: its kind, its place on the home's path (1 = street) and its lock, if it has
    one. Any signed-in caller who may see the home's resident; otherwise 404. Answers with an
    ETag (If-None-Match gives 304), the If-Match for PATCH and DELETE."""
    p = portner(request)
    with p.engine.connect() as conn:
        found = dq.door(conn, p.municipality.id, door_id)
        # As get_home: the same 404 whether the door is not yours or does not exist.
        if found is None or not may_see_resident(conn, who, found[0], now=p.now()):
            raise not_found(f"no door {door_id} that you may see")
        door = found[1]
    return conditional(request, response, DoorOut(**door))


@router.get("/locks", response_model=Page[LockOut],
            summary="Every lock: battery, last sync, anomalies in its event log (operator, admin)")
def list_locks(request: Request, response: Response,
               params: PageParams = Depends(page_params),
               who: Principal = Depends(require(*WIDE_ROLES))) -> Page[LockOut]:
    """Every lock mounted on a door of the municipality, by id, one page at a time: its door,
    backend, battery, last sync and the open anomalies (gaps or forks) in its event log.
    Operators and administrators only."""
    p = portner(request)
    with p.engine.connect() as conn:
        rows = conn.execute(keyset(dq.locks_select(p.municipality.id), params, t.locks.c.id)).all()
    items = [LockOut(**dict(r._mapping)) for r in rows]
    return page_of(request, response, params, items, key=lambda o: (o.id,))


@router.get("/locks/{lock_id}", response_model=LockOut, responses=SINGLE_RESPONSES,
            summary="One lock (operator, admin)")
def get_lock(request: Request, response: Response, lock_id: Id,
             who: Principal = Depends(require(*WIDE_ROLES))) -> Any:
    """One mounted lock: door, backend, address, battery, last sync, how far its log is verified
    and its open anomalies. Operators and administrators only. Answers with an ETag
    (If-None-Match gives 304), the If-Match for DELETE /locks/{lock_id}."""
    p = portner(request)
    with p.engine.connect() as conn:
        found = dq.lock(conn, p.municipality.id, lock_id)
    if found is None:
        raise not_found(f"no lock {lock_id}")
    return conditional(request, response, LockOut(**found))


def _staff_reader(who: Principal = Depends(principal)) -> Principal:
    """Staff see the staff; relatives are people too, so only operators and admins see them."""
    if who.role not in STAFF_ROLES:
        raise NotPermitted("the staff list is for nurses, operators and administrators")
    return who


def _hidden_roles(who: Principal) -> tuple[str, ...]:
    return () if who.role in MUNICIPALITY_WIDE else (Role.RELATIVE.value,)


def _staff_only(who: Principal) -> bool:
    """Nurses see the services' staff, not the people given one-time access (they are visitors,
    often a resident's family or a craftsman, not colleagues)."""
    return who.role not in MUNICIPALITY_WIDE


@router.get("/staff", response_model=Page[StaffOut], summary="Staff and other people who may be given access")
def list_staff(
    request: Request, response: Response,
    role: Annotated[Role | None, Query(description="Only this role.")] = None,
    active: Annotated[bool | None, Query(description="Only active (true) or disabled (false) people.")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(_staff_reader),
) -> Page[StaffOut]:
    """People who may be given door access, by id, one page at a time; filter by `role` and
    `active`. Nurses, operators and administrators: operators and administrators see everyone,
    relatives and one-time visitors too, nurses only the services' staff."""
    p = portner(request)
    stmt = dq.staff_select(p.municipality.id, roles=[role.value] if role else None,
                           exclude_roles=_hidden_roles(who), active=active,
                           exclude_one_time=_staff_only(who))
    with p.engine.connect() as conn:
        rows = conn.execute(keyset(stmt, params, t.actors.c.id)).all()
    items = [StaffOut(**dict(r._mapping)) for r in rows]
    return page_of(request, response, params, items, key=lambda o: (o.id,))


@router.get("/staff/{actor_id}", response_model=StaffOut, responses=SINGLE_RESPONSES, summary="One staff member")
def get_staff(request: Request, response: Response, actor_id: Id,
              who: Principal = Depends(_staff_reader)) -> Any:
    """One person of the staff list: role, organisation, display name and whether active.
    Nurses, operators and administrators; a nurse asking for a relative or a one-time visitor
    gets 404 (as in GET /staff). Answers with an ETag (If-None-Match gives 304), the If-Match
    for PATCH."""
    p = portner(request)
    with p.engine.connect() as conn:
        found = dq.staff_member(conn, p.municipality.id, actor_id)
    if found is None or found["role"] in _hidden_roles(who) or (_staff_only(who) and dq.is_one_time(found)):
        raise not_found(f"no staff member {actor_id}")
    return conditional(request, response, StaffOut(**found))


@router.get("/accounts", response_model=Page[AccountOut], summary="Sign-in accounts (admin)", tags=["accounts"])
def get_accounts(
    request: Request, response: Response,
    role: Annotated[AccountRole | None, Query(description="Only this role.")] = None,
    params: PageParams = Depends(page_params),
    who: Principal = Depends(require(AccountRole.ADMIN)),
) -> Page[AccountOut]:
    """The municipality's sign-in accounts, people's and integrations', one page at a time:
    role, issuer and subject at the OpenID provider, the person or resident linked, scopes, and
    whether disabled; filter by `role`. Administrators only."""
    p = portner(request)
    with p.engine.connect() as conn:
        accounts = [AccountOut(**a) for a in list_accounts(conn, p.municipality.id)]  # type: ignore[arg-type]
    if role is not None:
        accounts = [a for a in accounts if a.role == role.value]
    return paginate(request, response, params, accounts, key=lambda a: (a.id,))
