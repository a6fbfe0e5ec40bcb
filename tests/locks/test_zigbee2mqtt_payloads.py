"""Zigbee2MQTT payload parsing and building: pure, no broker."""

from __future__ import annotations

import json

import pytest

from portner.locks.port import KeypadCode, Operation, SlotState, Source
from portner.locks.zigbee2mqtt import payloads as p


def raw(payload: object) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.parametrize(("value", "expected"), [
    (5, 5), ("5", 5), (" 5 ", 5), (5.0, 5), (0, 0),
    (None, None), ("five", None), (True, None), (-1, None), (5.5, None), ("", None), ({}, None),
])
def test_user_ids_are_normalised_or_refused(value: object, expected: int | None) -> None:
    assert p.as_user_id(value) == expected


def test_slots_map_to_zero_based_users() -> None:
    users = p.slot_range(30)
    assert users.native(1) == 0
    assert users.native(30) == 29
    assert users.slot(0) == 1
    assert users.slot(29) == 30
    assert users.slot(30) is None
    with pytest.raises(ValueError, match="31"):
        users.native(31)


def test_set_payload_follows_the_pin_code_composite_and_keeps_leading_zeros() -> None:
    payload = p.set_pin_payload(4, KeypadCode("0123"))
    assert payload == {"pin_code": {"user": 4, "user_type": "unrestricted", "user_enabled": True,
                                    "pin_code": "0123"}}
    assert p.clear_pin_payload(4) == {"pin_code": {"user": 4, "pin_code": None}}
    assert p.get_pin_payload(4) == {"pin_code": {"user": 4}}
    assert p.set_state_payload(Operation.UNLOCK) == {"state": "UNLOCK"}
    assert p.set_state_payload(Operation.LOCK) == {"state": "LOCK"}


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b"null", b"42", b"\xff\xfe", raw("x")])
def test_garbage_states_do_not_crash(body: bytes) -> None:
    state = p.parse_state(body)
    assert state.valid is False or state.event is None


@pytest.mark.parametrize("entry", [
    {"status": "available", "pin_code": {}},  # F10: the empty object
    {"status": "enabled", "pin_code": []},
    {"status": "enabled", "pin_code": True},
    {"status": "enabled", "pin_code": ""},
    {"status": "enabled", "pin_code": "12 34"},
    {"status": None, "pin_code": "1234"},
    {"pin_code": "1234"},
    "enabled",
    {"status": "not_supported_7"},
    {"status": "available", "pin_code": "1234"},  # contradiction: not "empty"
])
def test_untrustworthy_read_backs_are_unreadable(entry: object) -> None:
    users = p.parse_state(raw({"users": {"3": entry}})).users
    assert p.slot_reading(4, users.get(3)).state is SlotState.UNREADABLE


def test_read_back_states() -> None:
    users = p.parse_state(raw({"users": {
        "0": {"status": "enabled", "pin_code": "4711"},
        "1": {"status": "available"},
        "2": {"status": "enabled"},
        "3": {"status": "disabled", "pin_code": 4711},
        "x": {"status": "enabled", "pin_code": "9"},
    }})).users
    known = p.slot_reading(1, users[0])
    assert known.state is SlotState.KNOWN and known.code == KeypadCode("4711") and known.enabled
    assert p.slot_reading(2, users[1]).state is SlotState.EMPTY
    assert p.slot_reading(3, users[2]).state is SlotState.MASKED
    disabled = p.slot_reading(4, users[3])
    assert disabled.state is SlotState.KNOWN and disabled.enabled is False
    assert set(users) == {0, 1, 2, 3}
    assert p.slot_reading(9, None).state is SlotState.UNREADABLE  # no answer is not "empty"


