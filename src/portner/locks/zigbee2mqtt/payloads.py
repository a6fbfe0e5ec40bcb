"""Zigbee2MQTT lock payloads: building commands and reading what the bridge publishes. Pure.

What this follows (read, not copied):

- Zigbee2MQTT device pages for keypad locks (e.g. zigbee2mqtt.io/devices/99140-002.html,
  9GED18000-009.html): `zigbee2mqtt/FRIENDLY_NAME/set` takes `{"state": "LOCK"|"UNLOCK"}` and
  the composite `{"pin_code": {"user", "user_type", "user_enabled", "pin_code"}}`, where a null
  (or omitted) `pin_code` clears the user; `/get` takes `{"pin_code": {"user": N}}` (one user) or
  `{"pin_code": ""}` (all); the published state carries `state` (LOCK/UNLOCK), `lock_state`
  (`not_fully_locked`, `locked`, `unlocked`), `battery` (0-100 %), `action`,
  `action_source_name` and `action_user`; some converters add `max_pin_users`,
  `min_pin_length`, `max_pin_length`.
- zigbee-herdsman-converters `toZigbee.pincode_lock`: the user id must lie in
  `0..pinCodeCount-1` (Zigbee users are 0-based), the PIN is sent as `pinCode.toString()`, so we
  send it as a JSON string: a number would lose the leading zero of a code such as `0123`.
- zigbee-herdsman-converters `fromZigbee.lock_pin_code_response`: a read-back is published as
  `{"users": {"<id>": {"status": "available"|"enabled"|"disabled"|"not_supported_N",
  "pin_code": "..."}}}` with the PIN only when the device option `expose_pin` is true.
- `fromZigbee.lock_operation_event` (`action` one of `lock`, `unlock`, `*_failure_invalid_pin_or_id`,
  `*_failure_invalid_schedule`, `key_unlock`, `auto_lock`, `manual_unlock`, ...; `action_source`
  0-4 named `keypad`, `rf`, `manual`, `rfid`, `fingerprint` in `action_source_name`) and
  `lock_programming_event` (`pin_code_added`, `pin_code_deleted`, `pin_code_changed`,
  `master_code_changed`). Vendor converters name the source in the action itself
  (`keypad_unlock`, `rfid_unlock`, `zigbee_unlock`, `manual_unlock`: constants.easyCodeTouchActions);
  both forms are read. `action_source_user` exists only in some Yale converters and is read
  only when `action_user` is missing (F11).
- Zigbee2MQTT "MQTT topics and messages": `FRIENDLY_NAME/availability` (`{"state": "online"}`,
  or the legacy bare `online`), `bridge/devices` (a retained list of devices with
  `friendly_name`, `ieee_address`, `supported`, `definition: {model, vendor, exposes}`).

Every parser here takes whatever arrived (bytes, odd JSON, nulls, strings for numbers) and
answers without raising; anything it cannot trust comes back as "unknown", never as a guess.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from portner.locks.port import (
    CodeRules,
    KeypadCode,
    Operation,
    SlotRange,
    SlotReading,
    SlotState,
    Source,
)

# --- numbers the bridge may send as strings (F9) ---------------------------------------------------


# Zigbee's Door Lock cluster numbers users with a uint16 whose 0xFFFF means "none": users are
# 0..65534, so a lock has at most 65534 of them. A PIN is at most 16 digits on every lock we know
# (ZCL allows longer octet strings; a keypad does not); anything beyond is not a lock's answer.
MAX_USER: Final = 65_534
MAX_PIN_LENGTH: Final = 16
MAX_LAST_SEEN: Final = 64  # an ISO 8601 time or epoch milliseconds is far shorter
MAX_KEY: Final = 200  # lock_activity.key


def _bounded_int(value: object, low: int, high: int) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = int(value) if value.is_integer() else None
    elif isinstance(value, str):
        text = value.strip()
        # Short ASCII digits only: int() of 5,000 digits raises, and "٣" is a digit to isdigit().
        value = int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None
    if isinstance(value, int) and low <= value <= high:
        return value
    return None


def as_user_id(value: object) -> int | None:
    """A Zigbee user id from a payload: 5, "5" and 5.0 are 5; anything else (null, "five",
    True, -1, 5.5, 65535, 10**30) is None, never a guess."""
    return _bounded_int(value, 0, MAX_USER)


def as_user_count(value: object) -> int | None:
    """A lock's number of users (`max_pin_users`): 1..65534, else unknown."""
    return _bounded_int(value, 1, MAX_USER)


