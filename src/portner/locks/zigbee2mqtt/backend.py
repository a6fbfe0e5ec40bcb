"""The Zigbee2MQTT lock backend: one MQTT connection for every lock behind one bridge.

Topics (Zigbee2MQTT "MQTT topics and messages"): the bridge publishes each device's state on
`<base>/<friendly_name>`, its availability on `<base>/<friendly_name>/availability` and the
device list (retained) on `<base>/bridge/devices`; commands go to `<base>/<friendly_name>/set`
and reads to `<base>/<friendly_name>/get`. Payloads are built and read in `payloads` (see its
docstring for the documents and converter code they follow).

Honesty rules this backend keeps:
- a slot outside the lock's users, or a code the lock's length range refuses, is refused before
  anything is published (F3, F7, F9);
- a set is confirmed only by a read-back (`/get {"pin_code": {"user": N}}`) that shows the code;
  a read-back of `{}` or a user still `available` is WRITE_UNCONFIRMED (F10). This needs the
  Zigbee2MQTT device option `expose_pin: true`: a read-back without the PIN cannot confirm;
- a command is confirmed only by the state the lock publishes afterwards; no answer in time is
  TIMED_OUT, never success.

A read-back is the next state publish that carries the user and no `action`: the bridge also
republishes its cached `users` with every event and battery report, and an event publish right
after a set still shows the old entry.

Security: PINs cross the broker in `/set` payloads, so a production broker requires a login and
an ACL (see docs/locks.md). Options `username` and `password` log in; `mqtts://HOST[:PORT]` (port
8883 by default) speaks TLS with the system's trusted CAs and hostname check, or with option
`ca_file` (a PEM file) for a private CA. There is no option to skip verification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from portner.locks.port import (
    CONFIRMED,
    BackendConfig,
    Capabilities,
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
    SlotReading,
    SlotState,
    refused,
    timed_out,
)
from portner.locks.zigbee2mqtt import payloads as p
from portner.locks.zigbee2mqtt.security import DEFAULT_PORTS, login, tls_context

# Commands and their answers are small packets sent back to back; without TCP_NODELAY, Nagle's
# algorithm holds the second until the first is acknowledged (a delayed ACK: ~40 ms each way).
NO_DELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
PENDING_PUBLISHES = 100_000  # aiomqtt warns above this many publishes in flight; 1,000 locks do that
_log = logging.getLogger(__name__)
DEDUPE_WINDOW = timedelta(seconds=1)  # identical bytes this close together are one delivery (F14)


@dataclass
class _Waiter:
    match: Callable[[p.LockState, bytes], bool]
    future: asyncio.Future[p.LockState]


@dataclass
class _Record:
    """What the backend knows about one lock, from what the bridge published."""

    name: str
    online: bool | None = None
    state: str | None = None
    jammed: bool | None = None
    bolt: str | None = None
    battery: float | None = None
    max_pin_users: int | None = None
    min_pin_length: int | None = None
    max_pin_length: int | None = None
    seen_state: bool = False
    masked_seen: bool = False
    pins: dict[int, str] = field(default_factory=dict, repr=False)  # user -> PIN, from read-backs
    waiters: list[_Waiter] = field(default_factory=list)
    last_digest: str | None = None
    last_digest_at: datetime | None = None
    last_fallback: str = ""


def _option_int(options: dict[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    if name not in options:
        return default
    try:
        value = int(options[name])
    except ValueError:
        raise ValueError(f"option {name} must be a whole number, not {options[name]!r}") from None
    if not low <= value <= high:
        raise ValueError(f"option {name} must be between {low} and {high}, not {value}")
    return value


def _check_name(name: str) -> str:
    if (not name or any(ch in name for ch in "+#\0") or name.startswith("bridge/") or name == "bridge"
            or name.endswith(("/set", "/get", "/availability")) or name != name.strip("/")):
        raise ValueError(f"address {name!r} is not a Zigbee2MQTT friendly name")
    return name


class Zigbee2MqttBackend:
    name = "zigbee2mqtt"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime]) -> None:
        url = urlsplit(config.url or "mqtt://127.0.0.1:1883")
        try:
            port = url.port
        except ValueError:
            port = -1
        if url.scheme not in DEFAULT_PORTS or not url.hostname or port == -1:
            raise ValueError(f"url must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], not {config.url!r}")
        if url.username is not None or url.password is not None:
            # Credentials in a URL end up in logs and settings dumps; options are kept apart.
            raise ValueError("url must not carry a login: use options username and password")
        self.host, self.port = url.hostname, port or DEFAULT_PORTS[url.scheme]
        options = dict(config.options)
        self.username, self.password = login(options)
        self.tls_context = tls_context(url.scheme, options.get("ca_file"))
        self.base = options.get("base_topic", "zigbee2mqtt").strip("/")
        if not self.base or any(ch in self.base for ch in "+#"):
            raise ValueError("option base_topic must be a plain MQTT topic such as zigbee2mqtt")
        try:
            self.timeout = float(options.get("command_timeout", "10"))
        except ValueError:
            raise ValueError("option command_timeout must be a number of seconds") from None
        if not 0 < self.timeout <= 600:
            raise ValueError("option command_timeout must be between 0 and 600 seconds")
        # QoS 0 by default, as Zigbee2MQTT publishes: a command is confirmed by the lock's own state,
        # never by a broker acknowledgement, and an unanswered one times out and is retried.
        self.qos = _option_int(options, "qos", 0, 0, 2) or 0
        self.pin_code_count = _option_int(options, "pin_code_count", None, 1, 65534)
        self._now = now
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None
        self._records: dict[str, _Record] = {}
        self._ports: dict[str, Zigbee2MqttLock] = {}
        self.devices: dict[str, p.DeviceInfo] = {}
        self._devices_seen = asyncio.Event()
        self._events: asyncio.Queue[LockEvent | HealthEvent] = asyncio.Queue()

    # --- connection -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None:
            return
        client = aiomqtt.Client(self.host, self.port, protocol=aiomqtt.ProtocolVersion.V5, socket_options=NO_DELAY,
                                identifier=f"portner-z2m-{uuid.uuid4().hex[:12]}",
                                username=self.username, password=self.password,
                                tls_context=self.tls_context)
        client.pending_calls_threshold = PENDING_PUBLISHES
        await client.__aenter__()
        self._client = client
        # noLocal: our own /set and /get publishes are not echoed back to us.
        await client.subscribe(f"{self.base}/#", options=SubscribeOptions(qos=self.qos, noLocal=True))
        self._reader = asyncio.create_task(self._read(client))

    async def stop(self) -> None:
        reader, client = self._reader, self._client
        self._reader = self._client = None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)

    def lock(self, address: str) -> Zigbee2MqttLock:
        name = _check_name(address)
        port = self._ports.get(name)
        if port is None:
            port = self._ports[name] = Zigbee2MqttLock(self, self._record(name))
        return port

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            yield await self._events.get()

    def _record(self, name: str) -> _Record:
        record = self._records.get(name)
        if record is None:
            record = self._records[name] = _Record(name)
        return record

    async def publish(self, name: str, suffix: str, payload: dict[str, Any]) -> None:
        if self._client is None:
            raise RuntimeError("the Zigbee2MQTT backend is not started")
        await self._client.publish(f"{self.base}/{name}/{suffix}", p.encode(payload), qos=self.qos)

    async def wait_devices(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.timeout):
                await self._devices_seen.wait()

    # --- incoming ---------------------------------------------------------------------------

    async def _read(self, client: aiomqtt.Client) -> None:
        prefix = self.base + "/"
        async for message in client.messages:
            topic = message.topic.value
            raw = message.payload if isinstance(message.payload, bytes) else str(message.payload).encode()
            if not topic.startswith(prefix):
                continue
            rest = topic[len(prefix):]
            try:
                self._route(rest, raw)
            except Exception as exc:  # noqa: BLE001 - one odd message must not stop every lock's events
                # The payload may hold a PIN: log where and what kind of failure, never the body.
                _log.warning("ignored a message on %s: %s", topic, type(exc).__name__)

    def _route(self, rest: str, raw: bytes) -> None:
        if rest == "bridge/devices":
            self.devices = p.parse_bridge_devices(raw)
            self._devices_seen.set()
            return
        if rest.startswith("bridge/") or rest.endswith(("/set", "/get")) or "/set/" in rest:
            return
        if rest.endswith("/availability"):
            self._availability(rest[: -len("/availability")], raw)
            return
        if rest in self._records or rest in self._ports or rest in self.devices:
            self._state(self._record(rest), raw)

    def _availability(self, name: str, raw: bytes) -> None:
        online = p.parse_availability(raw)
        record = self._records.get(name)
        if online is None or record is None or online == record.online:
            return
        record.online = online
        now = self._now()
        condition = Condition.ONLINE if online else Condition.OFFLINE
        key = p.bounded_key(f"z2m:{name}:{condition}:{now.isoformat()}")
        self._events.put_nowait(HealthEvent(name, condition, now, key))

    def _fallback_stamp(self, record: _Record, raw: bytes, now: datetime) -> str:
        digest = p.message_digest(raw)
        if (record.last_digest == digest and record.last_digest_at is not None
                and now - record.last_digest_at <= DEDUPE_WINDOW):
            return record.last_fallback
        record.last_digest, record.last_digest_at = digest, now
        record.last_fallback = "rx" + now.isoformat()
        return record.last_fallback

    def _state(self, record: _Record, raw: bytes) -> None:
        parsed = p.parse_state(raw)
        if not parsed.valid:
            return
        now = self._now()
        name = record.name
        stamp = self._fallback_stamp(record, raw, now)
        key = p.event_key(name, parsed, raw, stamp)
        record.seen_state = True
        for attr in ("max_pin_users", "min_pin_length", "max_pin_length"):
            if getattr(parsed, attr) is not None:
                setattr(record, attr, getattr(parsed, attr))
        if parsed.state is not None:
            record.state = parsed.state
        if parsed.bolt is not None:
            record.bolt = parsed.bolt
        if parsed.jammed is not None and parsed.jammed != record.jammed:
            if parsed.jammed or record.jammed:  # the first clean report is not an "unjam"
                condition = Condition.JAMMED if parsed.jammed else Condition.UNJAMMED
                self._events.put_nowait(HealthEvent(name, condition, now, p.bounded_key(f"{key}:{condition}")))
            record.jammed = parsed.jammed
        if parsed.battery is not None and parsed.battery != record.battery:
            record.battery = parsed.battery
            self._events.put_nowait(HealthEvent(name, Condition.BATTERY, now, p.bounded_key(f"{key}:battery:{parsed.battery}"),
                                                percent=parsed.battery))
        if not p.has_action_key(raw):
            for user, read in parsed.users.items():
                if read.pin is not None and read.status in (p.USER_ENABLED, p.USER_DISABLED):
                    record.pins[user] = read.pin
                else:
                    record.pins.pop(user, None)
                if read.status in (p.USER_ENABLED, p.USER_DISABLED) and read.pin is None and not read.pin_garbled:
                    record.masked_seen = True
        self._emit_event(record, parsed, key, now)
        for waiter in list(record.waiters):
            if not waiter.future.done() and waiter.match(parsed, raw):
                waiter.future.set_result(parsed)
                record.waiters.remove(waiter)

    def _emit_event(self, record: _Record, parsed: p.LockState, key: str, now: datetime) -> None:
        event = parsed.event
        if isinstance(event, p.Action):
            slot = self.slot_of(record, event.user)
            self._events.put_nowait(LockEvent(
                lock=record.name, operation=event.operation, source=event.source,
                success=event.success, received_at=now, key=key, slot=slot, failure=event.failure,
            ))
        elif isinstance(event, p.Programming) and event.source_name != "rf":
            # Codes changed at the keypad or by another controller; our own writes come over RF.
            self._events.put_nowait(HealthEvent(record.name, Condition.CODES_CHANGED, now, key,
                                                slot=self.slot_of(record, event.user)))

    def user_count(self, record: _Record) -> int | None:
        return self.pin_code_count or record.max_pin_users

    def slot_of(self, record: _Record, user: int | None) -> int | None:
        """Portner's slot for a Zigbee user id; None for no id or one outside the users."""
        if user is None:
            return None
        count = self.user_count(record)
        if count is not None:
            return p.slot_range(count).slot(user)
        return user + 1

    async def wait_for(self, record: _Record, match: Callable[[p.LockState, bytes], bool],
                       send: Callable[[], Any]) -> p.LockState | None:
        """Register a waiter, run `send`, and return the first matching state (None: timeout)."""
        future: asyncio.Future[p.LockState] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(match, future)
        record.waiters.append(waiter)
        try:
            await send()
            async with asyncio.timeout(self.timeout):
                return await future
        except TimeoutError:
            return None
        finally:
            if waiter in record.waiters:
                record.waiters.remove(waiter)


