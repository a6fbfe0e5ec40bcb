"""The lock fleet for operators: open alarms, quarantined slots and each lock's keypad codes.

Codes themselves never leave the platform through this API; an operator sees who holds a code on
which lock, whether the lock confirmed it, and why not when it did not.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from portner.domain.access import AccountRole, Principal
from portner.services import fleet
from portner.services.fleet_runtime import (
    FleetRuntime,
    backends_from_settings,
    remote_unlock_by_fleet,
    remote_unlock_now,
)
from portner.services.leadership import run_as_leader
from portner.services.remote_operation import Reason, RemoteNotFound, RemoteOutcome, RemoteRefused
from portner.web.api.common import (
    IDEMPOTENT_RESPONSES,
    NO_CONTROL,
    PROBLEM_RESPONSES,
    IdempotencyKeyHeader,
    Page,
    PageParams,
    idempotent_await,
    page_params,
    paginate,
)
from portner.web.deps import portner, require
from portner.web.problems import Problem, not_found
from portner.web.state import Portner

log = logging.getLogger(__name__)
router = APIRouter(tags=["lock fleet"], responses=PROBLEM_RESPONSES)
STAFF = require(AccountRole.OPERATOR, AccountRole.ADMIN)
LockId = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_CONTROL)]


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LockAlarmOut(_Out):
    id: int
    lock_id: str
    kind: str = Field(description="jammed, tamper, battery_low, wrong_code, unknown_credential, "
                                  "removal_overdue, rejected, foreign_code, ...")
    subject: str = Field("", description="The slot, code or command the alarm is about, if any.")
    detail: str = ""
    raised_at: datetime
    escalated_at: datetime | None = None
    acknowledged_by: str | None = None
    door_id: str
    resident_id: str


class QuarantinedSlotOut(_Out):
    lock_id: str
    slot: int
    observed: str = Field(description="known, masked, empty or unreadable")
    reason: str | None = Field(None, description="foreign, unverifiable or reappeared")
    quarantined_at: datetime
    unreadable_reads: int = 0


class PlacementOut(_Out):
    code_id: str
    slot: int | None
    intent: str = Field(description="present or absent: what the plan wants")
    state: str = Field(description="what the lock has confirmed so far")
    enforcement: str = Field(description="lock (the lock's own schedule) or server")
    attempts: int
    last_refusal: str | None = None
    next_attempt_at: datetime | None = None
    confirmed_at: datetime | None = None
    removal_due_at: datetime | None = None
    removed_at: datetime | None = None
    purpose: str
    not_before: datetime | None = None
    not_after: datetime | None = None
    holder: str | None = Field(None, description="The holder's display name (pseudonymous).")


class ResolveIn(_Out):
    resolution: Literal["adopted", "released"] = Field(
        description="adopted: keep the code found there and never use the slot; released: the slot "
                    "was checked at the door and is empty")


def _own_lock(request: Request, lock_id: str) -> None:
    p = portner(request)
    with p.engine.connect() as conn:
        if not fleet.lock_ids_of(conn, p.municipality.id, [lock_id]):
            raise not_found(f"no lock {lock_id}")


@router.get("/lock-alarms", response_model=Page[LockAlarmOut], summary="Open lock alarms (operator, admin)")
def list_alarms(request: Request, response: Response, params: PageParams = Depends(page_params),
                who: Principal = Depends(STAFF)) -> Page[LockAlarmOut]:
    """The open alarms of the municipality's locks (jammed, tamper, low battery, wrong codes,
    overdue code removals, ...), each with its door and resident, by id, one page at a time.
    Operators and administrators only."""
    p = portner(request)
    with p.engine.connect() as conn:
        rows = fleet.open_alarms(conn, p.municipality.id)
    items = [LockAlarmOut(**{k: r[k] for k in LockAlarmOut.model_fields}) for r in rows]
    return paginate(request, response, params, items, key=lambda a: (a.id,))


@router.post("/lock-alarms/{alarm_id}/acknowledge", status_code=204,
             summary="Acknowledge an alarm (it stays open until its condition ends)")
def acknowledge(request: Request, alarm_id: Annotated[int, Path(ge=1, le=2**62)],
                who: Principal = Depends(STAFF)) -> Response:
    """Acknowledge an open lock alarm: it stays open until its condition ends, but shows who
    took it on. Operators and administrators only; audited, and acknowledging twice changes
    nothing. An alarm that is not open is a 404."""
    p = portner(request)
    try:
        with p.engine.begin() as conn:
            fleet.acknowledge_alarm(conn, p.municipality.id, alarm_id, actor=who.audit_actor, now=p.now())
    except fleet.FleetError as exc:
        raise not_found(str(exc)) from None
    return Response(status_code=204)


@router.get("/locks/{lock_id}/quarantine", response_model=list[QuarantinedSlotOut],
            summary="Slots of a lock that Portner will not touch until an operator resolves them")
def list_quarantine(request: Request, lock_id: LockId, who: Principal = Depends(STAFF)) -> list[QuarantinedSlotOut]:
    """The slots of a lock that Portner will not write until an operator resolves them: what was
    found there (known, masked, empty or unreadable) and why (foreign, unverifiable or
    reappeared). Operators and administrators only; a lock of another municipality is a 404."""
    _own_lock(request, lock_id)
    p = portner(request)
    with p.engine.connect() as conn:
        rows = fleet.quarantined_slots(conn, p.municipality.id, lock_id=lock_id)
    return [QuarantinedSlotOut(lock_id=r["lock_id"], slot=r["slot"], observed=r["observed"],
                               reason=r["quarantine_reason"], quarantined_at=r["quarantined_at"],
                               unreadable_reads=r["unreadable_reads"]) for r in rows]


@router.post("/locks/{lock_id}/quarantine/{slot}", status_code=204,
             summary="Resolve a quarantined slot: adopt the code found there, or release a slot checked empty")
def resolve(request: Request, lock_id: LockId, slot: Annotated[int, Path(ge=1, le=100_000)], body: ResolveIn,
            who: Principal = Depends(STAFF)) -> Response:
    """Resolve a quarantined slot of a lock: `adopted` keeps the code found there and never uses
    the slot, `released` frees a slot checked empty at the door. Operators and administrators
    only; audited. A slot not in quarantine is a 409."""
    _own_lock(request, lock_id)
    p = portner(request)
    try:
        with p.engine.begin() as conn:
            fleet.resolve_quarantine(conn, p.municipality.id, lock_id, slot, fleet.Resolution(body.resolution),
                                     actor=who.audit_actor, now=p.now())
    except fleet.FleetError as exc:
        raise Problem(409, "Not in quarantine", str(exc)) from None
    return Response(status_code=204)


@router.get("/locks/{lock_id}/codes", response_model=list[PlacementOut],
            summary="The keypad codes meant for a lock: intended versus confirmed (never the code)")
def list_codes(request: Request, lock_id: LockId, who: Principal = Depends(STAFF)) -> list[PlacementOut]:
    """The keypad codes meant for a lock, slot by slot: what the plan wants (present or absent)
    against what the lock has confirmed, with attempts, refusals and the holder's pseudonymous
    name; the digits themselves never leave the platform. Operators and administrators only."""
    _own_lock(request, lock_id)
    p = portner(request)
    with p.engine.connect() as conn:
        rows = fleet.placements(conn, p.municipality.id, lock_id)
    return [PlacementOut(**{k: r[k] for k in PlacementOut.model_fields}) for r in rows]


class RemoteUnlockIn(_Out):
    reason: Reason = Field(description="Why (a category, never free text): resident_asked, staff_locked_out, "
                                       "emergency_services or safety_alarm")


class RemoteUnlockOut(_Out):
    command_id: str
    state: str = Field(description="confirmed (the lock reports it opened), refused, timed_out, or requested "
                                   "(no backend here could send it yet; the fleet worker will, within a minute)")
    refusal: str | None = None
    detail: str = ""


async def remote_unlock(p: Portner, who: Principal, lock_id: str, reason: Reason) -> RemoteOutcome:
    """The request's runtime into services.fleet_runtime: delivered from here, or, when another
    worker process talks to the locks, asked of that one (its answer awaited a few seconds)."""
    if p.adapters.get(FLEET_ELSEWHERE):
        return await remote_unlock_by_fleet(p.engine, p.municipality.id, lock_id, reason=reason,
                                            actor=who.audit_actor, now=p.now, ids=p.ids)
    return await remote_unlock_now(p.engine, p.adapters.get("lock_backends") or {}, p.municipality.id, lock_id,
                                   reason=reason, actor=who.audit_actor, now=p.now, ids=p.ids)


@router.post("/locks/{lock_id}/remote-unlock", response_model=RemoteUnlockOut,
             responses={**IDEMPOTENT_RESPONSES,
                        409: {"description": "The lock cannot be opened remotely, or a request with "
                                             "this Idempotency-Key is still running or was cut off "
                                             "with its outcome unknown."}},
             summary="Open a door remotely (response center); the answer is what the lock confirmed")
async def remote_unlock_api(request: Request, lock_id: LockId, body: RemoteUnlockIn,
                            idempotency_key: IdempotencyKeyHeader = None,
                            who: Principal = Depends(STAFF)) -> Response:
    """Open a door remotely, for a reason category (resident_asked, staff_locked_out,
    emergency_services or safety_alarm; never free text); the answer is what the lock confirmed,
    or `requested` when the fleet worker will deliver it within a minute. Operators and
    administrators only; every request is audited with who asked and why. Each call is a new
    command: send an Idempotency-Key so that a retry (a timeout, a double click) is answered
    with the first answer instead of opening the door again. A lock that cannot be opened
    remotely is a 409."""
    return await idempotent_await(request, who, lambda: unlock_answer(portner(request), who, lock_id, body.reason))


async def unlock_answer(p: Portner, who: Principal, lock_id: str, reason: Reason) -> RemoteUnlockOut:
    """remote_unlock, answered as the API answers it; a refusal (nothing was done) a Problem."""
    try:
        outcome = await remote_unlock(p, who, lock_id, reason)
    except RemoteNotFound as exc:
        raise not_found(str(exc)) from None
    except RemoteRefused as exc:
        raise Problem(409, "Cannot open remotely", str(exc), kind="cannot-open-remotely") from None
    return RemoteUnlockOut(command_id=outcome.command_id, state=outcome.state, refusal=outcome.refusal,
                           detail=outcome.detail)


# --- the fleet at work (portner serve) -----------------------------------------------------------

FLEET_STEP_S = 5.0
# Set (p.adapters) while another process of this server runs the lock fleet.
FLEET_ELSEWHERE = "lock_fleet_elsewhere"


def install(app: Any, p: Portner) -> None:
    """The lock backends chosen by configuration (PORTNER_LOCKS), unless a test gave its own."""
    if "lock_backends" not in p.adapters:
        p.adapters["lock_backends"] = backends_from_settings(p.settings, now=p.now)


async def run_lock_fleet(p: Portner) -> None:
    backends = p.adapters.get("lock_backends") or {}
    if not backends:
        return
    # With several worker processes (`portner serve --workers`), one of them talks to the locks.
    def elsewhere(yes: bool) -> None:
        p.adapters[FLEET_ELSEWHERE] = yes

    await run_as_leader(p.engine, f"lock-fleet/{p.municipality.id}", lambda: _fleet_at_work(p, backends),
                        elsewhere=elsewhere)


async def _fleet_at_work(p: Portner, backends: dict[str, Any]) -> None:
    fleet = FleetRuntime(p.engine, p.municipality.id, p.secrets, backends, now=p.now, ids=p.ids)
    delay = FLEET_STEP_S
    while True:  # a broker or vendor cloud that is down at start is tried again, and said so
        try:
            await fleet.start()
            break
        except Exception as exc:
            await fleet.stop()
            log.error("lock fleet: cannot start the lock backends (%s: %s); trying again in %.0f s",
                      ", ".join(sorted(backends)), exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 300.0)
    log.info("lock fleet: started %s", ", ".join(sorted(backends)))
    try:
        while True:
            try:
                await fleet.step()
            except Exception:  # the next step tries again; a request never waits on this
                log.exception("lock fleet step failed")
            await asyncio.sleep(FLEET_STEP_S)
    finally:
        await fleet.stop()


workers = [run_lock_fleet]