@pytest.mark.parametrize(("message", "operation", "source", "success", "user", "failure"), [
    ({"action": "keypad_unlock", "action_user": 2}, Operation.UNLOCK, Source.KEYPAD, True, 2, ""),
    ({"action": "unlock", "action_source_name": "keypad", "action_user": "5"},
     Operation.UNLOCK, Source.KEYPAD, True, 5, ""),
    ({"action": "lock", "action_source_name": "rf", "action_user": 3}, Operation.LOCK, Source.REMOTE, True, None, ""),
    ({"action": "rf_unlock", "action_user": 0}, Operation.UNLOCK, Source.REMOTE, True, None, ""),
    ({"action": "zigbee_unlock"}, Operation.UNLOCK, Source.REMOTE, True, None, ""),
    ({"action": "manual_unlock", "action_user": 1}, Operation.UNLOCK, Source.MANUAL, True, None, ""),
    ({"action": "key_unlock"}, Operation.UNLOCK, Source.MANUAL, True, None, ""),
    ({"action": "auto_lock"}, Operation.LOCK, Source.AUTO, True, None, ""),
    ({"action": "rfid_unlock", "action_user": 7}, Operation.UNLOCK, Source.RFID, True, 7, ""),
    ({"action": "unlock_failure_invalid_pin_or_id", "action_source_name": "keypad", "action_user": None},
     Operation.UNLOCK, Source.KEYPAD, False, None, "wrong_code"),
    ({"action": "keypad_unlock_failure_invalid_pin_or_id"}, Operation.UNLOCK, Source.KEYPAD, False, None,
     "wrong_code"),
    ({"action": "unlock_failure_invalid_schedule", "action_source_name": "keypad", "action_user": 4},
     Operation.UNLOCK, Source.KEYPAD, False, 4, "outside_schedule"),
    ({"action": "unlock"}, Operation.UNLOCK, Source.UNKNOWN, True, None, ""),
])
def test_actions_are_normalised(message: dict[str, object], operation: Operation, source: Source,
                                success: bool, user: int | None, failure: str) -> None:
    action = p.parse_state(raw(message)).event
    assert action == p.Action(operation, source, success, user, failure)


@pytest.mark.parametrize("message", [
    {"action": ""}, {"action": None}, {"action": "unknown"}, {"action": 5},
    {"action": "non_access_user_operational_event"}, {"action": "single"}, {"battery": 50},
])
def test_non_events_are_ignored(message: dict[str, object]) -> None:
    assert p.parse_state(raw(message)).event is None


def test_programming_events() -> None:
    event = p.parse_state(raw({"action": "pin_code_added", "action_source_name": "keypad",
                               "action_user": "3"})).event
    assert event == p.Programming("pin_code_added", 3, "keypad")


@pytest.mark.parametrize(("body", "expected"), [
    (raw({"state": "online"}), True), (raw({"state": "offline"}), False), (b"online", True),
    (b"offline", False), (b"", None), (raw({"state": "maybe"}), None), (b"\xff", None), (raw([]), None),
])
def test_availability(body: bytes, expected: bool | None) -> None:
    assert p.parse_availability(body) is expected


def test_jam_and_battery_and_capacity() -> None:
    state = p.parse_state(raw({"state": "UNLOCK", "lock_state": "not_fully_locked", "battery": "55",
                               "max_pin_users": 30, "min_pin_length": 4, "max_pin_length": 8}))
    assert state.jammed is True and state.bolt == "jammed"
    assert state.battery == 55.0
    assert (state.max_pin_users, state.min_pin_length, state.max_pin_length) == (30, 4, 8)
    assert p.parse_state(raw({"lock_state": "locked", "battery": 180})).battery is None
    assert p.parse_state(raw({"lock_state": "locked"})).jammed is False
    assert p.parse_state(raw({"door_state": "error_jammed"})).jammed is True
    assert p.code_rules(4, 8).lengths == frozenset(range(4, 9))
    assert p.code_rules(None, 8) is None and p.code_rules(8, 4) is None


