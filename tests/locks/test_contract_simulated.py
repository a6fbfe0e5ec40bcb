"""The lock contract against the simulated keypad backend, in both native numberings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from portner.locks.keypad_sim import KeypadLockDevice, SimulatedKeypadBackend, create_backend
from portner.locks.port import BackendConfig, HealthEvent, LockEvent
from tests.locks.contract import EventPump, LockContract


class SimulatedHarness:
    """The LockHarness for in-process keypad locks: device truth comes from the device itself."""

    def __init__(self, backend: SimulatedKeypadBackend, address: str) -> None:
        self.backend = backend
        self.port = backend.lock(address)
        self.device: KeypadLockDevice = backend.device(address)
        self.pump = EventPump(backend)

    def _native(self, slot: int) -> int:
        return self.port.slot_range.native(slot)

    async def device_code(self, slot: int) -> str | None:
        return self.device.stored(self._native(slot))

    async def put_foreign_code(self, slot: int, digits: str) -> None:
        self.device.program_at_keypad(self._native(slot), digits)

    async def press_keypad(self, digits: str) -> None:
        self.device.enter_code(digits)

    async def turn_thumb(self) -> None:
        self.device.turn_thumb()

    async def go_offline(self) -> None:
        self.device.go_offline()

    async def go_online(self) -> None:
        self.device.go_online()

    async def next_event(self, timeout: float = 5.0) -> LockEvent | HealthEvent:
        return await self.pump.next(timeout)

    async def radio_commands(self) -> int:
        return self.device.commands_sent


class SimulatedTime:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture(params=["0", "1"], ids=["zero-based", "one-based"])
async def simulated_harness(request: pytest.FixtureRequest) -> AsyncIterator[SimulatedHarness]:
    clock = SimulatedTime()
    config = BackendConfig("simulated", options={
        "first_native": request.param, "capacity": "10", "lengths": "4-8", "seed": "7"})
    backend = create_backend(config, now=clock)
    await backend.start()
    harness = SimulatedHarness(backend, "sim-1")
    harness.pump.start()
    yield harness
    await harness.pump.stop()
    await backend.stop()


class TestSimulatedContract(LockContract):
    @pytest.fixture
    async def harness(self, simulated_harness: SimulatedHarness) -> SimulatedHarness:
        return simulated_harness


@pytest.fixture
async def masked_harness() -> AsyncIterator[SimulatedHarness]:
    """A lock that shows stored codes masked and keeps no schedules (Nuki-like rules)."""
    config = BackendConfig("simulated", options={
        "capacity": "5", "lengths": "6", "alphabet": "123456789", "forbidden_prefixes": "12",
        "masked_reads": "true", "schedules": "false"})
    backend = create_backend(config, now=SimulatedTime())
    harness = SimulatedHarness(backend, "sim-masked")
    harness.pump.start()
    yield harness
    await harness.pump.stop()
    await backend.stop()


class TestMaskedSimulatedContract(LockContract):
    @pytest.fixture
    async def harness(self, masked_harness: SimulatedHarness) -> SimulatedHarness:
        return masked_harness
