"""Door Lock events from the Matter server, normalised to Portner's LockEvent and HealthEvent.

`node_event.data` is name-based (camelCase field names, as matter.js names them): LockOperation is
`{lockOperationType, operationSource, userIndex, fabricIndex, sourceNode, credentials}` with
`credentials` a list of `{credentialType, credentialIndex}`; LockOperationError adds
`operationError`; DoorLockAlarm is `{alarmCode}` (spec 5.2.11). `event_number` is the node's own
monotonic event counter, so it is the dedupe key (F14). Pure functions; no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from portner.locks.matter.cluster import CREDENTIAL_TYPE_PIN, DOOR_LOCK, Event
from portner.locks.port import (
    Condition,
    HealthEvent,
    LockEvent,
    Operation,
    SlotRange,
    Source,
)

# OperationSourceEnum (spec 5.2.6.14) -> Portner's Source.
_SOURCES: Final = {
    0: Source.UNKNOWN,  # Unspecified
    1: Source.MANUAL,  # Manual (thumb-turn, key)
    2: Source.REMOTE,  # ProprietaryRemote (a vendor app)
    3: Source.KEYPAD,
    4: Source.AUTO,
    5: Source.MANUAL,  # Button on the lock
    6: Source.AUTO,  # Schedule (holiday mode)
    7: Source.REMOTE,  # Remote (a Matter controller)
    8: Source.RFID,
}

# LockOperationTypeEnum: Lock 0, Unlock 1, NonAccessUserEvent 2, ForcedUserEvent 3, Unlatch 4.
_OPERATIONS: Final = {
    0: Operation.LOCK,
    1: Operation.UNLOCK,
    3: Operation.UNLOCK,
    4: Operation.UNLOCK,
}

# OperationErrorEnum (spec 5.2.6.13) -> LockEvent.failure.
_FAILURES: Final = {
    0: "unspecified",
    1: "wrong_code",  # InvalidCredential
    2: "disabled_user",  # DisabledUserDenied
    3: "outside_schedule",  # Restricted
    4: "low_battery",  # InsufficientBattery
}

# AlarmCodeEnum (spec 5.2.6.3) -> Condition. DoorAjar (7) is not a health condition.
_ALARMS: Final = {
    0: Condition.JAMMED,  # LockJammed
    1: Condition.CODES_CHANGED,  # LockFactoryReset: every code is gone
    3: Condition.BATTERY_REPLACED,  # LockRadioPowerCycled: the clock may be lost (F16)
    4: Condition.LOCKOUT,  # WrongCodeEntryLimit
    5: Condition.TAMPER,  # FrontEscutcheonRemoved
    6: Condition.TAMPER,  # DoorForcedOpen
    8: Condition.TAMPER,  # ForcedUser (duress code)
}

_REMOTE_SOURCE: Final = 7
_TIMESTAMP_EPOCH: Final = 1  # node_event.timestamp_type: 1 = ms since the Unix epoch


def event_key(address: str, event_number: Any) -> str:
    return f"matter:{address}:{event_number}"


def lock_time_of(data: dict[str, Any]) -> datetime | None:
    """The lock's own time of an event, when it sent an epoch timestamp (websockets_api.md)."""
    if data.get("timestamp_type") != _TIMESTAMP_EPOCH or not isinstance(data.get("timestamp"), int):
        return None
    return datetime.fromtimestamp(data["timestamp"] / 1000, UTC)


def _slot_of(fields: dict[str, Any], slots: SlotRange | None) -> tuple[int | None, str]:
    """Portner's slot for the credential the lock names, and where the number came from.

    The PIN credential index is the placement; the user index is used only when the lock names
    no credential (our users and credentials share one index). Nothing named: unidentified (F11).
    """
    range_ = slots or SlotRange(count=0xFFFE)
    for credential in fields.get("credentials") or []:
        if isinstance(credential, dict) and credential.get("credentialType") == CREDENTIAL_TYPE_PIN:
            index = credential.get("credentialIndex")
            if isinstance(index, int):
                return range_.slot(index), "event"
    user = fields.get("userIndex")
    if isinstance(user, int):
        return range_.slot(user), "user_index"
    return None, "event"


def translate(
    address: str, data: dict[str, Any], *, received_at: datetime, slots: SlotRange | None
) -> LockEvent | HealthEvent | None:
    """Translate one Door Lock `node_event` payload; None for events Portner does not track."""
    if data.get("cluster_id") != DOOR_LOCK:
        return None
    fields = data.get("data") if isinstance(data.get("data"), dict) else {}
    key = event_key(address, data.get("event_number"))
    lock_time = lock_time_of(data)
    event_id = data.get("event_id")
    if event_id in (Event.LOCK_OPERATION, Event.LOCK_OPERATION_ERROR):
        operation = _OPERATIONS.get(fields.get("lockOperationType"))
        if operation is None:
            return None
        slot, attribution = _slot_of(fields, slots)
        success = event_id == Event.LOCK_OPERATION
        sequence = data.get("event_number")
        return LockEvent(
            lock=address,
            operation=operation,
            source=_SOURCES.get(fields.get("operationSource"), Source.UNKNOWN),
            success=success,
            received_at=received_at,
            key=key,
            slot=slot,
            lock_time=lock_time,
            sequence=sequence if isinstance(sequence, int) else None,
            attribution=attribution,
            failure="" if success else _FAILURES.get(fields.get("operationError"), "unspecified"),
        )
    if event_id == Event.DOOR_LOCK_ALARM:
        condition = _ALARMS.get(fields.get("alarmCode"))
        if condition is None:
            return None
        return HealthEvent(address, condition, received_at, key, lock_time=lock_time)
    if event_id == Event.LOCK_USER_CHANGE and fields.get("operationSource") != _REMOTE_SOURCE:
        # Codes programmed at the lock itself (keypad, vendor app): someone outside Portner.
        index = fields.get("dataIndex")
        slot = (slots or SlotRange(count=0xFFFE)).slot(index) if isinstance(index, int) else None
        return HealthEvent(address, Condition.CODES_CHANGED, received_at, key, slot=slot)
    return None