def _read_back_of(user: int) -> Callable[[p.LockState, bytes], bool]:
    return lambda parsed, raw: user in parsed.users and not p.has_action_key(raw)


class Zigbee2MqttLock:
    """One lock behind the bridge, addressed by its friendly name."""

    def __init__(self, backend: Zigbee2MqttBackend, record: _Record) -> None:
        self._backend, self._record = backend, record
        self.address = record.name
        self._serial = asyncio.Lock()

    # --- what it is ----------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        backend, record = self._backend, self._record
        await backend.wait_devices()
        if not record.seen_state:
            await backend.wait_for(record, lambda parsed, raw: True,
                                   lambda: backend.publish(record.name, "get", {"state": ""}))
        info = backend.devices.get(record.name)
        features: set[Feature] = set()
        if info is not None:
            features |= {Feature.KEYPAD} if info.keypad else set()
            features |= {Feature.REMOTE_OPERATION} if info.remote else set()
            features |= {Feature.USER_EVENTS} if info.user_events else set()
        count = backend.user_count(record)
        return Capabilities(
            features=frozenset(features),
            code_rules=p.code_rules(record.min_pin_length, record.max_pin_length),
            slots=p.slot_range(count) if count is not None else None,
            masked_reads=record.masked_seen,
            model=f"{info.vendor} {info.model}".strip() if info is not None else "",
        )

    async def health(self) -> Health:
        record = self._record
        return Health(online=record.online, battery_percent=record.battery, jammed=record.jammed,
                      bolt=record.bolt)

    # --- slots ---------------------------------------------------------------------------------

    def _user(self, slot: int) -> int | None:
        """The Zigbee user for a slot (F9: slot 30 of 30 is user 29), or None outside the lock."""
        if isinstance(slot, bool) or not isinstance(slot, int) or slot < 1:
            return None
        count = self._backend.user_count(self._record)
        if count is None:
            return slot - 1  # capacity unknown (F8): the 0-based mapping still holds
        try:
            return p.slot_range(count).native(slot)
        except ValueError:
            return None

    def _out_of_range(self, slot: int) -> CommandResult:
        count = self._backend.user_count(self._record)
        return refused(Refusal.SLOT_OUT_OF_RANGE,
                       f"slot {slot} is outside this lock's slots 1..{count} (Zigbee users 0..{(count or 1) - 1})")

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        backend, record = self._backend, self._record
        users = {slot: self._user(slot) for slot in slots}
        if record.online is False:
            return [SlotReading(slot, SlotState.UNREADABLE) for slot in slots]
        async with self._serial:
            results = await asyncio.gather(*(
                backend.wait_for(record, _read_back_of(user),
                                 lambda user=user: backend.publish(record.name, "get", p.get_pin_payload(user)))
                for user in users.values() if user is not None
            ))
        answers = dict(zip([u for u in users.values() if u is not None], results, strict=True))
        out = []
        for slot, user in users.items():
            state = answers.get(user) if user is not None else None
            out.append(p.slot_reading(slot, state.users.get(user) if state is not None and user is not None else None))
        return out

    async def set_code(self, slot: int, code: KeypadCode, window: LockWindow | None = None, *,
                       idempotency_key: str | None = None) -> CommandResult:
        backend, record = self._backend, self._record
        if window is not None:
            return refused(Refusal.NOT_SUPPORTED, "Zigbee2MQTT's pin_code takes no schedule; "
                                                  "enforce the window by adding and removing the code")
        user = self._user(slot)
        if user is None:
            return self._out_of_range(slot)
        rules = p.code_rules(record.min_pin_length, record.max_pin_length)
        if rules is not None and rules.lengths is not None and len(code) not in rules.lengths:
            return refused(Refusal.BAD_CODE, f"the lock requires {min(rules.lengths)}-{max(rules.lengths)} digits")
        if not code.reveal().isdigit():
            return refused(Refusal.BAD_CODE, "Zigbee door locks take digits only")
        conflict = self._holder_of(code, user)
        if conflict is not None:
            return refused(Refusal.DUPLICATE_CODE, "another slot holds this code", conflict_slot=conflict)
        if record.online is False:
            return refused(Refusal.OFFLINE, "the bridge reports the lock offline")
        async with self._serial:
            await backend.publish(record.name, "set", p.set_pin_payload(user, code))
            state = await backend.wait_for(record, _read_back_of(user),
                                           lambda: backend.publish(record.name, "get", p.get_pin_payload(user)))
        if state is None:
            return timed_out("no read-back after the set")
        reading = p.slot_reading(slot, state.users.get(user))
        if reading.state is SlotState.KNOWN and reading.code == code:
            return CONFIRMED
        conflict = self._holder_of(code, user)
        if conflict is not None:
            return refused(Refusal.DUPLICATE_CODE, "another slot holds this code", conflict_slot=conflict)
        why = {
            SlotState.EMPTY: "the read-back still shows the user available",
            SlotState.UNREADABLE: "the read-back holds no usable PIN",
            SlotState.MASKED: "the read-back hides the PIN (set expose_pin: true on the device)",
            SlotState.KNOWN: "the read-back shows a different code",
        }[reading.state]
        return refused(Refusal.WRITE_UNCONFIRMED, why)

    def _holder_of(self, code: KeypadCode, user: int) -> int | None:
        digits = code.reveal()
        for other, pin in self._record.pins.items():
            if other != user and pin == digits:
                return self._backend.slot_of(self._record, other)
        return None

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        backend, record = self._backend, self._record
        user = self._user(slot)
        if user is None:
            return self._out_of_range(slot)
        if record.online is False:
            return refused(Refusal.OFFLINE, "the bridge reports the lock offline")
        async with self._serial:
            await backend.publish(record.name, "set", p.clear_pin_payload(user))
            state = await backend.wait_for(record, _read_back_of(user),
                                           lambda: backend.publish(record.name, "get", p.get_pin_payload(user)))
        if state is None:
            return timed_out("no read-back after the clear")
        if p.slot_reading(slot, state.users.get(user)).state is SlotState.EMPTY:
            return CONFIRMED
        return refused(Refusal.WRITE_UNCONFIRMED, "the read-back still shows a code in this slot")

    # --- bolt and clock ------------------------------------------------------------------------

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        backend, record = self._backend, self._record
        if record.online is False:
            return refused(Refusal.OFFLINE, "the bridge reports the lock offline")
        target = p.set_state_payload(operation)["state"]
        async with self._serial:
            state = await backend.wait_for(
                record, lambda parsed, raw: parsed.state == target or parsed.jammed is True,
                lambda: backend.publish(record.name, "set", {"state": target}))
        if state is None:
            return timed_out(f"the lock did not report {target} in time")
        if state.jammed:
            return refused(Refusal.JAMMED, "the lock reports the bolt not fully thrown")
        return CONFIRMED

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        return refused(Refusal.NOT_SUPPORTED, "Zigbee2MQTT exposes no lock clock")
