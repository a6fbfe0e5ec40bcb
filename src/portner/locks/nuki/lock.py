"""One Nuki smart lock through the Web API (LockPort).

- **Code rules are checked before any request** (F24).
- **Writes are confirmed by reading back.** PUT /smartlock/{id}/auth answers 204 and the bridge
  applies it later; a code not visible after the read-backs is WRITE_UNCONFIRMED (retryable), never
  "confirmed". An "already exists" answer (409) is reconciled by reading, not retried (F21).
- **A remote action is confirmed by the lock**, not by the API: POST .../action succeeding only means
  the cloud accepted it. `operate` answers CONFIRMED only when the log shows the action or the state
  changed to it; otherwise TIMED_OUT "remote unlock commanded (unconfirmed by device)" (F26).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from portner.locks.nuki.auths import Auth, parse_auths, window_fields, window_key
from portner.locks.nuki.client import NotFound, Refused
from portner.locks.nuki.wire import (
    ACTION,
    JAMMED_STATE,
    KEYPAD_CODE,
    LOG_OPERATION,
    NUKI_RULES,
    OFFLINE_SERVER_STATE,
    STATE_BOLT,
    TARGET_STATE,
    check_nuki_code,
    failure_of,
)
from portner.locks.port import (
    CONFIRMED,
    Capabilities,
    CommandResult,
    Feature,
    Health,
    KeypadCode,
    LockWindow,
    Operation,
    Refusal,
    SlotRange,
    SlotReading,
    SlotState,
    refused,
    timed_out,
)

if TYPE_CHECKING:
    from portner.locks.nuki.backend import NukiBackend


class NukiLock:
    """One Nuki smart lock through the Web API (LockPort)."""

    def __init__(self, backend: NukiBackend, address: str) -> None:
        if not address.isdigit():
            raise ValueError(f"a Nuki lock address is its numeric smartlockId, not {address!r}")
        self.address = address
        self._backend = backend
        self._api = backend.api
        self._names = backend.names
        self._path = f"/smartlock/{address}"

    # --- reads -------------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        return Capabilities(
            features=frozenset({Feature.KEYPAD, Feature.LOCK_SCHEDULES, Feature.REMOTE_OPERATION,
                                Feature.USER_EVENTS}),
            code_rules=NUKI_RULES, slots=SlotRange(self._names.count, first_native=1),
            min_command_interval=timedelta(seconds=1), model="Nuki Smart Lock (Web API)")

    async def health(self) -> Health:
        try:
            lock = await self._api.request("GET", self._path)
        except Refused:
            return Health()
        state = lock.get("state") or {}
        charge = state.get("batteryCharge")
        code = state.get("state")
        return Health(
            online=lock.get("serverState") != OFFLINE_SERVER_STATE,
            battery_percent=float(charge) if isinstance(charge, int | float) else None,
            jammed=(code == JAMMED_STATE) if isinstance(code, int) else None,
            bolt=STATE_BOLT.get(code) if isinstance(code, int) else None)

    async def auths(self) -> list[Auth]:
        """Every keypad-code auth on the lock, with the Portner slot its name gives (or None).

        While the lock is offline (serverState 4) the cloud's list is only what the cloud last
        knew, not what the lock holds: that is no reading, so it refuses OFFLINE."""
        lock = await self._api.request("GET", self._path)
        if lock.get("serverState") == OFFLINE_SERVER_STATE:
            raise Refused(refused(Refusal.OFFLINE, "the lock is offline (Nuki serverState 4)"))
        listing = await self._api.request("GET", f"{self._path}/auth")
        if not isinstance(listing, list):
            raise Refused(refused(Refusal.TEMPORARY, "the auth list was not a list"))
        found = parse_auths(listing, self._names)
        self._backend.remember_auths(self.address, found)
        return found

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        for slot in slots:
            self._names.check_slot(slot)
        try:
            auths = await self.auths()
        except Refused:
            return [SlotReading(slot, SlotState.UNREADABLE) for slot in slots]
        readings = []
        for slot in slots:
            mine = [a for a in auths if a.slot == slot]
            if not mine:
                readings.append(SlotReading(slot, SlotState.EMPTY))
            elif len(mine) > 1 or mine[0].code is None:
                # Two auths claim one slot (an earlier write answered late), or no code is shown:
                # present, but not one trustworthy value.
                readings.append(SlotReading(slot, SlotState.MASKED, enabled=mine[0].enabled))
            else:
                readings.append(SlotReading(slot, SlotState.KNOWN, KeypadCode(mine[0].code),
                                            enabled=mine[0].enabled))
        return readings

    # --- codes -------------------------------------------------------------------------------

    async def set_code(self, slot: int, code: KeypadCode,
                       window: LockWindow | None = None, *,
                       idempotency_key: str | None = None) -> CommandResult:  # Nuki's API takes none
        if (outside := self._names.outside(slot)) is not None:
            return outside
        reason = check_nuki_code(code)
        if reason is not None:
            return refused(Refusal.BAD_CODE, reason)
        try:
            return await self._set_code(slot, code, window)
        except Refused as exc:
            return exc.result

    async def _set_code(self, slot: int, code: KeypadCode,
                        window: LockWindow | None) -> CommandResult:
        digits = code.reveal()
        auths = await self.auths()
        mine = [a for a in auths if a.slot == slot]
        if any(a.code == digits and a.slot != slot for a in auths):
            other = next(a for a in auths if a.code == digits and a.slot != slot)
            return refused(Refusal.DUPLICATE_CODE, "another keypad code on this lock is the same",
                           conflict_slot=other.slot)
        if len(mine) == 1 and mine[0].code == digits and mine[0].window == window_key(window):
            return CONFIRMED  # already there: an idempotent success without a write
        body = {"name": self._names.name_of(slot), "code": int(digits), **window_fields(window)}
        try:
            if mine:
                await self._api.request("POST", f"{self._path}/auth/{mine[0].id}", json=body)
            else:
                await self._api.request("PUT", f"{self._path}/auth",
                                        json={**body, "type": KEYPAD_CODE})
        except Refused as exc:
            if exc.result.refusal is not Refusal.DUPLICATE_CODE:
                raise
            return await self._reconcile_duplicate(slot, digits, window)
        return await self._confirm(lambda found: any(
            a.slot == slot and a.code == digits and a.window == window_key(window)
            for a in found), "the code is not visible on the lock yet")

    async def _reconcile_duplicate(self, slot: int, digits: str,
                                   window: LockWindow | None) -> CommandResult:
        """Nuki said the code exists: read, then adopt it if it is ours, else report the holder."""
        auths = await self.auths()
        for auth in auths:
            if auth.code == digits and auth.slot == slot:
                if auth.window == window_key(window):
                    return CommandResult(CONFIRMED.outcome, detail="adopted the existing code")
                return refused(Refusal.WRITE_UNCONFIRMED, "the code exists with another window")
        holder = next((a for a in auths if a.code == digits), None)
        return refused(Refusal.DUPLICATE_CODE, "Nuki reports the code already exists",
                       conflict_slot=holder.slot if holder else None)

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        if (outside := self._names.outside(slot)) is not None:
            return outside
        try:
            mine = [a for a in await self.auths() if a.slot == slot]
            for auth in mine:
                with contextlib.suppress(NotFound):
                    await self._api.request("DELETE", f"{self._path}/auth/{auth.id}")
            if not mine:
                return CONFIRMED
            return await self._confirm(lambda found: all(a.slot != slot for a in found),
                                       "the code is still on the lock")
        except Refused as exc:
            return exc.result

    async def _confirm(self, shows: Callable[[list[Auth]], bool], missing: str) -> CommandResult:
        b = self._backend
        for attempt in range(b.confirm_polls):
            if attempt:
                await b.sleep(b.confirm_interval)
            if shows(await self.auths()):
                return CONFIRMED
        return refused(Refusal.WRITE_UNCONFIRMED, missing)

    # --- operation ---------------------------------------------------------------------------

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        b = self._backend
        try:
            before_state = await self._lock_state()
            before_logs = {e.get("id") for e in await self._api.read_log(self.address)}
            await self._api.request("POST", f"{self._path}/action",
                                    json={"action": ACTION[operation]})
            for attempt in range(b.confirm_polls):
                if attempt:
                    await b.sleep(b.confirm_interval)
                for entry in await self._api.read_log(self.address):
                    if entry.get("id") in before_logs:
                        continue
                    if LOG_OPERATION.get(entry.get("action")) is not operation:
                        continue
                    if entry.get("state", 0) == 0:
                        return CONFIRMED
                    failure = failure_of(entry.get("state"))
                    if failure == "jammed":
                        return refused(Refusal.JAMMED, "the lock reports its motor blocked")
                    return refused(Refusal.TEMPORARY, f"the lock reports {failure}")
                state = await self._lock_state()
                if state in TARGET_STATE[operation] and before_state not in TARGET_STATE[operation]:
                    return CONFIRMED
        except Refused as exc:
            return exc.result
        return timed_out(f"remote {operation.value} commanded (unconfirmed by device)")

    async def _lock_state(self) -> int | None:
        state = (await self._api.request("GET", self._path)).get("state") or {}
        value = state.get("state")
        return value if isinstance(value, int) else None

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        # The Web API cannot set a lock's clock: the bridge and the app keep it in time.
        return refused(Refusal.NOT_SUPPORTED, "the Nuki Web API cannot set a lock's clock")
