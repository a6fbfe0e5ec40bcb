"""Recording what a lock answered to a command: placement, command, audit and alarm together.

Classification follows locks.md section 4: a permanent refusal (duplicate, bad code, lock full,
out of range...) fails at once and reaches an operator (F5, F6, F7); a transient one (timeout,
offline, busy, write unconfirmed) goes back to pending with a backoff, never to "confirmed" (F10,
F22). An "already exists" answer is resolved by reading our slot: our code there is adopted,
anything else is a duplicate (F21, F5).
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from portner.locks.port import (
    Capabilities,
    CommandResult,
    LockWindow,
    Outcome,
    Refusal,
    SlotReading,
    SlotState,
    timed_out,
)
from portner.services.keypad.model import CommandKind, CommandState, State
from portner.services.keypad.plan import next_boundary, removal_reason, wanted_on_lock
from portner.services.keypad.store import (
    clear_alarm,
    observe_slot,
    quarantine_slot,
    raise_alarm,
    slot_row,
)
from portner.services.keypad.vault import KeypadKeys
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit

if TYPE_CHECKING:
    from portner.services.keypad.reconcile import ReconcilerSettings

ACTOR = "system:reconciler"
_COMMAND_STATE = {
    Outcome.CONFIRMED: CommandState.CONFIRMED,
    Outcome.REFUSED: CommandState.REFUSED,
    Outcome.TIMED_OUT: CommandState.TIMED_OUT,
}


def window_from_args(data: dict[str, str] | None) -> LockWindow | None:
    if not data:
        return None
    return LockWindow(datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"]))


def timed_out_from(exc: BaseException) -> CommandResult:
    return timed_out(f"adapter error: {type(exc).__name__}")


def finish_command(
    conn: Connection, command_id: str, state: CommandState, now: datetime, *,
    refusal: str | None = None, detail: str = "",
) -> None:
    conn.execute(
        update(t.lock_commands).where(t.lock_commands.c.id == command_id)
        .values(state=state, finished_at=now, refusal=refusal, detail=detail[:400] or None)
    )


def _audit(conn: Connection, now: datetime, action: str, code_id: str, details: dict[str, Any]) -> None:
    append_audit(conn, [AuditEntry(now, ACTOR, f"keypad_code:{action}", f"keypad_code:{code_id}", details)])


def _placement(conn: Connection, placement_id: int) -> Any:
    p, c = t.code_placements, t.keypad_codes
    return conn.execute(
        select(p, c.c.not_before, c.c.not_after, c.c.revoked_at, c.c.code_mac, c.c.created_at)
        .join(c, c.c.id == p.c.code_id).where(p.c.id == placement_id)
    ).one()


def _update(conn: Connection, placement_id: int, now: datetime, **values: Any) -> None:
    conn.execute(update(t.code_placements).where(t.code_placements.c.id == placement_id)
                 .values(updated_at=now, **values))


def fail_permanently(
    conn: Connection, p: Any, lock_id: str, refusal: str, detail: str, now: datetime
) -> None:
    """Stop: a person must act. One alarm per (lock, code); no retry is scheduled."""
    refusal = str(getattr(refusal, "value", refusal))
    _update(conn, p.id, now, state=State.FAILED, last_refusal=refusal, last_detail=detail[:400],
            next_attempt_at=None)
    raise_alarm(conn, lock_id, "code_rejected", p.code_id, f"{refusal}: {detail}", now)
    _audit(conn, now, "rejected", p.code_id, {"lock": lock_id, "slot": p.slot, "refusal": refusal})


def record_result(
    conn: Connection,
    command: Any,
    result: CommandResult,
    *,
    now: datetime,
    keys: KeypadKeys,
    caps: Capabilities,
    adopt: SlotReading | None,
    rng: random.Random,
    settings: ReconcilerSettings,
) -> None:
    refusal = result.refusal.value if result.refusal is not None else None
    finish_command(conn, command.id, _COMMAND_STATE[result.outcome], now, refusal=refusal,
                   detail=result.detail)
    p = _placement(conn, command.placement_id)
    if command.kind == CommandKind.SET_CODE:
        _after_set(conn, command, p, result, now=now, keys=keys, caps=caps, adopt=adopt, rng=rng,
                   settings=settings)
    else:
        _after_clear(conn, command, p, result, now=now, rng=rng, settings=settings, caps=caps)


def _confirm(conn: Connection, command: Any, p: Any, now: datetime, caps: Capabilities,
             settings: ReconcilerSettings, *, adopted: bool) -> None:
    observe_slot(conn, command.lock_id, command.slot, now,
                 observed="masked" if caps.masked_reads else "known",
                 code_mac=p.code_mac, code_id=p.code_id, unreadable_reads=0)
    clear_alarm(conn, command.lock_id, "write_unconfirmed", p.code_id, now)
    if p.state != State.WRITING:
        return  # revoked while the write was out: the queued clear takes it off again
    _update(conn, p.id, now, state=State.CONFIRMED, confirmed_at=now, last_refusal=None,
            last_detail=None, attempts=0, next_attempt_at=next_boundary(p, now, settings.timing))
    _audit(conn, now, "placed", p.code_id,
           {"lock": command.lock_id, "slot": command.slot, "adopted": adopted,
            "window": command.args.get("window") is not None})


def _retry(conn: Connection, p: Any, state: State, result: CommandResult, now: datetime,
           rng: random.Random, settings: ReconcilerSettings, caps: Capabilities) -> None:
    refusal = result.refusal.value if result.refusal is not None else "timed_out"
    delay = settings.backoff.delay(max(1, p.attempts), rng, caps.min_command_interval)
    _update(conn, p.id, now, state=state, last_refusal=refusal, last_detail=result.detail[:400] or None,
            next_attempt_at=now + delay)


def _after_set(conn: Connection, command: Any, p: Any, result: CommandResult, *, now: datetime,
               keys: KeypadKeys, caps: Capabilities, adopt: SlotReading | None,
               rng: random.Random, settings: ReconcilerSettings) -> None:
    if result.ok:
        _confirm(conn, command, p, now, caps, settings, adopted=False)
        return
    if result.refusal is Refusal.DUPLICATE_CODE:
        ours = result.conflict_slot == command.slot or (
            adopt is not None and (
                adopt.state is SlotState.MASKED
                or (adopt.state is SlotState.KNOWN and adopt.code is not None
                    and keys.mac(adopt.code) == p.code_mac)
            )
        )
        if ours:  # the lock already holds our code in our slot: adopt it (F21, F5)
            _confirm(conn, command, p, now, caps, settings, adopted=True)
            return
        where = result.conflict_slot
        if where is not None:
            # The code sits in another slot that is not ours: a code set outside Portner (F6).
            row = slot_row(conn, command.lock_id, where)
            if row is None or row.code_id is None:
                observe_slot(conn, command.lock_id, where, now, observed="known", code_mac=p.code_mac,
                             code_id=None, unreadable_reads=0)
                quarantine_slot(conn, command.lock_id, where, "foreign", now,
                                f"slot {where} holds a code Portner did not set (found as a duplicate)")
        detail = "the lock already holds this code" + (f" in slot {where}" if where else "")
        fail_permanently(conn, p, command.lock_id, "duplicate_code", detail, now)
        return
    if result.refusal is not None and result.refusal.permanent:
        fail_permanently(conn, p, command.lock_id, result.refusal.value, result.detail, now)
        return
    if p.state != State.WRITING:
        return
    if result.refusal is Refusal.WRITE_UNCONFIRMED:
        raise_alarm(conn, command.lock_id, "write_unconfirmed", p.code_id,
                    f"slot {command.slot}: the lock accepted the code but does not show it", now)
        _retry(conn, p, State.WRITE_UNCONFIRMED, result, now, rng, settings, caps)
        return
    _retry(conn, p, State.PENDING, result, now, rng, settings, caps)  # F22: pending, retried


def _after_clear(conn: Connection, command: Any, p: Any, result: CommandResult, *, now: datetime,
                 rng: random.Random, settings: ReconcilerSettings, caps: Capabilities) -> None:
    if result.ok:
        observe_slot(conn, command.lock_id, command.slot, now, observed="empty", code_mac=None,
                     code_id=None, unreadable_reads=0)
        if p.state != State.REMOVING:
            return
        reason = removal_reason(p, now)
        # A clear that was out when the plan wanted the code back (its window moved, F20) has
        # finished: the code is added again at once, not at the window's next boundary.
        wanted = wanted_on_lock(p, now, settings.timing)
        _update(conn, p.id, now, state=State.REMOVED, removed_at=now, last_refusal=None,
                last_detail=None, attempts=0,
                next_attempt_at=now if wanted else next_boundary(p, now, settings.timing))
        clear_alarm(conn, command.lock_id, "removal_overdue", p.code_id, now)
        clear_alarm(conn, command.lock_id, "code_reappeared", str(command.slot), now)
        action = "removal_confirmed" if reason == "revoked" else "deactivated"
        _audit(conn, now, action, p.code_id,
               {"lock": command.lock_id, "slot": command.slot, "reason": reason})
        return
    if result.refusal is not None and result.refusal.permanent:
        _update(conn, p.id, now, state=State.FAILED, last_refusal=result.refusal.value,
                last_detail=result.detail[:400], next_attempt_at=None)
        raise_alarm(conn, command.lock_id, "removal_failed", p.code_id,
                    f"{result.refusal.value}: {result.detail}", now)
        return
    if p.state == State.REMOVING:
        _retry(conn, p, State.REMOVING, result, now, rng, settings, caps)
