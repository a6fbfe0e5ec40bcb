"""Lock events into the activity log, the lock's status and its alarms.

`record_events` takes the normalised LockEvents and HealthEvents adapters deliver and, in one
transaction with their audit entries:

- writes one lock_activity row per event, deduplicated on (lock, key) by an insert that ignores
  conflicts on SQLite and PostgreSQL alike, so a redelivery (F14) or a second replica changes
  nothing; failed attempts are rows with success false, never visits (F26);
- attributes each event through the slot's placement at the event's time
  (portner.locks.attribution): a managed code names its holder, an empty slot is an unknown
  credential with a security alarm (F12), no slot is "unidentified" (F11, F13), and a legacy alarm
  report is folded into the notification it belongs to, whichever of the two arrives first (F13);
- links a successful keypad unlock to the visit of the code's grant, and counts the use of a
  use-limited code (F1, through portner.services.keypad.record_use);
- keeps lock_status in lock-time order, not arrival order: `last_event_at` is the lock time of the
  newest successful operation, and bolt and jam follow only newer news (F29);
- raises and clears lock_alarms (portner.services.lock_alarms).

`check_unconfirmed_remote` and `check_attribution` are the periodic checks (F26, F11), defined in
portner.services.lock_alarms and re-exported here; with `lock_alarms.escalate_due` they are what a
worker runs every few seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, or_, select, update

from portner.domain.model import VisitStatus
from portner.locks import attribution as rules
from portner.locks.attribution import LEGACY_ALARM, SlotFacts, event_time
from portner.locks.port import Condition, HealthEvent, LockEvent, Operation, Source
from portner.services.fleet import municipality_lock_ids
from portner.services.lock_alarms import (  # the periodic checks live with the alarms they raise
    SYSTEM_ACTOR,
    check_attribution,
    check_unconfirmed_remote,
    clear_alarm,
    raise_alarm,
)
from portner.services.writeback import queue_encounter
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import dialect_insert
from portner.storage.repository import Repository

__all__ = ["RecordResult", "check_attribution", "check_unconfirmed_remote", "record_events",
           "record_events_in"]

BATTERY_LOW = 15.0  # percent: raise battery_low below this
BATTERY_OK = 25.0  # percent: clear it at or above this (a gap, so a flickering level does not flap)


@dataclass(slots=True)
class RecordResult:
    recorded: int = 0  # new activity rows
    duplicates: int = 0  # events already recorded (same lock and key, or a folded legacy report)
    merged: int = 0  # legacy alarm reports folded into an entry (F13)
    ignored: int = 0  # events without an operation (F14: `"action":""`)
    health: int = 0  # health events applied
    unknown_locks: list[str] = field(default_factory=list)  # addresses no lock row has
    alarms: list[tuple[str, str]] = field(default_factory=list)  # (lock id, kind) newly raised


def record_events(engine: Engine, events: Iterable[LockEvent | HealthEvent], *,
                  now: datetime, backend: str | None = None, municipality_id: str | None = None) -> RecordResult:
    """Record a batch of adapter events in one transaction (see the module docstring).

    `backend` and `municipality_id`, when given, are who may speak for a lock: an event whose lock
    is not served by that backend in that municipality is counted as unknown, never recorded (a
    vendor cloud or an MQTT device must not write onto another vendor's or municipality's lock)."""
    with engine.begin() as conn:
        return record_events_in(conn, events, now=now, backend=backend, municipality_id=municipality_id)


def record_events_in(conn: Connection, events: Iterable[LockEvent | HealthEvent], *,
                     now: datetime, backend: str | None = None, municipality_id: str | None = None) -> RecordResult:
    """`record_events` inside the caller's transaction."""
    if now.utcoffset() is None:
        raise ValueError("now must be an aware datetime")
    result = RecordResult()
    lock_events: list[LockEvent] = []
    health: list[HealthEvent] = []
    for index, ev in enumerate(events):
        if isinstance(ev, LockEvent):
            if rules.operation_missing(ev):
                result.ignored += 1  # the adapter should have dropped it; never a row
                continue
            rules.check_event(ev, f"events[{index}]")
            lock_events.append(ev)
        elif isinstance(ev, HealthEvent):
            rules.check_health_event(ev, f"events[{index}]")
            health.append(ev)
        else:
            raise TypeError(f"events[{index}] must be a LockEvent or HealthEvent, not {type(ev).__name__}")
    if not lock_events and not health:
        return result
    ids = _resolve_locks(conn, {ev.lock for ev in [*lock_events, *health]}, backend, municipality_id)
    result.unknown_locks = sorted({ev.lock for ev in [*lock_events, *health]} - ids.keys())
    merged = rules.merge_legacy([ev for ev in lock_events if ev.lock in ids])
    result.merged += len([ev for ev in lock_events if ev.lock in ids]) - len(merged)
    todo: list[LockEvent | HealthEvent] = [*merged, *(h for h in health if h.lock in ids)]
    todo.sort(key=_order)
    batch = _Batch(conn, now, result, _load_status(conn, sorted({ids[ev.lock] for ev in todo})))
    for ev in todo:
        if isinstance(ev, LockEvent):
            batch.lock_event(ids[ev.lock], ev)
        else:
            batch.health_event(ids[ev.lock], ev)
    batch.finish()
    return result


