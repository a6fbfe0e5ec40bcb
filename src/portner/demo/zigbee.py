"""The demo's locks behind Zigbee2MQTT, through the real MQTT broker (`portner demo --locks zigbee2mqtt`).

Every lock of the demo municipality becomes a Zigbee keypad lock served by a simulated
Zigbee2MQTT bridge (portner.locks.z2m_device) on the broker, and Portner reaches it only through
its Zigbee2MQTT adapter, as it would reach a real one:

- each lock is onboarded (capabilities read, every slot swept for codes Portner did not set);
- each visit grant becomes a keypad code for the keypad locks of its door path
  (services.keypad_grants), shown once to the nurse's phone;
- the reconciler puts each code on its locks before the visit and takes it off at the window's end
  (server-enforced windows: Zigbee2MQTT cannot give a lock a schedule), confirming every write by
  reading it back;
- at the door the nurse types her code; the lock's report travels bridge -> broker -> adapter and
  becomes a lock_activity row linked to the visit.

While the platform is unreachable nothing is reconciled or recorded; the locks keep working on the
codes they hold, and their reports are recorded when the platform is back. Keypad codes therefore
go on a lock `ADD_LEAD` before their window (longer than the demo's outage), which a lock with
schedules of its own (Matter) would not need.

The adapter and the bridge run on an asyncio loop in a thread of their own; the day (simulated
time) calls into it and waits. Nothing here is needed by the default demo.
"""

from __future__ import annotations

import asyncio
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Engine, func, select, update

from portner.locks.keypad_sim import KeypadLockDevice
from portner.locks.port import BackendConfig, HealthEvent, KeypadCode, LockEvent
from portner.locks.z2m_device import Z2MBridgeSimulator
from portner.locks.zigbee2mqtt import create_backend
from portner.services.ids import IdSource
from portner.services.keypad import Reconciler, ReconcilerSettings, reveal_once
from portner.services.keypad.plan import Timing
from portner.services.keypad.vault import KeypadKeys
from portner.services.keypad_grants import sync_grant_codes
from portner.services.keys import MunicipalitySecrets
from portner.services.lock_activity import record_events
from portner.storage import tables as t

T = TypeVar("T")

ADD_LEAD = timedelta(hours=3)  # longer than the demo's two-hour outage
REMOVAL_MARGIN = Timing().removal_margin  # a removal later than this after the window is overdue
SLOTS = 10
PASSES_PER_SYNC = 1  # one reconciler pass per sync (each does at most one radio operation per lock)
PASS_SPACING = timedelta(seconds=5)
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


