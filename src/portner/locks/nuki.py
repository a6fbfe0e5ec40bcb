"""Nuki Web API adapter (https://api.nuki.io): Nuki smart locks with keypads, through Nuki's cloud.

Configuration (`BackendConfig(name="nuki", url=..., options=...)`): `url` is the API base (default
https://api.nuki.io); options `token` (the Web API token, required), `poll_interval` (seconds between
log polls, default 30), `slots` (how many keypad codes Portner may manage per lock, default 100),
`name_prefix` (default "portner-slot-"), `confirm_polls`/`confirm_interval` (how often and how far
apart a write or a remote action is read back before it counts as unconfirmed; default 5 x 2 s).
A lock's address is its smartlockId.

How Portner's terms map onto Nuki's:
- **Slots are auth names.** Nuki has no code slots; a keypad code is an authorization of type 13.
  Portner names the ones it creates "portner-slot-07", so slot 7 is whichever type-13 auth carries
  that name. The placement lives on the lock account itself: after a restart the adapter finds its
  codes by reading the auth list, never by clearing and re-setting (F19). Codes with other names
  (made in the Nuki app) occupy no Portner slot but still block a duplicate.
- **Code rules are checked before any request** (F24): 6 digits, 1-9 only, never starting with "12"
  (the keypad firmware's rules); the weak-code filter is the generator's job (CodeRules.reject_weak).
- **Writes are confirmed by reading back.** PUT /smartlock/{id}/auth answers 204 and the bridge
  applies it later; a code not visible after the read-backs is WRITE_UNCONFIRMED (retryable), never
  "confirmed". An "already exists" answer (409) is reconciled by reading, not retried (F21).
- **A remote action is confirmed by the lock**, not by the API: POST .../action succeeding only means
  the cloud accepted it. `operate` answers CONFIRMED only when the log shows the action or the state
  changed to it; otherwise TIMED_OUT "remote unlock commanded (unconfirmed by device)" (F26).
- **Events come from polling the log** with a date cursor, deduplicated on the log entry's id (F14).
- HTTP: 401/403 -> NOT_AUTHORISED, 429 and 5xx -> TEMPORARY, 400 -> BAD_CODE/BAD_SCHEDULE,
  409 -> reconcile then DUPLICATE_CODE, connection failures -> OFFLINE, read timeouts -> TIMED_OUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from portner.locks.codes import check_code
from portner.locks.port import (
    CONFIRMED,
    BackendConfig,
    Capabilities,
    CodeRules,
    CommandResult,
    Condition,
    Feature,
    Health,
    HealthEvent,
    KeypadCode,
    LockEvent,
    LockWindow,
    Operation,
    Refusal,
    SlotRange,
    SlotReading,
    SlotState,
    Source,
    refused,
    timed_out,
)

DEFAULT_URL = "https://api.nuki.io"
KEYPAD_CODE = 13  # Nuki auth type "keypad code"
NAME_LIMIT = 32  # Nuki auth names are at most 32 characters
NUKI_RULES = CodeRules(lengths=frozenset({6}), alphabet="123456789", forbidden_prefixes=("12",))

_ACTION = {Operation.UNLOCK: 1, Operation.LOCK: 2}
_LOG_OPERATION = {1: Operation.UNLOCK, 3: Operation.UNLOCK, 5: Operation.UNLOCK,
                  2: Operation.LOCK, 4: Operation.LOCK}
# Log triggers: 0 system, 1 manual, 2 button, 3 automatic, 4 web, 5 app, 6 auto lock, 7 accessory,
# 255 keypad. The app and the web API are both "commanded over the network".
_TRIGGER_SOURCE = {0: Source.AUTO, 1: Source.MANUAL, 2: Source.MANUAL, 3: Source.AUTO,
                   4: Source.REMOTE, 5: Source.REMOTE, 6: Source.AUTO, 7: Source.RFID,
                   255: Source.KEYPAD}
_STATE_BOLT = {1: "locked", 3: "unlocked", 5: "unlocked", 6: "unlocked", 254: "jammed"}
_TARGET_STATE = {Operation.UNLOCK: {3, 5, 6}, Operation.LOCK: {1}}
_FAILURES = {1: "jammed", 224: "wrong_code", 225: "wrong_code", 10: "outside_schedule"}
_OFFLINE_SERVER_STATE = 4


def check_nuki_code(code: KeypadCode) -> str | None:
    """Why the Nuki keypad would refuse `code`, or None when it accepts it (F24). Weak codes are
    the generator's concern, not the firmware's, so they are not refused here."""
    return check_code(replace(NUKI_RULES, reject_weak=False), code)


class _Refused(Exception):
    """An HTTP answer that ends a command; carries the port's answer."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.detail)
        self.result = result


