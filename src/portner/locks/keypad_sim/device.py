"""A simulated battery keypad lock, in its own native user numbering.

This is the device, not an adapter: it knows nothing of Portner's slots, outcomes or events. It
answers radio commands with small typed replies, keeps codes in native user numbers (0-based or
1-based as configured), enforces its own code rules and lock-side windows against its own
(drifting, losable) clock, and records everything it does in an append-only event list with
sequence numbers. Time is a `now` callable (true time); randomness is seeded. Adapters and
simulated vendor devices (the Zigbee2MQTT device, for one) wrap it and speak their protocol.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from portner.domain.windows import require_aware
from portner.locks.keypad_sim.faults import Faults, ReportRadio
from portner.locks.keypad_sim.replies import (
    DeviceEvent,
    DeviceRead,
    DeviceReply,
    ReadKind,
    ReplyKind,
)
from portner.locks.port import LockWindow
from portner.locks.simulated import Battery, LockClock

MASK: Final = "****"
RADIO_COST: Final = 0.002  # battery percent per radio command
MOTOR_COST: Final = 0.01  # battery percent per bolt movement


@dataclass
class _Stored:
    digits: str = field(repr=False)
    window: LockWindow | None
    added_at: datetime  # true time, for read lag


class KeypadLockDevice:
    """A keypad lock. Commands (`set_pin`, `clear_pin`, `read_pin`, `remote`, `set_clock`,
    `read_clock`, `read_status`) are radio commands and are counted; `enter_code`, `turn_thumb`
    and `program_at_keypad` are physical acts at the door and are not."""

    def __init__(
        self,
        now: Callable[[], datetime],
        *,
        first_native: int = 1,
        capacity: int = 30,
        lengths: frozenset[int] = frozenset(range(4, 9)),
        alphabet: str = "0123456789",
        forbidden_prefixes: tuple[str, ...] = (),
        masked_reads: bool = False,
        schedules: bool = True,
        reject_duplicates: bool = True,
        names_conflict: bool = True,
        seed: int = 0,
        drift_ppm: float = 0.0,
        clock_offset: timedelta = timedelta(0),
        battery_percent: float = 100.0,
        lockout_after: int = 5,
        lockout_for: timedelta = timedelta(minutes=3),
        auto_lock_after: timedelta | None = None,
        model: str = "portner keypad simulator",
        faults: Faults | None = None,
    ) -> None:
        if first_native not in (0, 1):
            raise ValueError("first_native must be 0 (Zigbee) or 1 (Z-Wave, Matter)")
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not lengths or min(lengths) < 1:
            raise ValueError("lengths must be a non-empty set of positive code lengths")
        self._now = now
        self.first_native, self.capacity = first_native, capacity
        self.lengths, self.alphabet = frozenset(lengths), alphabet
        self.forbidden_prefixes = tuple(forbidden_prefixes)
        self.masked_reads, self.schedules = masked_reads, schedules
        self.reject_duplicates, self.names_conflict = reject_duplicates, names_conflict
        self.lockout_after, self.lockout_for = lockout_after, lockout_for
        self.auto_lock_after, self.model = auto_lock_after, model
        self.faults = faults if faults is not None else Faults()
        self.rng = random.Random(seed)
        self.clock = LockClock(now, offset=clock_offset, drift_ppm=drift_ppm)
        self.battery = Battery(percent=battery_percent)
        self.battery.elapse(self.true_now())
        self.radio = ReportRadio(self.faults, self.rng)
        self.events: list[DeviceEvent] = []  # append-only, the lock's own truth
        self.bolt = "locked"  # locked | unlocked | jammed
        self.zone = "UTC"
        self.commands_received = 0  # radio commands that reached the lock
        self.commands_lost = 0  # radio commands sent while it was off the network
        self.command_counts: Counter[str] = Counter()
        self._codes: dict[int, _Stored] = {}
        self._garbage: set[int] = set()  # lost writes read back as {}
        self._deleted: dict[int, tuple[_Stored, datetime]] = {}  # for delete lag
        self._manual_offline = False
        self._was_online = True
        self._wrong_in_row = 0
        self._locked_out_until: datetime | None = None
        self._unlocked_at: datetime | None = None

    # --- state --------------------------------------------------------------------------------

    def true_now(self) -> datetime:
        return require_aware(self._now(), "true time")

    @property
    def online(self) -> bool:
        now = self.true_now()
        in_period = any(start <= now < end for start, end in self.faults.offline_periods)
        return not (self._manual_offline or in_period or self.battery.depleted)

    @property
    def natives(self) -> range:
        return range(self.first_native, self.first_native + self.capacity)

    def stored(self, native: int) -> str | None:
        """The code the lock really holds (test truth; no radio command)."""
        entry = self._codes.get(native)
        return entry.digits if entry else None

    def stored_window(self, native: int) -> LockWindow | None:
        entry = self._codes.get(native)
        return entry.window if entry else None

    def occupied(self) -> dict[int, str]:
        """Every stored code by native user (test truth)."""
        return {native: entry.digits for native, entry in sorted(self._codes.items())}

    @property
    def locked_out(self) -> bool:
        return self._locked_out_until is not None and self.true_now() < self._locked_out_until

    def code_problem(self, digits: str) -> str | None:
        """Why this lock refuses `digits`, or None (pure: the device's own firmware rule)."""
        if len(digits) not in self.lengths:
            return f"the lock takes codes of {sorted(self.lengths)} characters"
        if any(ch not in self.alphabet for ch in digits):
            return "the code uses a character the keypad does not have"
        if any(digits.startswith(prefix) for prefix in self.forbidden_prefixes):
            return "the code starts with a prefix the lock forbids"
        return None

    # --- network ------------------------------------------------------------------------------

    def go_offline(self) -> None:
        self.tick()
        self._manual_offline = True

    def go_online(self) -> None:
        self._manual_offline = False
        self.tick()

    def tick(self) -> None:
        """Let simulated time act: self-discharge, auto-lock, lockout expiry, reconnection."""
        now = self.true_now()
        self.battery.elapse(now)
        if self._locked_out_until is not None and now >= self._locked_out_until:
            self._locked_out_until, self._wrong_in_row = None, 0
        if (self.auto_lock_after is not None and self.bolt == "unlocked"
                and self._unlocked_at is not None and now - self._unlocked_at >= self.auto_lock_after):
            self._move_bolt("locked", source="auto")
        self._warn_if_low()
        online = self.online
        if online and not self._was_online:
            self.radio.reconnect()
        self._was_online = online

    def _command(self, kind: str) -> bool:
        """Count one radio command; return False when it cannot reach the lock."""
        self.tick()
        if not self.online:
            self.commands_lost += 1
            return False
        self.commands_received += 1
        self.command_counts[kind] += 1
        self.battery.spend(RADIO_COST)
        self._warn_if_low()
        return True

    @property
    def commands_sent(self) -> int:
        return self.commands_received + self.commands_lost

    # --- codes (radio) ------------------------------------------------------------------------

    def set_pin(self, native: int, digits: str, window: LockWindow | None = None) -> DeviceReply:
        if not self._command("set_pin"):
            return DeviceReply(ReplyKind.OFFLINE)
        if self.faults.take("busy_next"):
            return DeviceReply(ReplyKind.BUSY)
        if native not in self.natives:
            return DeviceReply(ReplyKind.OUT_OF_RANGE)
        if self.code_problem(digits) is not None:
            return DeviceReply(ReplyKind.BAD_CODE)
        if window is not None and not self.schedules:
            return DeviceReply(ReplyKind.UNSUPPORTED)
        now = self.true_now()
        deleted = self._deleted.get(native)
        if deleted is not None and now - deleted[1] < self.faults.delete_lag:
            return DeviceReply(ReplyKind.ALREADY_EXISTS)
        current = self._codes.get(native)
        if current is not None and current.digits == digits:
            current.window = window  # idempotent; the window may change (F20)
            return DeviceReply(ReplyKind.OK)
        if self.reject_duplicates:
            for other, entry in self._codes.items():
                if other != native and entry.digits == digits:
                    return DeviceReply(ReplyKind.DUPLICATE, other if self.names_conflict else None)
        limit = self.capacity if self.faults.capacity_limit is None else self.faults.capacity_limit
        if current is None and len(self._codes) >= limit:
            return DeviceReply(ReplyKind.FULL)
        if self.faults.take("lose_writes_next"):
            self._garbage.add(native)
            return DeviceReply(ReplyKind.OK)
        self._garbage.discard(native)
        self._deleted.pop(native, None)
        self._codes[native] = _Stored(digits, window, now)
        return DeviceReply(ReplyKind.OK)

    def clear_pin(self, native: int) -> DeviceReply:
        if not self._command("clear_pin"):
            return DeviceReply(ReplyKind.OFFLINE)
        if self.faults.take("busy_next"):
            return DeviceReply(ReplyKind.BUSY)
        if native not in self.natives:
            return DeviceReply(ReplyKind.OUT_OF_RANGE)
        self._garbage.discard(native)
        if native in self.faults.sticky:
            return DeviceReply(ReplyKind.OK)
        entry = self._codes.pop(native, None)
        if entry is not None:
            self._deleted[native] = (entry, self.true_now())
        return DeviceReply(ReplyKind.OK)

    def read_pin(self, native: int) -> DeviceRead:
        if not self._command("read_pin") or native in self.faults.unreadable:
            return DeviceRead(ReadKind.NO_ANSWER)
        if native not in self.natives:
            return DeviceRead(ReadKind.NO_ANSWER)
        if native in self._garbage:
            return DeviceRead(ReadKind.GARBAGE)
        now = self.true_now()
        entry = self._codes.get(native)
        deleted = self._deleted.get(native)
        if entry is None and deleted is not None and now - deleted[1] < self.faults.delete_lag:
            entry = deleted[0]  # the old code still shows
        if entry is None or now - entry.added_at < self.faults.read_lag:
            return DeviceRead(ReadKind.EMPTY, enabled=False)
        if self.masked_reads or (self.faults.mask_reads and self.rng.random() < self.faults.mask_reads):
            return DeviceRead(ReadKind.MASKED, window=entry.window, enabled=True)
        return DeviceRead(ReadKind.CODE, entry.digits, entry.window, enabled=True)

    # --- bolt, clock, status (radio) ----------------------------------------------------------

    def remote(self, operation: str) -> DeviceReply:
        """Lock or unlock on command (`operation` is "lock" or "unlock")."""
        if operation not in ("lock", "unlock"):
            raise ValueError("operation must be 'lock' or 'unlock'")
        if not self._command("remote"):
            return DeviceReply(ReplyKind.OFFLINE)
        if self.faults.take("busy_next"):
            return DeviceReply(ReplyKind.BUSY)
        moved = self._move_bolt("locked" if operation == "lock" else "unlocked", source="remote")
        return DeviceReply(ReplyKind.OK if moved else ReplyKind.JAMMED)

    def set_clock(self, when: datetime, zone: str = "UTC") -> DeviceReply:
        if not self._command("set_clock"):
            return DeviceReply(ReplyKind.OFFLINE)
        self.clock.set(require_aware(when, "clock time"))
        self.zone = zone
        return DeviceReply(ReplyKind.OK)

    def read_clock(self) -> datetime | None:
        return self.clock.now() if self._command("read_clock") else None

    def read_status(self) -> dict[str, object] | None:
        """Battery, bolt and clock in one report; None when offline."""
        if not self._command("read_status"):
            return None
        return {"battery": round(self.battery.percent, 3), "bolt": self.bolt,
                "clock": self.clock.now(), "clock_known": self.clock.known}

    # --- physical acts at the door ------------------------------------------------------------

    def enter_code(self, digits: str) -> DeviceEvent:
        """Someone types `digits` on the keypad and presses the unlock key."""
        self.tick()
        if self.locked_out:
            return self._record("unlock", source="keypad", success=False, failure="lockout")
        native = next((n for n, e in self._codes.items() if e.digits == digits), None)
        if native is None:
            return self._wrong_code()
        window = self._codes[native].window
        if window is not None and not (window.start <= self._lock_second() <= window.end):
            return self._record("unlock", source="keypad", success=False, native=native,
                                failure="outside_schedule")
        self._wrong_in_row = 0
        if not self._move_bolt("unlocked", source="keypad", native=native, record=False):
            return self._record("unlock", source="keypad", success=False, native=native,
                                failure="jammed")
        return self._record("unlock", source="keypad", native=native)

    def press_lock(self) -> DeviceEvent:
        """Someone leaving presses the keypad's lock key outside: the bolt locks; no code, so the
        lock names nobody."""
        self.tick()
        self._move_bolt("locked", source="keypad")
        return self.events[-1]

    def turn_thumb(self) -> DeviceEvent:
        """The inside thumb-turn (or a mechanical key): toggles the bolt."""
        self.tick()
        target = "unlocked" if self.bolt == "locked" else "locked"
        self._move_bolt(target, source="manual")
        return self.events[-1]

    def program_at_keypad(self, native: int, digits: str | None) -> DeviceEvent:
        """Someone with the master code adds (or, with None, deletes) a code at the lock itself:
        a code Portner did not write (F6, F27). No radio command."""
        self.tick()
        if native not in self.natives:
            raise ValueError(f"native user {native} is outside {self.natives}")
        if digits is None:
            self._codes.pop(native, None)
        else:
            self._codes[native] = _Stored(digits, None, self.true_now())
        return self._record("codes_changed", native=native)

    def jam(self) -> None:
        """The bolt sticks where it is (F29)."""
        self.tick()
        if self.bolt != "jammed":
            self.bolt = "jammed"
            self._record("jammed", success=False)

    def replace_battery(self, percent: float = 100.0) -> None:
        """New batteries: the RTC restarts at 2000-01-01 unless the faults say otherwise (F16)."""
        self.tick()
        self.battery.replace(percent)
        if self.faults.clock_loss_on_battery_swap:
            self.clock.lose()
        self._record("battery_replaced", percent=percent)

    def drain_battery(self, percent: float) -> None:
        """Take charge away (a fault hook); reports the new level."""
        self.battery.spend(percent)
        self._record("battery", percent=round(self.battery.percent, 3))

    # --- internals ----------------------------------------------------------------------------

    def _warn_if_low(self) -> None:
        """Report the level once when it first falls to the low threshold."""
        if self.battery.take_low_warning():
            self._record("battery", percent=round(self.battery.percent, 3))

    def _lock_second(self) -> datetime:
        return self.clock.now().replace(microsecond=0)

    def _wrong_code(self) -> DeviceEvent:
        self._wrong_in_row += 1
        event = self._record("unlock", source="keypad", success=False, failure="wrong_code")
        if self._wrong_in_row >= self.lockout_after:
            self._locked_out_until = self.true_now() + self.lockout_for
            self._record("lockout", source="keypad", success=False)
        return event

    def _move_bolt(self, target: str, *, source: str, native: int | None = None,
                   record: bool = True) -> bool:
        """Drive the bolt; False when it jams (then a jammed event is recorded)."""
        operation = "unlock" if target == "unlocked" else "lock"
        if self.faults.take("jam_next"):
            self.bolt = "jammed"
            self._record("jammed", success=False)
            return False
        if self.bolt == "jammed" and source != "manual":
            return False  # a jammed motor does not move; a hand on the thumb-turn can
        was_jammed = self.bolt == "jammed"
        self.battery.spend(MOTOR_COST)
        self.bolt = target
        self._unlocked_at = self.true_now() if target == "unlocked" else None
        if was_jammed:
            self._record("unjammed")
        if record:
            self._record(operation, source=source, native=native)
        return True

    def _record(self, action: str, **fields: object) -> DeviceEvent:
        event = DeviceEvent(len(self.events) + 1, action, self.clock.now(), **fields)  # type: ignore[arg-type]
        self.events.append(event)
        self.radio.send(event, online=self.online)
        return event
