"""Generic signed-webhook adapter: any vendor cloud that serves Portner's webhook contract.

The contract ("portner-webhook/1"), as a vendor implements it:

**Signing (both directions): Standard Webhooks v1.** Every request carries `webhook-id` (unique per
message; a retry of the same message keeps it), `webhook-timestamp` (integer Unix seconds) and
`webhook-signature`: one or more space-separated `v1,<base64 HMAC-SHA256>` over the bytes
`"{webhook-id}.{webhook-timestamp}.{body}"` (body is empty for GET), keyed by the shared secret
given as `whsec_<base64 key>`. The receiver rejects a bad signature, a timestamp more than 5 minutes
from its clock, and a webhook-id it has already accepted (replay). Portner signs its requests to the
vendor with options `secret`; the vendor signs callbacks with `callback_secret` (default: `secret`).

**`GET {base}/manifest`** answers `{"contract": "portner-webhook/1", "vendor": str, "version": str,
"locks": [lock...]}`; a lock is `{"address": str, "model": str, "features": [Feature values],
"code_rules": {"lengths": [int], "alphabet": str, "forbidden_prefixes": [str], "reject_weak": bool}
| null, "slots": {"count": int, "first_native": int} | null, "masked_reads": bool,
"min_command_interval_s": number}`. Absent means unknown, never zero.

**`POST {base}/execute`** with `{"idempotency_key": str, "lock": address, "command": kind,
"args": {...}}`. Kinds and args: `read_slots {"slots": [int]}` -> data `{"slots": [{"slot", "state":
known|masked|empty|unreadable, "code"?, "enabled"?}]}`; `set_code {"slot", "code": str, "window":
{"start", "end"} (ISO 8601 with offset) | null}`; `clear_code {"slot"}`; `operate {"operation":
"lock"|"unlock"}`; `set_clock {"now", "zone"}`; `health {}` -> data `{"online", "battery_percent",
"jammed", "tamper", "lock_time", "bolt"}`. The vendor keeps a final result per idempotency key for
at least 24 h and answers a repeat with it, so Portner may resend after a lost answer. The answer
(HTTP 200) is one typed result:
- `{"result": "success", "data": {...}}`: the lock confirmed (a write is on the lock, an operation
  happened); never for "accepted, not yet confirmed";
- `{"result": "denied", "reason": r, "conflict_slot"?: int, "detail"?: str}`: the lock or vendor said
  no; r is one of duplicate_code, already_exists, bad_code, lock_full, slot_out_of_range,
  bad_schedule, not_supported, not_authorised;
- `{"result": "temporary", "retry_after": seconds, "reason"?: offline|busy|jammed, "detail"?}`;
- `{"result": "permanent", "reason"?: r, "detail"?}`: the request cannot succeed as sent;
- `{"result": "pending"}`: accepted; the final result follows as a `command.result` callback.

**Callbacks** (vendor -> Portner's callback URL, signed): `{"type": t, "timestamp": iso, "data":
{...}}` with t = `lock.event` (data: `lock`, `id` (stable per event), `operation`, `source`,
`success`, `slot` | null, `occurred_at`, `sequence`, `failure`), `lock.health` (data: `lock`, `id`,
`condition`, `percent`, `occurred_at`, `slot`) or `command.result` (data: `idempotency_key`,
`result` as above). Portner answers 2xx once accepted; see CallbackRejected.http_status otherwise.

An "already exists" answer to set_code is reconciled by reading the slot, never retried (F21).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import httpx

from portner.domain.errors import PortnerError
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
    Outcome,
    Refusal,
    SlotRange,
    SlotReading,
    SlotState,
    Source,
    refused,
    timed_out,
)

CONTRACT = "portner-webhook/1"
TOLERANCE = timedelta(minutes=5)

# --- Standard Webhooks signing (pure) -------------------------------------------------------------


class CallbackRejected(PortnerError):
    """A signed message that Portner refuses; `http_status` is what the web layer answers."""

    http_status = 400


class BadSignature(CallbackRejected):
    http_status = 401


class StaleTimestamp(CallbackRejected):
    http_status = 400


class Replayed(CallbackRejected):
    # 409 tells a vendor "already delivered": stop retrying this webhook-id.
    http_status = 409


class MalformedCallback(CallbackRejected):
    http_status = 400


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret ("whsec_" + base64)."""
    if not isinstance(secret, str) or not secret.startswith("whsec_"):
        raise ValueError("a webhook secret is 'whsec_' followed by the base64 of the key")
    try:
        key = base64.b64decode(secret[len("whsec_"):], validate=True)
    except ValueError:
        raise ValueError("the webhook secret after 'whsec_' is not valid base64") from None
    if len(key) < 24:
        raise ValueError("a webhook secret key must be at least 24 bytes")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message: "v1," + base64 HMAC-SHA256."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signature_headers(key: bytes, body: bytes, *, now: datetime,
                      msg_id: str | None = None) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(now.timestamp())
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body)}


