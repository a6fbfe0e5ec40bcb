"""What a slot read means for the placements on a lock (verification, sweeps, F18-F27).

Reads are tri-state and absence of evidence is not evidence: a masked read of a slot we wrote is
"present" (F21), an EMPTY read right after a confirmed add is read lag (F21), a first EMPTY read
of a confirmed code is only a suspicion, re-read before re-programming (F23), and a slot that
never answers is left alone, not disabled (F18) and, after three tries, quarantined (F27).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, update

from portner.locks.port import SlotReading, SlotState
from portner.services.keypad.model import State
from portner.services.keypad.store import observe_slot, quarantine_slot, raise_alarm, slot_row
from portner.services.keypad.vault import KeypadKeys
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit

UNREADABLE_LIMIT = 3  # failed reads of an occupied-looking slot before it is quarantined (F27)
_EXPECTED_PRESENT = frozenset({State.CONFIRMED, State.UNVERIFIED, State.SUSPECTED_MISSING})
LINK_HINT = "the slot never answered a read: check the lock's radio link quality (weak route?)"


@dataclass(frozen=True, slots=True)
class ReadRules:
    empty_grace: timedelta = timedelta(minutes=5)  # EMPTY this soon after an add is read lag
    recheck_after: timedelta = timedelta(seconds=60)  # re-read a suspected-missing code


def _set_placement(conn: Connection, placement_id: int, now: datetime, **values: Any) -> None:
    conn.execute(
        update(t.code_placements).where(t.code_placements.c.id == placement_id)
        .values(updated_at=now, **values)
    )


def _mac(keys: KeypadKeys, reading: SlotReading) -> bytes | None:
    return keys.mac(reading.code) if reading.state is SlotState.KNOWN and reading.code is not None else None


def apply_reading(
    conn: Connection,
    *,
    lock_id: str,
    reading: SlotReading,
    live: Any | None,
    removed: list[Any],
    keys: KeypadKeys,
    now: datetime,
    rules: ReadRules,
    foreign_allowed: bool = True,
) -> None:
    """Record one slot read. `live` is the placement that should hold this slot (or None);
    `removed` are our placements recently removed from it. Rows carry code_mac and code_id."""
    mac = _mac(keys, reading)
    state = reading.state
    if state is SlotState.UNREADABLE:
        _unreadable(conn, lock_id, reading.slot, live, now)
        return
    if live is not None:
        _expected_present(conn, lock_id, reading, live, mac, now, rules)
        return
    if state is SlotState.EMPTY:
        observe_slot(conn, lock_id, reading.slot, now, observed="empty", code_mac=None, code_id=None,
                     unreadable_reads=0)
        return
    # Occupied, and no placement of ours should be here.
    ours = next((r for r in removed if state is SlotState.MASKED or r.code_mac == mac), None)
    observe_slot(conn, lock_id, reading.slot, now, observed=state.value, code_mac=mac,
                 code_id=None if ours is None else ours.code_id, unreadable_reads=0)
    if ours is not None:
        # A code we removed is back (F23): say so, and remove it again.
        raise_alarm(conn, lock_id, "code_reappeared", str(reading.slot),
                    f"keypad code {ours.code_id} is back in slot {reading.slot} after its removal", now)
        _set_placement(conn, ours.id, now, state=State.REMOVING, removed_at=None, next_attempt_at=now,
                       attempts=0)
        append_audit(conn, [AuditEntry(now, "system:reconciler", "keypad_code:reappeared",
                                       f"keypad_code:{ours.code_id}",
                                       {"lock": lock_id, "slot": reading.slot})])
        return
    if foreign_allowed:
        row = slot_row(conn, lock_id, reading.slot)
        if row is None or row.quarantined_at is None or row.resolved_at is not None:
            quarantine_slot(conn, lock_id, reading.slot, "foreign", now,
                            f"slot {reading.slot} holds a code Portner did not set; it is left as it is")


def _expected_present(
    conn: Connection, lock_id: str, reading: SlotReading, live: Any, mac: bytes | None,
    now: datetime, rules: ReadRules,
) -> None:
    slot = reading.slot
    if live.state not in _EXPECTED_PRESENT:
        _in_flight(conn, lock_id, reading, live, mac, now)
        return
    if reading.state is SlotState.MASKED or (reading.state is SlotState.KNOWN and mac == live.code_mac):
        observe_slot(conn, lock_id, slot, now, observed=reading.state.value,
                     code_mac=live.code_mac, code_id=live.code_id, unreadable_reads=0)
        if live.state in (State.UNVERIFIED, State.SUSPECTED_MISSING, State.WRITE_UNCONFIRMED):
            _set_placement(conn, live.id, now, state=State.CONFIRMED, next_attempt_at=None,
                           confirmed_at=live.confirmed_at or now)
        return
    if reading.state is SlotState.KNOWN:
        # Someone put another code in our slot: leave theirs, quarantine, and place ours elsewhere.
        observe_slot(conn, lock_id, slot, now, observed="known", code_mac=mac, code_id=None,
                     unreadable_reads=0)
        quarantine_slot(conn, lock_id, slot, "foreign", now,
                        f"slot {slot} now holds a code Portner did not set (ours was replaced)")
        _set_placement(conn, live.id, now, state=State.PENDING, slot=None, next_attempt_at=now)
        return
    # EMPTY
    if live.state == State.WRITE_UNCONFIRMED:
        return  # the retry of the write is already due
    if live.confirmed_at is not None and now - live.confirmed_at < rules.empty_grace:
        return  # read lag right after an add (F21): no re-add
    if live.state == State.SUSPECTED_MISSING:
        observe_slot(conn, lock_id, slot, now, observed="empty", code_mac=None, code_id=None,
                     unreadable_reads=0)
        _set_placement(conn, live.id, now, state=State.PENDING, next_attempt_at=now, attempts=0)
        append_audit(conn, [AuditEntry(now, "system:reconciler", "keypad_code:missing_on_lock",
                                       f"keypad_code:{live.code_id}", {"lock": lock_id, "slot": slot})])
        return
    _set_placement(conn, live.id, now, state=State.SUSPECTED_MISSING,
                   next_attempt_at=now + rules.recheck_after)


def _in_flight(
    conn: Connection, lock_id: str, reading: SlotReading, live: Any, mac: bytes | None, now: datetime
) -> None:
    """A read of a slot whose placement is pending, being written or being removed: record what
    is there; a foreign code found there is quarantined and ours goes elsewhere (or, when we were
    removing ours, counts as gone: we never clear someone else's code)."""
    slot = reading.slot
    if reading.state is SlotState.KNOWN and mac != live.code_mac:
        observe_slot(conn, lock_id, slot, now, observed="known", code_mac=mac, code_id=None,
                     unreadable_reads=0)
        quarantine_slot(conn, lock_id, slot, "foreign", now,
                        f"slot {slot} holds a code Portner did not set")
        if live.state == State.REMOVING:
            _set_placement(conn, live.id, now, state=State.REMOVED, removed_at=now, next_attempt_at=None)
        else:
            _set_placement(conn, live.id, now, state=State.PENDING, slot=None, next_attempt_at=now)
        return
    observe_slot(conn, lock_id, slot, now, observed=reading.state.value,
                 code_mac=live.code_mac if reading.state is not SlotState.EMPTY else None,
                 code_id=live.code_id if reading.state is not SlotState.EMPTY else None,
                 unreadable_reads=0)


def _unreadable(conn: Connection, lock_id: str, slot: int, live: Any | None, now: datetime) -> None:
    row = slot_row(conn, lock_id, slot)
    count = (row.unreadable_reads if row is not None else 0) + 1
    if live is not None:
        # Ours, and the lock does not answer: unverified, never disabled or rewritten (F18).
        observe_slot(conn, lock_id, slot, now, unreadable_reads=count)
        if live.state in (State.CONFIRMED, State.SUSPECTED_MISSING):
            _set_placement(conn, live.id, now, state=State.UNVERIFIED)
        return
    observe_slot(conn, lock_id, slot, now, observed="unreadable", unreadable_reads=count)
    if count >= UNREADABLE_LIMIT:
        quarantine_slot(conn, lock_id, slot, "unverifiable", now, f"slot {slot}: {LINK_HINT}")
