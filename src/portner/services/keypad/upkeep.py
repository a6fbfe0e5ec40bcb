"""The reconciler's reads and upkeep: verification, sweeps and onboarding, heartbeat, clock.

Kept apart from the write path (reconcile.py) as a mixin of Reconciler. Reads are one radio
operation each (a multi-slot read counts once) and spend the lock's radio budget like writes.
A read on which every slot is silent means the lock is unreachable, and blames no slot (F18, F27).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from portner.locks.port import Capabilities, SlotReading, SlotState
from portner.locks.schedules import needs_clock_set
from portner.services.keypad import delivery
from portner.services.keypad.model import State
from portner.services.keypad.readings import UNREADABLE_LIMIT, apply_reading
from portner.services.keypad.store import lock_municipality, update_status
from portner.storage import tables as t

if TYPE_CHECKING:
    from portner.services.keypad.reconcile import Reconciler

    _Base = Reconciler
else:
    _Base = object


class Upkeep(_Base):
    # --- reads -------------------------------------------------------------------------------------

    async def _verify(self, lock_id: str, placements: list[Any], now: datetime,
                      caps: Capabilities) -> str:
        """Read the managed slots (ours, and ours recently removed) and file what they show."""
        live = {p.slot: p for p in placements if p.state != State.REMOVED and p.slot is not None}
        removed: dict[int, list[Any]] = {}
        for p in placements:
            if p.state == State.REMOVED and p.slot is not None and p.slot not in live:
                removed.setdefault(p.slot, []).append(p)
        slots = sorted(set(live) | set(removed))
        rt = self.runtime(lock_id)
        readings = await self.read(lock_id, slots, now)
        reachable = any(r.state is not SlotState.UNREADABLE for r in readings) or not slots
        with self.engine.begin() as conn:
            keys = self.keys_for(lock_municipality(conn, lock_id)[0])
            if not reachable:
                for p in live.values():
                    if p.state in (State.CONFIRMED, State.SUSPECTED_MISSING):
                        conn.execute(update(t.code_placements).where(t.code_placements.c.id == p.id)
                                     .values(state=State.UNVERIFIED, updated_at=now))
                rt.verify_failures += 1
                rt.next_verify_at = now + self.settings.verify_backoff.delay(
                    rt.verify_failures, self.rng, caps.min_command_interval)
                update_status(conn, lock_id, now, online=False)
                return "verify:unreachable"
            for reading in readings:
                apply_reading(conn, lock_id=lock_id, reading=reading, live=live.get(reading.slot),
                              removed=removed.get(reading.slot, []), keys=keys, now=now,
                              rules=self.settings.reads)
            update_status(conn, lock_id, now, online=True, verified_at=now)
        rt.verified, rt.verify_failures, rt.next_verify_at = True, 0, None
        return "verify"

    async def read(self, lock_id: str, slots: list[int], now: datetime) -> list[SlotReading]:
        """One radio operation: read these slots (all UNREADABLE when the adapter fails)."""
        if not slots:
            return []
        with self.engine.begin() as conn:
            self.settings.budget.spend(conn, lock_id, now)
        try:
            readings = await self.ports(lock_id).read_slots(slots)
        except Exception:
            return [SlotReading(s, SlotState.UNREADABLE) for s in slots]
        by_slot = {r.slot: r for r in readings}
        return [by_slot.get(s, SlotReading(s, SlotState.UNREADABLE)) for s in slots]

    async def _heartbeat(self, lock_id: str, now: datetime) -> str:
        with self.engine.begin() as conn:
            self.settings.budget.spend(conn, lock_id, now)
        try:
            health = await self.ports(lock_id).health()
        except Exception:
            health = None
        with self.engine.begin() as conn:
            values: dict[str, Any] = {"heartbeat_at": now}
            if health is not None:
                values["online"] = health.online
                if health.clock_offset is not None:
                    values["clock_offset_s"] = health.clock_offset.total_seconds()
                    if not needs_clock_set(health.clock_offset):
                        values["clock_verified_at"] = now
                if health.bolt is not None:
                    values["bolt"] = health.bolt
            update_status(conn, lock_id, now, **values)
        return "heartbeat"

    async def _set_clock(self, lock_id: str, now: datetime) -> str:
        with self.engine.begin() as conn:
            _, zone = lock_municipality(conn, lock_id)
            self.settings.budget.spend(conn, lock_id, now)
        try:
            result = await self.ports(lock_id).set_clock(now, zone)
        except Exception as exc:
            result = delivery.timed_out_from(exc)
        with self.engine.begin() as conn:
            # Measured again at the next heartbeat either way: one try per measurement, no loop.
            values: dict[str, Any] = {"clock_offset_s": None}
            if result.ok:
                values["clock_verified_at"] = now
            update_status(conn, lock_id, now, **values)
        return f"set_clock:{result.outcome.value}"

    # --- sweeps (F25, F27) ---------------------------------------------------------------------------

    async def sweep_slots(self, lock_id: str, now: datetime, *, full: bool = False,
                          slots: list[int] | None = None, tries: int = 1) -> str:
        """Read slots and file what they show: foreign codes are quarantined (never overwritten or
        allocated), our codes verified, unanswered slots re-read up to `tries` times. Bounded to
        the managed slots unless `full` (onboarding, or an operator asks), F25."""
        caps = await self.capabilities(lock_id, now)
        if caps is None:
            return "unreachable"
        with self.engine.connect() as conn:
            placements = self._placements(conn, lock_id, now)
        live = {p.slot: p for p in placements if p.state != State.REMOVED and p.slot is not None}
        removed: dict[int, list[Any]] = {}
        for p in placements:
            if p.state == State.REMOVED and p.slot is not None and p.slot not in live:
                removed.setdefault(p.slot, []).append(p)
        if slots is None:
            if full:
                if caps.slots is None:
                    return "capacity unknown"
                slots = list(range(1, caps.slots.count + 1))
            else:
                slots = sorted(set(live) | set(removed))
        todo = list(slots)
        for attempt in range(max(1, tries)):
            readings = await self.read(lock_id, todo, now)
            if attempt == 0 and todo and all(r.state is SlotState.UNREADABLE for r in readings):
                return "unreachable"  # the whole lock is silent: no slot is to blame
            with self.engine.begin() as conn:
                keys = self.keys_for(lock_municipality(conn, lock_id)[0])
                for reading in readings:
                    apply_reading(conn, lock_id=lock_id, reading=reading, live=live.get(reading.slot),
                                  removed=removed.get(reading.slot, []), keys=keys, now=now,
                                  rules=self.settings.reads)
            todo = [r.slot for r in readings if r.state is SlotState.UNREADABLE]
            if not todo:
                break
        with self.engine.begin() as conn:
            update_status(conn, lock_id, now, online=True)
        return "swept"

    async def onboard_lock(self, lock_id: str, now: datetime) -> str:
        """First contact with a lock: its capabilities, then a full sweep of its slots (each
        unanswered slot tried three times, F27)."""
        return await self.sweep_slots(lock_id, now, full=True, tries=UNREADABLE_LIMIT)

    def acknowledge_online(self, lock_id: str) -> None:
        """The lock was heard again (an ONLINE health event): verify it on the next pass."""
        rt = self.runtime(lock_id)
        rt.next_verify_at = None
        rt.verify_failures = 0


