"""The response center opens a door remotely (the central service model), honestly.

An operator asks; the request is a lock command (lock_commands, kind "operate") written with its
audit entry in one transaction; it is delivered once, to a lock whose backend can operate it
remotely, and its outcome is what the lock confirmed: opened, refused (and why), or no answer.
A request not delivered within `MAX_AGE` is dropped, never carried out late: a door that opens a
quarter of an hour after the operator asked is worse than one that does not open. Whether the door
really opened is the lock's own report (services.lock_activity); a confirmed command that no report
follows within a minute is logged and alarmed as unconfirmed (services.lock_alarms, F26).

The reason is one of a few categories, never free text: the audit trail must not collect health
details typed in a hurry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import Connection, Engine, insert, select, update

from portner.domain.errors import PortnerError
from portner.locks.port import CommandResult, Feature, LockPort, Operation, Outcome
from portner.services.fleet import lock_ids_of
from portner.services.ids import IdSource
from portner.services.keypad.model import capabilities_from_json
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit, take_write_lock

MAX_AGE = timedelta(seconds=60)
KIND = "operate"


class Reason(StrEnum):
    RESIDENT_ASKED = "resident_asked"  # the resident (or a relative at the door) called
    STAFF_LOCKED_OUT = "staff_locked_out"  # a nurse with a visit cannot get in
    EMERGENCY_SERVICES = "emergency_services"  # fire, police or ambulance at the door
    SAFETY_ALARM = "safety_alarm"  # the resident's safety alarm went off


class RemoteRefused(PortnerError):
    """The door cannot be opened remotely (the message says why, for the operator)."""


class RemoteNotFound(RemoteRefused):
    """No such lock in this municipality."""


@dataclass(frozen=True, slots=True)
class RemoteOutcome:
    command_id: str
    state: str  # confirmed | refused | timed_out | requested (not delivered yet)
    refusal: str | None = None
    detail: str = ""


def request_remote_unlock(conn: Connection, municipality_id: str, lock_id: str, *, reason: Reason, actor: str,
                          now: datetime, ids: IdSource) -> str:
    """Queue a remote unlock of `lock_id` and audit who asked and why; return the command id."""
    take_write_lock(conn)  # the lock fleet's worker writes too (SQLite)
    if not lock_ids_of(conn, municipality_id, [lock_id]):
        raise RemoteNotFound(f"no lock {lock_id}")
    # (A lock taken off its door is no longer the municipality's: lock_ids_of found it on a door.)
    caps = capabilities_from_json(conn.execute(
        select(t.lock_status.c.capabilities).where(t.lock_status.c.lock_id == lock_id)).scalar())
    if caps is None or Feature.REMOTE_OPERATION not in caps.features:
        raise RemoteRefused("this lock cannot be opened remotely (it has no remote operation)")
    command_id = ids.new("lcmd")
    conn.execute(insert(t.lock_commands).values(
        id=command_id, lock_id=lock_id, placement_id=None, kind=KIND, slot=None,
        args={"operation": Operation.UNLOCK.value, "reason": reason.value}, state="requested", attempts=0,
        not_before=now, created_at=now,
    ))
    append_audit(conn, [AuditEntry(now, actor, "lock:remote_unlock_requested", f"lock:{lock_id}",
                                   {"command": command_id, "reason": reason.value})])
    return command_id


async def deliver_remote_commands(engine: Engine, port_for: Callable[[str], LockPort], *, now: datetime,
                                  command_id: str | None = None) -> list[RemoteOutcome]:
    """Deliver remote operations not yet sent (or just `command_id`): each is claimed in its own
    transaction first, so two deliverers (the request and the worker) never both send it."""
    c = t.lock_commands.c
    with engine.begin() as conn:  # a delivery cut short (a crash): its outcome is unknown, never retried
        for cut in conn.execute(select(c.id, c.lock_id).where(c.kind == KIND, c.state == "sending",
                                                            c.sent_at < now - MAX_AGE)).all():
            conn.execute(update(t.lock_commands).where(c.id == cut.id, c.state == "sending")
                         .values(state="timed_out", finished_at=now, detail="interrupted: no answer was recorded"))
            _audit(conn, cut, now, "timed_out", {"detail": "interrupted"})
    query = select(c.id, c.lock_id, c.args, c.created_at).where(c.kind == KIND, c.state == "requested")
    if command_id is not None:
        query = query.where(c.id == command_id)
    with engine.connect() as conn:
        pending = conn.execute(query.order_by(c.created_at, c.id)).all()
    outcomes = []
    for cmd in pending:
        with engine.begin() as conn:
            too_old = now - cmd.created_at > MAX_AGE
            claimed = conn.execute(
                update(t.lock_commands).where(c.id == cmd.id, c.state == "requested")
                .values(state="refused" if too_old else "sending", attempts=c.attempts + 1,
                        sent_at=None if too_old else now, finished_at=now if too_old else None,
                        refusal="expired" if too_old else None,
                        detail="not delivered within a minute: dropped, never carried out late" if too_old else None)
            ).rowcount
            if claimed != 1:
                continue
            if too_old:
                _audit(conn, cmd, now, "refused", {"refusal": "expired"})
                outcomes.append(RemoteOutcome(cmd.id, "refused", "expired"))
                continue
        try:
            result = await port_for(cmd.lock_id).operate(Operation(cmd.args["operation"]), idempotency_key=cmd.id)
        except LookupError as exc:  # the lock's backend is not configured here
            result = CommandResult(Outcome.TIMED_OUT, None, None, str(exc)[:200])
        state = {Outcome.CONFIRMED: "confirmed", Outcome.REFUSED: "refused", Outcome.TIMED_OUT: "timed_out"}[result.outcome]
        refusal = result.refusal.value if result.refusal else None
        with engine.begin() as conn:
            recorded = conn.execute(update(t.lock_commands).where(c.id == cmd.id, c.state == "sending").values(
                state=state, refusal=refusal, detail=result.detail[:400] or None, finished_at=now)).rowcount
            if recorded:  # (else another deliverer already gave it up as interrupted)
                _audit(conn, cmd, now, state, {"refusal": refusal} if refusal else {})
        outcomes.append(RemoteOutcome(cmd.id, state, refusal, result.detail))
    return outcomes


def _audit(conn: Connection, cmd: object, now: datetime, state: str, extra: dict[str, object]) -> None:
    append_audit(conn, [AuditEntry(now, "system:locks", f"lock:remote_unlock_{state}", f"lock:{cmd.lock_id}",  # type: ignore[attr-defined]
                                   {"command": cmd.id, **extra})])  # type: ignore[attr-defined]


def command_outcome(conn: Connection, command_id: str) -> RemoteOutcome | None:
    c = t.lock_commands.c
    row = conn.execute(select(c.id, c.state, c.refusal, c.detail).where(c.id == command_id, c.kind == KIND)).first()
    return RemoteOutcome(row.id, row.state, row.refusal, row.detail or "") if row else None