class _Loop:
    """An asyncio loop in a daemon thread; `run` hands it a coroutine and waits for the result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="portner-zigbee", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass(slots=True)
class ZigbeeStats:
    codes_issued: int = 0
    codes_revoked: int = 0
    codes_shown: int = 0
    keypad_attempts: int = 0
    keypad_opened: int = 0
    keypad_refused: Counter[str] = field(default_factory=Counter)
    reconcile_passes: int = 0


class ZigbeeFleet:
    """The demo's locks as Zigbee2MQTT keypad locks, and the platform's side of them."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime], *, broker: str, seed: int,
                 municipality_id: str, secrets: MunicipalitySecrets, ids: IdSource, lock_ids: list[str]) -> None:
        url = urlsplit(broker)
        if url.scheme != "mqtt" or not url.hostname:
            raise ValueError(f"--broker must be mqtt://HOST[:PORT], not {broker!r}")
        self.engine, self.clock, self.ids, self.seed = engine, clock, ids, seed
        self.municipality_id, self.broker = municipality_id, broker
        self.host, self.port = url.hostname, url.port or 1883
        self.keys = KeypadKeys.from_secrets(secrets, municipality_id)
        self.lock_ids = sorted(lock_ids)
        self.base = f"portner-demo-{uuid.uuid4().hex[:8]}"  # a run never sees another run's locks
        rng = random.Random(seed)
        self.devices = {
            lock_id: KeypadLockDevice(
                clock, first_native=0, capacity=SLOTS, seed=seed * 7919 + i, model="Zigbee keypad (simulated)",
                drift_ppm=rng.uniform(-30, 30), clock_offset=timedelta(seconds=rng.uniform(-8, 8)),
                battery_percent=rng.choice([100.0, 90.0, 75.0, 60.0]),
            )
            for i, lock_id in enumerate(self.lock_ids)
        }
        self.stats = ZigbeeStats()
        self.codes: dict[str, KeypadCode] = {}  # by grant id: what each nurse's phone shows her
        self._pending: list[LockEvent | HealthEvent] = []
        self._loop: _Loop | None = None
        # Set by the day: how to run something at a later simulated time, and whether the
        # platform is reachable now.
        self.schedule: Callable[[datetime, Callable[[], None]], None] | None = None
        self.platform_up: Callable[[], bool] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.locks).where(t.locks.c.id.in_(self.lock_ids))
                         .values(backend="zigbee2mqtt", address=t.locks.c.id, model="Zigbee keypad (simulated)"))
        self._loop = _Loop()
        self.bridge = Z2MBridgeSimulator(self.host, self.port, self.devices, base_topic=self.base, now=self.clock)
        self.backend = create_backend(BackendConfig("zigbee2mqtt", url=self.broker, options={
            "base_topic": self.base, "command_timeout": "10"}), now=self.clock)
        self.reconciler = Reconciler(
            self.engine, self.backend.lock, secrets_key=self.keys, now=self.clock, ids=self.ids,
            rng=random.Random(self.seed), settings=ReconcilerSettings(timing=Timing(add_lead=ADD_LEAD)),
        )
        self._run(self._connect())
        for lock_id in self.lock_ids:
            self._run(self.reconciler.onboard_lock(lock_id, self.clock()))

    async def _connect(self) -> None:
        await self.bridge.start()
        await self.backend.start()
        self._consumer = asyncio.create_task(self._consume())
        ports = [self.backend.lock(lock_id) for lock_id in self.lock_ids]
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            online = [(await port.health()).online is True for port in ports]
            if all(online):
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"only {sum(online)} of {len(ports)} Zigbee2MQTT locks came online "
                                   f"on {self.broker}")
            await asyncio.sleep(0.05)

    async def _consume(self) -> None:
        async for event in self.backend.events():
            self._pending.append(event)

    def stop(self) -> None:
        if self._loop is None:
            return
        self._run(self._disconnect())
        self._loop.close()
        self._loop = None

    async def _disconnect(self) -> None:
        self._consumer.cancel()
        await self.backend.stop()
        await self.bridge.stop()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        assert self._loop is not None, "the Zigbee fleet is not started"
        return self._loop.run(coro)

    # --- the platform's side ------------------------------------------------------------------

    def sync(self) -> None:
        """Follow the plan: codes for new grants, withdrawals for ended ones, then a few reconciler
        passes; and record what the locks reported since the last sync."""
        self.record()
        now = self.clock()
        changed = sync_grant_codes(self.engine, self.municipality_id, now=now, ids=self.ids, key=self.keys)
        self.stats.codes_issued += len(changed.issued)
        self.stats.codes_revoked += len(changed.revoked)
        self._show_codes(changed.issued, now)
        self._plan_removals(changed.issued)
        for i in range(PASSES_PER_SYNC):
            self._run(self.reconciler.run_once(now + i * PASS_SPACING))
            self.stats.reconcile_passes += 1

    def _plan_removals(self, code_ids: list[str]) -> None:
        """Server-enforced windows end on time only if Portner acts at the end: a pass over the
        code's locks at its window's end (what `portner serve` does every few seconds)."""
        if self.schedule is None or not code_ids:
            return
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.keypad_codes.c.not_after, t.code_placements.c.lock_id)
                .join(t.code_placements, t.code_placements.c.code_id == t.keypad_codes.c.id)
                .where(t.keypad_codes.c.id.in_(code_ids), t.keypad_codes.c.not_after.is_not(None))
            ).all()
        ends: dict[datetime, set[str]] = {}
        for row in rows:
            ends.setdefault(row.not_after, set()).add(row.lock_id)
        for end, lock_ids in ends.items():
            self.schedule(end + timedelta(seconds=1), lambda ids=sorted(lock_ids): self.pass_locks(ids))

    def pass_locks(self, lock_ids: list[str]) -> None:
        """One reconciler step for these locks now (the platform must be up: the day checks)."""
        if self.platform_up is not None and not self.platform_up():
            return
        for lock_id in lock_ids:
            self._run(self.reconciler.reconcile_lock(lock_id, self.clock()))

    def _show_codes(self, code_ids: list[str], now: datetime) -> None:
        """The nurse's app shows each new code once (it is never shown again, nor logged)."""
        for code_id in code_ids:
            with self.engine.begin() as conn:
                grant_id = conn.execute(select(t.keypad_codes.c.grant_id)
                                        .where(t.keypad_codes.c.id == code_id)).scalar_one()
                self.codes[grant_id] = reveal_once(conn, code_id, now=now, key=self.keys, actor="demo:nurse-app")
            self.stats.codes_shown += 1

    def record(self) -> None:
        events = self._run(self._take())
        if events:
            record_events(self.engine, events, now=self.clock())

    async def _take(self) -> list[LockEvent | HealthEvent]:
        await asyncio.sleep(0.01)  # let reports already on the wire arrive
        taken, self._pending = self._pending, []
        return taken

    # --- at the door --------------------------------------------------------------------------

    def type_code(self, grant_id: str, lock_id: str) -> bool:
        """The nurse types her code for this grant on the lock's keypad; True when the door opened."""
        code = self.codes.get(grant_id)
        self.stats.keypad_attempts += 1
        if code is None:
            self.stats.keypad_refused["no_code_on_phone"] += 1
            return False
        event = self._run(self._press(lock_id, code))
        if event.success:
            self.stats.keypad_opened += 1
            return True
        self.stats.keypad_refused[event.failure or "refused"] += 1
        return False

    def press_lock(self, lock_id: str) -> None:
        """The nurse leaving presses the lock key outside; the lock reports it (names nobody)."""
        self._run(self._lock_key(lock_id))

    async def _lock_key(self, lock_id: str) -> None:
        seen = len(self._pending)
        self.devices[lock_id].press_lock()
        for _ in range(200):
            if len(self._pending) > seen:
                return
            await asyncio.sleep(0.005)

    async def _press(self, lock_id: str, code: KeypadCode) -> Any:
        device = self.devices[lock_id]
        seen = len(self._pending)
        event = device.enter_code(code.reveal())
        # Wait (briefly) for the report to come back through the broker, so the order of the day
        # is the order Portner records.
        for _ in range(200):
            if len(self._pending) > seen:
                break
            await asyncio.sleep(0.005)
        return event

    # --- the report ---------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        now = self.clock()
        p, a, al = t.code_placements.c, t.lock_activity.c, t.lock_alarms.c
        with self.engine.connect() as conn:
            states = dict(conn.execute(select(p.state, func.count()).group_by(p.state)).all())
            k = t.keypad_codes.c
            ended = select(p.state, p.removed_at, p.confirmed_at, k.not_after).join(
                t.keypad_codes, k.id == p.code_id)
            rows = conn.execute(ended).all()
            margin = REMOVAL_MARGIN
            # Codes that outlived their window by more than the margin at any time of the day: still
            # on a lock now, or removed late (the platform was unreachable at the window's end).
            still_on = sum(1 for r in rows if r.not_after is not None and r.not_after < now
                           and r.state in ("confirmed", "writing", "removing", "unverified", "write_unconfirmed"))
            late = [(r.removed_at - r.not_after) for r in rows if r.removed_at is not None and r.not_after is not None
                    and r.confirmed_at is not None and r.removed_at > r.not_after + margin]
            confirmed = sum(1 for r in rows if r.confirmed_at is not None)
            activity = conn.execute(select(
                func.count().filter(a.success.is_(True), a.source == "keypad", a.operation == "unlock"),
                func.count().filter(a.visit_id.is_not(None)),
                func.count().filter(a.success.is_(False)),
            )).one()
            alarms = dict(conn.execute(select(al.kind, func.count()).group_by(al.kind)).all())
        commands = sum(d.commands_received for d in self.devices.values())
        return {
            "broker": self.broker,
            "base_topic": self.base,
            "locks": len(self.devices),
            "codes": {
                "issued": self.stats.codes_issued, "shown_once": self.stats.codes_shown,
                "withdrawn": self.stats.codes_revoked, "placements": dict(sorted(states.items())),
                "confirmed_by_locks": confirmed,
                "on_a_lock_after_their_window": still_on,
                "removed_late": len(late),
                "latest_removal_minutes": int(max(late).total_seconds() // 60) if late else 0,
                "removal_margin_minutes": int(margin.total_seconds() // 60),
                "add_lead_minutes": int(ADD_LEAD.total_seconds() // 60),
            },
            "keypad": {
                "attempts": self.stats.keypad_attempts, "opened": self.stats.keypad_opened,
                "refused": dict(sorted(self.stats.keypad_refused.items())),
            },
            "recorded": {"keypad_unlocks": activity[0], "linked_to_visits": activity[1],
                         "failed_attempts": activity[2]},
            "radio_commands": commands,
            "reconcile_passes": self.stats.reconcile_passes,
            "alarms": dict(sorted(alarms.items())),
        }
