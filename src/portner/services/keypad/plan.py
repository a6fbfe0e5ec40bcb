"""Which placements of a lock need what, now: the pure part of the reconciler's decisions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from portner.locks.port import LockWindow
from portner.locks.schedules import lock_windows
from portner.services.keypad.model import MAY_BE_ON_LOCK, Enforcement, Intent, State


@dataclass(frozen=True, slots=True)
class Timing:
    add_lead: timedelta = timedelta(minutes=15)  # server-enforced: add this long before the start
    removal_margin: timedelta = timedelta(minutes=5)  # removal later than this is overdue
    recently_removed: timedelta = timedelta(days=7)  # removed slots still checked for reappearance


def wanted_on_lock(p: Any, now: datetime, timing: Timing) -> bool:
    """Whether the plan wants this placement's code on its lock at `now`. Server-enforced codes
    are on the lock from not_before minus the lead time until not_after; lock-enforced ones from
    now until not_after (the lock keeps the window itself)."""
    if p.intent != Intent.PRESENT or p.revoked_at is not None:
        return False
    if p.not_after is not None and now >= p.not_after:
        return False
    if p.enforcement == Enforcement.SERVER and p.not_before is not None:
        return now >= p.not_before - timing.add_lead
    return True


def next_boundary(p: Any, now: datetime, timing: Timing) -> datetime | None:
    """The next instant at which wanted_on_lock may change for this placement."""
    candidates = []
    if p.enforcement == Enforcement.SERVER and p.not_before is not None:
        candidates.append(p.not_before - timing.add_lead)
    if p.not_after is not None:
        candidates.append(p.not_after)
    later = [c for c in candidates if c > now]
    return min(later) if later else None


def may_be_on_lock(p: Any) -> bool:
    """A placement whose code may be on the lock: confirmed or in flight, or pending with a slot
    (a write that never answered may still have landed)."""
    return State(p.state) in MAY_BE_ON_LOCK or (p.state == State.PENDING and p.slot is not None)


def removal_reason(p: Any, now: datetime) -> str:
    if p.intent != Intent.PRESENT or p.revoked_at is not None:
        return "revoked"
    if p.not_after is not None and now >= p.not_after:
        return "window ended"
    return "schedule changed"


def removal_deadline(p: Any) -> datetime | None:
    """When the code should have left the lock: the revocation or the window's end, whichever
    came first (a code withdrawn after its window had already ended was due at that end: the
    withdrawal must not make a late removal look punctual)."""
    ends = [at for at in (p.removal_requested_at, p.not_after) if at is not None]
    return min(ends) if ends else None


def lock_window(p: Any, zone: str) -> LockWindow | None:
    """The window a lock-enforced placement carries; None for server enforcement, and None (no
    window, F2: never an old one) when the code has no end. A window with only an end starts when
    the code was made."""
    if p.enforcement != Enforcement.LOCK or p.not_after is None:
        return None
    start = p.not_before if p.not_before is not None else p.created_at
    windows = lock_windows(start, p.not_after, zone)
    if len(windows) != 1:
        raise ValueError("the lock needs one window for this code; got "
                         f"{len(windows)} (enforce it on the server instead)")
    return windows[0]


def window_args(window: LockWindow | None) -> dict[str, str] | None:
    return None if window is None else {"start": window.start.isoformat(), "end": window.end.isoformat()}
