"""Which locks have anything to do at all in a pass: the whole fleet read in five set-based
queries, and the reconciler's per-lock decisions taken on those rows in memory.

An idle lock (codes confirmed, nothing due, heartbeat and verification recent) then costs no
statement of its own. Nothing here is remembered between passes: every pass reads the database
afresh, so codes issued, revoked or rescheduled by other transactions or processes are seen on
the next pass whatever clock they were written with, and a new reconciler still verifies before
it writes (F19). The predicates must never say "idle" where Reconciler.reconcile_lock would act
(tests/services/test_reconcile_idle.py checks that); saying "due" too often only costs time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select

from portner.locks.port import Capabilities, Feature
from portner.locks.schedules import needs_clock_set
from portner.services.keypad.budget import RadioBudget
from portner.services.keypad.model import CommandState, Intent, State
from portner.services.keypad.plan import (
    Timing,
    may_be_on_lock,
    next_boundary,
    removal_deadline,
    wanted_on_lock,
)
from portner.storage import tables as t

# The columns of a placement row the decisions read (the same names as Reconciler._placements).
_CODE_COLUMNS = ("not_before", "not_after", "revoked_at", "code_mac", "created_at", "municipality_id")
_PRESENT_STATES = (State.CONFIRMED, State.UNVERIFIED, State.SUSPECTED_MISSING)


@dataclass
class FleetSnapshot:
    """The rows one pass decides on, per lock."""

    placements: dict[str, list[Any]] = field(default_factory=dict)  # not removed, or removed and due
    removed_with_slot: set[str] = field(default_factory=set)  # locks with a recently removed slot
    status: dict[str, Any] = field(default_factory=dict)
    outstanding: set[str] = field(default_factory=set)  # locks with a command never finished
    lock_ids: list[str] = field(default_factory=list)  # every lock the pass looks at
    overdue_alarms: set[tuple[str, str]] = field(default_factory=set)  # open_overdue_alarms


def read_fleet(conn: Connection, now: datetime, timing: Timing) -> FleetSnapshot:
    p, c = t.code_placements, t.keypad_codes
    horizon = now - timing.recently_removed
    snap = FleetSnapshot()
    # Removed placements are many (every ended visit for a week) and nearly all inert: only those
    # whose next attempt has come, or that the plan may want back, are read in full.
    removed_due = and_(
        p.c.state == State.REMOVED, p.c.removed_at >= horizon,
        or_(p.c.next_attempt_at <= now,
            and_(p.c.next_attempt_at.is_(None), p.c.intent == Intent.PRESENT, c.c.revoked_at.is_(None),
                 or_(c.c.not_after.is_(None), c.c.not_after > now))),
    )
    rows = conn.execute(
        select(p, *(c.c[name] for name in _CODE_COLUMNS))
        .join(c, c.c.id == p.c.code_id)
        .join(t.locks, mounted(p.c.lock_id))
        .where(or_(p.c.state != State.REMOVED, removed_due))
        .order_by(p.c.lock_id, p.c.id)
    )
    for row in rows:
        snap.placements.setdefault(row.lock_id, []).append(row)
    recently_removed = conn.execute(
        select(p.c.lock_id, func.max(case((p.c.slot.is_not(None), 1), else_=0)).label("with_slot"))
        .join(t.locks, mounted(p.c.lock_id))
        .where(p.c.state == State.REMOVED, p.c.removed_at >= horizon)
        .group_by(p.c.lock_id)
    ).all()
    snap.removed_with_slot = {r.lock_id for r in recently_removed if r.with_slot}
    s = t.lock_status
    snap.status = {r.lock_id: r for r in conn.execute(select(
        s.c.lock_id, s.c.clock_offset_s, s.c.verified_at, s.c.heartbeat_at, s.c.budget_window_start,
        s.c.budget_used, s.c.last_command_at).join(t.locks, mounted(s.c.lock_id)))}
    snap.outstanding = set(conn.execute(
        select(t.lock_commands.c.lock_id).where(t.lock_commands.c.state == CommandState.REQUESTED)
        .distinct()
    ).scalars())
    snap.lock_ids = sorted(set(snap.placements) | {r.lock_id for r in recently_removed} | set(snap.status))
    snap.overdue_alarms = open_overdue_alarms(conn)
    return snap


def mounted(lock_id: Any) -> Any:
    """Join condition: the lock is on its door. A lock taken off it is never spoken to again (its
    address may be another lock's by now)."""
    return and_(t.locks.c.id == lock_id, t.locks.c.removed_at.is_(None))


def placement_needs_step(p: Any, now: datetime, timing: Timing) -> bool:
    """Whether reconcile_lock would act on (or write to) this placement now: steps 3 to 5."""
    if p.next_attempt_at is not None and p.next_attempt_at > now:
        return False
    if p.state in (State.FAILED, State.SUSPENDED, State.WRITING):
        return False  # a person must act, or the outstanding command finishes it
    wanted = wanted_on_lock(p, now, timing)
    if may_be_on_lock(p) and not wanted:
        return True  # a removal
    if p.state in (State.PENDING, State.WRITE_UNCONFIRMED):
        return True  # a write, or parked until its next boundary (a write either way)
    if p.state == State.REMOVING:
        return True  # wanted again while its clear waited: written back into its slot
    if p.state == State.REMOVED:
        return wanted or next_boundary(p, now, timing) != p.next_attempt_at
    return p.state in (State.UNVERIFIED, State.SUSPECTED_MISSING)  # a re-read


def open_overdue_alarms(conn: Connection, lock_id: str | None = None) -> set[tuple[str, str]]:
    """(lock, code) of every removal_overdue alarm still open (of one lock, when given)."""
    a = t.lock_alarms
    query = select(a.c.lock_id, a.c.subject).where(a.c.kind == "removal_overdue", a.c.cleared_at.is_(None))
    if lock_id is not None:
        query = query.where(a.c.lock_id == lock_id)
    return {(row.lock_id, row.subject) for row in conn.execute(query)}


def removals_no_longer_due(placements: Iterable[Any], alarmed: set[tuple[str, str]], now: datetime,
                           timing: Timing) -> list[Any]:
    """Placements with an open removal_overdue alarm that the plan wants on the lock again (its
    window was extended or moved): the removal it was raised for is not due any more."""
    return [p for p in placements
            if (p.lock_id, p.code_id) in alarmed and p.state != State.REMOVED
            and wanted_on_lock(p, now, timing)]


def overdue_removals(placements: Iterable[Any], now: datetime, timing: Timing) -> list[Any]:
    """Placements whose code should have left the lock more than the margin ago."""
    late = []
    for p in placements:
        if p.state == State.REMOVED or not may_be_on_lock(p) or wanted_on_lock(p, now, timing):
            continue
        deadline = removal_deadline(p)
        if deadline is not None and now > deadline + timing.removal_margin:
            late.append(p)
    return late


@dataclass(frozen=True, slots=True)
class LockView:
    """What the reconciler instance itself knows of a lock (its _LockRuntime)."""

    capabilities: Capabilities | None
    verified: bool
    next_verify_at: datetime | None


def lock_needs_step(
    lock_id: str, snap: FleetSnapshot, view: LockView, now: datetime, *, timing: Timing,
    budget: RadioBudget, verify_every: timedelta, heartbeat_every: timedelta,
) -> bool:
    """Whether reconcile_lock would do anything for this lock now; mirrors its order."""
    caps, status = view.capabilities, snap.status.get(lock_id)
    if caps is None or status is None:
        return True  # capabilities to learn, a status row to make
    if not budget.may_send(status, caps.min_command_interval, now):
        return False
    placements = snap.placements.get(lock_id, [])
    managed = lock_id in snap.removed_with_slot or any(
        p.state in _PRESENT_STATES and p.slot is not None for p in placements)
    if not view.verified:
        return not managed or view.next_verify_at is None or now >= view.next_verify_at
    if lock_id in snap.outstanding:
        return True
    if (Feature.CLOCK in caps.features and status.clock_offset_s is not None
            and needs_clock_set(timedelta(seconds=status.clock_offset_s))):
        return True
    if any(placement_needs_step(p, now, timing) for p in placements):
        return True
    if managed and (status.verified_at is None or now - status.verified_at >= verify_every):
        return True
    return status.heartbeat_at is None or now - status.heartbeat_at >= heartbeat_every