@dataclass(frozen=True, slots=True)
class Verified:
    msg_id: str
    timestamp: datetime


def verify(headers: Mapping[str, str], body: bytes, keys: Sequence[bytes], *, now: datetime,
           tolerance: timedelta = TOLERANCE) -> Verified:
    """Check a Standard Webhooks signature and timestamp; raise CallbackRejected if either fails.
    Replay protection needs memory: see ReplayGuard."""
    lowered = {k.lower(): v for k, v in headers.items()}
    missing = [h for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
               if not lowered.get(h)]
    if missing:
        raise BadSignature(f"missing header(s): {', '.join(missing)}")
    msg_id, raw_ts = lowered["webhook-id"], lowered["webhook-timestamp"]
    if not raw_ts.isdigit():
        raise StaleTimestamp("webhook-timestamp must be integer Unix seconds")
    sent = datetime.fromtimestamp(int(raw_ts), tz=now.tzinfo)
    if abs(now - sent) > tolerance:
        raise StaleTimestamp(f"webhook-timestamp is more than {tolerance} away from our clock")
    offered = [part.split(",", 1)[1] for part in lowered["webhook-signature"].split()
               if part.startswith("v1,")]
    for key in keys:
        expected = sign(key, msg_id, int(raw_ts), body).split(",", 1)[1]
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return Verified(msg_id, sent)
    raise BadSignature("no v1 signature matches the body with our key")


class ReplayGuard:
    """Remembers accepted webhook-ids for twice the tolerance (older ones are refused as stale)."""

    def __init__(self, tolerance: timedelta = TOLERANCE) -> None:
        self._tolerance = tolerance
        self._seen: dict[str, datetime] = {}

    def accept(self, verified: Verified, now: datetime) -> None:
        horizon = now - 2 * self._tolerance
        self._seen = {k: t for k, t in self._seen.items() if t >= horizon}
        if verified.msg_id in self._seen:
            raise Replayed(f"webhook-id {verified.msg_id!r} was already accepted")
        self._seen[verified.msg_id] = verified.timestamp


# --- callback bodies (pure) ----------------------------------------------------------------------


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _types(kind):
        raise MalformedCallback(f"field {name!r} is missing or not {_names(kind)}")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in _types(kind))