# --- validation and lookups ------------------------------------------------------------------------


def _order(ev: LockEvent | HealthEvent) -> tuple[datetime, int, str]:
    if isinstance(ev, LockEvent):
        return rules.order_key(ev)
    return (ev.lock_time or ev.received_at, -1, ev.key)


def _resolve_locks(conn: Connection, addresses: set[str], backend: str | None = None,
                   municipality_id: str | None = None) -> dict[str, str]:
    """Adapter address -> lock id: by locks.address, else by id (the simulated lock has none).
    A lock taken off its door still resolves (late events), but a mounted one wins. Only locks of
    `backend` and `municipality_id` when given."""
    wanted = sorted(addresses)
    query = (
        select(t.locks.c.id, t.locks.c.address, t.locks.c.removed_at)
        .where(or_(t.locks.c.address.in_(wanted), and_(t.locks.c.address.is_(None), t.locks.c.id.in_(wanted))))
        .order_by(t.locks.c.removed_at.is_(None), t.locks.c.id)  # mounted last, so they win
    )
    if backend is not None:
        query = query.where(t.locks.c.backend == backend)
    if municipality_id is not None:
        query = query.where(t.locks.c.id.in_(municipality_lock_ids(municipality_id).scalar_subquery()))
    rows = conn.execute(query).all()
    out: dict[str, str] = {}
    for r in rows:
        out[r.address if r.address is not None else r.id] = r.id
    return out


def _facts(conn: Connection, lock_id: str, slot: int) -> list[tuple[SlotFacts, dict[str, Any]]]:
    """Every placement this slot of this lock has had, with what the log needs of its code."""
    p, k = t.code_placements, t.keypad_codes
    rows = conn.execute(
        select(p.c.code_id, p.c.state, p.c.intent, p.c.requested_at, p.c.confirmed_at,
               p.c.removed_at, p.c.last_refusal, k.c.actor_id, k.c.not_before, k.c.not_after,
               k.c.revoked_at, k.c.max_uses, k.c.grant_id, t.grants.c.visit_id)
        .join(k, k.c.id == p.c.code_id)
        .outerjoin(t.grants, t.grants.c.id == k.c.grant_id)
        .where(p.c.lock_id == lock_id, p.c.slot == slot)
    ).all()
    out = []
    for r in rows:
        placed = min((x for x in (r.requested_at, r.confirmed_at) if x is not None), default=None)
        facts = SlotFacts(r.code_id, r.actor_id, r.state, r.intent, placed, r.removed_at,
                          r.not_before, r.not_after, r.revoked_at, r.last_refusal)
        out.append((facts, {"max_uses": r.max_uses, "visit_id": r.visit_id}))
    return out


