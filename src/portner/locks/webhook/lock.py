"""One lock behind a vendor's webhook contract (LockPort).

What the manifest lets us refuse (slot range, the lock's own code rules) is refused before anything
is sent (F3, F7, F24). An "already exists" answer to set_code is reconciled by reading the slot,
never retried (F21).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from portner.locks.codes import check_code
from portner.locks.port import (
    Capabilities,
    CommandResult,
    Health,
    KeypadCode,
    LockWindow,
    Operation,
    Outcome,
    Refusal,
    SlotReading,
    SlotState,
    refused,
)
from portner.locks.webhook.contract import slot_reading

if TYPE_CHECKING:
    from portner.locks.webhook.backend import WebhookBackend


class WebhookLock:
    """One lock behind a vendor's webhook contract (LockPort)."""

    def __init__(self, backend: WebhookBackend, address: str) -> None:
        self.address = address
        self._backend = backend

    async def capabilities(self) -> Capabilities:
        caps = self._backend.manifest.get(self.address)
        # A lock missing from the manifest: unknown capabilities, not "none" (F8).
        return caps if caps is not None else Capabilities(features=frozenset())

    async def health(self) -> Health:
        outcome, data = await self._backend.execute(self.address, "health", {})
        if not outcome.ok:
            return Health()

        def opt(name: str, kind: type | tuple[type, ...]) -> Any:
            value = data.get(name)
            return value if isinstance(value, kind) else None

        percent = opt("battery_percent", (int, float))
        lock_time = opt("lock_time", str)
        try:
            parsed = datetime.fromisoformat(lock_time) if lock_time else None
        except ValueError:
            parsed = None
        return Health(online=opt("online", bool), jammed=opt("jammed", bool),
                      battery_percent=float(percent) if percent is not None else None,
                      tamper=opt("tamper", bool), bolt=opt("bolt", str),
                      lock_time=parsed if parsed and parsed.tzinfo else None)

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        outcome, data = await self._backend.execute(self.address, "read_slots",
                                                    {"slots": list(slots)})
        answered: dict[int, SlotReading] = {}
        for item in data.get("slots", []) if outcome.ok else []:
            reading = slot_reading(item)
            if reading is not None:
                answered[reading.slot] = reading
        # A slot the vendor did not answer for is unreadable, never empty.
        return [answered.get(s, SlotReading(s, SlotState.UNREADABLE)) for s in slots]

    def _outside(self, slot: int) -> CommandResult | None:
        """What the manifest lets us refuse before sending anything (F3, F7)."""
        caps = self._backend.manifest.get(self.address)
        if caps is not None and caps.slots is not None and not 1 <= slot <= caps.slots.count:
            return refused(Refusal.SLOT_OUT_OF_RANGE,
                           f"slot {slot} is outside this lock's slots 1..{caps.slots.count}")
        if slot < 1:
            return refused(Refusal.SLOT_OUT_OF_RANGE, f"slot {slot} is below 1")
        return None

    async def set_code(self, slot: int, code: KeypadCode,
                       window: LockWindow | None = None, *,
                       idempotency_key: str | None = None) -> CommandResult:
        if (outside := self._outside(slot)) is not None:
            return outside
        caps = self._backend.manifest.get(self.address)
        if caps is not None and caps.code_rules is not None:
            # Only what the lock itself refuses; weak codes are the generator's concern.
            reason = check_code(replace(caps.code_rules, reject_weak=False), code)
            if reason is not None:
                return refused(Refusal.BAD_CODE, reason)
        args = {"slot": slot, "code": code.reveal(),
                "window": None if window is None else {"start": window.start.isoformat(),
                                                       "end": window.end.isoformat()}}
        outcome, _ = await self._backend.execute(self.address, "set_code", args, idempotency_key=idempotency_key)
        if outcome.refusal is Refusal.DUPLICATE_CODE and outcome.conflict_slot in (None, slot):
            return await self._reconcile_exists(slot, code, outcome)
        return outcome

    async def _reconcile_exists(self, slot: int, code: KeypadCode,
                                answer: CommandResult) -> CommandResult:
        """"Already exists" (F21): read the slot once, then adopt what is ours or report it."""
        (reading,) = await self.read_slots([slot])
        if reading.state is SlotState.KNOWN and reading.code == code:
            return CommandResult(Outcome.CONFIRMED, detail="adopted: the code was already there")
        if reading.state is SlotState.MASKED and answer.conflict_slot == slot:
            return CommandResult(Outcome.CONFIRMED, detail="adopted: the vendor holds it (masked)")
        if reading.state is SlotState.UNREADABLE:
            return refused(Refusal.WRITE_UNCONFIRMED, "the vendor says it exists; unreadable now")
        return refused(Refusal.DUPLICATE_CODE, answer.detail or "the code exists elsewhere",
                       conflict_slot=answer.conflict_slot if answer.conflict_slot != slot else None)

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        if (outside := self._outside(slot)) is not None:
            return outside
        return (await self._backend.execute(self.address, "clear_code", {"slot": slot},
                                            idempotency_key=idempotency_key))[0]

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        return (await self._backend.execute(self.address, "operate", {"operation": operation.value},
                                            idempotency_key=idempotency_key))[0]

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        return (await self._backend.execute(self.address, "set_clock",
                                            {"now": now.isoformat(), "zone": zone}))[0]