def _instant(data: Mapping[str, Any], name: str) -> datetime | None:
    raw = _field(data, name, str, optional=True)
    if raw is None:
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise MalformedCallback(f"field {name!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise MalformedCallback(f"field {name!r} has no UTC offset")
    return parsed


def _enum(enum: Any, data: Mapping[str, Any], name: str) -> Any:
    try:
        return enum(_field(data, name, str))
    except ValueError:
        raise MalformedCallback(f"field {name!r} is not one of {[e.value for e in enum]}") from None


def parse_callback(body: bytes, *, received_at: datetime
                   ) -> tuple[list[LockEvent | HealthEvent], tuple[str, Mapping[str, Any]] | None]:
    """A verified callback body -> (events, late command result as (idempotency key, result))."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedCallback("the callback body is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise MalformedCallback("a callback is an object with 'type' and a 'data' object")
    kind, data = message.get("type"), message["data"]
    if kind == "command.result":
        return [], (_field(data, "idempotency_key", str), _field(data, "result", dict))
    lock, event_id = _field(data, "lock", str), _field(data, "id", str)
    key = f"webhook:{lock}:{event_id}"
    if kind == "lock.event":
        return [LockEvent(
            lock=lock, operation=_enum(Operation, data, "operation"),
            source=_enum(Source, data, "source"), success=_field(data, "success", bool),
            received_at=received_at, key=key, slot=_field(data, "slot", int, optional=True),
            lock_time=_instant(data, "occurred_at"),
            sequence=_field(data, "sequence", int, optional=True),
            failure=_field(data, "failure", str, optional=True) or "")], None
    if kind == "lock.health":
        percent = _field(data, "percent", (int, float), optional=True)
        return [HealthEvent(
            lock=lock, condition=_enum(Condition, data, "condition"), received_at=received_at,
            key=key, percent=float(percent) if percent is not None else None,
            lock_time=_instant(data, "occurred_at"),
            slot=_field(data, "slot", int, optional=True))], None
    raise MalformedCallback(f"unknown callback type {kind!r}")


# --- typed results -----------------------------------------------------------------------------

_DENIALS = {r.value: r for r in Refusal if r.permanent}
_TRANSIENT = {"offline": Refusal.OFFLINE, "busy": Refusal.BUSY, "jammed": Refusal.JAMMED}
_ALREADY_EXISTS = "already_exists"


def to_command_result(answer: object) -> CommandResult:
    """A vendor's typed result -> the port's answer. Anything else is a transient fault."""
    if not isinstance(answer, dict):
        return refused(Refusal.TEMPORARY, "the vendor's answer is not a typed result")
    kind, detail = answer.get("result"), str(answer.get("detail") or "")
    reason = str(answer.get("reason") or "")
    if kind == "success":
        return CONFIRMED
    if kind == "denied":
        refusal = Refusal.DUPLICATE_CODE if reason == _ALREADY_EXISTS else _DENIALS.get(reason)
        if refusal is None:
            return refused(Refusal.NOT_SUPPORTED, f"denied for an unknown reason {reason!r}")
        slot = answer.get("conflict_slot")
        return refused(refusal, detail or f"denied: {reason}",
                       conflict_slot=slot if isinstance(slot, int) else None)
    if kind == "temporary":
        retry = answer.get("retry_after")
        if isinstance(retry, int | float):
            detail = f"{detail} (retry after {retry} s)".strip()
        return refused(_TRANSIENT.get(reason, Refusal.TEMPORARY), detail or "temporary error")
    if kind == "permanent":
        return refused(_DENIALS.get(reason, Refusal.NOT_SUPPORTED), detail or "permanent error")
    return refused(Refusal.TEMPORARY, f"unknown result kind {kind!r}")


class _Answer(Exception):
    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.detail)
        self.result = result


# --- the adapter ---------------------------------------------------------------------------------


class ManifestError(PortnerError, ValueError):
    """The vendor's manifest does not follow the contract; the message names the field."""


def _capabilities(entry: Mapping[str, Any], where: str) -> Capabilities:
    try:
        features = frozenset(Feature(f) for f in entry.get("features") or [])
    except ValueError as exc:
        raise ManifestError(f"{where}.features: {exc}") from None
    rules = entry.get("code_rules")
    slots = entry.get("slots")
    try:
        code_rules = None if rules is None else CodeRules(
            lengths=frozenset(int(n) for n in rules["lengths"]) if rules.get("lengths") else None,
            alphabet=str(rules.get("alphabet", "0123456789")),
            forbidden_prefixes=tuple(str(p) for p in rules.get("forbidden_prefixes", ())),
            reject_weak=bool(rules.get("reject_weak", True)))
    except (TypeError, ValueError, KeyError, AttributeError):
        raise ManifestError(f"{where}.code_rules is not a code-rules object") from None
    try:
        slot_range = None if not slots else SlotRange(int(slots["count"]),
                                                       int(slots.get("first_native", 1)))
    except (TypeError, ValueError, KeyError, AttributeError):
        raise ManifestError(f"{where}.slots needs an integer 'count'") from None
    interval = entry.get("min_command_interval_s", 2)
    if not isinstance(interval, int | float) or interval < 0:
        raise ManifestError(f"{where}.min_command_interval_s must be a non-negative number")
    return Capabilities(features=features, code_rules=code_rules, slots=slot_range,
                        masked_reads=bool(entry.get("masked_reads", False)),
                        min_command_interval=timedelta(seconds=interval),
                        model=str(entry.get("model", "")))


def parse_manifest(manifest: object) -> tuple[str, dict[str, Capabilities]]:
    if not isinstance(manifest, dict):
        raise ManifestError("the manifest is not a JSON object")
    if manifest.get("contract") != CONTRACT:
        raise ManifestError(f"manifest.contract must be {CONTRACT!r}, "
                            f"not {manifest.get('contract')!r}")
    locks = manifest.get("locks")
    if not isinstance(locks, list):
        raise ManifestError("manifest.locks must be a list")
    found: dict[str, Capabilities] = {}
    for i, entry in enumerate(locks):
        if not isinstance(entry, dict) or not isinstance(entry.get("address"), str):
            raise ManifestError(f"manifest.locks[{i}].address must be a string")
        found[entry["address"]] = _capabilities(entry, f"manifest.locks[{i}]")
    return str(manifest.get("vendor", "")), found


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
            reading = _reading(item)
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
                       window: LockWindow | None = None) -> CommandResult:
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
        outcome, _ = await self._backend.execute(self.address, "set_code", args)
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

    async def clear_code(self, slot: int) -> CommandResult:
        if (outside := self._outside(slot)) is not None:
            return outside
        return (await self._backend.execute(self.address, "clear_code", {"slot": slot}))[0]

    async def operate(self, operation: Operation) -> CommandResult:
        return (await self._backend.execute(self.address, "operate",
                                            {"operation": operation.value}))[0]

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        return (await self._backend.execute(self.address, "set_clock",
                                            {"now": now.isoformat(), "zone": zone}))[0]