# --- lock status -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Status:
    online: bool | None = None
    bolt: str | None = None
    jammed_since: datetime | None = None
    tamper_at: datetime | None = None
    last_event_at: datetime | None = None  # newest successful operation (lock time)
    last_user_event_at: datetime | None = None
    clock_verified_at: datetime | None = None
    exists: bool = False
    changed: bool = False

    @property
    def news_at(self) -> datetime | None:
        """The newest thing the bolt reflects: a later event is news, an earlier one is history."""
        times = [x for x in (self.last_event_at, self.jammed_since) if x is not None]
        return max(times) if times else None


def _load_status(conn: Connection, lock_ids: Sequence[str]) -> dict[str, _Status]:
    if not lock_ids:
        return {}
    s = t.lock_status
    # Named columns only: the table grows with the reconciler's needs.
    query = select(s.c.lock_id, s.c.online, s.c.bolt, s.c.jammed_since, s.c.tamper_at,
                   s.c.last_event_at, s.c.last_user_event_at, s.c.clock_verified_at
                   ).where(s.c.lock_id.in_(list(lock_ids)))
    if conn.dialect.name == "postgresql":
        _ensure_status_rows(conn, lock_ids)
        query = query.with_for_update()  # two replicas recording one lock take turns
    out = {lock_id: _Status() for lock_id in lock_ids}
    for r in conn.execute(query):
        out[r.lock_id] = _Status(r.online, r.bolt, r.jammed_since, r.tamper_at, r.last_event_at,
                                 r.last_user_event_at, r.clock_verified_at, exists=True)
    return out


def _ensure_status_rows(conn: Connection, lock_ids: Sequence[str]) -> None:
    # `updated_at` is required; these rows exist to be locked right after, and get real values.
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    conn.execute(dialect_insert(conn)(t.lock_status).values(
        [{"lock_id": lock_id, "updated_at": epoch, "budget_used": 0} for lock_id in lock_ids]
    ).on_conflict_do_nothing())


def _save_status(conn: Connection, lock_id: str, st: _Status, now: datetime) -> None:
    values = {"online": st.online, "bolt": st.bolt, "jammed_since": st.jammed_since,
              "tamper_at": st.tamper_at, "last_event_at": st.last_event_at,
              "last_user_event_at": st.last_user_event_at, "clock_verified_at": st.clock_verified_at,
              "updated_at": now}
    s = t.lock_status
    if st.exists:
        conn.execute(update(s).where(s.c.lock_id == lock_id).values(**values))
        return
    stmt = dialect_insert(conn)(s).values(lock_id=lock_id, budget_used=0, **values)
    conn.execute(stmt.on_conflict_do_update(index_elements=[s.c.lock_id], set_=values))


# --- one batch -------------------------------------------------------------------------------------


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


