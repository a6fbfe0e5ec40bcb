"""What the simulated keypad lock answers and records: its replies, reads and log entries.

These are the device's own words (native user numbers, raw digits), not the port's; adapters
translate them. Digits never appear in a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from portner.locks.port import LockWindow


class ReplyKind(StrEnum):
    OK = "ok"
    DUPLICATE = "duplicate"  # another user holds this code; `conflict` names it when known
    BAD_CODE = "bad_code"  # length, alphabet or prefix the lock refuses
    OUT_OF_RANGE = "out_of_range"  # no such user number
    FULL = "full"  # code memory full
    OFFLINE = "offline"  # no answer: the radio command never reached the lock
    JAMMED = "jammed"
    BUSY = "busy"
    ALREADY_EXISTS = "already_exists"  # eventual consistency after a delete (F21)
    UNSUPPORTED = "unsupported"  # e.g. a window on a lock without schedules


@dataclass(frozen=True, slots=True)
class DeviceReply:
    kind: ReplyKind
    conflict: int | None = None  # native user number holding the duplicate code

    @property
    def ok(self) -> bool:
        return self.kind is ReplyKind.OK


class ReadKind(StrEnum):
    CODE = "code"  # the code itself
    MASKED = "masked"  # occupied, shown as "****"
    EMPTY = "empty"
    GARBAGE = "garbage"  # an empty object where the code should be (F10)
    NO_ANSWER = "no_answer"  # offline, or this user never answers (F27)


@dataclass(frozen=True, slots=True)
class DeviceRead:
    kind: ReadKind
    digits: str | None = field(default=None, repr=False)  # only for CODE; never in a repr
    window: LockWindow | None = None
    enabled: bool | None = None


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    """One entry of the lock's own log. `action`: unlock, lock, jammed, unjammed, lockout,
    battery, battery_replaced, codes_changed, clock. `source`: keypad, manual, remote, auto."""

    sequence: int
    action: str
    lock_time: datetime
    source: str = ""
    success: bool = True
    native: int | None = None  # the user whose code was used or changed
    failure: str = ""  # wrong_code, outside_schedule, jammed, lockout
    percent: float | None = None
