"""No lock event is lost or counted twice on its way into the platform.

A Hypothesis state machine drives the simulated keypad lock (people at the door: the right code,
a wrong code, the thumb-turn; the lock going off the network and coming back, holding its reports
meanwhile) while its report radio duplicates and reorders reports, and the platform records
whatever arrives in batches of any size and at any moment. Invariants: no report is ever recorded
twice; once the lock has delivered everything, the platform's log holds every opening and attempt
the lock made, exactly once, failed attempts as failed. (A report a radio loses for good cannot be
recovered by any platform from a lock that keeps no readable log; tests of the adapters cover
what they do with gaps.)
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import create_engine, event, insert, select

from portner.locks.keypad_sim import create_backend
from portner.locks.port import BackendConfig, LockEvent
from portner.services.lock_activity import record_events
from portner.storage import tables as t
from tests.locks.contract import EventPump
from tests.services.test_lock_activity import ADDRESS, LOCK, World, at

CODE = "385172"  # nurse 1's visit code, in slot 2 (World puts its placement there)


class Clock:
    def __init__(self) -> None:
        self.now = at(55)

    def __call__(self):  # noqa: ANN204 - a plain callable for the device and backend
        return self.now


class EventDelivery(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        folder = Path(tempfile.mkdtemp(prefix="portner-events-"))
        self.engine = create_engine(f"sqlite:///{folder / 'events.sqlite'}")
        event.listen(self.engine, "connect", lambda c, _: c.execute("PRAGMA foreign_keys=ON"))
        t.metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            conn.execute(insert(t.audit_head).values(id=1, seq=0, hash=bytes(32)))
        World(self.engine)
        self.clock = Clock()
        self.loop = asyncio.new_event_loop()
        self.backend = create_backend(BackendConfig("simulated", options={"first_native": "0"}), now=self.clock)
        self.device = self.backend.device(ADDRESS)
        self.device.set_pin(1, CODE)  # Zigbee user 1 = Portner slot 2
        self.port = self.backend.lock(ADDRESS)
        self.arrived: list[LockEvent] = []
        self.pump = EventPump(self.backend)
        self.loop.run_until_complete(self._start_pump())
        self.loop.run_until_complete(self._drain())
        self.arrived.clear()  # the set-up's own reports

    async def _start_pump(self) -> None:
        self.pump.start()

    async def _drain(self) -> None:
        await asyncio.sleep(0)  # let the pump take what the backend has queued
        while True:
            try:
                item = await self.pump.next(timeout=0.001)
            except TimeoutError:
                return
            if isinstance(item, LockEvent):
                self.arrived.append(item)

    def _step(self, minutes: int = 1) -> None:
        self.clock.now += timedelta(minutes=minutes)
        self.device.tick()

    # --- the radio ---------------------------------------------------------------------------

    @rule(duplicate=st.sampled_from([0.0, 0.5]), reorder=st.sampled_from([0.0, 0.5]))
    def radio(self, duplicate: float, reorder: float) -> None:
        self.device.faults.duplicate_events = duplicate
        self.device.faults.reorder_events = reorder

    @rule()
    def offline(self) -> None:
        self.device.go_offline()

    @rule()
    def online(self) -> None:
        self.device.go_online()
        self.loop.run_until_complete(self.port.health())  # the hub notices it is back

    # --- people at the door ------------------------------------------------------------------

    @rule()
    def right_code(self) -> None:
        self._step()
        self.device.enter_code(CODE)

    @rule()
    def wrong_code(self) -> None:
        self._step()
        self.device.enter_code("999111")

    @rule()
    def thumb_turn(self) -> None:
        self._step()
        self.device.turn_thumb()

    # --- the platform ------------------------------------------------------------------------

    @precondition(lambda self: True)
    @rule(take=st.integers(min_value=0, max_value=5))
    def record(self, take: int) -> None:
        self.loop.run_until_complete(self._drain())
        batch, self.arrived = self.arrived[:take], self.arrived[take:]
        if batch:
            record_events(self.engine, batch, now=self.clock.now)

    def _rows(self) -> list[tuple[str, bool]]:
        with self.engine.connect() as conn:
            return [(r.key, r.success) for r in conn.execute(
                select(t.lock_activity.c.key, t.lock_activity.c.success).where(t.lock_activity.c.lock_id == LOCK))]

    @invariant()
    def never_twice(self) -> None:
        keys = [key for key, _ in self._rows()]
        assert len(keys) == len(set(keys))

    def teardown(self) -> None:
        try:
            self._all_delivered_once()
        finally:
            self.loop.run_until_complete(self.pump.stop())
            self.loop.close()
            self.engine.dispose()

    def _all_delivered_once(self) -> None:
        # Faults stop, the lock comes back, everything it holds is delivered and recorded.
        self.device.faults.duplicate_events = self.device.faults.reorder_events = 0.0
        self.device.go_online()
        self.loop.run_until_complete(self.port.health())
        self.device.radio.flush_held()
        self.loop.run_until_complete(self._drain())
        if self.arrived:
            record_events(self.engine, self.arrived, now=self.clock.now)
        made = [e for e in self.device.events if e.action in ("unlock", "lock") and e.source in ("keypad", "manual")]
        rows = self._rows()
        assert len(rows) == len({k for k, _ in rows}) == len(made), (len(rows), len(made))
        assert sum(ok for _, ok in rows) == sum(e.success for e in made)


TestEventDelivery = EventDelivery.TestCase
TestEventDelivery.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