class _Batch:
    def __init__(self, conn: Connection, now: datetime, result: RecordResult,
                 status: dict[str, _Status]) -> None:
        self.conn, self.now, self.result, self.status = conn, now, result, status
        self.audit: list[AuditEntry] = []
        self.facts_cache: dict[tuple[str, int], list[tuple[SlotFacts, dict[str, Any]]]] = {}
        self.toggled: set[str] = set()

    # -- operation events --

    def lock_event(self, lock_id: str, ev: LockEvent) -> None:
        at = event_time(ev)
        if ev.slot is None and self._legacy_row(lock_id, ev, slot=None) is not None:
            self.result.duplicates += 1  # its legacy report came first and already stands for it
            return
        facts, extra = self._placement(lock_id, ev.slot, at) if ev.slot is not None else (None, {})
        who = rules.attribute(ev, facts)
        if ev.attribution == LEGACY_ALARM and ev.slot is not None:
            if self._fold_into_unidentified(lock_id, ev, who, extra):
                return
            if self._legacy_row(lock_id, ev, slot=ev.slot) is not None:
                self.result.duplicates += 1  # a redelivered legacy report, already folded
                return
        visit_id = extra.get("visit_id") if self._is_code_unlock(ev, who) else None
        row = {
            "lock_id": lock_id, "key": ev.key, "operation": ev.operation.value, "source": ev.source.value,
            "success": ev.success, "slot": ev.slot, "code_id": who.code_id, "actor_id": who.actor_id,
            "visit_id": visit_id, "attribution": who.kind, "failure": (ev.failure or "")[:32],
            "lock_time": ev.lock_time, "received_at": ev.received_at,
        }
        # RETURNING, not rowcount: a driver may report -1 for a statement that inserted nothing.
        inserted = self.conn.execute(
            dialect_insert(self.conn)(t.lock_activity).values(row)
            .on_conflict_do_nothing(index_elements=["lock_id", "key"])
            .returning(t.lock_activity.c.id)
        ).first()
        if inserted is None:
            self.result.duplicates += 1
            return
        self.result.recorded += 1
        self.audit.append(AuditEntry(self.now, SYSTEM_ACTOR, "lock_activity:recorded", lock_id, {
            "key": ev.key, "operation": row["operation"], "source": row["source"],
            "success": ev.success, "slot": ev.slot, "code": who.code_id, "actor": who.actor_id,
            "visit": visit_id, "attribution": who.kind, "failure": row["failure"],
            "lock_time": _iso(ev.lock_time),
        }))
        self._after_entry(lock_id, ev, who, extra)

    def _arrived(self, visit_id: str, at: datetime) -> None:
        """A code opening of the visit's own grant is the nurse's arrival, as a phone opening is
        (services.door_events): the first opening of the door path counts, a later one does not."""
        v = t.visits.c
        arrived = self.conn.execute(
            update(t.visits)
            .where(v.id == visit_id, v.status.in_((VisitStatus.PLANNED.value, VisitStatus.IN_PROGRESS.value)),
                   v.arrived_at.is_(None) | (v.arrived_at > at))
            .values(status=VisitStatus.IN_PROGRESS.value, arrived_at=at)
        ).rowcount
        if arrived:
            self.audit.append(AuditEntry(self.now, SYSTEM_ACTOR, "visit:arrived", visit_id,
                                         {"at": at.isoformat(), "by": "keypad"}))

    def _departed(self, lock_id: str, at: datetime) -> None:
        """Locking the home's own (innermost) door by hand or at the keypad ends the visit in
        progress there that began most recently before it, as a phone lock's "locked from inside"
        does (services.door_events); the Encounter goes to the care record's outbox. A building or
        stairwell door is shared by many homes and ends nothing."""
        d, h, v = t.doors.c, t.homes.c, t.visits.c
        door = self.conn.execute(select(d.home_id, d.position, h.resident_id)
                                 .join(t.homes, h.id == d.home_id).where(d.lock_id == lock_id)).first()
        if door is None:
            return
        innermost = self.conn.execute(select(func.max(d.position)).where(d.home_id == door.home_id)).scalar()
        if door.position != innermost:
            return
        visit_id = self.conn.execute(
            select(v.id).where(v.resident_id == door.resident_id, v.status == VisitStatus.IN_PROGRESS.value,
                               v.arrived_at <= at)
            .order_by(v.arrived_at.desc(), v.id.desc()).limit(1)
        ).scalar()
        if visit_id is None:
            return
        self.conn.execute(update(t.visits).where(v.id == visit_id)
                          .values(status=VisitStatus.COMPLETED.value, departed_at=at))
        visit = Repository(self.conn).get_visit(visit_id)
        if visit is not None:
            queue_encounter(self.conn, visit, now=self.now)
        self.audit.append(AuditEntry(self.now, SYSTEM_ACTOR, "visit:completed", visit_id,
                                     {"departed": at.isoformat(), "by": "lock"}))

    def _after_entry(self, lock_id: str, ev: LockEvent, who: rules.Attribution, extra: dict[str, Any]) -> None:
        at = event_time(ev)
        if self._is_code_unlock(ev, who) and extra.get("visit_id"):
            self._arrived(str(extra["visit_id"]), at)
        elif ev.success and ev.operation is Operation.LOCK and ev.source in (Source.KEYPAD, Source.MANUAL):
            self._departed(lock_id, at)
        if who.alarm:
            detail = f"slot {ev.slot}: {ev.source.value} {ev.operation.value}"
            self._raise(lock_id, who.alarm, at, subject=f"slot:{ev.slot}", detail=detail)
        if self._is_code_unlock(ev, who) and extra.get("max_uses") is not None and who.code_id:
            _count_use(self.conn, who.code_id, self.now)
        if not ev.success and ev.failure == "wrong_code" and self._wrong_code_burst(lock_id, at):
            self._raise(lock_id, "wrong_code", at,
                        detail=f"{rules.WRONG_CODE_COUNT} wrong codes within {rules.WRONG_CODE_WINDOW}")
        st = self.status[lock_id]
        if rules.is_user_event(ev):
            if st.last_user_event_at is None or at > st.last_user_event_at:
                st.last_user_event_at, st.changed = at, True
            self._clear_all(lock_id, "attribution_unavailable", at, "the lock reported an operation")
        elif ev.success:
            self.toggled.add(lock_id)
        if not ev.success:
            return
        news = st.news_at
        jam = rules.apply_jam(rules.JamState(st.jammed_since), operated_at=at)
        if jam.cleared_at is not None:
            st.jammed_since, st.changed = None, True
            self._clear(lock_id, "jammed", at, f"{ev.operation.value} succeeded")
        if news is None or at >= news:
            st.bolt = "locked" if ev.operation is Operation.LOCK else "unlocked"
            st.online = True
        if st.last_event_at is None or at > st.last_event_at:
            st.last_event_at = at
        st.changed = True
        if ev.source in (Source.REMOTE, Source.UNKNOWN) and ev.operation is Operation.UNLOCK:
            self._clear_all(lock_id, "remote_unconfirmed", at, "the lock reported the unlock")

    @staticmethod
    def _is_code_unlock(ev: LockEvent, who: rules.Attribution) -> bool:
        return (ev.success and ev.operation is Operation.UNLOCK and ev.source is Source.KEYPAD
                and who.code_id is not None)

    def _placement(self, lock_id: str, slot: int, at: datetime) -> tuple[SlotFacts | None, dict[str, Any]]:
        key = (lock_id, slot)
        if key not in self.facts_cache:
            self.facts_cache[key] = _facts(self.conn, lock_id, slot)
        candidates = self.facts_cache[key]
        chosen = rules.placement_at([f for f, _ in candidates], at)
        if chosen is None:
            return None, {}
        return chosen, next(x for f, x in candidates if f is chosen)

    def _near(self, lock_id: str, ev: LockEvent) -> Any:
        a = t.lock_activity
        at = event_time(ev)
        lo, hi = at - rules.LEGACY_PAIRING, at + rules.LEGACY_PAIRING
        return and_(a.c.lock_id == lock_id, a.c.operation == ev.operation.value, a.c.source == ev.source.value,
                    or_(a.c.lock_time.between(lo, hi),
                        and_(a.c.lock_time.is_(None), a.c.received_at.between(lo, hi))))

    def _legacy_row(self, lock_id: str, ev: LockEvent, *, slot: int | None) -> Any:
        a = t.lock_activity
        where = [self._near(lock_id, ev), a.c.attribution == LEGACY_ALARM]
        if slot is not None:
            where.append(a.c.slot == slot)
        return self.conn.execute(select(a.c.id).where(*where).limit(1)).first()

    def _fold_into_unidentified(self, lock_id: str, ev: LockEvent, who: rules.Attribution,
                                extra: dict[str, Any]) -> bool:
        """F13 across batches: the unidentified entry is already stored; the legacy report that
        names its user completes it instead of making a second entry."""
        a = t.lock_activity
        row = self.conn.execute(
            select(a.c.id, a.c.key, a.c.operation, a.c.source, a.c.success, a.c.lock_time,
                   a.c.received_at, a.c.failure)
            .where(self._near(lock_id, ev), a.c.attribution == rules.UNIDENTIFIED,
                            a.c.slot.is_(None))
            .order_by(a.c.id).limit(1)
        ).first()
        if row is None:
            return False
        kind = LEGACY_ALARM if who.kind in (rules.EVENT, LEGACY_ALARM) else who.kind
        visit_id = extra.get("visit_id") if (row.success and row.source == Source.KEYPAD.value
                                             and row.operation == Operation.UNLOCK.value
                                             and who.code_id) else None
        self.conn.execute(update(a).where(a.c.id == row.id).values(
            slot=ev.slot, code_id=who.code_id, actor_id=who.actor_id, attribution=kind, visit_id=visit_id))
        self.result.merged += 1
        self.audit.append(AuditEntry(self.now, SYSTEM_ACTOR, "lock_activity:attributed", lock_id, {
            "key": row.key, "legacy_key": ev.key, "slot": ev.slot, "code": who.code_id,
            "actor": who.actor_id, "visit": visit_id, "attribution": kind,
        }))
        as_stored = LockEvent(lock_id, Operation(row.operation), Source(row.source), row.success,
                              row.received_at, row.key, ev.slot, row.lock_time, None, kind, row.failure)
        if who.alarm:
            self._raise(lock_id, who.alarm, event_time(as_stored), subject=f"slot:{ev.slot}",
                        detail=f"slot {ev.slot}: {row.source} {row.operation} (legacy alarm)")
        if self._is_code_unlock(as_stored, who) and extra.get("max_uses") is not None and who.code_id:
            _count_use(self.conn, who.code_id, self.now)
        return True

    def _wrong_code_burst(self, lock_id: str, at: datetime) -> bool:
        a = t.lock_activity
        lo = at - rules.WRONG_CODE_WINDOW
        rows = self.conn.execute(
            select(a.c.lock_time, a.c.received_at).where(
                a.c.lock_id == lock_id, a.c.success.is_(False), a.c.failure == "wrong_code",
                or_(a.c.lock_time.between(lo, at), and_(a.c.lock_time.is_(None), a.c.received_at.between(lo, at))),
            )
        ).all()
        return rules.wrong_code_burst([r.lock_time or r.received_at for r in rows], at)

    # -- health events --

    def health_event(self, lock_id: str, ev: HealthEvent) -> None:
        at = ev.lock_time or ev.received_at
        st = self.status[lock_id]
        self.result.health += 1
        c = ev.condition
        if c is Condition.JAMMED:
            jam = rules.apply_jam(rules.JamState(st.jammed_since), jammed_at=at, last_operated=st.last_event_at)
            if jam.jammed_since != st.jammed_since:
                st.jammed_since, st.bolt, st.changed = jam.jammed_since, "jammed", True
                self._raise(lock_id, "jammed", jam.jammed_since or at, detail="the bolt is jammed", health=True)
        elif c is Condition.UNJAMMED:
            jam = rules.apply_jam(rules.JamState(st.jammed_since), operated_at=at)
            if jam.cleared_at is not None:
                st.jammed_since, st.bolt, st.changed = None, None, True
                self._clear(lock_id, "jammed", at, "the lock reported the jam over")
        elif c in (Condition.ONLINE, Condition.OFFLINE):
            stale = c is Condition.OFFLINE and st.last_event_at is not None and at < st.last_event_at
            if not stale:
                st.online, st.changed = c is Condition.ONLINE, True
        elif c is Condition.TAMPER:
            if st.tamper_at is None or at > st.tamper_at:
                st.tamper_at, st.changed = at, True
                self._raise(lock_id, "tamper", at, detail="the lock reported tampering", health=True)
        elif c is Condition.BATTERY and ev.percent is not None:
            self._battery(lock_id, ev.percent, at)
        elif c is Condition.BATTERY_REPLACED:
            # The clock may be lost (F16): the reconciler re-verifies before the next boundary.
            st.clock_verified_at, st.changed = None, True
            self._clear(lock_id, "battery_low", at, "battery replaced")
        elif c is Condition.LOCKOUT:
            self._raise(lock_id, "lockout", at, detail="the keypad locked itself after wrong codes", health=True)
        elif c is Condition.CODES_CHANGED:
            subject = f"slot:{ev.slot}" if ev.slot is not None else ""
            self._raise(lock_id, "codes_changed", at, subject=subject,
                        detail="codes were changed outside Portner", health=True)
        self.audit.append(AuditEntry(self.now, SYSTEM_ACTOR, "lock_health:reported", lock_id, {
            "key": ev.key, "condition": c.value, "percent": ev.percent, "lock_time": _iso(ev.lock_time),
            "slot": ev.slot,
        }))

    def _battery(self, lock_id: str, percent: float, at: datetime) -> None:
        self.conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(battery_percent=percent))
        if percent < BATTERY_LOW:
            self._raise(lock_id, "battery_low", at, detail=f"battery at {percent:.0f} %", health=True)
        elif percent >= BATTERY_OK:
            self._clear(lock_id, "battery_low", at, f"battery at {percent:.0f} %")

    # -- alarms --

    def _raise(self, lock_id: str, kind: str, at: datetime, *, subject: str = "", detail: str = "",
               health: bool = False) -> None:
        a = t.lock_alarms
        if health:
            # Health reports have no dedupe key: one no newer than the last clearing of the same
            # alarm is history (a redelivery), not a new condition. Operation events are deduped
            # by key instead, so a late security event still raises its alarm.
            cleared = self.conn.execute(
                select(func.max(a.c.cleared_at)).where(a.c.lock_id == lock_id, a.c.kind == kind,
                                                       a.c.subject == subject)
            ).scalar()
            if cleared is not None and at <= cleared:
                return
        self._flush_audit()  # the entry that caused the alarm comes first in the chain
        _, new = raise_alarm(self.conn, lock_id, kind, at=at, subject=subject, detail=detail)
        if new:
            self.result.alarms.append((lock_id, kind))

    def _clear(self, lock_id: str, kind: str, at: datetime, reason: str, subject: str = "") -> None:
        self._flush_audit()
        clear_alarm(self.conn, lock_id, kind, at=at, subject=subject, reason=reason)

    def _clear_all(self, lock_id: str, kind: str, at: datetime, reason: str) -> None:
        a = t.lock_alarms
        subjects = self.conn.execute(
            select(a.c.subject).where(a.c.lock_id == lock_id, a.c.kind == kind, a.c.cleared_at.is_(None))
        ).scalars().all()
        for subject in sorted(set(subjects)):
            self._clear(lock_id, kind, at, reason, subject)

    def _flush_audit(self) -> None:
        if self.audit:
            append_audit(self.conn, self.audit)
            self.audit = []

    def finish(self) -> None:
        for lock_id, st in self.status.items():
            if st.changed:
                _save_status(self.conn, lock_id, st, self.now)
        self._flush_audit()
        if self.toggled:
            for lock_id in check_attribution(self.conn, self.now, lock_ids=sorted(self.toggled)):
                self.result.alarms.append((lock_id, "attribution_unavailable"))


def _count_use(conn: Connection, code_id: str, now: datetime) -> None:
    """Count one use of a use-limited code (F1); the keypad service removes a used-up code."""
    # Imported here: the keypad service imports this package's neighbours, and is the one owner
    # of a code's use count and removal.
    from portner.services.keypad import record_use

    record_use(conn, code_id, now)
