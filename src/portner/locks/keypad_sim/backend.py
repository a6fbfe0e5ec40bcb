"""The "simulated" lock backend: the lock port spoken over in-process keypad lock devices.

It behaves as a real adapter must: it maps Portner's slots to the lock's native users, checks
slot ranges and code rules before any radio command, confirms a write only by reading it back,
never calls an unanswered command confirmed, and turns the device's log into normalised events
whose keys come from the lock's own sequence numbers (so a redelivered report collapses).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta

from portner.locks.keypad_sim.device import KeypadLockDevice
from portner.locks.keypad_sim.faults import Faults
from portner.locks.keypad_sim.replies import DeviceEvent, ReadKind, ReplyKind
from portner.locks.port import (
    CONFIRMED,
    BackendConfig,
    Capabilities,
    CodeRules,
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
    SlotRange,
    SlotReading,
    SlotState,
    Source,
    refused,
    timed_out,
)

_SOURCES = {"keypad": Source.KEYPAD, "manual": Source.MANUAL, "remote": Source.REMOTE,
            "auto": Source.AUTO}
_CONDITIONS = {"jammed": Condition.JAMMED, "unjammed": Condition.UNJAMMED,
               "lockout": Condition.LOCKOUT, "battery": Condition.BATTERY,
               "battery_replaced": Condition.BATTERY_REPLACED,
               "codes_changed": Condition.CODES_CHANGED, "clock": Condition.CLOCK}
_TRANSIENT = {ReplyKind.BUSY: Refusal.BUSY, ReplyKind.JAMMED: Refusal.JAMMED}
_PERMANENT = {ReplyKind.BAD_CODE: Refusal.BAD_CODE, ReplyKind.OUT_OF_RANGE: Refusal.SLOT_OUT_OF_RANGE,
              ReplyKind.FULL: Refusal.LOCK_FULL, ReplyKind.UNSUPPORTED: Refusal.NOT_SUPPORTED}


def _flag(value: str, name: str) -> bool:
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name} must be true or false, not {value!r}")


def _lengths(value: str) -> frozenset[int]:
    """Parse "6", "4,6" or "4-8" (exact lengths, F3)."""
    try:
        if "-" in value:
            low, high = (int(part) for part in value.split("-", 1))
            return frozenset(range(low, high + 1))
        return frozenset(int(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"option lengths must be like 6, 4,6 or 4-8, not {value!r}") from None


def device_options(options: dict[str, str]) -> dict[str, object]:
    """Turn BackendConfig.options (strings) into KeypadLockDevice keyword arguments."""
    parsed: dict[str, object] = {}
    for name, value in options.items():
        if name in ("first_native", "capacity", "seed", "lockout_after"):
            try:
                parsed[name] = int(value)
            except ValueError:
                raise ValueError(f"option {name} must be a whole number, not {value!r}") from None
        elif name in ("masked_reads", "schedules", "reject_duplicates", "names_conflict"):
            parsed[name] = _flag(value, name)
        elif name == "lengths":
            parsed[name] = _lengths(value)
        elif name == "alphabet":
            parsed[name] = value
        elif name == "forbidden_prefixes":
            parsed[name] = tuple(p for p in value.split(",") if p)
        elif name == "drift_ppm":
            parsed[name] = float(value)
        elif name == "auto_lock_seconds":
            parsed["auto_lock_after"] = timedelta(seconds=int(value))
        elif name == "model":
            parsed[name] = value
        else:
            raise ValueError(f"unknown option {name!r} for the simulated lock backend")
    return parsed


def code_problem(rules: CodeRules, code: KeypadCode) -> str | None:
    """Why a lock with these rules refuses `code`, or None. (Only what the lock refuses; the
    platform's weak-code policy is applied where codes are chosen.)"""
    digits = code.reveal()
    if rules.lengths is not None and len(digits) not in rules.lengths:
        return f"this lock takes codes of exactly {sorted(rules.lengths)} characters, not {len(digits)}"
    if any(ch not in rules.alphabet for ch in digits):
        return f"this lock's keypad has only {rules.alphabet}"
    if any(digits.startswith(prefix) for prefix in rules.forbidden_prefixes):
        return "this lock refuses codes starting with a forbidden prefix"
    return None


class SimulatedKeypadBackend:
    """In-process keypad locks behind the lock port. Events from every lock go to one queue."""

    name = "simulated"

    def __init__(self, config: BackendConfig, *, now: Callable[[], datetime]) -> None:
        self._config = config
        self._now = now
        self._options = device_options(dict(config.options))
        self._devices: dict[str, KeypadLockDevice] = {}
        self._ports: dict[str, SimulatedKeypadPort] = {}
        self._managed: dict[str, int] = {}
        self._queue: asyncio.Queue[LockEvent | HealthEvent | None] = asyncio.Queue()
        self._link_events = 0

    def __repr__(self) -> str:
        return f"SimulatedKeypadBackend(locks={sorted(self._devices)})"

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._queue.put_nowait(None)  # ends every events() iterator

    def device(self, address: str) -> KeypadLockDevice:
        """The device at `address`, made with the configured options on first use."""
        if address not in self._devices:
            self.add_device(address, KeypadLockDevice(self._now, faults=Faults(), **self._options))  # type: ignore[arg-type]
        return self._devices[address]

    def add_device(self, address: str, device: KeypadLockDevice, *,
                   managed_slots: int | None = None) -> KeypadLockDevice:
        """Attach `device` at `address`. `managed_slots`: Portner may use only the lock's first
        N users; the rest (a master or installer code, say) belong to the lock."""
        if managed_slots is not None and not 1 <= managed_slots <= device.capacity:
            raise ValueError(f"managed_slots must be 1..{device.capacity}, not {managed_slots}")
        if not address:
            raise ValueError("a lock address must not be empty")
        if address in self._devices:
            raise ValueError(f"a lock already has the address {address!r}")
        self._devices[address] = device
        self._managed[address] = managed_slots or device.capacity
        device.radio.listen(lambda report: self._on_report(address, report))
        return device

    def lock(self, address: str) -> SimulatedKeypadPort:
        if address not in self._ports:
            device = self.device(address)
            slots = SlotRange(self._managed[address], device.first_native)
            self._ports[address] = SimulatedKeypadPort(self, address, device, slots)
        return self._ports[address]

    async def events(self) -> AsyncIterator[LockEvent | HealthEvent]:
        while True:
            item = await self._queue.get()
            if item is None:
                self._queue.put_nowait(None)  # let other iterators end too
                return
            yield item

    # --- normalisation ------------------------------------------------------------------------

    def _on_report(self, address: str, report: object) -> None:
        if isinstance(report, DeviceEvent):
            self._queue.put_nowait(self._normalise(address, report))

    def _normalise(self, address: str, event: DeviceEvent) -> LockEvent | HealthEvent:
        received_at = self._now()
        key = f"{address}#{event.sequence}"
        slots = self.lock(address).slot_range
        slot = slots.slot(event.native) if event.native is not None else None
        if event.action in ("unlock", "lock"):
            return LockEvent(
                lock=address, operation=Operation(event.action),
                source=_SOURCES.get(event.source, Source.UNKNOWN), success=event.success,
                received_at=received_at, key=key, slot=slot, lock_time=event.lock_time,
                sequence=event.sequence, failure=event.failure)
        return HealthEvent(lock=address, condition=_CONDITIONS[event.action],
                           received_at=received_at, key=key, percent=event.percent,
                           lock_time=event.lock_time, slot=slot)

    def link_changed(self, address: str, online: bool) -> None:
        """The adapter noticed the lock answer again (or stop answering)."""
        self._link_events += 1
        self._queue.put_nowait(HealthEvent(
            lock=address, condition=Condition.ONLINE if online else Condition.OFFLINE,
            received_at=self._now(), key=f"{address}#link-{self._link_events}"))


class SimulatedKeypadPort:
    """One simulated keypad lock through the port (slots 1..capacity)."""

    def __init__(self, backend: SimulatedKeypadBackend, address: str, device: KeypadLockDevice,
                 slots: SlotRange) -> None:
        self.address = address
        self._backend = backend
        self._device = device
        self.slot_range = slots
        self._rules = CodeRules(lengths=device.lengths, alphabet=device.alphabet,
                                forbidden_prefixes=device.forbidden_prefixes, reject_weak=False)
        self._believed_online = True

    def __repr__(self) -> str:
        return f"SimulatedKeypadPort({self.address!r})"

    async def capabilities(self) -> Capabilities:
        features = {Feature.KEYPAD, Feature.REMOTE_OPERATION, Feature.CLOCK, Feature.USER_EVENTS}
        if self._device.schedules:
            features.add(Feature.LOCK_SCHEDULES)
        return Capabilities(
            features=frozenset(features), code_rules=self._rules, slots=self.slot_range,
            schedule_slots_per_user=1 if self._device.schedules else None,
            masked_reads=self._device.masked_reads, min_command_interval=timedelta(seconds=2),
            model=self._device.model)

    async def health(self) -> Health:
        status = self._device.read_status()
        self._saw(status is not None)
        if status is None:
            return Health(online=False)
        clock = status["clock"]
        assert isinstance(clock, datetime)
        return Health(online=True, battery_percent=float(status["battery"]),  # type: ignore[arg-type]
                      jammed=status["bolt"] == "jammed", lock_time=clock,
                      clock_offset=clock - self._backend._now(), bolt=str(status["bolt"]))

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        natives = [self.slot_range.native(slot) for slot in slots]  # ValueError before any radio
        return [self._read(slot, native) for slot, native in zip(slots, natives, strict=True)]

    def _read(self, slot: int, native: int) -> SlotReading:
        read = self._device.read_pin(native)
        if read.kind is not ReadKind.NO_ANSWER:  # silence alone may be one deaf slot (F27)
            self._saw(True)
        if read.kind is ReadKind.CODE and read.digits:
            return SlotReading(slot, SlotState.KNOWN, KeypadCode(read.digits), read.enabled)
        if read.kind is ReadKind.MASKED:
            return SlotReading(slot, SlotState.MASKED, None, read.enabled)
        if read.kind is ReadKind.EMPTY:
            return SlotReading(slot, SlotState.EMPTY, None, read.enabled)
        return SlotReading(slot, SlotState.UNREADABLE)

    async def set_code(self, slot: int, code: KeypadCode, window: LockWindow | None = None, *,
                       idempotency_key: str | None = None) -> CommandResult:
        early = self._check_slot(slot)
        if early is not None:
            return early
        problem = code_problem(self._rules, code)
        if problem is not None:
            return refused(Refusal.BAD_CODE, problem)
        if window is not None and not self._device.schedules:
            return refused(Refusal.NOT_SUPPORTED, "this lock keeps no schedules")
        native = self.slot_range.native(slot)
        reply = self._device.set_pin(native, code.reveal(), window)
        self._saw(reply.kind is not ReplyKind.OFFLINE)
        if reply.kind is ReplyKind.OFFLINE:
            return timed_out("the lock did not answer")
        if reply.kind is ReplyKind.DUPLICATE:
            conflict = self.slot_range.slot(reply.conflict) if reply.conflict is not None else None
            return refused(Refusal.DUPLICATE_CODE, "another user on the lock holds this code",
                           conflict_slot=conflict)
        if reply.kind in _PERMANENT:
            return refused(_PERMANENT[reply.kind], f"the lock answered {reply.kind.value}")
        if reply.kind in _TRANSIENT:
            return refused(_TRANSIENT[reply.kind], f"the lock answered {reply.kind.value}")
        # OK, or ALREADY_EXISTS (F21: read, then compare), is confirmed only by a read-back.
        reading = self._read(slot, native)
        if reading.state is SlotState.KNOWN and reading.code == code:
            return CONFIRMED
        if reading.state is SlotState.MASKED and reply.ok:
            return CommandResult(CONFIRMED.outcome, detail="accepted; the lock masks its codes")
        if reply.kind is ReplyKind.ALREADY_EXISTS:
            return refused(Refusal.TEMPORARY, "the lock says the user already exists; read again later")
        return refused(Refusal.WRITE_UNCONFIRMED,
                       f"the lock accepted the code but reads back {reading.state.value}")

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        early = self._check_slot(slot)
        if early is not None:
            return early
        native = self.slot_range.native(slot)
        reply = self._device.clear_pin(native)
        self._saw(reply.kind is not ReplyKind.OFFLINE)
        if reply.kind is ReplyKind.OFFLINE:
            return timed_out("the lock did not answer")
        if reply.kind in _TRANSIENT:
            return refused(_TRANSIENT[reply.kind], f"the lock answered {reply.kind.value}")
        if reply.kind in _PERMANENT:
            return refused(_PERMANENT[reply.kind], f"the lock answered {reply.kind.value}")
        reading = self._read(slot, native)
        if reading.state is SlotState.EMPTY:
            return CONFIRMED
        return refused(Refusal.WRITE_UNCONFIRMED,
                       f"the lock accepted the clear but reads back {reading.state.value}")

    async def operate(self, operation: Operation, *, idempotency_key: str | None = None) -> CommandResult:
        reply = self._device.remote(operation.value)
        self._saw(reply.kind is not ReplyKind.OFFLINE)
        if reply.kind is ReplyKind.OFFLINE:
            return timed_out("the lock did not answer")
        if reply.kind in _TRANSIENT:
            return refused(_TRANSIENT[reply.kind], f"the lock answered {reply.kind.value}")
        wanted = "locked" if operation is Operation.LOCK else "unlocked"
        if self._device.bolt != wanted:  # the lock's own state report
            return refused(Refusal.JAMMED, f"the lock reports {self._device.bolt}")
        return CONFIRMED

    async def set_clock(self, now: datetime, zone: str) -> CommandResult:
        reply = self._device.set_clock(now, zone)
        self._saw(reply.kind is not ReplyKind.OFFLINE)
        return CONFIRMED if reply.ok else timed_out("the lock did not answer")

    def _check_slot(self, slot: int) -> CommandResult | None:
        if not 1 <= slot <= self.slot_range.count:
            return refused(Refusal.SLOT_OUT_OF_RANGE,
                           f"slot {slot} is outside this lock's slots 1..{self.slot_range.count}")
        return None

    def _saw(self, answered: bool) -> None:
        if answered != self._believed_online:
            self._believed_online = answered
            self._backend.link_changed(self.address, answered)


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> SimulatedKeypadBackend:
    return SimulatedKeypadBackend(config, now=now)
