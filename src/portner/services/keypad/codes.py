"""Keypad codes as a service: issue, reveal once, change the window, count uses, revoke.

Every function works in the caller's transaction and writes its audit entry there. The digits
exist in memory only while a code is made, revealed, or written to a lock; the database holds
them encrypted (see vault.py) and audit details, command args and errors never carry them.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, insert, or_, select, update

from portner.domain.errors import PortnerError
from portner.domain.windows import require_aware
from portner.locks.codes import common_rules, generate_code, normalise_max_uses
from portner.locks.port import KeypadCode
from portner.services.ids import IdSource
from portner.services.keypad.model import (
    MAY_BE_ON_LOCK,
    CommandKind,
    CommandState,
    Intent,
    State,
    choose_enforcement,
)
from portner.services.keypad.store import lock_municipality, stored_capabilities
from portner.services.keypad.vault import KeypadKeys
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit

PURPOSES = frozenset({"visit", "one_time", "standing", "emergency"})
_MAC_TRIES = 50
REUSE_AFTER = timedelta(days=90)  # a withdrawn code is not handed to someone else sooner


class KeypadCodeError(PortnerError, ValueError):
    """A keypad-code request that cannot be carried out; the message names the field."""


class AlreadyDelivered(KeypadCodeError):
    """The code was shown once already; it is never shown again (issue a new one instead)."""


def _subject(code_id: str) -> str:
    return f"keypad_code:{code_id}"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat()


def _check_window(not_before: datetime | None, not_after: datetime | None, now: datetime) -> None:
    if not_before is not None:
        require_aware(not_before, "not_before")
    if not_after is not None:
        require_aware(not_after, "not_after")
        if not_after <= now:
            raise KeypadCodeError("not_after: the window has already ended")
    if not_before is not None and not_after is not None and not_after <= not_before:
        raise KeypadCodeError("not_after: the window must end after it starts (not_before)")


def _codes_on_locks(
    conn: Connection, lock_ids: Sequence[str], key: KeypadKeys, now: datetime
) -> tuple[set[bytes], list[KeypadCode]]:
    """MACs of every code seen on or meant for these locks (foreign ones included, F6), and the
    digits of our own managed ones (to avoid codes that begin one another). Codes withdrawn in the
    last REUSE_AFTER count too: a revoked code's old holder still knows it."""
    macs = {
        r.code_mac
        for r in conn.execute(
            select(t.lock_slots.c.code_mac).where(
                t.lock_slots.c.lock_id.in_(lock_ids), t.lock_slots.c.code_mac.is_not(None)
            )
        )
    }
    managed = conn.execute(
        select(t.keypad_codes.c.id, t.keypad_codes.c.ciphertext, t.keypad_codes.c.key_id,
               t.keypad_codes.c.code_mac)
        .select_from(t.code_placements.join(t.keypad_codes, t.keypad_codes.c.id == t.code_placements.c.code_id))
        .where(t.code_placements.c.lock_id.in_(lock_ids),
               or_(t.code_placements.c.state != State.REMOVED,
                   t.code_placements.c.removed_at.is_(None),
                   t.code_placements.c.removed_at >= now - REUSE_AFTER))
        .distinct()
    ).all()
    digits = []
    for row in managed:
        macs.add(row.code_mac)
        if row.key_id == key.key_id:
            digits.append(key.decrypt(row.ciphertext, row.id, row.key_id))
    return macs, digits


