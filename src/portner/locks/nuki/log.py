"""Events from polling each lock's Nuki log and state.

The log is read with a date cursor (inclusive, so entries at the cursor's instant come again) and
deduplicated on the log entry's id (F14). State changes (online, battery, jam) become HealthEvents
once per change. Errors are health, not crashes: the next poll tries again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from portner.locks.nuki.client import NukiApi, Refused
from portner.locks.nuki.wire import (
    JAMMED_STATE,
    LOG_OPERATION,
    OFFLINE_SERVER_STATE,
    TRIGGER_SOURCE,
    failure_of,
    parse_time,
)
from portner.locks.port import Condition, HealthEvent, LockEvent, Source

SlotOfAuth = Callable[[str, str], Awaitable[int | None]]


class LogPoller:
    """Turns log entries and lock state into queued LockEvents and HealthEvents."""

    def __init__(self, api: NukiApi, queue: asyncio.Queue[LockEvent | HealthEvent], *,
                 now: Callable[[], datetime], slot_of_auth: SlotOfAuth) -> None:
        self._api = api
        self._queue = queue
        self._now = now
        self._slot_of_auth = slot_of_auth
        self._seen: dict[str, set[str]] = {}
        self._cursor: dict[str, datetime] = {}
        self._last_health: dict[str, tuple[Any, ...]] = {}

    async def poll_once(self, addresses: Iterable[str]) -> int:
        """Read these locks' new log entries and state; queue their events. Returns how many
        were queued."""
        queued = 0
        for address in addresses:
            try:
                queued += await self._poll_lock(address)
            except Refused:
                queued += self._health(address, ("online", False), Condition.OFFLINE)
        return queued

    async def _poll_lock(self, address: str) -> int:
        queued = 0
        lock = await self._api.request("GET", f"/smartlock/{address}")
        state = lock.get("state") or {}
        online = lock.get("serverState") != OFFLINE_SERVER_STATE
        queued += self._health(address, ("online", online),
                               Condition.ONLINE if online else Condition.OFFLINE,
                               skip_first=online)
        charge = state.get("batteryCharge")
        if isinstance(charge, int | float):
            queued += self._health(address, ("battery", charge), Condition.BATTERY,
                                   percent=float(charge))
        jammed = state.get("state") == JAMMED_STATE
        queued += self._health(address, ("jam", jammed),
                               Condition.JAMMED if jammed else Condition.UNJAMMED,
                               skip_first=not jammed)
        seen = self._seen.setdefault(address, set())
        entries = await self._api.read_log(address, self._cursor.get(address))
        for entry in sorted(entries, key=lambda e: str(e.get("date", ""))):
            log_id = str(entry.get("id", ""))
            if not log_id or log_id in seen:
                continue
            seen.add(log_id)
            occurred = parse_time(entry.get("date"))
            if occurred and occurred > self._cursor.get(address, occurred - timedelta(1)):
                # The cursor is inclusive (fromDate), so entries at the same instant come again
                # and the id set drops them.
                self._cursor[address] = occurred
            event = await self._event(address, entry, log_id, occurred)
            if event is not None:
                self._queue.put_nowait(event)
                queued += 1
        return queued

    async def _event(self, address: str, entry: dict[str, Any], log_id: str,
                     occurred: datetime | None) -> LockEvent | None:
        operation = LOG_OPERATION.get(entry.get("action"))
        if operation is None:
            return None  # door sensor, firmware, calibration entries: not operations
        source = TRIGGER_SOURCE.get(entry.get("trigger"), Source.UNKNOWN)
        if entry.get("source") == 1:
            source = Source.KEYPAD
        state = entry.get("state", 0)
        slot = None
        auth_id = entry.get("authId")
        if source is Source.KEYPAD and auth_id:
            # None: not a Portner code, so "unidentified"
            slot = await self._slot_of_auth(address, str(auth_id))
        return LockEvent(
            lock=address, operation=operation, source=source, success=state == 0,
            received_at=self._now(), key=f"nuki:{address}:{log_id}", slot=slot,
            lock_time=occurred, failure="" if state == 0 else failure_of(state))

    def _health(self, address: str, signature: tuple[Any, ...], condition: Condition, *,
                percent: float | None = None, skip_first: bool = False) -> int:
        kind = signature[0]
        previous = self._last_health.get(f"{address}:{kind}")
        self._last_health[f"{address}:{kind}"] = signature
        if previous == signature or (previous is None and skip_first):
            return 0
        now = self._now()
        self._queue.put_nowait(HealthEvent(lock=address, condition=condition, received_at=now,
                                           key=f"nuki:{address}:{kind}:{now.isoformat()}",
                                           percent=percent))
        return 1
