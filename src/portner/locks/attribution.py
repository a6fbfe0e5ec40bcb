"""Who opened the door, and which alarms and notifications an event calls for: pure rules.

Adapters deliver normalised LockEvents (portner.locks.port). This module decides what they mean,
given what Portner knows of the slot at the event's time; portner.services.lock_activity does the
reading and writing. Nothing here does I/O or reads a clock.

Attribution (the `attribution` column of lock_activity):

- ``event``: the lock named a slot, and a managed code was placed there at the event's time.
- ``legacy_alarm``: as ``event``, but the slot came from a legacy alarm report that followed an
  unidentified notification within LEGACY_PAIRING (F13); the two are one entry.
- ``unidentified``: the lock did not say who it was (F11, F13). Never "the last user".
- ``unknown_credential``: the lock named a slot that holds no managed code in our records (empty,
  removed, never written, or rejected), typically a master or programming code (F12). It is never
  attributed to whoever last held the slot, and it raises a security alarm.

Notifications (F28): two independent switches, never degrading each other. `global_on` is the
lock-level "tell me about every state change"; `credential_on` is the code's own "tell me when
this code is used" (keypad_codes.notify). A code's use names its holder (a pseudonymous display
name, never a PIN) whenever the code's notifications are on; the global switch alone yields only
an unnamed state change. With both on, the named notification replaces the unnamed one (the
keymaster #646 fault was the reverse: both on degraded code unlocks to a generic message).

    =================  ==========  ===============  ======================================
    event              global      credential       notifications
    =================  ==========  ===============  ======================================
    keypad unlock      off         off              (none)
    keypad unlock      off         on               code_unlock(holder)
    keypad unlock      on          off              unlocked(keypad)
    keypad unlock      on          on               code_unlock(holder)
    keypad lock        off         off              (none)
    keypad lock        off         on               code_lock(holder) [1]
    keypad lock        on          off              locked(keypad)
    keypad lock        on          on               code_lock(holder) [1]
    manual             off         off / on         (none)
    manual             on          off / on         unlocked(manual) or locked(manual)
    remote             off         off / on         (none)
    remote             on          off / on         unlocked(remote) or locked(remote)
    auto-lock          off         off / on         (none)
    auto-lock          on          off / on         locked(auto)
    =================  ==========  ===============  ======================================

[1] when the lock names the slot that locked; a one-touch keypad lock without a code has no
credential, so it follows the global switch alone (locked(keypad)). Manual, remote and auto-lock
events involve no code: the credential switch does not apply to them. Failed attempts are not
notifications (they are alarms: WRONG_CODE_COUNT wrong codes within WRONG_CODE_WINDOW, F26).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

from portner.locks.port import HealthEvent, LockEvent, Operation, Source

# --- attribution -----------------------------------------------------------------------------------

EVENT: Final = "event"
LEGACY_ALARM: Final = "legacy_alarm"
UNIDENTIFIED: Final = "unidentified"
UNKNOWN_CREDENTIAL: Final = "unknown_credential"
# A log entry Portner writes itself: a remote unlock it commanded that the device never confirmed.
COMMAND_UNCONFIRMED: Final = "command_unconfirmed"
REMOTE_UNCONFIRMED_TEXT: Final = "remote unlock commanded (unconfirmed by device)"

# F13: a legacy alarm report naming the user comes within 2 s of the notification without one.
LEGACY_PAIRING: Final = timedelta(seconds=2)
# A lock's clock may run behind ours: a code used this soon "before" we sent it still counts as
# placed (slots are reassigned only after a confirmed removal, so this cannot reach a new holder).
CLOCK_TOLERANCE: Final = timedelta(minutes=2)

# Placement states (code_placements.state) in which the code cannot be on the lock: a slot that
# only ever saw these is "empty" in our records (F12).
NOT_ON_LOCK: Final = frozenset({"removed"})


@dataclass(frozen=True, slots=True)
class SlotFacts:
    """What Portner knows of one slot's placement: the code, its holder, the placement's state and
    when it was on the lock (requested -> removed), and the code's own validity window."""

    code_id: str | None
    actor_id: str | None
    state: str | None  # code_placements.state; None = no placement
    intent: str | None = None  # present | absent
    placed_at: datetime | None = None  # first write requested (None: never sent to the lock)
    removed_at: datetime | None = None  # removal confirmed
    not_before: datetime | None = None
    not_after: datetime | None = None
    revoked_at: datetime | None = None
    last_refusal: str | None = None

    def on_lock_at(self, at: datetime) -> bool:
        """Whether the code could have been in the slot at `at` (lock time)."""
        if self.code_id is None or self.state is None or self.placed_at is None:
            return False
        if self.state in NOT_ON_LOCK and (self.removed_at is None or self.removed_at <= at):
            return False
        # A write the lock refused for good (duplicate, bad code, lock full) never landed.
        if self.state == "failed" and self.intent == "present" and self.last_refusal:
            return False
        if at < self.placed_at - CLOCK_TOLERANCE:
            return False
        return self.removed_at is None or at < self.removed_at