def issue_code(
    conn: Connection,
    *,
    municipality_id: str,
    actor_id: str | None,
    grant_id: str | None,
    purpose: str,
    lock_ids: Sequence[str],
    not_before: datetime | None,
    not_after: datetime | None,
    max_uses: object,
    now: datetime,
    ids: IdSource,
    actor: str,
    key: KeypadKeys,
    rng: random.Random | None = None,
) -> str:
    """Make a code for the locks of a door path and queue it for each lock; return its id.

    The code honours the tightest rule common to the locks (unknown capabilities count as the
    default rules), avoids every code already seen on them, and is placed on each lock with the
    enforcement that lock supports. Nothing is sent here: the reconciler writes it."""
    require_aware(now, "now")
    if purpose not in PURPOSES:
        raise KeypadCodeError(f"purpose: must be one of {', '.join(sorted(PURPOSES))} (got {purpose!r})")
    if not lock_ids or len(set(lock_ids)) != len(lock_ids):
        raise KeypadCodeError("lock_ids: give each lock of the door path once (at least one)")
    if key.municipality_id != municipality_id:
        raise KeypadCodeError("key: these keys belong to another municipality")
    _check_window(not_before, not_after, now)
    uses = normalise_max_uses(max_uses)
    locks = {r.id: r for r in conn.execute(select(t.locks).where(t.locks.c.id.in_(lock_ids)))}
    for lock_id in lock_ids:
        if lock_id not in locks or locks[lock_id].removed_at is not None:
            raise KeypadCodeError(f"lock_ids: no lock {lock_id!r} in service")
        if lock_municipality(conn, lock_id)[0] != municipality_id:
            raise KeypadCodeError(f"lock_ids: lock {lock_id!r} belongs to another municipality")
    capabilities = {lock_id: stored_capabilities(conn, lock_id) for lock_id in lock_ids}
    rules = common_rules([c.code_rules if c else None for c in capabilities.values()])
    macs, avoid = _codes_on_locks(conn, lock_ids, key, now)
    chooser = rng if rng is not None else secrets.SystemRandom()
    for _ in range(_MAC_TRIES):
        code = generate_code(rules, chooser, avoid=avoid)
        mac = key.mac(code)
        if mac not in macs:
            break
    else:  # pragma: no cover - needs a nearly full code space
        raise KeypadCodeError("lock_ids: no unused code is left under these locks' rules")

    code_id = ids.new("kpc")
    conn.execute(
        insert(t.keypad_codes).values(
            id=code_id, municipality_id=municipality_id, actor_id=actor_id, grant_id=grant_id,
            purpose=purpose, ciphertext=key.encrypt(code, code_id), key_id=key.key_id,
            code_mac=mac, not_before=not_before, not_after=not_after, max_uses=uses, uses=0,
            notify=True, created_at=now,
        )
    )
    enforcement = {}
    for lock_id in lock_ids:
        enforcement[lock_id] = choose_enforcement(capabilities[lock_id], locks[lock_id].enforcement)
        conn.execute(
            insert(t.code_placements).values(
                code_id=code_id, lock_id=lock_id, slot=None, intent=Intent.PRESENT,
                state=State.PENDING, enforcement=enforcement[lock_id], attempts=0,
                next_attempt_at=now, requested_at=now, removal_due_at=not_after, updated_at=now,
            )
        )
    append_audit(conn, [AuditEntry(
        at=now, actor=actor, action="keypad_code:issued", subject=_subject(code_id),
        details={
            "purpose": purpose, "locks": list(lock_ids), "grant": grant_id,
            "enforcement": {k: str(v) for k, v in enforcement.items()},
            "not_before": _iso(not_before), "not_after": _iso(not_after), "max_uses": uses,
        },
    )])
    return code_id


def _code_row(conn: Connection, code_id: str) -> Any:
    row = conn.execute(select(t.keypad_codes).where(t.keypad_codes.c.id == code_id)).first()
    if row is None:
        raise KeypadCodeError(f"code_id: no keypad code {code_id!r}")
    return row


def reveal_once(
    conn: Connection, code_id: str, *, now: datetime, key: KeypadKeys, actor: str
) -> KeypadCode:
    """Return the code for showing to its holder, once; a second call refuses."""
    row = _code_row(conn, code_id)
    if row.revoked_at is not None:
        raise KeypadCodeError(f"code_id: keypad code {code_id} is revoked")
    # The conditional update is the once-only guarantee, also against a concurrent reveal.
    claimed = conn.execute(
        update(t.keypad_codes)
        .where(t.keypad_codes.c.id == code_id, t.keypad_codes.c.delivered_at.is_(None))
        .values(delivered_at=now)
    ).rowcount
    if claimed != 1:
        raise AlreadyDelivered(f"code_id: keypad code {code_id} was already shown once")
    append_audit(conn, [AuditEntry(now, actor, "keypad_code:delivered", _subject(code_id))])
    return key.decrypt(row.ciphertext, code_id, row.key_id)


def new_command(
    conn: Connection, ids: IdSource, *, lock_id: str, placement_id: int, kind: CommandKind,
    slot: int | None, args: dict[str, Any], now: datetime,
) -> str:
    """Write a lock command (the outbox row); its id is the idempotency key the adapter sees."""
    command_id = ids.new("lcmd")
    conn.execute(
        insert(t.lock_commands).values(
            id=command_id, lock_id=lock_id, placement_id=placement_id, kind=kind, slot=slot,
            args=args, state=CommandState.REQUESTED, attempts=0, not_before=now, created_at=now,
        )
    )
    return command_id


