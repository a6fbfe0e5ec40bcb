"""The reconciler: one pass brings every lock a step closer to what the plan intends.

Per (code, lock) a placement moves pending -> writing -> confirmed -> removing -> removed (plus
write_unconfirmed, unverified, suspected_missing, failed, suspended). A pass does at most one
radio operation per lock (a multi-slot read counts as one), spaced by the lock's
min_command_interval and within its radio budget, in this order:

1. after a restart, verify confirmed placements by reading (never clear-then-set, F19; an
   unreachable lock leaves them unverified and gets no writes, F18);
2. redeliver a command that was written but never finished (a crash between the two);
3. remove codes the plan no longer wants (revoked, used up, window over, schedule changed: F20);
4. add codes the plan wants now (server-enforced: from not_before minus a lead time); a code
   the plan wants again while its removal waits for a retry is written again in its own slot
   (the removal is cancelled); a clear already out still finishes, and the code is then added;
5. re-read suspected-missing and unverified codes;
6. the daily verification read of managed slots, then an hourly health heartbeat (F25).

A command is written (lock_commands, its id the idempotency key) in the transaction that changes
the placement, delivered through the LockPort, and its result recorded in one more transaction.
Failures stay with their lock (F22). Permanent refusals fail at once and open an alarm (F5, F6).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, or_, select, update

from portner.domain.windows import require_aware
from portner.locks.codes import CapacityUnknown, LockFull, allocate_slot
from portner.locks.port import (
    Capabilities,
    CommandResult,
    Feature,
    LockPort,
    SlotReading,
    SlotState,
)
from portner.locks.schedules import needs_clock_set
from portner.services.ids import IdSource
from portner.services.keypad import delivery
from portner.services.keypad.budget import Backoff, RadioBudget
from portner.services.keypad.codes import new_command
from portner.services.keypad.due import (
    LockView,
    lock_needs_step,
    open_overdue_alarms,
    overdue_removals,
    read_fleet,
    removals_no_longer_due,
)
from portner.services.keypad.model import CommandKind, CommandState, State
from portner.services.keypad.plan import (
    Timing,
    lock_window,
    may_be_on_lock,
    next_boundary,
    removal_deadline,
    wanted_on_lock,
    window_args,
)
from portner.services.keypad.readings import ReadRules
from portner.services.keypad.store import (
    clear_alarm,
    lock_municipality,
    quarantined_slots,
    raise_alarm,
    record_capabilities,
    status_row,
    update_status,
)
from portner.services.keypad.upkeep import Upkeep
from portner.services.keypad.vault import KeypadKeys
from portner.storage import tables as t

KeySource = KeypadKeys | Callable[[str], KeypadKeys]


@dataclass(frozen=True, slots=True)
class ReconcilerSettings:
    timing: Timing = Timing()
    reads: ReadRules = ReadRules()
    backoff: Backoff = Backoff()
    verify_backoff: Backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(seconds=60))
    budget: RadioBudget = RadioBudget()
    verify_every: timedelta = timedelta(hours=24)
    heartbeat_every: timedelta = timedelta(hours=1)


@dataclass
class _LockRuntime:
    """What this reconciler instance knows of a lock beyond the database (lost on restart, on
    purpose: a new instance verifies before it writes)."""

    capabilities: Capabilities | None = None
    verified: bool = False
    verify_failures: int = 0
    next_verify_at: datetime | None = None


@dataclass
class PassReport:
    operations: int = 0  # radio operations sent
    by_lock: dict[str, str] = field(default_factory=dict)  # lock -> what was done


class Reconciler(Upkeep):
    def __init__(
        self,
        engine: Engine,
        ports: Callable[[str], LockPort],
        *,
        secrets_key: KeySource,
        now: Callable[[], datetime],
        ids: IdSource | None = None,
        rng: random.Random | None = None,
        settings: ReconcilerSettings | None = None,
    ) -> None:
        self.engine = engine
        self.ports = ports
        self._keys = secrets_key
        self._now = now
        self.ids = ids or IdSource()
        self.rng = rng or random.Random()
        self.settings = settings or ReconcilerSettings()
        self._locks: dict[str, _LockRuntime] = {}

    # --- helpers ---------------------------------------------------------------------------------

    def keys_for(self, municipality_id: str) -> KeypadKeys:
        if isinstance(self._keys, KeypadKeys):
            if self._keys.municipality_id != municipality_id:
                raise LookupError(f"no keypad keys for municipality {municipality_id!r}")
            return self._keys
        return self._keys(municipality_id)

    def runtime(self, lock_id: str) -> _LockRuntime:
        return self._locks.setdefault(lock_id, _LockRuntime())

    async def capabilities(self, lock_id: str, now: datetime) -> Capabilities | None:
        rt = self.runtime(lock_id)
        if rt.capabilities is None:
            try:
                caps = await self.ports(lock_id).capabilities()
            except Exception:  # an adapter that cannot say now: try again next pass
                return None
            rt.capabilities = caps
            with self.engine.begin() as conn:
                record_capabilities(conn, lock_id, caps, now)
        return rt.capabilities

    def _placements(self, conn: Connection, lock_id: str, now: datetime) -> list[Any]:
        p, c = t.code_placements, t.keypad_codes
        horizon = now - self.settings.timing.recently_removed
        return list(conn.execute(
            select(p, c.c.not_before, c.c.not_after, c.c.revoked_at, c.c.code_mac,
                   c.c.created_at, c.c.municipality_id)
            .join(c, c.c.id == p.c.code_id)
            .where(p.c.lock_id == lock_id,
                   or_(p.c.state != State.REMOVED, p.c.removed_at >= horizon))
            .order_by(p.c.id)
        ).all())

    # --- one pass --------------------------------------------------------------------------------

    async def run_once(self, now: datetime | None = None) -> PassReport:
        """One pass. The fleet is read in a few set-based queries (due.py) and only the locks with
        something to do get reconcile_lock's own reads and writes: an idle lock costs nothing."""
        now = require_aware(now if now is not None else self._now(), "now")
        report = PassReport()
        timing = self.settings.timing
        with self.engine.connect() as conn:
            snap = read_fleet(conn, now, timing)
        placements = [p for rows in snap.placements.values() for p in rows]
        late = overdue_removals(placements, now, timing)
        settling = {p.lock_id for p in removals_no_longer_due(placements, snap.overdue_alarms, now, timing)}
        if late or settling:
            with self.engine.begin() as conn:
                for p in late:
                    self._alarm_overdue(conn, p, now)
                # Decided again on the placements as this transaction reads them: the snapshot
                # was read before, and a code may have been revoked since.
                for lock_id in sorted(settling):
                    self._settle_overdue(conn, self._placements(conn, lock_id, now), snap.overdue_alarms, now)
        for lock_id in snap.lock_ids:
            rt = self.runtime(lock_id)
            view = LockView(rt.capabilities, rt.verified, rt.next_verify_at)
            if not lock_needs_step(lock_id, snap, view, now, timing=timing, budget=self.settings.budget,
                                   verify_every=self.settings.verify_every,
                                   heartbeat_every=self.settings.heartbeat_every):
                continue
            done = await self.reconcile_lock(lock_id, now, check_overdue=False)
            if done:
                report.operations += 1
                report.by_lock[lock_id] = done
        return report

    async def reconcile_lock(self, lock_id: str, now: datetime, *, check_overdue: bool = True) -> str | None:
        """Take the most urgent step for one lock; return what was done ("" or None: nothing).
        run_once has checked overdue removals for the whole fleet already (check_overdue=False)."""
        if check_overdue:
            with self.engine.begin() as conn:
                self._check_overdue(conn, lock_id, now)
        caps = await self.capabilities(lock_id, now)
        if caps is None:
            return None
        with self.engine.begin() as conn:  # begin: the status row is made on first use
            status = status_row(conn, lock_id, now)
            placements = self._placements(conn, lock_id, now)
        if not self.settings.budget.may_send(status, caps.min_command_interval, now):
            return None
        rt = self.runtime(lock_id)
        live = [p for p in placements if p.state != State.REMOVED and p.slot is not None]
        expected_present = [p for p in live if p.state in (
            State.CONFIRMED, State.UNVERIFIED, State.SUSPECTED_MISSING)]
        # Slots worth a verification read: codes that should be there, and codes we removed
        # recently (a removed code can come back, F23).
        managed = expected_present or [p for p in placements if p.state == State.REMOVED and p.slot]

        # 1. verify before write after a restart (F19), and keep at it while unreachable (F18)
        if not rt.verified:
            if not managed:
                rt.verified = True  # nothing to verify: the daily clock starts now
                with self.engine.begin() as conn:
                    update_status(conn, lock_id, now, verified_at=now)
            elif rt.next_verify_at is None or now >= rt.next_verify_at:
                return await self._verify(lock_id, placements, now, caps)
            else:
                return None
        # 2. a command written but never finished
        with self.engine.connect() as conn:
            outstanding = conn.execute(
                select(t.lock_commands).where(
                    t.lock_commands.c.lock_id == lock_id,
                    t.lock_commands.c.state == CommandState.REQUESTED,
                ).order_by(t.lock_commands.c.created_at, t.lock_commands.c.id)
            ).first()
        if outstanding is not None:
            return await self._deliver(outstanding, now, caps)
        # 2b. a clock the last heartbeat found off (F16): lock-enforced windows depend on it
        if (Feature.CLOCK in caps.features and status.clock_offset_s is not None
                and needs_clock_set(timedelta(seconds=status.clock_offset_s))):
            return await self._set_clock(lock_id, now)
        # 3. and 4. removals first (fail closed), then additions
        due = [p for p in placements if p.next_attempt_at is None or p.next_attempt_at <= now]
        for p in due:
            if p.state in (State.FAILED, State.SUSPENDED, State.WRITING):
                continue
            if may_be_on_lock(p) and not wanted_on_lock(p, now, self.settings.timing):
                return await self._start(lock_id, p, CommandKind.CLEAR_CODE, now, caps)
        for p in due:
            wanted = wanted_on_lock(p, now, self.settings.timing)
            if p.state == State.REMOVING and wanted:
                # Wanted again while its clear waited for a retry (the window moved, F20): the
                # removal is cancelled by writing the code again in its own slot, with the new
                # window when the lock enforces it. Only the lock's answer confirms it.
                return await self._start(lock_id, p, CommandKind.SET_CODE, now, caps)
            if p.state in (State.PENDING, State.WRITE_UNCONFIRMED, State.REMOVED):
                if wanted:
                    return await self._start(lock_id, p, CommandKind.SET_CODE, now, caps)
                self._park(p, now)
        # 5. re-reads
        recheck = [p for p in expected_present if p.state != State.CONFIRMED
                   and (p.next_attempt_at is None or p.next_attempt_at <= now)]
        if recheck:
            return await self._verify(lock_id, placements, now, caps)
        # 6. daily verification, heartbeat
        if managed and (status.verified_at is None
                                 or now - status.verified_at >= self.settings.verify_every):
            return await self._verify(lock_id, placements, now, caps)
        if status.heartbeat_at is None or now - status.heartbeat_at >= self.settings.heartbeat_every:
            return await self._heartbeat(lock_id, now)
        return None

    def _park(self, p: Any, now: datetime) -> None:
        """A placement that is not wanted now and not on the lock: never written, so removed when
        the plan is done with it, else woken at its next boundary."""
        with self.engine.begin() as conn:
            if p.state == State.REMOVED:
                nxt = next_boundary(p, now, self.settings.timing)
                if p.next_attempt_at != nxt:
                    _update(conn, p.id, now, next_attempt_at=nxt)
                return
            nxt = next_boundary(p, now, self.settings.timing)
            if nxt is None or p.revoked_at is not None or p.intent != "present":
                _update(conn, p.id, now, state=State.REMOVED, removed_at=now, next_attempt_at=None)
            else:
                _update(conn, p.id, now, next_attempt_at=nxt)

    # --- overdue removals ------------------------------------------------------------------------

    def _check_overdue(self, conn: Connection, lock_id: str, now: datetime) -> None:
        placements = self._placements(conn, lock_id, now)
        for p in overdue_removals(placements, now, self.settings.timing):
            self._alarm_overdue(conn, p, now)
        self._settle_overdue(conn, placements, open_overdue_alarms(conn, lock_id), now)

    def _settle_overdue(self, conn: Connection, placements: list[Any], alarmed: set[tuple[str, str]],
                        now: datetime) -> None:
        """Clear the removal_overdue alarms (in `alarmed`) of placements the plan wants again: an
        alarm that a removal was late would otherwise stay open for good, as only a confirmed
        removal cleared it (whatever is still on the lock is wanted there now; a later window's
        end raises a new alarm if its removal is late)."""
        for p in removals_no_longer_due(placements, alarmed, now, self.settings.timing):
            clear_alarm(conn, p.lock_id, "removal_overdue", p.code_id, now,
                        reason="the plan wants the code on the lock again")

    def _alarm_overdue(self, conn: Connection, p: Any, now: datetime) -> None:
        deadline = removal_deadline(p)  # never None for an overdue placement
        raise_alarm(conn, p.lock_id, "removal_overdue", p.code_id,
                    f"keypad code {p.code_id} should have left slot {p.slot} by "
                    f"{deadline.isoformat() if deadline else 'its end'} and the lock has not confirmed it",
                    now)

    # --- commands ---------------------------------------------------------------------------------

    async def _start(self, lock_id: str, p: Any, kind: CommandKind, now: datetime,
                     caps: Capabilities) -> str:
        """Write the command and the state change in one transaction, then deliver it."""
        with self.engine.begin() as conn:
            _, zone = lock_municipality(conn, lock_id)
            slot = p.slot
            if kind is CommandKind.SET_CODE:
                if p.state == State.REMOVED:
                    slot = None  # its old slot may hold another code by now: allocate afresh
                # (a placement still being removed keeps its slot: our code may well be in it)
                if slot is None:
                    try:
                        slot = self._allocate(conn, lock_id, p.id, caps)
                    except (LockFull, CapacityUnknown) as exc:  # permanent, and no radio
                        delivery.fail_permanently(conn, p, lock_id, exc.refusal, str(exc), now)
                        return "failed"
                duplicate = conn.execute(
                    select(t.lock_slots.c.slot).where(
                        t.lock_slots.c.lock_id == lock_id, t.lock_slots.c.code_mac == p.code_mac,
                        t.lock_slots.c.slot != slot, t.lock_slots.c.observed.in_(("known",)),
                    )
                ).first()
                if duplicate is not None:  # F6: checked up front, against unmanaged codes too
                    delivery.fail_permanently(conn, p, lock_id, "duplicate_code",
                                              f"slot {duplicate.slot} already holds this code", now)
                    return "failed"
                try:
                    window = lock_window(p, zone)
                except ValueError as exc:
                    delivery.fail_permanently(conn, p, lock_id, "bad_schedule", str(exc), now)
                    return "failed"
                args = {"code": p.code_id, "window": window_args(window)}
                _update(conn, p.id, now, slot=slot, state=State.WRITING, attempts=p.attempts + 1,
                        removed_at=None)
            else:
                args = {"code": p.code_id}
                _update(conn, p.id, now, state=State.REMOVING, attempts=p.attempts + 1)
            command_id = new_command(conn, self.ids, lock_id=lock_id, placement_id=p.id, kind=kind,
                                     slot=slot, args=args, now=now)
            command = conn.execute(select(t.lock_commands).where(t.lock_commands.c.id == command_id)).one()
        return await self._deliver(command, now, caps)

    def _allocate(self, conn: Connection, lock_id: str, placement_id: int, caps: Capabilities) -> int:
        taken = {
            r.slot for r in conn.execute(
                select(t.code_placements.c.slot).where(
                    t.code_placements.c.lock_id == lock_id, t.code_placements.c.slot.is_not(None),
                    t.code_placements.c.id != placement_id,
                    or_(t.code_placements.c.state != State.REMOVED),
                )
            )
        }
        slots = conn.execute(select(t.lock_slots).where(t.lock_slots.c.lock_id == lock_id)).all()
        occupied = {s.slot for s in slots if s.observed in ("known", "masked") and s.code_id is None}
        unreadable = {s.slot for s in slots if s.observed == "unreadable"}
        return allocate_slot(caps.slots, taken | occupied, quarantined_slots(conn, lock_id), unreadable)

    async def _deliver(self, command: Any, now: datetime, caps: Capabilities) -> str:
        port = self.ports(command.lock_id)
        with self.engine.begin() as conn:
            p = conn.execute(select(t.code_placements).where(
                t.code_placements.c.id == command.placement_id)).one()
            code_row = conn.execute(select(t.keypad_codes).where(
                t.keypad_codes.c.id == p.code_id)).one()
            if command.kind == CommandKind.SET_CODE and (p.intent != "present" or p.state != State.WRITING):
                # Superseded (revoked while it waited): never send a code the plan withdrew.
                delivery.finish_command(conn, command.id, CommandState.REFUSED, now, detail="superseded")
                return "superseded"
            self.settings.budget.spend(conn, command.lock_id, now)
            conn.execute(update(t.lock_commands).where(t.lock_commands.c.id == command.id)
                         .values(sent_at=now, attempts=command.attempts + 1))
        keys = self.keys_for(code_row.municipality_id)
        result: CommandResult
        try:
            if command.kind == CommandKind.SET_CODE:
                window = delivery.window_from_args(command.args.get("window"))
                code = keys.decrypt(code_row.ciphertext, code_row.id, code_row.key_id)
                result = await port.set_code(command.slot, code, window, idempotency_key=command.id)
            else:
                result = await port.clear_code(command.slot, idempotency_key=command.id)
        except Exception as exc:  # the adapter broke; the type only (a message might hold data)
            result = delivery.timed_out_from(exc)
        adopt: SlotReading | None = None
        if (command.kind == CommandKind.SET_CODE and result.refusal is not None
                and result.refusal.value == "duplicate_code" and result.conflict_slot is None):
            # "Already exists" without a named slot (F21): read ours, then adopt or refuse.
            adopt = await self._read_one(port, command.slot)
        with self.engine.begin() as conn:
            delivery.record_result(conn, command, result, now=now, keys=keys, caps=caps,
                                   adopt=adopt, rng=self.rng, settings=self.settings)
        return f"{command.kind}:{result.outcome.value}"

    async def _read_one(self, port: LockPort, slot: int) -> SlotReading:
        try:
            return (await port.read_slots([slot]))[0]
        except Exception:
            return SlotReading(slot, SlotState.UNREADABLE)

def _update(conn: Connection, placement_id: int, now: datetime, **values: Any) -> None:
    conn.execute(update(t.code_placements).where(t.code_placements.c.id == placement_id)
                 .values(updated_at=now, **values))


__all__ = ["PassReport", "Reconciler", "ReconcilerSettings", "clear_alarm"]
