"""Callback bodies (vendor -> Portner), parsed into the port's events (pure: no I/O).

`{"type": t, "timestamp": iso, "data": {...}}` with t = `lock.event` (data: `lock`, `id` (stable
per event), `operation`, `source`, `success`, `slot` | null, `occurred_at`, `sequence`, `failure`),
`lock.health` (data: `lock`, `id`, `condition`, `percent`, `occurred_at`, `slot`) or
`command.result` (data: `idempotency_key`, `result`: a typed result as /execute answers it).
A body that does not follow this raises MalformedCallback naming the field, and so does an event
the activity log would refuse (attribution.check_event: a slot outside 1..65535, a battery outside
0..100 %, a lock time a day ahead...), so that nothing refused is ever queued for the runtime.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from portner.locks.attribution import check_event, check_health_event
from portner.locks.port import Condition, HealthEvent, LockEvent, Operation, Source
from portner.locks.webhook.signing import MalformedCallback

LateResult = tuple[str, Mapping[str, Any]]  # (idempotency key, typed result)


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...],
           *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or isinstance(value, bool) and bool not in _types(kind):
        raise MalformedCallback(f"field {name!r} is missing or not {_names(kind)}",
                                field=f"body/data/{name}")
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
        raise MalformedCallback(f"field {name!r} is not an ISO 8601 time",
                                field=f"body/data/{name}") from None
    if parsed.tzinfo is None:
        raise MalformedCallback(f"field {name!r} has no UTC offset", field=f"body/data/{name}")
    try:
        parsed.astimezone(UTC)  # 9999-12-31T23:59-14:00 is a valid string but no UTC time
    except OverflowError:
        raise MalformedCallback(f"field {name!r} is out of range in UTC",
                                field=f"body/data/{name}") from None
    return parsed


def _percent(data: Mapping[str, Any]) -> float | None:
    value = _field(data, "percent", (int, float), optional=True)
    if value is None:
        return None
    try:
        percent = float(value)
    except OverflowError:  # an integer such as 10**400
        percent = math.inf
    # NaN, Infinity and 1e400 (which json reads as inf) are no battery level.
    if not math.isfinite(percent) or not 0 <= percent <= 100:
        raise MalformedCallback("field 'percent' must be a number 0..100",
                                field="body/data/percent")
    return percent


# An event's own check names `data.<attribute>`; the vendor's body names some of them otherwise.
_CHECKED = re.compile(r"^data\.(\w+)")
_BODY_NAMES = {"key": "id", "lock_time": "occurred_at"}


def checked_field(message: str) -> str:
    """The body field an event check's message (ValueError from check_event(event, "data"))
    is about: "body/data/slot", "body/data/occurred_at", or "body/data" when it names none."""
    match = _CHECKED.match(message)
    if not match:
        return "body/data"
    return f"body/data/{_BODY_NAMES.get(match.group(1), match.group(1))}"


def checked(event: LockEvent | HealthEvent) -> LockEvent | HealthEvent:
    """The event if the activity log would take it; else MalformedCallback naming the field."""
    try:
        if isinstance(event, LockEvent):
            check_event(event, "data")
        else:
            check_health_event(event, "data")
    except (TypeError, ValueError) as exc:
        raise MalformedCallback(str(exc), field=checked_field(str(exc))) from None
    return event


def _enum(enum: Any, data: Mapping[str, Any], name: str) -> Any:
    try:
        return enum(_field(data, name, str))
    except ValueError:
        raise MalformedCallback(f"field {name!r} is not one of {[e.value for e in enum]}",
                                field=f"body/data/{name}") from None


def parse_callback(body: bytes, *, received_at: datetime
                   ) -> tuple[list[LockEvent | HealthEvent], LateResult | None]:
    """A verified callback body -> (events, late command result as (idempotency key, result))."""
    try:
        # Python's json also reads NaN and Infinity (not JSON, RFC 8259): the field checks refuse
        # them by name (a percent must be finite), which tells the vendor more than "not JSON".
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # RecursionError: "[" * 30000 nests deeper than the parser goes; no callback nests so.
        raise MalformedCallback("the callback body is not JSON", field="body") from None
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        raise MalformedCallback("a callback is an object with 'type' and a 'data' object",
                                field="body/data")
    kind, data = message.get("type"), message["data"]
    if kind == "command.result":
        return [], (_field(data, "idempotency_key", str), _field(data, "result", dict))
    lock, event_id = _field(data, "lock", str), _field(data, "id", str)
    key = f"webhook:{lock}:{event_id}"
    if kind == "lock.event":
        return [checked(LockEvent(
            lock=lock, operation=_enum(Operation, data, "operation"),
            source=_enum(Source, data, "source"), success=_field(data, "success", bool),
            received_at=received_at, key=key, slot=_field(data, "slot", int, optional=True),
            lock_time=_instant(data, "occurred_at"),
            sequence=_field(data, "sequence", int, optional=True),
            failure=_field(data, "failure", str, optional=True) or ""))], None
    if kind == "lock.health":
        return [checked(HealthEvent(
            lock=lock, condition=_enum(Condition, data, "condition"), received_at=received_at,
            key=key, percent=_percent(data), lock_time=_instant(data, "occurred_at"),
            slot=_field(data, "slot", int, optional=True)))], None
    raise MalformedCallback(f"unknown callback type {kind!r}", field="body/type")