def withdraw_placements(
    conn: Connection, code_id: str, *, now: datetime, ids: IdSource, lock_ids: Sequence[str] | None = None
) -> None:
    """Set intent absent and queue a clear for every placement that may be on its lock; those that
    never reached a lock are simply removed."""
    query = select(t.code_placements).where(t.code_placements.c.code_id == code_id)
    if lock_ids is not None:
        query = query.where(t.code_placements.c.lock_id.in_(lock_ids))
    for p in conn.execute(query).all():
        values: dict[str, Any] = dict(
            intent=Intent.ABSENT, removal_requested_at=now, removal_due_at=now,
            next_attempt_at=now, attempts=0, updated_at=now,
        )
        # A pending placement with a slot had a write out that never answered: it may be there.
        may_be_there = State(p.state) in MAY_BE_ON_LOCK or (p.state == State.PENDING and p.slot is not None)
        if p.state == State.REMOVED:
            continue
        if may_be_there and p.slot is not None:
            outstanding = conn.execute(
                select(t.lock_commands.c.id).where(
                    t.lock_commands.c.placement_id == p.id,
                    t.lock_commands.c.kind == CommandKind.CLEAR_CODE,
                    t.lock_commands.c.state == CommandState.REQUESTED,
                )
            ).first()
            if outstanding is None:
                new_command(conn, ids, lock_id=p.lock_id, placement_id=p.id,
                            kind=CommandKind.CLEAR_CODE, slot=p.slot, args={"code": code_id}, now=now)
            values["state"] = State.REMOVING
        else:
            values.update(state=State.REMOVED, removed_at=now)
        conn.execute(update(t.code_placements).where(t.code_placements.c.id == p.id).values(**values))


def revoke_code(
    conn: Connection, code_id: str, *, reason: str, now: datetime, actor: str,
    ids: IdSource | None = None,
) -> None:
    """Withdraw the code from every lock: intent absent, clear commands queued, audit
    "revocation_requested". "removal_confirmed" is audited per lock when the lock confirms (F23)."""
    require_aware(now, "now")
    if not reason or len(reason) > 64:
        raise KeypadCodeError("reason: give a short reason (1 to 64 characters)")
    row = _code_row(conn, code_id)
    if row.revoked_at is not None:
        return  # already revoked: nothing new to ask for
    conn.execute(
        update(t.keypad_codes).where(t.keypad_codes.c.id == code_id).values(revoked_at=now, revoke_reason=reason)
    )
    withdraw_placements(conn, code_id, now=now, ids=ids or IdSource())
    append_audit(conn, [AuditEntry(
        now, actor, "keypad_code:revocation_requested", _subject(code_id), {"reason": reason}
    )])


def change_window(
    conn: Connection, code_id: str, *, not_before: datetime | None, not_after: datetime | None,
    now: datetime, actor: str,
) -> None:
    """Attach or change a code's window; every placement is re-evaluated on the next pass (F20).
    Lock-enforced placements are rewritten with the new window; server-enforced ones are added or
    removed according to it."""
    require_aware(now, "now")
    row = _code_row(conn, code_id)
    if row.revoked_at is not None:
        raise KeypadCodeError(f"code_id: keypad code {code_id} is revoked")
    _check_window(not_before, not_after, now)
    conn.execute(
        update(t.keypad_codes).where(t.keypad_codes.c.id == code_id)
        .values(not_before=not_before, not_after=not_after)
    )
    placements = conn.execute(
        select(t.code_placements).where(t.code_placements.c.code_id == code_id)
    ).all()
    for p in placements:
        values: dict[str, Any] = dict(next_attempt_at=now, removal_due_at=not_after, updated_at=now)
        if p.enforcement == "lock" and p.state in (State.CONFIRMED, State.UNVERIFIED):
            values["state"] = State.PENDING  # rewrite in the same slot with the new window
        conn.execute(update(t.code_placements).where(t.code_placements.c.id == p.id).values(**values))
    append_audit(conn, [AuditEntry(
        now, actor, "keypad_code:window_changed", _subject(code_id),
        {"not_before": _iso(not_before), "not_after": _iso(not_after)},
    )])


def record_use(
    conn: Connection, code_id: str, now: datetime, *, actor: str = "system:keypad",
    ids: IdSource | None = None,
) -> int | None:
    """Count one attributed keypad use; return the uses left (None = unlimited). At 0 the code is
    revoked (F1). Uses after that are not counted again: the code is already on its way out."""
    row = _code_row(conn, code_id)
    if row.revoked_at is not None:
        return 0 if row.max_uses is not None else None
    uses = int(row.uses or 0) + 1
    conn.execute(update(t.keypad_codes).where(t.keypad_codes.c.id == code_id).values(uses=uses))
    limit = normalise_max_uses(row.max_uses)
    if limit is None:
        return None
    left = max(0, limit - uses)
    if left == 0:
        revoke_code(conn, code_id, reason="used_up", now=now, actor=actor, ids=ids)
    return left
