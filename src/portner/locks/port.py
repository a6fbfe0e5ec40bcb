"""The lock port: the one vendor-neutral interface every lock adapter implements.

Portner speaks to locks in these terms only; vendor vocabulary (Zigbee2MQTT payloads, Matter
clusters, Nuki's cloud) stays inside its adapter. Three ideas shape it (see
../shared/reference/locks.md, section 4):

- **Slots are placement.** Portner numbers a lock's code slots from 1 to its capacity; each adapter
  maps a slot to the lock's own numbering (Zigbee users are 0-based, Matter users 1-based) and back.
- **Reads are tri-state.** A slot is known, confirmed empty, present but masked, or unreadable;
  absence of evidence is not evidence, so nothing is allocated over an unreadable slot.
- **Commands are honest.** An adapter answers a command only with what the lock confirmed: it
  succeeded, it was refused (and whether retrying could help), or no answer came in time.

This module imports no framework and no I/O library; adapters are async because real locks answer
over networks and radios.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol, runtime_checkable

from portner.domain.windows import require_aware

# --- secrets ---------------------------------------------------------------------------------------


class KeypadCode:
    """A keypad PIN in memory. Its repr and str hide the digits, so it cannot leak into a log,
    an exception message or a traceback by accident; `reveal()` is the only way to the digits and
    is called by an adapter at the moment it writes the code to a lock."""

    __slots__ = ("_digits",)

    def __init__(self, digits: str) -> None:
        if not isinstance(digits, str) or not digits or not digits.isascii() or not digits.isalnum():
            raise ValueError("a keypad code is a non-empty string of ASCII digits or letters")
        self._digits = digits

    def reveal(self) -> str:
        return self._digits

    def __len__(self) -> int:
        return len(self._digits)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeypadCode) and other._digits == self._digits

    def __hash__(self) -> int:
        return hash(("KeypadCode", self._digits))

    def __repr__(self) -> str:
        return f"KeypadCode({'*' * len(self._digits)})"

    __str__ = __repr__


# --- what a lock can do ----------------------------------------------------------------------------


class Feature(StrEnum):
    PHONE_CREDENTIALS = "phone_credentials"  # verifies Portner's signed offline credentials
    KEYPAD = "keypad"  # holds PIN codes in slots
    LOCK_SCHEDULES = "lock_schedules"  # enforces time windows on codes itself
    REMOTE_OPERATION = "remote_operation"  # lock/unlock on command
    CLOCK = "clock"  # has a clock Portner can read and set
    TIMEZONE = "timezone"  # keeps a UTC offset / zone for its schedules
    USER_EVENTS = "user_events"  # operation events name the slot that was used


@dataclass(frozen=True, slots=True)
class CodeRules:
    """What codes a lock (or a whole door path) accepts.

    `lengths` is the exact set of accepted lengths (a Schlage "code length" of 6 means exactly 6,
    not at least 6); None means the lock did not say, which is "unknown", never "none allowed".
    """

    lengths: frozenset[int] | None = None
    alphabet: str = "0123456789"
    forbidden_prefixes: tuple[str, ...] = ()
    reject_weak: bool = True  # refuse repeated digits, sequences and repeated halves


@dataclass(frozen=True, slots=True)
class SlotRange:
    """The slots Portner may use on a lock, in Portner's numbering (1..count), and how they map to
    the lock's own user numbers: native = slot - 1 + first_native."""

    count: int
    first_native: int = 1

    def native(self, slot: int) -> int:
        if not 1 <= slot <= self.count:
            raise ValueError(f"slot {slot} is outside this lock's slots 1..{self.count}")
        return slot - 1 + self.first_native

    def slot(self, native: int) -> int | None:
        """Return Portner's slot for a native user number, or None when it is outside the range
        (a programming/master code, for instance)."""
        slot = native - self.first_native + 1
        return slot if 1 <= slot <= self.count else None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter discovered about one lock. Empty or absent means unknown, not zero (F8)."""

    features: frozenset[Feature]
    code_rules: CodeRules | None = None
    slots: SlotRange | None = None
    schedule_slots_per_user: int | None = None
    # The lock shows stored codes masked (or not at all): a masked read is "present", never a
    # reason to rewrite (F21).
    masked_reads: bool = False
    # The least time between two radio commands to this lock (battery and mesh budget, F25).
    min_command_interval: timedelta = timedelta(seconds=2)
    model: str = ""


# --- reads -----------------------------------------------------------------------------------------


class SlotState(StrEnum):
    KNOWN = "known"  # holds a code we could read back
    MASKED = "masked"  # holds a code, but the lock will not show it
    EMPTY = "empty"  # the lock confirmed the slot is empty
    UNREADABLE = "unreadable"  # no trustworthy answer: timeout, garbage, or an empty object (F10)


@dataclass(frozen=True, slots=True)
class SlotReading:
    slot: int
    state: SlotState
    code: KeypadCode | None = None  # only when KNOWN
    enabled: bool | None = None  # the lock's own user-status flag, when it reports one


# --- commands --------------------------------------------------------------------------------------


class Outcome(StrEnum):
    CONFIRMED = "confirmed"  # the lock confirmed it (reply or read-back)
    REFUSED = "refused"  # the lock or vendor said no; see Refusal for whether to retry
    TIMED_OUT = "timed_out"  # nothing trustworthy came back before the deadline


class Refusal(StrEnum):
    """Why a command was refused. The first group is permanent: retrying cannot help, a person
    must act. The second is transient: retry with backoff."""

    DUPLICATE_CODE = "duplicate_code"
    BAD_CODE = "bad_code"  # length or alphabet the lock does not accept
    LOCK_FULL = "lock_full"
    SLOT_OUT_OF_RANGE = "slot_out_of_range"
    NOT_SUPPORTED = "not_supported"
    BAD_SCHEDULE = "bad_schedule"
    NOT_AUTHORISED = "not_authorised"  # vendor cloud credentials rejected

    OFFLINE = "offline"
    BUSY = "busy"
    JAMMED = "jammed"
    WRITE_UNCONFIRMED = "write_unconfirmed"  # accepted, but the read-back does not show it (F10)
    TEMPORARY = "temporary"  # the vendor said "try again"

    @property
    def permanent(self) -> bool:
        return self in _PERMANENT


_PERMANENT = frozenset({
    Refusal.DUPLICATE_CODE, Refusal.BAD_CODE, Refusal.LOCK_FULL, Refusal.SLOT_OUT_OF_RANGE,
    Refusal.NOT_SUPPORTED, Refusal.BAD_SCHEDULE, Refusal.NOT_AUTHORISED,
})


@dataclass(frozen=True, slots=True)
class CommandResult:
    outcome: Outcome
    refusal: Refusal | None = None
    # For DUPLICATE_CODE: the slot that already holds the code, when the lock says (F5).
    conflict_slot: int | None = None
    detail: str = ""  # for operators; never contains a code

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.REFUSED) != (self.refusal is not None):
            raise ValueError("a refusal reason goes with, and only with, a refused outcome")

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.CONFIRMED

    @property
    def retryable(self) -> bool:
        """True when trying again later may succeed (timeouts and transient refusals)."""
        if self.outcome is Outcome.TIMED_OUT:
            return True
        return self.refusal is not None and not self.refusal.permanent


CONFIRMED = CommandResult(Outcome.CONFIRMED)


def refused(refusal: Refusal, detail: str = "", *, conflict_slot: int | None = None) -> CommandResult:
    return CommandResult(Outcome.REFUSED, refusal, conflict_slot, detail)


def timed_out(detail: str = "") -> CommandResult:
    return CommandResult(Outcome.TIMED_OUT, None, None, detail)


@dataclass(frozen=True, slots=True)
class LockWindow:
    """A window a lock enforces for a code itself, in the lock's local wall-clock time.

    Adapters convert to their native form (Matter: local seconds since 2000-01-01; Nuki: dates and
    minutes after midnight). `end` is inclusive to the second, as in Matter: 23:59 means through
    23:59:59. A window never wraps midnight on a weekly rule: callers split it (see
    portner.locks.schedules).
    """

    start: datetime  # aware; the adapter converts to the lock's zone
    end: datetime

    def __post_init__(self) -> None:
        require_aware(self.start, "window start")
        require_aware(self.end, "window end")
        if self.end <= self.start:
            raise ValueError("a lock window must end after it starts")


# --- events and health -----------------------------------------------------------------------------


class Operation(StrEnum):
    UNLOCK = "unlock"
    LOCK = "lock"


class Source(StrEnum):
    KEYPAD = "keypad"
    PHONE = "phone"  # a Portner credential presented over the radio
    REMOTE = "remote"  # commanded over the network (by Portner or a vendor app)
    MANUAL = "manual"  # thumb-turn or mechanical key
    AUTO = "auto"  # auto-lock timer
    RFID = "rfid"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class LockEvent:
    """One normalised operation event from a lock.

    `slot` is Portner's slot number of the code used, or None when the lock did not say who it was
    ("unidentified"); a platform never guesses "the last user" (F11, F12, F13). `key` is stable
    across redeliveries of the same event, so duplicates collapse (F14): adapters build it from the
    lock's own sequence number or timestamp, never from the time of receipt.
    """

    lock: str  # the adapter's address of the lock
    operation: Operation
    source: Source
    success: bool
    received_at: datetime
    key: str
    slot: int | None = None
    lock_time: datetime | None = None
    sequence: int | None = None
    # Where the slot number came from, when not from the event itself (F13: a legacy alarm report).
    attribution: str = "event"
    # A failed attempt's cause, in Portner's words ("wrong_code", "outside_schedule", "jammed").
    failure: str = ""


class Condition(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"
    JAMMED = "jammed"
    UNJAMMED = "unjammed"  # a successful operation after a jam (F29)
    TAMPER = "tamper"
    BATTERY = "battery"  # the battery level changed; see percent
    BATTERY_REPLACED = "battery_replaced"  # the clock may be lost (F16)
    CLOCK = "clock"  # the lock reported its clock; see lock_time
    LOCKOUT = "lockout"  # the keypad locked itself after wrong codes
    CODES_CHANGED = "codes_changed"  # someone changed codes outside Portner


@dataclass(frozen=True, slots=True)
class HealthEvent:
    lock: str
    condition: Condition
    received_at: datetime
    key: str
    percent: float | None = None
    lock_time: datetime | None = None
    slot: int | None = None  # for CODES_CHANGED, when the lock names it


@dataclass(frozen=True, slots=True)
class Health:
    """A lock's health now, as far as the adapter knows; None fields are unknown."""

    online: bool | None = None
    battery_percent: float | None = None
    jammed: bool | None = None
    tamper: bool | None = None
    lock_time: datetime | None = None  # the lock's clock when last read
    clock_offset: timedelta | None = None  # lock clock minus true time, when measured
    bolt: str | None = None  # "locked" | "unlocked" | "jammed" | None


