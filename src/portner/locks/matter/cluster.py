"""The Matter Door Lock cluster (0x0101) in the few terms this adapter uses, and its pure rules.

Numbers come from the Matter Application Cluster specification, chapter 5.2 (Door Lock), as
generated into matter.js (`packages/model/src/standard/elements/DoorLock.ts`, cluster revision 8):
feature bits, attribute ids, command names, the StatusCodeEnum (Duplicate 0x02, Occupied 0x03) and
the event fields. How a real lock answers is taken from matter.js 0.17.9's `DoorLockServer`
(`@matter/node/dist/esm/behaviors/door-lock/DoorLockServer.js`), which differs from the spec in one
place that matters to us: it answers SetCredential with plain FAILURE (0x01) both for a duplicate
PIN and for an occupied index, where the spec says DUPLICATE (0x02) and OCCUPIED (0x03). The adapter
accepts both (see `portner.locks.matter.lock`).

Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo

from portner.locks.port import LockWindow
from portner.locks.schedules import ScheduleError, matter_window

DOOR_LOCK: Final = 0x0101
POWER_SOURCE: Final = 0x002F  # BatPercentRemaining (0x000C) is in half-percent, 0..200

# FeatureMap (0xFFFC) bits, spec 5.2.4.
FEATURE_PIN: Final = 1 << 0
FEATURE_USR: Final = 1 << 8
FEATURE_YDSCH: Final = 1 << 10


class Attr:
    """Door Lock attribute ids (spec 5.2.9)."""

    LOCK_STATE: Final = 0x0000
    NUMBER_OF_TOTAL_USERS_SUPPORTED: Final = 0x0011
    NUMBER_OF_PIN_USERS_SUPPORTED: Final = 0x0012
    NUMBER_OF_YEAR_DAY_SCHEDULES_SUPPORTED_PER_USER: Final = 0x0015
    MAX_PIN_CODE_LENGTH: Final = 0x0017
    MIN_PIN_CODE_LENGTH: Final = 0x0018
    REQUIRE_PIN_FOR_REMOTE_OPERATION: Final = 0x0033
    FEATURE_MAP: Final = 0xFFFC


BAT_PERCENT_REMAINING: Final = 0x000C


class LockState:
    NOT_FULLY_LOCKED: Final = 0
    LOCKED: Final = 1
    UNLOCKED: Final = 2
    UNLATCHED: Final = 3


class Event:
    """Door Lock event ids (spec 5.2.11)."""

    DOOR_LOCK_ALARM: Final = 0x00
    LOCK_OPERATION: Final = 0x02
    LOCK_OPERATION_ERROR: Final = 0x03
    LOCK_USER_CHANGE: Final = 0x04


class Status:
    """Interaction Model status codes (core spec 8.10) plus the cluster's StatusCodeEnum."""

    SUCCESS: Final = 0x00
    FAILURE: Final = 0x01
    DUPLICATE: Final = 0x02  # cluster-specific (StatusCodeEnum), also used in SetCredentialResponse
    OCCUPIED: Final = 0x03
    INVALID_COMMAND: Final = 0x85
    CONSTRAINT_ERROR: Final = 0x87
    RESOURCE_EXHAUSTED: Final = 0x89
    NOT_FOUND: Final = 0x8B
    NEEDS_TIMED_INTERACTION: Final = 0xC6


CREDENTIAL_TYPE_PIN: Final = 1  # CredentialTypeEnum; 0 is the programming PIN, never used by us
OPERATION_ADD: Final = 0  # DataOperationTypeEnum
OPERATION_MODIFY: Final = 2
USER_STATUS_OCCUPIED_ENABLED: Final = 1
USER_TYPE_UNRESTRICTED: Final = 0
USER_TYPE_SCHEDULE_RESTRICTED: Final = 8  # access only within the user's week/year-day schedules
CREDENTIAL_RULE_SINGLE: Final = 0
ALL_SCHEDULES: Final = 254  # ClearYearDaySchedule index meaning "every schedule of this user"
YEAR_DAY_INDEX: Final = 1  # Portner keeps one lock-enforced window per slot

# SetUser.UserName is "string, max 10" (spec 5.2.10.32); matter.js enforces it as a constraint.
USER_NAME_MAX_BYTES: Final = 10
USER_NAME: Final = "Portner"  # never a person's name: slots are placement, people stay in Portner


class BadSchedule(ValueError):
    """A window that cannot be written as a Matter year-day schedule."""


class BadUserName(ValueError):
    """A UserName the Door Lock cluster would refuse."""


def check_user_name(name: str) -> str:
    """Return `name` when it fits SetUser.UserName (at most 10 bytes of UTF-8), else raise."""
    size = len(name.encode("utf-8"))
    if size > USER_NAME_MAX_BYTES:
        raise BadUserName(
            f"UserName is {size} bytes; the Door Lock cluster allows at most {USER_NAME_MAX_BYTES}"
        )
    return name


@dataclass(frozen=True, slots=True)
class YearDay:
    """A year-day schedule in the lock's native numbers; both ends inclusive, to the second."""

    local_start: int
    local_end: int


def year_day(window: LockWindow, zone: ZoneInfo) -> YearDay:
    """Convert a LockWindow to SetYearDaySchedule's LocalStartTime/LocalEndTime.

    The conversion itself is portner.locks.schedules.matter_window (local wall seconds from
    2000-01-01, start rounded up, end rounded down and inclusive, edges kept out of a repeated
    autumn hour so the lock never opens outside the plan). On top of it, a local end that is not
    after the local start is refused here (F17): matter.js answers INVALID_COMMAND to
    `localEndTime <= localStartTime`, and the spec says LocalEndTime SHALL be greater.
    """
    try:
        start, end = matter_window(window, zone.key)
    except ScheduleError as exc:
        raise BadSchedule(str(exc)) from exc
    if end <= start:
        raise BadSchedule(
            "the window's local end is not after its local start in the lock's zone "
            f"({zone.key}); enforce it on the server instead"
        )
    return YearDay(start, end)


# The server forwards a matter.js StatusResponseError's message as `details`. matter.js 0.17
# writes "... (code 1; cluster code 3)"; older releases wrote "(1/3) ...".
_STATUS_NEW = re.compile(r"\(code (\d+)(?:; cluster code (\d+))?\)")
_STATUS_OLD = re.compile(r"^\((\d+)(?:/(\d+))?\)")


def status_in(details: str) -> tuple[int | None, int | None]:
    """Return (IM status, cluster status) named in a server error's details, or (None, None)."""
    match = _STATUS_NEW.search(details) or _STATUS_OLD.search(details)
    if match is None:
        return None, None
    cluster = match.group(2)
    return int(match.group(1)), int(cluster) if cluster is not None else None
