"""Door grants become keypad codes on locks that cannot take a phone key.

A visit grant names a door path. Doors whose lock verifies Portner's phone credentials need nothing
more; a lock that only has a keypad (a Zigbee lock, say) needs a code for the grant's holder, valid
in the grant's window. This pass keeps the two in step: every live grant that reaches a keypad-only
lock has exactly one live code for those locks, and a grant that was revoked or has ended takes its
code with it. The codes themselves are made, stored and withdrawn by portner.services.keypad; the
reconciler puts them on the locks.

Which locks count as keypad-only is what each lock told us about itself (lock_status.capabilities:
a keypad and no phone credentials). A lock whose capabilities are unknown gets no code: nothing is
guessed, and the lock's onboarding (which reads them) comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from portner.domain.errors import PortnerError
from portner.locks.port import Feature
from portner.services.ids import IdSource
from portner.services.keypad import issue_code, revoke_code
from portner.services.keypad.model import capabilities_from_json
from portner.services.keypad.vault import KeypadKeys
from portner.services.lock_alarms import raise_alarm
from portner.storage import tables as t

ACTOR = "system:keypad-grants"


@dataclass(slots=True)
class GrantCodeSync:
    issued: list[str] = field(default_factory=list)  # code ids
    revoked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # grants no code could be made for (alarmed)


def keypad_only_locks(conn: Connection, lock_ids: list[str]) -> set[str]:
    """The locks among `lock_ids` that take codes and no phone credentials."""
    if not lock_ids:
        return set()
    found: set[str] = set()
    rows = conn.execute(
        select(t.lock_status.c.lock_id, t.lock_status.c.capabilities)
        .join(t.locks, t.locks.c.id == t.lock_status.c.lock_id)
        .where(t.lock_status.c.lock_id.in_(sorted(set(lock_ids))), t.locks.c.removed_at.is_(None))
    )
    for lock_id, data in rows:
        caps = capabilities_from_json(data)
        if caps and Feature.KEYPAD in caps.features and Feature.PHONE_CREDENTIALS not in caps.features:
            found.add(lock_id)
    return found


def sync_grant_codes(engine: Engine, municipality_id: str, *, now: datetime, ids: IdSource,
                     key: KeypadKeys) -> GrantCodeSync:
    """One pass, one transaction per grant or code: withdrawals first, then new codes; a grant no code
    can be made for raises an alarm and holds back nothing else."""
    result = GrantCodeSync()
    g, k = t.grants.c, t.keypad_codes.c
    with engine.connect() as conn:
        live = conn.execute(
            select(g.id, g.actor_id, g.door_ids, g.not_before, g.not_after)
            .join(t.actors, t.actors.c.id == g.actor_id)
            .where(t.actors.c.municipality_id == municipality_id, g.status == "active",
                   g.revoked_at.is_(None), g.not_after > now)
            .order_by(g.not_before, g.id)
        ).all()
        coded = set(conn.execute(
            select(k.grant_id).where(k.municipality_id == municipality_id, k.grant_id.is_not(None),
                                     k.revoked_at.is_(None))
        ).scalars())
        # Codes whose grant is no longer live: revoked, cancelled, or over.
        stale = conn.execute(
            select(k.id, g.status, g.not_after)
            .join(t.grants, g.id == k.grant_id)
            .where(k.municipality_id == municipality_id, k.revoked_at.is_(None),
                   (g.status != "active") | g.revoked_at.is_not(None) | (g.not_after <= now))
        ).all()
    # Withdrawals first: a grant that cannot get a code must never keep an ended one on a lock.
    for code in stale:
        with engine.begin() as conn:
            reason = "grant ended" if code.status == "active" and code.not_after <= now else "grant revoked"
            revoke_code(conn, code.id, reason=reason, now=now, actor=ACTOR, ids=ids)
            result.revoked.append(code.id)
    todo = [g for g in live if g.id not in coded]
    if not todo:
        return result
    # One read per pass of which door has which lock and which locks take only codes: most grants
    # are on phone-key locks and need nothing, and this runs every few seconds.
    with engine.connect() as conn:
        lock_of = dict(conn.execute(
            select(t.doors.c.id, t.doors.c.lock_id).where(t.doors.c.lock_id.is_not(None))).all())
        keypad_only = keypad_only_locks(conn, sorted(set(lock_of.values())))
    for grant in todo:
        locks = [lock_of[d] for d in grant.door_ids if d in lock_of]
        keypad = {lock for lock in locks if lock in keypad_only}
        if not keypad:
            continue
        try:
            with engine.begin() as conn:
                code_id = issue_code(
                    conn, municipality_id=municipality_id, actor_id=grant.actor_id, grant_id=grant.id,
                    purpose="visit", lock_ids=[lock for lock in locks if lock in keypad],
                    not_before=grant.not_before, not_after=grant.not_after, max_uses=None, now=now,
                    ids=ids, actor=ACTOR, key=key,
                )
            result.issued.append(code_id)
        except PortnerError as exc:
            # One door path whose locks share no code rule (a 4-digit and a 6-digit keypad, say) is
            # an operator's problem, not the fleet's: alarm on its first lock and go on.
            result.failed.append(grant.id)
            with engine.begin() as conn:
                raise_alarm(conn, sorted(keypad)[0], "code_not_possible", at=now, subject=f"grant:{grant.id}",
                            detail=f"no keypad code fits every lock of this door path: {exc}"[:400], actor=ACTOR)
    return result