def _reading(item: object) -> SlotReading | None:
    if not isinstance(item, dict) or not isinstance(item.get("slot"), int):
        return None
    try:
        state = SlotState(item.get("state"))
    except ValueError:
        return SlotReading(item["slot"], SlotState.UNREADABLE)
    code = item.get("code")
    if state is SlotState.KNOWN:
        try:
            known = KeypadCode(code)
        except ValueError:
            return SlotReading(item["slot"], SlotState.UNREADABLE)
        return SlotReading(item["slot"], state, known, enabled=item.get("enabled"))
    return SlotReading(item["slot"], state, enabled=item.get("enabled"))


class WebhookBackend:
    """A vendor cloud behind the contract (LockBackend), plus Portner's callback receiver."""

    name = "webhook"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime],
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not config.url:
            raise ValueError("the webhook backend needs url (the vendor's contract base URL)")
        options = config.options
        if "secret" not in options:
            raise ValueError("the webhook backend needs options['secret'] (whsec_...)")
        self.url = config.url.rstrip("/")
        self.now = now
        self._key = decode_secret(options["secret"])
        self._callback_keys = [decode_secret(s) for s in
                               options.get("callback_secret", options["secret"]).split()]
        self._result_timeout = float(options.get("result_timeout", "30"))
        self._timeout = float(options.get("timeout", "10"))
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._replays = ReplayGuard()
        self._pending: dict[str, asyncio.Future[Mapping[str, Any]]] = {}
        self._queue: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()
        self._locks: dict[str, WebhookLock] = {}
        self.vendor = ""
        self.manifest: dict[str, Capabilities] = {}

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, transport=self._transport,
                                             timeout=self._timeout)
        await self.refresh_manifest()

    async def stop(self) -> None:
        for future in self._pending.values():
            future.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def lock(self, address: str) -> WebhookLock:
        return self._locks.setdefault(address, WebhookLock(self, address))

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            yield await self._queue.get()

    async def refresh_manifest(self) -> None:
        response = await self._send("GET", "/manifest", b"")
        if response.status_code != 200:
            raise ManifestError(f"GET /manifest answered {response.status_code}")
        try:
            self.vendor, self.manifest = parse_manifest(response.json())
        except ValueError as exc:
            raise ManifestError(str(exc)) from None

    async def _send(self, method: str, path: str, body: bytes) -> httpx.Response:
        if self._client is None:
            raise RuntimeError("the webhook backend is not started")
        headers = signature_headers(self._key, body, now=self.now())
        headers["content-type"] = "application/json"
        return await self._client.request(method, path, content=body, headers=headers)

    async def execute(self, lock: str, command: str, args: Mapping[str, Any], *,
                      idempotency_key: str | None = None
                      ) -> tuple[CommandResult, Mapping[str, Any]]:
        """One command, at most two sends under one idempotency key (the second only after a
        lost connection); a pending answer waits for its command.result callback."""
        key = idempotency_key or str(uuid.uuid4())
        body = json.dumps({"idempotency_key": key, "lock": lock, "command": command,
                           "args": args}).encode()
        future: asyncio.Future[Mapping[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer = await self._post_execute(body)
            if isinstance(answer, CommandResult):
                return answer, {}
            if answer.get("result") == "pending":
                try:
                    answer = await asyncio.wait_for(future, self._result_timeout)
                except TimeoutError:
                    return timed_out(f"{command}: accepted, no result within "
                                     f"{self._result_timeout:g} s"), {}
            data = answer.get("data")
            return to_command_result(answer), data if isinstance(data, dict) else {}
        finally:
            self._pending.pop(key, None)

    async def _post_execute(self, body: bytes) -> CommandResult | Mapping[str, Any]:
        for attempt in (1, 2):
            try:
                response = await self._send("POST", "/execute", body)
                break
            except httpx.TimeoutException:
                return timed_out("the vendor did not answer in time")
            except httpx.TransportError as exc:
                if attempt == 2:
                    return refused(Refusal.OFFLINE, f"vendor unreachable ({type(exc).__name__})")
        status = response.status_code
        if status in (401, 403):
            return refused(Refusal.NOT_AUTHORISED, f"the vendor refused our signature ({status})")
        if status == 429 or status >= 500:
            retry = response.headers.get("retry-after")
            return refused(Refusal.TEMPORARY, f"the vendor answered {status}"
                           + (f" (retry after {retry} s)" if retry else ""))
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if status != 200 or not isinstance(answer, dict):
            return refused(Refusal.TEMPORARY, f"the vendor answered {status} without a result")
        return answer

    def handle_callback(self, headers: Mapping[str, str], body: bytes
                        ) -> list[LockEvent | HealthEvent]:
        """Verify and take one vendor callback: its events are returned and also queued for
        events(); a late command result completes the waiting command. Raises CallbackRejected
        (BadSignature, StaleTimestamp, Replayed, MalformedCallback) with a clear message."""
        now = self.now()
        verified = verify(headers, body, self._callback_keys, now=now)
        events, late = parse_callback(body, received_at=now)
        # Remember the id only once the body is good: a vendor may fix and resend a bad one.
        self._replays.accept(verified, now)
        if late is not None:
            future = self._pending.get(late[0])
            if future is not None and not future.done():
                future.set_result(late[1])
        for event in events:
            self._queue.put_nowait(event)
        return events


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> WebhookBackend:
    return WebhookBackend(config, now=now)