@dataclass(frozen=True, slots=True)
class _Auth:
    id: str
    slot: int | None
    code: str | None
    enabled: bool
    window: tuple[str | None, str | None]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _window_fields(window: LockWindow | None) -> dict[str, Any]:
    if window is None:
        return {"allowedWeekDays": 127, "allowedFromTime": 0, "allowedUntilTime": 0}
    # A LockWindow is one interval; Nuki's dates are instants, so no local-time conversion is
    # needed. Week days and minutes-after-midnight stay open (127, 0-0 = the whole day).
    return {"allowedFromDate": _iso(window.start), "allowedUntilDate": _iso(window.end),
            "allowedWeekDays": 127, "allowedFromTime": 0, "allowedUntilTime": 0}


def _window_key(window: LockWindow | None) -> tuple[str | None, str | None]:
    return (None, None) if window is None else (_iso(window.start), _iso(window.end))


class NukiLock:
    """One Nuki smart lock through the Web API (LockPort)."""

    def __init__(self, backend: NukiBackend, address: str) -> None:
        if not address.isdigit():
            raise ValueError(f"a Nuki lock address is its numeric smartlockId, not {address!r}")
        self.address = address
        self._backend = backend
        self._path = f"/smartlock/{address}"

    # --- reads -------------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        b = self._backend
        return Capabilities(
            features=frozenset({Feature.KEYPAD, Feature.LOCK_SCHEDULES, Feature.REMOTE_OPERATION,
                                Feature.USER_EVENTS}),
            code_rules=NUKI_RULES, slots=SlotRange(b.slot_count, first_native=1),
            min_command_interval=timedelta(seconds=1), model="Nuki Smart Lock (Web API)")

    async def health(self) -> Health:
        try:
            lock = await self._backend.request("GET", self._path)
        except _Refused:
            return Health()
        state = lock.get("state") or {}
        charge = state.get("batteryCharge")
        code = state.get("state")
        return Health(
            online=lock.get("serverState") != _OFFLINE_SERVER_STATE,
            battery_percent=float(charge) if isinstance(charge, int | float) else None,
            jammed=(code == 254) if isinstance(code, int) else None,
            bolt=_STATE_BOLT.get(code) if isinstance(code, int) else None)

    async def auths(self) -> list[_Auth]:
        """Every keypad-code auth on the lock, with the Portner slot its name gives (or None).

        While the lock is offline (serverState 4) the cloud's list is only what the cloud last
        knew, not what the lock holds: that is no reading, so it refuses OFFLINE."""
        lock = await self._backend.request("GET", self._path)
        if lock.get("serverState") == _OFFLINE_SERVER_STATE:
            raise _Refused(refused(Refusal.OFFLINE, "the lock is offline (Nuki serverState 4)"))
        listing = await self._backend.request("GET", f"{self._path}/auth")
        if not isinstance(listing, list):
            raise _Refused(refused(Refusal.TEMPORARY, "the auth list was not a list"))
        found = []
        for item in listing:
            if not isinstance(item, dict) or item.get("type") != KEYPAD_CODE:
                continue
            code = item.get("code")
            found.append(_Auth(
                id=str(item.get("id")), slot=self._backend.slot_of(item.get("name")),
                code=str(code) if isinstance(code, int) else None,
                enabled=bool(item.get("enabled", True)),
                window=(_canonical(item.get("allowedFromDate")),
                        _canonical(item.get("allowedUntilDate")))))
        self._backend.remember_auths(self.address, found)
        return found

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        for slot in slots:
            self._backend.check_slot(slot)
        try:
            auths = await self.auths()
        except _Refused:
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
                       window: LockWindow | None = None) -> CommandResult:
        if (outside := self._backend.outside(slot)) is not None:
            return outside
        reason = check_nuki_code(code)
        if reason is not None:
            return refused(Refusal.BAD_CODE, reason)
        try:
            return await self._set_code(slot, code, window)
        except _Refused as exc:
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
        if len(mine) == 1 and mine[0].code == digits and mine[0].window == _window_key(window):
            return CONFIRMED  # already there: an idempotent success without a write
        body = {"name": self._backend.name_of(slot), "code": int(digits), **_window_fields(window)}
        try:
            if mine:
                await self._backend.request("POST", f"{self._path}/auth/{mine[0].id}", json=body)
            else:
                await self._backend.request("PUT", f"{self._path}/auth",
                                            json={**body, "type": KEYPAD_CODE})
        except _Refused as exc:
            if exc.result.refusal is not Refusal.DUPLICATE_CODE:
                raise
            return await self._reconcile_duplicate(slot, digits, window)
        return await self._confirm(lambda found: any(
            a.slot == slot and a.code == digits and a.window == _window_key(window)
            for a in found), "the code is not visible on the lock yet")

    async def _reconcile_duplicate(self, slot: int, digits: str,
                                   window: LockWindow | None) -> CommandResult:
        """Nuki said the code exists: read, then adopt it if it is ours, else report the holder."""
        auths = await self.auths()
        for auth in auths:
            if auth.code == digits and auth.slot == slot:
                if auth.window == _window_key(window):
                    return CommandResult(CONFIRMED.outcome, detail="adopted the existing code")
                return refused(Refusal.WRITE_UNCONFIRMED, "the code exists with another window")
        holder = next((a for a in auths if a.code == digits), None)
        return refused(Refusal.DUPLICATE_CODE, "Nuki reports the code already exists",
                       conflict_slot=holder.slot if holder else None)

    async def clear_code(self, slot: int) -> CommandResult:
        if (outside := self._backend.outside(slot)) is not None:
            return outside
        try:
            mine = [a for a in await self.auths() if a.slot == slot]
            for auth in mine:
                with contextlib.suppress(_NotFound):
                    await self._backend.request("DELETE", f"{self._path}/auth/{auth.id}")
            if not mine:
                return CONFIRMED
            return await self._confirm(lambda found: all(a.slot != slot for a in found),
                                       "the code is still on the lock")
        except _Refused as exc:
            return exc.result

    async def _confirm(self, shows: Callable[[list[_Auth]], bool], missing: str) -> CommandResult:
        b = self._backend
        for attempt in range(b.confirm_polls):
            if attempt:
                await b.sleep(b.confirm_interval)
            if shows(await self.auths()):
                return CONFIRMED
        return refused(Refusal.WRITE_UNCONFIRMED, missing)

    # --- operation ---------------------------------------------------------------------------

    async def operate(self, operation: Operation) -> CommandResult:
        b = self._backend
        try:
            before_state = await self._lock_state()
            before_logs = {e.get("id") for e in await b.read_log(self.address)}
            await b.request("POST", f"{self._path}/action", json={"action": _ACTION[operation]})
            for attempt in range(b.confirm_polls):
                if attempt:
                    await b.sleep(b.confirm_interval)
                for entry in await b.read_log(self.address):
                    if entry.get("id") in before_logs:
                        continue
                    if _LOG_OPERATION.get(entry.get("action")) is not operation:
                        continue
                    if entry.get("state", 0) == 0:
                        return CONFIRMED
                    failure = _FAILURES.get(entry.get("state"), f"error_{entry.get('state')}")
                    if failure == "jammed":
                        return refused(Refusal.JAMMED, "the lock reports its motor blocked")
                    return refused(Refusal.TEMPORARY, f"the lock reports {failure}")
                state = await self._lock_state()
                if state in _TARGET_STATE[operation] and before_state not in _TARGET_STATE[operation]:
                    return CONFIRMED
        except _Refused as exc:
            return exc.result
        return timed_out(f"remote {operation.value} commanded (unconfirmed by device)")

    async def _lock_state(self) -> int | None:
        state = (await self._backend.request("GET", self._path)).get("state") or {}
        value = state.get("state")
        return value if isinstance(value, int) else None

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        # The Web API cannot set a lock's clock: the bridge and the app keep it in time.
        return refused(Refusal.NOT_SUPPORTED, "the Nuki Web API cannot set a lock's clock")