def test_bridge_devices() -> None:
    devices = p.parse_bridge_devices(raw([
        {"friendly_name": "door", "ieee_address": "0x01", "supported": True,
         "definition": {"model": "M", "vendor": "V", "exposes": [
             {"type": "lock", "features": [{"name": "state"}]},
             {"type": "composite", "name": "pin_code", "features": []},
             {"type": "numeric", "name": "action_user"}]}},
        {"friendly_name": "bulb", "definition": {"model": "B", "vendor": "V", "exposes": [{"type": "light"}]}},
        {"friendly_name": "unsupported", "definition": None},
        "garbage", {"no_name": True},
    ]))
    assert set(devices) == {"door", "bulb"}
    assert devices["door"].keypad and devices["door"].remote and devices["door"].user_events
    assert not devices["bulb"].keypad
    assert p.parse_bridge_devices(b"{}") == {}


def test_event_keys_follow_the_message_identity() -> None:
    first = raw({"action": "keypad_unlock", "action_user": 5, "last_seen": "2026-03-02T09:00:00.000Z"})
    later = raw({"action": "keypad_unlock", "action_user": 5, "last_seen": "2026-03-02T09:05:00.000Z"})
    key = p.event_key("door", p.parse_state(first), first, "rx-a")
    assert key == p.event_key("door", p.parse_state(first), first, "rx-b")  # a redelivery
    assert key != p.event_key("door", p.parse_state(later), later, "rx-a")
    bare = raw({"action": "keypad_unlock", "action_user": 5})
    assert p.event_key("door", p.parse_state(bare), bare, "rx-a") != p.event_key(
        "door", p.parse_state(bare), bare, "rx-b")


# --- bounds: what a Zigbee lock can say, and keys that fit lock_activity.key -------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    (0, 0), (65534, 65534), ("65534", 65534), (12.0, 12),
    (65535, None), (10**30, None), (1e300, None), ("1" * 5000, None), ("99999999", None),
    (float("nan"), None), (float("inf"), None), ("\u0663", None),
])
def test_user_ids_are_zigbee_users_0_to_65534(raw: object, expected: int | None) -> None:
    assert p.as_user_id(raw) == expected


def test_max_pin_users_and_pin_lengths_are_bounded() -> None:
    huge = p.parse_state(json.dumps({"max_pin_users": 1e30, "min_pin_length": 0,
                                     "max_pin_length": 10**6}))
    assert (huge.max_pin_users, huge.min_pin_length, huge.max_pin_length) == (None, None, None)
    fine = p.parse_state(json.dumps({"max_pin_users": 65534, "min_pin_length": 1,
                                     "max_pin_length": 16}))
    assert (fine.max_pin_users, fine.min_pin_length, fine.max_pin_length) == (65534, 1, 16)
    assert p.parse_state(json.dumps({"max_pin_length": 17})).max_pin_length is None


def test_a_deeply_nested_state_is_not_a_state() -> None:
    assert p.parse_state(b"[" * 200_000).valid is False
    assert p.parse_availability(b"[" * 200_000) is None
    assert p.parse_bridge_devices(b"[" * 200_000) == {}


@pytest.mark.parametrize("last_seen", ["x" * 400, 1e400, float("nan"), 10**40])
def test_an_odd_last_seen_still_gives_a_key_within_200_characters(last_seen: object) -> None:
    raw = json.dumps({"action": "keypad_unlock", "action_user": 1, "last_seen": last_seen})
    parsed = p.parse_state(raw)
    key = p.event_key("front-door", parsed, raw, "rx2026-03-02T09:00:00+00:00")
    assert len(key) <= 200
    assert key == p.event_key("front-door", p.parse_state(raw), raw, "rx2026-03-02T09:00:00+00:00")


def test_an_over_long_key_becomes_a_stable_digest() -> None:
    name = "hall/" + "d" * 300  # a friendly name is a topic: it can be long
    raw = json.dumps({"action": "keypad_unlock", "action_user": 1,
                      "last_seen": "2026-03-02T09:00:00.000Z"})
    key = p.event_key(name, p.parse_state(raw), raw, "rx")
    assert len(key) <= 200 and key == p.event_key(name, p.parse_state(raw), raw, "rx")
    other = json.dumps({"action": "keypad_unlock", "action_user": 1,
                        "last_seen": "2026-03-02T09:05:00.000Z"})
    assert p.event_key(name, p.parse_state(other), other, "rx") != key
    assert p.bounded_key("z2m:short") == "z2m:short"
