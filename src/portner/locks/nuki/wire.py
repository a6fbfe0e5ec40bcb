"""Nuki Web API vocabulary: its numeric codes, the keypad firmware's code rules, its time format.

Pure: no I/O. The numbers are Nuki's (smartlock state, log action, trigger and state codes); the
rest of the adapter speaks only Portner's terms.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from portner.locks.codes import check_code
from portner.locks.port import CodeRules, KeypadCode, Operation, Source

DEFAULT_URL = "https://api.nuki.io"
KEYPAD_CODE = 13  # Nuki auth type "keypad code"
NAME_LIMIT = 32  # Nuki auth names are at most 32 characters
NUKI_RULES = CodeRules(lengths=frozenset({6}), alphabet="123456789", forbidden_prefixes=("12",))

ACTION = {Operation.UNLOCK: 1, Operation.LOCK: 2}
LOG_OPERATION = {1: Operation.UNLOCK, 3: Operation.UNLOCK, 5: Operation.UNLOCK,
                 2: Operation.LOCK, 4: Operation.LOCK}
# Log triggers: 0 system, 1 manual, 2 button, 3 automatic, 4 web, 5 app, 6 auto lock, 7 accessory,
# 255 keypad. The app and the web API are both "commanded over the network".
TRIGGER_SOURCE = {0: Source.AUTO, 1: Source.MANUAL, 2: Source.MANUAL, 3: Source.AUTO,
                  4: Source.REMOTE, 5: Source.REMOTE, 6: Source.AUTO, 7: Source.RFID,
                  255: Source.KEYPAD}
JAMMED_STATE = 254
STATE_BOLT = {1: "locked", 3: "unlocked", 5: "unlocked", 6: "unlocked", JAMMED_STATE: "jammed"}
TARGET_STATE = {Operation.UNLOCK: {3, 5, 6}, Operation.LOCK: {1}}
FAILURES = {1: "jammed", 224: "wrong_code", 225: "wrong_code", 10: "outside_schedule"}
OFFLINE_SERVER_STATE = 4


def check_nuki_code(code: KeypadCode) -> str | None:
    """Why the Nuki keypad would refuse `code`, or None when it accepts it (F24). Weak codes are
    the generator's concern, not the firmware's, so they are not refused here."""
    return check_code(replace(NUKI_RULES, reject_weak=False), code)


def failure_of(state: Any) -> str:
    """The failure word for a log entry's non-zero state."""
    return FAILURES.get(state, f"error_{state}")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def canonical(value: object) -> str | None:
    """A Nuki time in the one spelling `iso` writes, so read-backs compare equal to what we sent."""
    parsed = parse_time(value)
    return iso(parsed) if parsed else None