def as_pin_length(value: object) -> int | None:
    """A PIN length bound (`min_pin_length`, `max_pin_length`): 1..16, else unknown."""
    return _bounded_int(value, 1, MAX_PIN_LENGTH)


def _last_seen(value: object) -> str | None:
    """`last_seen` as the event's identity, when it can be one: a short string or a finite number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (int, float)) and abs(value) < 10**15:
        return str(value)
    if isinstance(value, str) and value and len(value) <= MAX_LAST_SEEN and value.isprintable():
        return value
    return None


def _as_number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


# --- slots and users -------------------------------------------------------------------------------


def slot_range(pin_code_count: int) -> SlotRange:
    """Portner's slots 1..N on a lock whose Zigbee users run 0..N-1."""
    if pin_code_count < 1:
        raise ValueError("pin_code_count must be at least 1")
    return SlotRange(count=pin_code_count, first_native=0)


# --- commands --------------------------------------------------------------------------------------


def set_state_payload(operation: Operation) -> dict[str, str]:
    return {"state": "UNLOCK" if operation is Operation.UNLOCK else "LOCK"}


def set_pin_payload(user: int, code: KeypadCode) -> dict[str, Any]:
    # The PIN is revealed here and only here, into the payload published to the bridge.
    return {"pin_code": {"user": user, "user_type": "unrestricted", "user_enabled": True,
                         "pin_code": code.reveal()}}


def clear_pin_payload(user: int) -> dict[str, Any]:
    return {"pin_code": {"user": user, "pin_code": None}}


def get_pin_payload(user: int) -> dict[str, Any]:
    return {"pin_code": {"user": user}}


def encode(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def decode(raw: bytes | bytearray | str | None) -> object:
    """JSON from a message, or None when it is not JSON (the legacy availability payload is a
    bare word, which the availability parser handles itself)."""
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):  # "[" * 200000 nests too deep
        return None


# --- read-backs (F10) -------------------------------------------------------------------------------

USER_AVAILABLE: Final = "available"
USER_ENABLED: Final = "enabled"
USER_DISABLED: Final = "disabled"


@dataclass(frozen=True, slots=True)
class UserReadBack:
    """One user's entry in `users`, as far as it can be trusted.

    `pin` is the PIN when the bridge showed a usable one; `pin_garbled` is True when a `pin_code`
    key was there but held something that is not a PIN (`{}`, a list, an empty string: F10)."""

    user: int
    status: str | None
    pin: str | None = None
    pin_garbled: bool = False


def _pin_text(value: object) -> tuple[str | None, bool]:
    """(pin, garbled) from a read-back's `pin_code` value."""
    if value is None:
        return None, False
    if isinstance(value, bool):
        return None, True
    if isinstance(value, int):
        # A converter that sent a number has already lost any leading zero: not trustworthy
        # as the code we wrote unless it has none, so keep it and let comparison decide.
        return (str(value), False) if value >= 0 else (None, True)
    if isinstance(value, str) and value and value.isascii() and value.isalnum():
        return value, False
    return None, True


def parse_users(value: object) -> dict[int, UserReadBack]:
    """The `users` object of a published state; entries that cannot be read are left out."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[int, UserReadBack] = {}
    for key, entry in value.items():
        user = as_user_id(key)
        if user is None:
            continue
        if not isinstance(entry, Mapping):
            out[user] = UserReadBack(user, None, None, pin_garbled=entry is not None)
            continue
        status = entry.get("status")
        pin, garbled = _pin_text(entry.get("pin_code"))
        out[user] = UserReadBack(user, status if isinstance(status, str) else None, pin, garbled)
    return out


def slot_reading(slot: int, read: UserReadBack | None) -> SlotReading:
    """Tri-state reading of one slot from its user's read-back (None: no answer came)."""
    if read is None or read.pin_garbled or read.status is None:
        return SlotReading(slot, SlotState.UNREADABLE)
    if read.status == USER_AVAILABLE:
        # "available" with a PIN still attached is a contradiction: do not call it empty.
        if read.pin is not None:
            return SlotReading(slot, SlotState.UNREADABLE)
        return SlotReading(slot, SlotState.EMPTY)
    if read.status in (USER_ENABLED, USER_DISABLED):
        enabled = read.status == USER_ENABLED
        if read.pin is None:
            return SlotReading(slot, SlotState.MASKED, enabled=enabled)
        try:
            return SlotReading(slot, SlotState.KNOWN, KeypadCode(read.pin), enabled=enabled)
        except ValueError:
            return SlotReading(slot, SlotState.UNREADABLE)
    # not_supported_N and anything new: the lock said something we do not understand.
    return SlotReading(slot, SlotState.UNREADABLE)