# --- the port --------------------------------------------------------------------------------------


@runtime_checkable
class LockPort(Protocol):
    """One lock, through one adapter. Every method may be called concurrently for different
    locks; for one lock, callers serialise commands (the reconciler does)."""

    address: str

    async def capabilities(self) -> Capabilities: ...

    async def health(self) -> Health: ...

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        """Read the given slots. A slot that does not answer is UNREADABLE, not EMPTY."""
        ...

    async def set_code(
        self, slot: int, code: KeypadCode, window: LockWindow | None = None, *,
        idempotency_key: str | None = None,
    ) -> CommandResult:
        """Put `code` in `slot` (optionally with a window the lock enforces) and confirm it.

        `idempotency_key` is the platform's id for this command (the lock_commands row): a vendor
        cloud that takes one gets it, so a redelivery after a crash is the same command there.

        Re-setting the same code in the same slot is an idempotent success. A code that another
        slot already holds is REFUSED DUPLICATE_CODE (with conflict_slot when known), never a
        success (F5)."""
        ...

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        """Remove the code and any window from `slot`, and confirm the slot is empty."""
        ...

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        """Lock or unlock on command; CONFIRMED only when the lock reports the new state."""
        ...

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        """Set the lock's clock (and UTC offset or zone, where it keeps one)."""
        ...


@runtime_checkable
class LockBackend(Protocol):
    """One adapter's connection to its locks (a broker, a server socket, a vendor cloud)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def lock(self, address: str) -> LockPort: ...

    def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        """Every lock's events, normalised, as they arrive; duplicates may come through twice with
        the same key (consumers dedupe on it)."""
        ...


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """How to reach one backend; read from Settings in one place (portner.locks.registry)."""

    name: str  # "simulated" | "zigbee2mqtt" | "matter" | "nuki" | "webhook"
    url: str | None = None  # broker / server / API base URL
    options: dict[str, str] = field(default_factory=dict)