def _canonical(value: object) -> str | None:
    parsed = _parse_time(value)
    return _iso(parsed) if parsed else None


class _NotFound(_Refused):
    pass


class NukiBackend:
    """The Nuki Web API account: one HTTP client, the locks, and the log poller (LockBackend)."""

    name = "nuki"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime],
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        options = config.options
        token = options.get("token")
        if not token:
            raise ValueError("the nuki backend needs options['token'] (a Nuki Web API token)")
        self.url = (config.url or DEFAULT_URL).rstrip("/")
        self.now = now
        self.sleep = sleep
        self.poll_interval = _number(options, "poll_interval", 30.0)
        self.slot_count = int(_number(options, "slots", 100))
        self.confirm_polls = max(1, int(_number(options, "confirm_polls", 5)))
        self.confirm_interval = _number(options, "confirm_interval", 2.0)
        self.prefix = options.get("name_prefix", "portner-slot-")
        if not self.prefix or len(self.prefix) + len(str(self.slot_count)) > NAME_LIMIT:
            raise ValueError("options['name_prefix'] must be non-empty and leave room for a slot "
                             f"number within Nuki's {NAME_LIMIT}-character names")
        self._name = re.compile(re.escape(self.prefix) + r"(\d+)$")
        self._token = token
        self._transport = transport
        self._timeout = _number(options, "timeout", 10.0)
        self._client: httpx.AsyncClient | None = None
        self._locks: dict[str, NukiLock] = {}
        self._slot_by_auth: dict[str, dict[str, int | None]] = {}
        self._seen: dict[str, set[str]] = {}
        self._cursor: dict[str, datetime] = {}
        self._last_health: dict[str, tuple[Any, ...]] = {}
        self._queue: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()
        self._poller: asyncio.Task[None] | None = None

    # --- LockBackend -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.url, transport=self._transport, timeout=self._timeout,
                headers={"Authorization": f"Bearer {self._token}", "Accept": "application/json"})
        if self._poller is None and self.poll_interval > 0:
            self._poller = asyncio.create_task(self._poll_forever())

    async def stop(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def lock(self, address: str) -> NukiLock:
        if address not in self._locks:
            self._locks[address] = NukiLock(self, address)
            self._seen.setdefault(address, set())
        return self._locks[address]

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            yield await self._queue.get()

    async def discover(self) -> list[str]:
        """The smartlockIds this token can see (GET /smartlock)."""
        listing = await self.request("GET", "/smartlock")
        return [str(item["smartlockId"]) for item in listing
                if isinstance(item, dict) and "smartlockId" in item]

    # --- slots and names -----------------------------------------------------------------------

    def check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or not 1 <= slot <= self.slot_count:
            raise ValueError(f"slot {slot!r} is outside this lock's slots 1..{self.slot_count}")

    def outside(self, slot: int) -> CommandResult | None:
        """SLOT_OUT_OF_RANGE for a slot beyond 1..slots, decided before any request (F7)."""
        if isinstance(slot, int) and 1 <= slot <= self.slot_count:
            return None
        return refused(Refusal.SLOT_OUT_OF_RANGE,
                       f"slot {slot!r} is outside this lock's slots 1..{self.slot_count}")

    def name_of(self, slot: int) -> str:
        return f"{self.prefix}{slot:02d}"

    def slot_of(self, name: object) -> int | None:
        match = self._name.match(name) if isinstance(name, str) else None
        slot = int(match.group(1)) if match else None
        return slot if slot is not None and 1 <= slot <= self.slot_count else None

    def remember_auths(self, address: str, auths: list[_Auth]) -> None:
        self._slot_by_auth[address] = {a.id: a.slot for a in auths}

    # --- HTTP --------------------------------------------------------------------------------

    async def request(self, method: str, path: str, *, json: Any = None,
                      params: dict[str, Any] | None = None) -> Any:
        if self._client is None:
            raise RuntimeError("the nuki backend is not started")
        try:
            response = await self._client.request(method, path, json=json, params=params)
        except httpx.TimeoutException as exc:
            raise _Refused(timed_out(f"Nuki Web API did not answer ({type(exc).__name__})")) from exc
        except httpx.TransportError as exc:
            raise _Refused(refused(Refusal.OFFLINE, f"Nuki Web API unreachable "
                                                    f"({type(exc).__name__})")) from exc
        if response.status_code < 300:
            return response.json() if response.content else None
        raise _classify(response, method)

    async def read_log(self, address: str, since: datetime | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": 50}
        if since is not None:
            params["fromDate"] = _iso(since)
        entries = await self.request("GET", f"/smartlock/{address}/log", params=params)
        return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []

    # --- events ------------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await self.poll_once()
            await self.sleep(self.poll_interval)

    async def poll_once(self) -> int:
        """Read every known lock's new log entries and state; queue their events. Returns how
        many were queued. Errors are health, not crashes: the next poll tries again."""
        queued = 0
        for address in list(self._locks):
            try:
                queued += await self._poll_lock(address)
            except _Refused:
                queued += self._health(address, ("online", False), Condition.OFFLINE)
        return queued

    async def _poll_lock(self, address: str) -> int:
        queued = 0
        lock = await self.request("GET", f"/smartlock/{address}")
        state = lock.get("state") or {}
        online = lock.get("serverState") != _OFFLINE_SERVER_STATE
        queued += self._health(address, ("online", online),
                               Condition.ONLINE if online else Condition.OFFLINE,
                               skip_first=online)
        charge = state.get("batteryCharge")
        if isinstance(charge, int | float):
            queued += self._health(address, ("battery", charge), Condition.BATTERY,
                                   percent=float(charge))
        jammed = state.get("state") == 254
        queued += self._health(address, ("jam", jammed),
                               Condition.JAMMED if jammed else Condition.UNJAMMED,
                               skip_first=not jammed)
        seen = self._seen.setdefault(address, set())
        entries = await self.read_log(address, self._cursor.get(address))
        for entry in sorted(entries, key=lambda e: str(e.get("date", ""))):
            log_id = str(entry.get("id", ""))
            if not log_id or log_id in seen:
                continue
            seen.add(log_id)
            occurred = _parse_time(entry.get("date"))
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
        operation = _LOG_OPERATION.get(entry.get("action"))
        if operation is None:
            return None  # door sensor, firmware, calibration entries: not operations
        source = _TRIGGER_SOURCE.get(entry.get("trigger"), Source.UNKNOWN)
        if entry.get("source") == 1:
            source = Source.KEYPAD
        state = entry.get("state", 0)
        slot = None
        auth_id = entry.get("authId")
        if source is Source.KEYPAD and auth_id:
            slots = self._slot_by_auth.get(address, {})
            if str(auth_id) not in slots:
                with contextlib.suppress(_Refused):
                    await self.lock(address).auths()
                slots = self._slot_by_auth.get(address, {})
            slot = slots.get(str(auth_id))  # None: not a Portner code, so "unidentified"
        return LockEvent(
            lock=address, operation=operation, source=source, success=state == 0,
            received_at=self.now(), key=f"nuki:{address}:{log_id}", slot=slot, lock_time=occurred,
            failure="" if state == 0 else _FAILURES.get(state, f"error_{state}"))

    def _health(self, address: str, signature: tuple[Any, ...], condition: Condition, *,
                percent: float | None = None, skip_first: bool = False) -> int:
        kind = signature[0]
        previous = self._last_health.get(f"{address}:{kind}")
        self._last_health[f"{address}:{kind}"] = signature
        if previous == signature or (previous is None and skip_first):
            return 0
        now = self.now()
        self._queue.put_nowait(HealthEvent(lock=address, condition=condition, received_at=now,
                                           key=f"nuki:{address}:{kind}:{now.isoformat()}",
                                           percent=percent))
        return 1


def _classify(response: httpx.Response, method: str) -> _Refused:
    status = response.status_code
    try:
        detail = str(response.json().get("detailMessage", ""))
    except (ValueError, AttributeError):
        detail = ""
    where = f"Nuki Web API {method} answered {status}" + (f": {detail}" if detail else "")
    if status in (401, 403):
        return _Refused(refused(Refusal.NOT_AUTHORISED, where))
    if status == 404:
        return _NotFound(refused(Refusal.NOT_AUTHORISED, where + " (not in this account)"))
    if status == 409:
        return _Refused(refused(Refusal.DUPLICATE_CODE, where))
    if status == 400:
        lowered = detail.lower()
        if "date" in lowered or "time" in lowered or "week" in lowered:
            return _Refused(refused(Refusal.BAD_SCHEDULE, where))
        return _Refused(refused(Refusal.BAD_CODE, where))
    retry_after = response.headers.get("Retry-After")
    if retry_after:
        where += f" (retry after {retry_after} s)"
    # 429, 5xx and statuses we do not know: transient, retry with backoff.
    return _Refused(refused(Refusal.TEMPORARY, where))


def _number(options: dict[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"options[{key!r}] must be a number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"options[{key!r}] must not be negative")
    return value


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> NukiBackend:
    return NukiBackend(config, now=now)