# --- actions (F11, F14, F26) --------------------------------------------------------------------------

_SOURCE_BY_NAME: Final = {
    "keypad": Source.KEYPAD,
    "rf": Source.REMOTE,
    "zigbee": Source.REMOTE,
    "manual": Source.MANUAL,
    "key": Source.MANUAL,
    "one_touch": Source.MANUAL,
    "rfid": Source.RFID,
    "fingerprint": Source.UNKNOWN,
    "auto": Source.AUTO,
    "schedule": Source.AUTO,
}
# Only a code (keypad or tag) names a Portner slot; a user id on a thumb-turn or an RF command is
# not a credential we placed, so it never attributes an entry.
_ATTRIBUTED_SOURCES: Final = frozenset({Source.KEYPAD, Source.RFID})
_FAILURES: Final = {
    "failure_invalid_pin_or_id": "wrong_code",
    "failure_invalid_schedule": "outside_schedule",
}
PROGRAMMING_ACTIONS: Final = frozenset({
    "pin_code_added", "pin_code_deleted", "pin_code_changed", "master_code_changed",
    "rfid_code_added", "rfid_code_deleted",
})


@dataclass(frozen=True, slots=True)
class Action:
    """An operation event, in Portner's words; `user` is the Zigbee user id (0-based) or None."""

    operation: Operation
    source: Source
    success: bool
    user: int | None
    failure: str = ""


@dataclass(frozen=True, slots=True)
class Programming:
    """Someone changed codes at the lock (or through another controller)."""

    action: str
    user: int | None
    source_name: str | None


def _user_of(message: Mapping[str, Any]) -> int | None:
    if message.get("action_user") is not None:
        return as_user_id(message.get("action_user"))
    return as_user_id(message.get("action_source_user"))


def parse_action(message: Mapping[str, Any]) -> Action | Programming | None:
    """The event in a published state, or None (no action, an empty action (F14), `unknown`,
    `non_access_user_operational_event`, or a word we do not know)."""
    action = _as_text(message.get("action"))
    if action is None:
        return None
    source_name = _as_text(message.get("action_source_name"))
    if action in PROGRAMMING_ACTIONS:
        return Programming(action, as_user_id(message.get("action_user")), source_name)
    failure = ""
    for suffix, reason in _FAILURES.items():
        if action.endswith("_" + suffix):
            failure, action = reason, action[: -len(suffix) - 1]
            break
    prefix, _, verb = action.rpartition("_")
    if verb not in ("lock", "unlock"):
        return None
    operation = Operation.UNLOCK if verb == "unlock" else Operation.LOCK
    if prefix:
        source = _SOURCE_BY_NAME.get(prefix, Source.UNKNOWN)
    else:
        source = _SOURCE_BY_NAME.get(source_name or "", Source.UNKNOWN)
    user = _user_of(message) if source in _ATTRIBUTED_SOURCES else None
    return Action(operation, source, not failure, user, failure)


# --- state, health, availability -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockState:
    """What one published state says; None everywhere it said nothing usable."""

    state: str | None = None  # "LOCK" | "UNLOCK"
    lock_state: str | None = None  # "locked" | "unlocked" | "not_fully_locked"
    door_state: str | None = None
    battery: float | None = None
    battery_low: bool | None = None
    users: dict[int, UserReadBack] = field(default_factory=dict)
    event: Action | Programming | None = None
    last_seen: str | None = None
    max_pin_users: int | None = None
    min_pin_length: int | None = None
    max_pin_length: int | None = None
    valid: bool = True  # False: not a JSON object at all

    @property
    def jammed(self) -> bool | None:
        """ZCL LockState 0 ("not fully locked": the bolt did not reach its end) or a door state
        `error_jammed` is a jam; a clean locked/unlocked is not; otherwise unknown."""
        if self.lock_state == "not_fully_locked" or self.door_state == "error_jammed":
            return True
        if self.lock_state in ("locked", "unlocked"):
            return False
        return None

    @property
    def bolt(self) -> str | None:
        if self.jammed:
            return "jammed"
        if self.lock_state in ("locked", "unlocked"):
            return self.lock_state
        return {"LOCK": "locked", "UNLOCK": "unlocked"}.get(self.state or "")