@dataclass(frozen=True, slots=True)
class Attribution:
    kind: str  # EVENT | LEGACY_ALARM | UNIDENTIFIED | UNKNOWN_CREDENTIAL
    code_id: str | None = None
    actor_id: str | None = None
    # A security alarm the event calls for ("unknown_credential", "revoked_code_used"), or "".
    alarm: str = ""


_OPERATIONS: Final = frozenset(op.value for op in Operation)
_SOURCES: Final = frozenset(s.value for s in Source)


def operation_missing(ev: LockEvent) -> bool:
    """F14: an event without an operation (`"action":""`) is ignored, never recorded."""
    return not isinstance(ev.operation, str) or not ev.operation


# Bounds of what a lock may report (and what lock_activity's columns hold): Portner's slots are
# 1..65535 (Zigbee users 0..65534, Matter/Z-Wave user indexes fit in 16 bits), an event key is at
# most lock_activity.key's 200 characters, and a lock's clock may run ahead of ours, but a day
# ahead is not a clock, it is a wrong (or hostile) time that would sort before every real event.
MAX_SLOT: Final = 65_535
MAX_KEY_LENGTH: Final = 200
MAX_LOCK_TIME_AHEAD: Final = timedelta(hours=24)


def _require_text(value: Any, name: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string")


def _require_aware(value: Any, name: str) -> None:
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime")


def _require_key(value: Any, name: str) -> None:
    _require_text(value, name)
    if len(value) > MAX_KEY_LENGTH:
        raise ValueError(f"{name} is longer than {MAX_KEY_LENGTH} characters")


def _require_slot(value: Any, name: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOT:
        raise ValueError(f"{name} must be a slot number 1..{MAX_SLOT} (Portner's numbering) or None")


def _require_times(received_at: Any, lock_time: Any, where: str) -> None:
    _require_aware(received_at, f"{where}.received_at")
    if lock_time is None:
        return
    _require_aware(lock_time, f"{where}.lock_time")
    try:
        ahead = lock_time - received_at
    except OverflowError:  # an offset that takes the time out of datetime's range in UTC
        raise ValueError(f"{where}.lock_time is out of range") from None
    if ahead > MAX_LOCK_TIME_AHEAD:
        raise ValueError(f"{where}.lock_time is more than {MAX_LOCK_TIME_AHEAD} after it was received")


def check_event(ev: LockEvent, where: str = "event") -> None:
    """Refuse a malformed LockEvent with an error naming the field (`where` prefixes it)."""
    _require_text(ev.lock, f"{where}.lock")
    _require_key(ev.key, f"{where}.key")
    if ev.operation not in _OPERATIONS:
        raise ValueError(f"{where}.operation must be one of {sorted(_OPERATIONS)}, got {ev.operation!r}")
    if ev.source not in _SOURCES:
        raise ValueError(f"{where}.source must be one of {sorted(_SOURCES)}, got {ev.source!r}")
    if not isinstance(ev.success, bool):
        raise TypeError(f"{where}.success must be a bool")
    _require_times(ev.received_at, ev.lock_time, where)
    _require_slot(ev.slot, f"{where}.slot")


def check_health_event(ev: HealthEvent, where: str = "event") -> None:
    """Refuse a malformed HealthEvent with an error naming the field."""
    _require_text(ev.lock, f"{where}.lock")
    _require_key(ev.key, f"{where}.key")
    _require_times(ev.received_at, ev.lock_time, where)
    _require_slot(ev.slot, f"{where}.slot")
    percent = ev.percent
    if percent is not None and (isinstance(percent, bool) or not isinstance(percent, int | float)
                                or not math.isfinite(percent) or not 0 <= percent <= 100):
        raise ValueError(f"{where}.percent must be a number 0..100 or None")


def event_time(event: LockEvent) -> datetime:
    """When the event happened: the lock's own time when it gave one, else when it arrived."""
    return event.lock_time or event.received_at


def order_key(event: LockEvent) -> tuple[datetime, int, str]:
    """Lock time, then the lock's sequence: the order state follows, not the arrival order."""
    return (event_time(event), event.sequence if event.sequence is not None else -1, event.key)


def placement_at(candidates: Iterable[SlotFacts], at: datetime) -> SlotFacts | None:
    """The placement that held the slot at `at`, if any; the latest placed wins a tie."""
    live = [c for c in candidates if c.on_lock_at(at)]
    if not live:
        return None
    # Exact containment beats the clock tolerance (a new placement right after a removal).
    exact = [c for c in live if c.placed_at is not None and c.placed_at <= at]
    pool = exact or live
    return max(pool, key=lambda c: c.placed_at or at)


def attribute(event: LockEvent, facts: SlotFacts | None) -> Attribution:
    """Decide who the event is attributed to, from the slot's placement at the event's time."""
    if event.slot is None:
        return Attribution(UNIDENTIFIED)
    at = event_time(event)
    if facts is None or not facts.on_lock_at(at):
        # F12: a master/programming code, or a slot emptied in our records. Never the last holder.
        # The security alarm is for the door opening (or locking) to it; a refused try is an attempt.
        return Attribution(UNKNOWN_CREDENTIAL, alarm=UNKNOWN_CREDENTIAL if event.success else "")
    kind = LEGACY_ALARM if event.attribution == LEGACY_ALARM else EVENT
    alarm = "revoked_code_used" if facts.revoked_at is not None and facts.revoked_at <= at else ""
    return Attribution(kind, facts.code_id, facts.actor_id, alarm)


def pairs_with_legacy(unidentified: LockEvent, legacy: LockEvent) -> bool:
    """Whether a legacy alarm report (with the user) belongs to an unidentified notification (F13).

    The two are separate reports of one operation: same lock, operation and source, within LEGACY_PAIRING
    of each other. Either may arrive first, so the gap is taken both ways.
    """
    return (
        unidentified.slot is None
        and unidentified.attribution != LEGACY_ALARM
        and legacy.attribution == LEGACY_ALARM
        and legacy.slot is not None
        and unidentified.lock == legacy.lock
        and unidentified.operation == legacy.operation
        and unidentified.source == legacy.source
        and abs(event_time(legacy) - event_time(unidentified)) <= LEGACY_PAIRING
    )


def merge_legacy(events: Sequence[LockEvent]) -> list[LockEvent]:
    """Fold each legacy alarm report into the unidentified notification it belongs to.

    The merged event keeps the notification's key and time (so a redelivery of the notification
    still dedupes) and takes the slot from the legacy report, marked LEGACY_ALARM. A legacy report
    with no partner stands alone; each notification takes at most one report (the nearest).
    """
    out = list(events)
    partnered: set[int] = set()  # notifications that took a report
    absorbed: set[int] = set()  # reports folded into a notification
    for i, legacy in enumerate(events):
        if legacy.attribution != LEGACY_ALARM or legacy.slot is None:
            continue
        partners = [j for j, ev in enumerate(events)
                    if j not in partnered and pairs_with_legacy(ev, legacy)]
        if not partners:
            continue
        j = min(partners, key=lambda k: abs(event_time(events[k]) - event_time(legacy)))
        out[j] = replace(events[j], slot=legacy.slot, attribution=LEGACY_ALARM)
        partnered.add(j)
        absorbed.add(i)
    return [ev for k, ev in enumerate(out) if k not in absorbed]


def entry_text(operation: str, source: str, success: bool, attribution: str, holder: str = "") -> str:
    """A log entry in plain words (English, for operators): "keypad unlock – unidentified"."""
    if attribution == COMMAND_UNCONFIRMED:
        return REMOTE_UNCONFIRMED_TEXT
    what = f"{source} {operation}" if source != Source.UNKNOWN else operation
    if not success:
        what = f"failed {what}"
    if attribution == UNIDENTIFIED:
        return f"{what} – unidentified" if source in (Source.KEYPAD, Source.RFID) else what
    if attribution == UNKNOWN_CREDENTIAL:
        return f"{what} – unknown credential"
    if holder:
        suffix = " (legacy alarm)" if attribution == LEGACY_ALARM else ""
        return f"{what} – {holder}{suffix}"
    return what


# --- alarms ----------------------------------------------------------------------------------------

WRONG_CODE_COUNT: Final = 5
WRONG_CODE_WINDOW: Final = timedelta(minutes=5)
JAM_ESCALATION: Final = timedelta(minutes=5)
REMOTE_CONFIRMATION: Final = timedelta(seconds=60)
ATTRIBUTION_SILENCE: Final = timedelta(hours=24)

# How long an open alarm may stay before it is escalated; kinds not named never escalate by time.
ESCALATE_AFTER: Final = {"jammed": JAM_ESCALATION}


def wrong_code_burst(failures: Iterable[datetime], at: datetime, *,
                     count: int = WRONG_CODE_COUNT, window: timedelta = WRONG_CODE_WINDOW) -> bool:
    """Whether `count` wrong codes fell within `window` ending at `at` (F26)."""
    return sum(1 for f in failures if at - window <= f <= at) >= count


@dataclass(frozen=True, slots=True)
class JamState:
    """A lock's jam as derived from events in lock-time order (F29)."""

    jammed_since: datetime | None
    cleared_at: datetime | None = None


def apply_jam(state: JamState, *, jammed_at: datetime | None = None,
              operated_at: datetime | None = None, last_operated: datetime | None = None) -> JamState:
    """Fold one jam report or one successful operation into the jam state.

    A jam older than the last successful operation is stale (the lock has worked since: it came
    late, out of order). A successful operation after the jam clears it, at the operation's time.
    Nothing clears a jam by the passing of time.
    """
    if jammed_at is not None:
        if last_operated is not None and last_operated >= jammed_at:
            return state
        if state.jammed_since is not None and state.jammed_since <= jammed_at:
            return state
        return JamState(jammed_at)
    if operated_at is not None and state.jammed_since is not None and operated_at > state.jammed_since:
        return JamState(None, cleared_at=operated_at)
    return state


def escalation_due(kind: str, raised_at: datetime, now: datetime) -> bool:
    """Whether an open alarm of `kind` raised at `raised_at` is due for escalation at `now`."""
    after = ESCALATE_AFTER.get(kind)
    return after is not None and now - raised_at >= after


def attribution_unavailable(*, toggles: Sequence[datetime], last_user_event_at: datetime | None,
                            observed_since: datetime | None, now: datetime) -> bool:
    """F11: the lock's state changed within the last 24 h, yet for 24 h no event said how (no
    operation event with a source: the lock sends bare state updates only)."""
    horizon = now - ATTRIBUTION_SILENCE
    if observed_since is None or observed_since > horizon:
        return False  # not watched for a full day yet
    if last_user_event_at is not None and last_user_event_at > horizon:
        return False
    return any(horizon < at <= now for at in toggles)


def is_user_event(event: LockEvent) -> bool:
    """An operation event that says how the lock was operated (not a bare state update)."""
    return event.source is not Source.UNKNOWN


# --- notifications (F28) ---------------------------------------------------------------------------


class EventKind:
    KEYPAD_UNLOCK: Final = "keypad_unlock"
    KEYPAD_LOCK: Final = "keypad_lock"
    MANUAL: Final = "manual"
    REMOTE: Final = "remote"
    AUTO_LOCK: Final = "auto_lock"


EVENT_KINDS: Final = (EventKind.KEYPAD_UNLOCK, EventKind.KEYPAD_LOCK, EventKind.MANUAL,
                      EventKind.REMOTE, EventKind.AUTO_LOCK)


@dataclass(frozen=True, slots=True)
class Notification:
    kind: str  # code_unlock | code_lock | unlocked | locked
    source: str  # keypad | manual | remote | auto
    holder: str = ""  # the credential holder's display name (code_* only)


def event_kind(event: LockEvent) -> str | None:
    """The F28 matrix row of an event, or None (failed attempts, phone and RFID openings)."""
    if not event.success:
        return None
    if event.source is Source.KEYPAD:
        return EventKind.KEYPAD_UNLOCK if event.operation is Operation.UNLOCK else EventKind.KEYPAD_LOCK
    if event.source is Source.MANUAL:
        return EventKind.MANUAL
    if event.source is Source.REMOTE:
        return EventKind.REMOTE
    if event.source is Source.AUTO:
        return EventKind.AUTO_LOCK
    return None


def notifications(kind: str, operation: Operation, *, global_on: bool, credential_on: bool,
                  holder: str | None = None) -> frozenset[Notification]:
    """The notifications one event yields (the matrix in the module docstring).

    `holder` is the display name of the code's holder when a managed code was used, else None.
    """
    if kind not in EVENT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(EVENT_KINDS)}, got {kind!r}")
    if kind == EventKind.AUTO_LOCK and operation is not Operation.LOCK:
        raise ValueError("operation: an auto-lock event can only lock")
    state = "unlocked" if operation is Operation.UNLOCK else "locked"
    source = {EventKind.KEYPAD_UNLOCK: "keypad", EventKind.KEYPAD_LOCK: "keypad",
              EventKind.MANUAL: "manual", EventKind.REMOTE: "remote", EventKind.AUTO_LOCK: "auto"}[kind]
    if kind in (EventKind.KEYPAD_UNLOCK, EventKind.KEYPAD_LOCK) and holder is not None and credential_on:
        code_kind = "code_unlock" if operation is Operation.UNLOCK else "code_lock"
        return frozenset({Notification(code_kind, source, holder)})
    if global_on:
        return frozenset({Notification(state, source)})
    return frozenset()