def parse_state(raw: bytes | bytearray | str | None) -> LockState:
    message = decode(raw)
    if not isinstance(message, Mapping):
        return LockState(valid=False)
    battery = _as_number(message.get("battery"))
    if battery is not None and not 0 <= battery <= 100:
        battery = None
    low = message.get("battery_low")
    state = message.get("state")
    lock_state = message.get("lock_state")
    return LockState(
        state=state if state in ("LOCK", "UNLOCK") else None,
        lock_state=lock_state if isinstance(lock_state, str) and lock_state else None,
        door_state=_as_text(message.get("door_state")),
        battery=battery,
        battery_low=low if isinstance(low, bool) else None,
        users=parse_users(message.get("users")),
        event=parse_action(message),
        last_seen=_last_seen(message.get("last_seen")),
        max_pin_users=as_user_count(message.get("max_pin_users")),
        min_pin_length=as_pin_length(message.get("min_pin_length")),
        max_pin_length=as_pin_length(message.get("max_pin_length")),
    )


def has_action_key(raw: bytes | bytearray | str | None) -> bool:
    """True when the message carries an `action` key at all (an event publish, even an empty
    one), so it is not the answer to a `/get` (whose publish carries no action)."""
    message = decode(raw)
    return isinstance(message, Mapping) and "action" in message


def parse_availability(raw: bytes | bytearray | str | None) -> bool | None:
    """True online, False offline, None unreadable; both the JSON and the legacy bare form."""
    message = decode(raw)
    if isinstance(message, Mapping):
        message = message.get("state")
    if message is None and raw is not None:
        try:
            message = (raw.decode() if isinstance(raw, (bytes, bytearray)) else raw).strip()
        except UnicodeDecodeError:
            return None
    return {"online": True, "offline": False}.get(message) if isinstance(message, str) else None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    friendly_name: str
    ieee_address: str | None
    model: str
    vendor: str
    keypad: bool  # exposes the pin_code composite
    remote: bool  # exposes a lock
    user_events: bool  # exposes action_user


def _expose_names(exposes: object) -> set[str]:
    names: set[str] = set()
    if not isinstance(exposes, list):
        return names
    for item in exposes:
        if not isinstance(item, Mapping):
            continue
        for key in ("name", "property", "type"):
            if isinstance(item.get(key), str):
                names.add(item[key])
        names |= _expose_names(item.get("features"))
    return names


def parse_bridge_devices(raw: bytes | bytearray | str | None) -> dict[str, DeviceInfo]:
    """Supported devices of `bridge/devices` by friendly name; odd entries are skipped."""
    message = decode(raw)
    out: dict[str, DeviceInfo] = {}
    if not isinstance(message, list):
        return out
    for device in message:
        if not isinstance(device, Mapping) or not isinstance(device.get("friendly_name"), str):
            continue
        definition = device.get("definition")
        if not isinstance(definition, Mapping):
            continue
        names = _expose_names(definition.get("exposes"))
        ieee = device.get("ieee_address")
        out[device["friendly_name"]] = DeviceInfo(
            friendly_name=device["friendly_name"],
            ieee_address=ieee if isinstance(ieee, str) else None,
            model=str(definition.get("model") or ""),
            vendor=str(definition.get("vendor") or ""),
            keypad="pin_code" in names,
            remote="lock" in names,
            user_events="action_user" in names,
        )
    return out


def code_rules(min_length: int | None, max_length: int | None) -> CodeRules | None:
    """The lock's PIN rules when it reported its length range; None (unknown) otherwise."""
    if min_length is None or max_length is None or min_length > max_length:
        return None
    return CodeRules(lengths=frozenset(range(min_length, max_length + 1)))


def message_digest(raw: bytes | bytearray | str) -> str:
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def event_key(lock: str, parsed: LockState, raw: bytes | bytearray | str, fallback: str) -> str:
    """A key that is the same for every delivery of one event (F14).

    Zigbee2MQTT stamps a state with `last_seen` (when the bridge heard the device) if
    `advanced.last_seen` is on: the lock's message identity, identical in a redelivery and
    different for the same unlock five minutes later. Without it the payload bytes are all there
    is, so `fallback` (the caller's first-receipt stamp for these bytes) tells repeats apart.
    """
    event = parsed.event
    what = ""
    if isinstance(event, Action):
        what = f"{event.operation}:{event.source}:{event.user}:{event.failure or 'ok'}"
    elif isinstance(event, Programming):
        what = f"{event.action}:{event.user}"
    if parsed.last_seen is not None:
        return bounded_key(f"z2m:{lock}:{parsed.last_seen}:{what}")
    return bounded_key(f"z2m:{lock}:{fallback}:{message_digest(raw)}")


def bounded_key(key: str) -> str:
    """`key` itself when it fits lock_activity.key (200 characters), else a digest of it: still
    the same for every delivery of the event, and still different from every other event's."""
    if len(key) <= MAX_KEY:
        return key
    return "z2m:h:" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=24).hexdigest()
