"""Reconciler faults from ../shared/reference/locks.md (F1, F2, F5, F6, F18-F23, F25, F27).

Every test drives the real keypad service and reconciler over a migrated database and the
simulated keypad lock (portner.locks.keypad_sim) in simulated time: no sleeps, no mocks of our
own code. `KeypadSite` (also used by the reconciler and convergence tests) builds the site.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from portner.domain.model import (
    Door,
    DoorId,
    DoorKind,
    Home,
    HomeId,
    Lock,
    LockId,
    Municipality,
    MunicipalityId,
    Resident,
    ResidentId,
)
from portner.locks.codes import InvalidMaxUses, generate_code
from portner.locks.keypad_sim import KeypadLockDevice
from portner.locks.keypad_sim.backend import SimulatedKeypadBackend
from portner.locks.port import (
    BackendConfig,
    CommandResult,
    KeypadCode,
    LockWindow,
    Refusal,
    SlotReading,
    refused,
)
from portner.services.ids import IdSource
from portner.services.keypad import (
    KeypadKeys,
    Reconciler,
    change_window,
    issue_code,
    record_use,
    revoke_code,
)
from portner.services.keypad.store import stored_capabilities
from portner.storage import tables as t
from portner.storage.repository import Repository

OSLO = ZoneInfo("Europe/Oslo")
MASTER = bytes(range(32))
M = Municipality(id=MunicipalityId("m1"), name="Testkommune")


class SimClock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def __call__(self) -> datetime:
        return self.at

    def advance(self, delta: timedelta) -> datetime:
        self.at += delta
        return self.at


class CountingPort:
    """A LockPort that passes everything to the simulated lock and writes down each operation."""

    def __init__(self, inner, site: KeypadSite, lock_id: str) -> None:  # type: ignore[no-untyped-def]
        self.inner, self.site, self.lock_id = inner, site, lock_id
        self.address = inner.address
        self.fail_next_set: list[CommandResult] = []

    def _log(self, kind: str, slots: Sequence[int] = ()) -> None:
        self.site.log.append((self.site.clock(), self.lock_id, kind, tuple(slots)))

    async def capabilities(self):  # type: ignore[no-untyped-def]
        return await self.inner.capabilities()

    async def health(self):  # type: ignore[no-untyped-def]
        self._log("health")
        return await self.inner.health()

    async def read_slots(self, slots: Sequence[int]) -> list[SlotReading]:
        self._log("read", slots)
        return await self.inner.read_slots(slots)

    async def set_code(self, slot: int, code: KeypadCode, window: LockWindow | None = None, *,
                       idempotency_key: str | None = None) -> CommandResult:
        self._log("set", [slot])
        if self.fail_next_set:
            return self.fail_next_set.pop(0)
        return await self.inner.set_code(slot, code, window)

    async def clear_code(self, slot: int, *, idempotency_key: str | None = None) -> CommandResult:
        self._log("clear", [slot])
        return await self.inner.clear_code(slot)

    async def operate(self, operation, *, idempotency_key=None):  # type: ignore[no-untyped-def]
        return await self.inner.operate(operation)

    async def set_clock(self, now, zone):  # type: ignore[no-untyped-def]
        return await self.inner.set_clock(now, zone)


@dataclass
class KeypadSite:
    """One municipality, one resident, and `locks` doors each with a simulated keypad lock."""

    engine: Engine
    clock: SimClock
    devices: dict[str, KeypadLockDevice]
    keys: KeypadKeys
    ports: dict[str, CountingPort] = field(default_factory=dict)
    log: list[tuple[datetime, str, str, tuple[int, ...]]] = field(default_factory=list)
    ids: IdSource = field(default_factory=lambda: IdSource(4))
    seed: int = 1
    _draws: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    @classmethod
    def build(cls, engine: Engine, start: datetime, *, locks: int = 1, timezone: str = "Europe/Oslo",
              **device_options: object) -> KeypadSite:
        clock = SimClock(start)
        municipality = Municipality(id=M.id, name=M.name, timezone=timezone)
        backend = SimulatedKeypadBackend(BackendConfig("simulated"), now=clock)
        devices = {}
        with engine.begin() as conn:
            repo = Repository(conn)
            repo.add_municipality(municipality)
            repo.upsert_resident(Resident(ResidentId("res-1"), M.id, None, "Beboer"))
            repo.upsert_home(Home(HomeId("hom-1"), ResidentId("res-1"), "Gate 1", "demo"))
            for n in range(1, locks + 1):
                lock_id = f"l-{n}"
                door = Door(DoorId(f"d-{n}"), HomeId("hom-1"), n, DoorKind.FLAT if n == locks else DoorKind.BUILDING,
                            LockId(lock_id))
                repo.add_door_with_lock(door, Lock(LockId(lock_id), door.id))
                devices[lock_id] = backend.add_device(
                    lock_id, KeypadLockDevice(clock, seed=n, **device_options))  # type: ignore[arg-type]
        site = cls(engine, clock, devices, KeypadKeys.from_master(MASTER, M.id))
        site.ports = {lock_id: CountingPort(backend.lock(lock_id), site, lock_id) for lock_id in devices}
        return site

    def reconciler(self, **kwargs: object) -> Reconciler:
        """A new reconciler on the same database: what a restart gives."""
        return Reconciler(self.engine, self.ports.__getitem__, secrets_key=self.keys, now=self.clock,
                          ids=self.ids, rng=random.Random(self.seed), **kwargs)  # type: ignore[arg-type]

    def issue(self, lock_ids: Sequence[str] | None = None, *, not_before: datetime | None = None,
              not_after: datetime | None = None, max_uses: object = None,
              rng: random.Random | None = None) -> str:
        with self.engine.begin() as conn:
            return issue_code(
                conn, municipality_id=M.id, actor_id=None, grant_id=None, purpose="standing",
                lock_ids=list(lock_ids or self.devices), not_before=not_before, not_after=not_after,
                max_uses=max_uses, now=self.clock(), ids=self.ids, actor="account:acc-op",
                key=self.keys, rng=rng or random.Random(next(self._draws)),
            )

    def revoke(self, code_id: str, reason: str = "operator") -> None:
        with self.engine.begin() as conn:
            revoke_code(conn, code_id, reason=reason, now=self.clock(), actor="account:acc-op",
                        ids=self.ids)

    def digits(self, code_id: str) -> str:
        """The code's digits, as its holder sees them (reveal_once; then decrypted for tests)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.keypad_codes).where(t.keypad_codes.c.id == code_id)).one()
        return self.keys.decrypt(row.ciphertext, code_id, row.key_id).reveal()

    def placements(self, code_id: str | None = None) -> list:  # type: ignore[type-arg]
        query = select(t.code_placements).order_by(t.code_placements.c.lock_id)
        if code_id is not None:
            query = query.where(t.code_placements.c.code_id == code_id)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def alarms(self, kind: str | None = None) -> list:  # type: ignore[type-arg]
        query = select(t.lock_alarms)
        if kind is not None:
            query = query.where(t.lock_alarms.c.kind == kind)
        with self.engine.connect() as conn:
            return list(conn.execute(query).all())

    def audit_actions(self, code_id: str) -> list[str]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.audit_events).where(
                t.audit_events.c.subject == f"keypad_code:{code_id}").order_by(t.audit_events.c.seq))
            return [r.action for r in rows]

    def ops(self, kind: str | None = None, *, since: datetime | None = None,
            lock_id: str | None = None) -> list[tuple[datetime, str, str, tuple[int, ...]]]:
        return [e for e in self.log if (kind is None or e[2] == kind)
                and (since is None or e[0] >= since) and (lock_id is None or e[1] == lock_id)]

    def on_device(self, lock_id: str, code_id: str) -> bool:
        digits = self.digits(code_id)
        return digits in self.devices[lock_id].occupied().values()

    async def settle(self, rec: Reconciler, *, passes: int = 30, step: timedelta = timedelta(seconds=5)) -> None:
        for _ in range(passes):
            await rec.run_once(self.clock())
            self.clock.advance(step)

    async def onboard(self, rec: Reconciler) -> None:
        for lock_id in self.devices:
            await rec.onboard_lock(lock_id, self.clock())
        self.clock.advance(timedelta(seconds=5))


START = datetime(2026, 12, 7, 12, 0, tzinfo=OSLO)  # a Monday


def native(site: KeypadSite, lock_id: str, slot: int) -> int:
    return slot - 1 + site.devices[lock_id].first_native


# --- F1: use counts ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("limit", [2.0, "2"])
async def test_f01_use_count_limit_counts_down_and_removes(sqlite_engine: Engine, limit: object) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue(max_uses=limit)
    await site.settle(rec, passes=3)
    assert site.on_device("l-1", code_id)
    device = site.devices["l-1"]
    digits = site.digits(code_id)
    remaining = []
    for _ in range(2):
        assert device.enter_code(digits).success
        with site.engine.begin() as conn:
            remaining.append(record_use(conn, code_id, site.clock(), ids=site.ids))
    assert remaining == [1, 0]
    await site.settle(rec, passes=3)
    assert not site.on_device("l-1", code_id)
    assert device.enter_code(digits).success is False  # the third attempt is refused by the lock
    with site.engine.begin() as conn:
        assert record_use(conn, code_id, site.clock()) == 0
    assert "keypad_code:removal_confirmed" in site.audit_actions(code_id)


@pytest.mark.parametrize("bad", ["2.5", "two", 0, True])
def test_f01_bad_use_limit_is_refused_naming_the_field(sqlite_engine: Engine, bad: object) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    with pytest.raises(InvalidMaxUses, match="max_uses"):
        site.issue(max_uses=bad)


# --- F2: a reused slot never inherits the old window ------------------------------------------------


@pytest.mark.anyio
async def test_f02_reused_slot_gets_no_old_window(sqlite_engine: Engine) -> None:
    helsinki = ZoneInfo("Europe/Helsinki")
    site = KeypadSite.build(sqlite_engine, datetime(2024, 4, 30, 12, 0, tzinfo=helsinki),
                            timezone="Europe/Helsinki")
    rec = site.reconciler()
    await site.onboard(rec)
    old = site.issue(not_before=datetime(2024, 5, 1, 13, 0, tzinfo=helsinki),
                     not_after=datetime(2024, 5, 7, 15, 0, tzinfo=helsinki))
    await site.settle(rec, passes=3)
    (placement,) = site.placements(old)
    assert placement.enforcement == "lock" and placement.state == "confirmed"
    device = site.devices["l-1"]
    assert device.stored_window(native(site, "l-1", placement.slot)) is not None
    site.revoke(old)
    await site.settle(rec, passes=3)
    new = site.issue()  # a new nurse, no window
    await site.settle(rec, passes=3)
    (again,) = site.placements(new)
    assert again.state == "confirmed" and again.slot == placement.slot
    assert device.stored_window(native(site, "l-1", again.slot)) is None
    site.clock.at = datetime(2024, 5, 9, 8, 0, tzinfo=helsinki)  # after the old window's end
    assert device.enter_code(site.digits(new)).success


# --- F5 / F6: duplicates ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_f05_duplicate_in_another_slot_fails_once_and_is_not_confirmed(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    device = site.devices["l-1"]
    device.program_at_keypad(native(site, "l-1", 5), site.digits(code_id))  # slot A = 5 holds it
    await site.settle(rec, passes=40)  # more than 3 minutes of passes
    (p,) = site.placements(code_id)
    assert p.state == "failed" and p.last_refusal == "duplicate_code" and p.slot != 5
    assert len(site.ops("set")) == 1  # one attempt, no retry storm
    (alarm,) = site.alarms("code_rejected")
    assert "slot 5" in alarm.detail and site.digits(code_id) not in alarm.detail
    assert [a.subject for a in site.alarms("slot_foreign")] == ["5"]


@pytest.mark.anyio
async def test_f05_same_code_same_slot_is_an_idempotent_success(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    await site.settle(rec, passes=3)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed"
    # The lock answers "duplicate" naming our own slot (a redelivered write): that is success.
    site.ports["l-1"].fail_next_set.append(
        refused(Refusal.DUPLICATE_CODE, "exists", conflict_slot=p.slot))
    with site.engine.begin() as conn:
        from sqlalchemy import update
        conn.execute(update(t.code_placements).where(t.code_placements.c.id == p.id)
                     .values(state="pending"))
    await site.settle(rec, passes=3)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and site.alarms() == []


@pytest.mark.anyio
async def test_f06_duplicate_set_outside_fails_fast_with_few_radio_commands(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    device = site.devices["l-1"]
    device.program_at_keypad(native(site, "l-1", 3), site.digits(code_id))  # "1234" in slot 3
    before = device.commands_sent
    start = site.clock()
    await site.settle(rec, passes=120, step=timedelta(seconds=5))  # 10 minutes
    assert site.clock() - start >= timedelta(minutes=10)
    assert device.commands_sent - before <= 3
    (p,) = site.placements(code_id)
    assert p.state == "failed" and p.attempts == 1
    assert len(site.alarms("code_rejected")) == 1


@pytest.mark.anyio
async def test_f06_known_foreign_code_blocks_the_write_up_front(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 3), site.digits(code_id))
    await site.onboard(rec)  # the sweep reads slot 3: a foreign code, by MAC
    await site.settle(rec, passes=5)
    assert site.ops("set") == []  # no radio write at all
    (p,) = site.placements(code_id)
    assert p.state == "failed" and p.last_refusal == "duplicate_code"


def test_f06_issue_avoids_codes_seen_on_the_lock(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    with site.engine.begin() as conn:
        rules = stored_capabilities(conn, "l-1")
    assert rules is None  # not onboarded: default rules
    from portner.locks.codes import common_rules

    first = generate_code(common_rules([None]), random.Random(7))
    with site.engine.begin() as conn:
        from portner.services.keypad.store import observe_slot

        observe_slot(conn, "l-1", 3, site.clock(), observed="known", code_mac=site.keys.mac(first))
    code_id = site.issue(rng=random.Random(7))  # the same draw would give `first`
    assert site.digits(code_id) != first.reveal()


# --- F18 / F19: restarts --------------------------------------------------------------------------------


async def _confirmed_codes(site: KeypadSite, n: int) -> tuple[Reconciler, list[str]]:
    rec = site.reconciler()
    codes = [site.issue() for _ in range(n)]
    await site.settle(rec, passes=n + 3)
    assert all(p.state == "confirmed" for p in site.placements())
    return rec, codes


@pytest.mark.anyio
async def test_f18_restart_with_lock_unreachable_leaves_codes_unverified_then_converges(
    sqlite_engine: Engine,
) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    _, codes = await _confirmed_codes(site, 3)
    device = site.devices["l-1"]
    device.go_offline()
    mark = site.clock()
    rec = site.reconciler()  # restart
    await site.settle(rec, passes=12, step=timedelta(seconds=10))  # 120 s unreachable
    assert {p.state for p in site.placements()} == {"unverified"}
    assert site.ops("set", since=mark) == [] and site.ops("clear", since=mark) == []
    device.go_online()
    back = site.clock()
    while site.ops("read", since=back) == []:
        await rec.run_once(site.clock())
        site.clock.advance(timedelta(seconds=10))
        assert site.clock() - back < timedelta(minutes=2)
    assert len(site.ops("read", since=back)) == 1
    assert {p.state for p in site.placements()} == {"confirmed"}  # within one poll
    assert all(site.on_device("l-1", c) for c in codes)
    assert site.ops("set", since=mark) == []


@pytest.mark.anyio
async def test_f19_restart_reads_only(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    await _confirmed_codes(site, 10)
    mark = site.clock()
    events_before = len(site.devices["l-1"].events)
    rec = site.reconciler()  # restart
    await site.settle(rec, passes=30)
    assert site.ops("set", since=mark) == [] and site.ops("clear", since=mark) == []
    assert len(site.ops("read", since=mark)) == 1
    assert {p.state for p in site.placements()} == {"confirmed"}
    new_events = site.devices["l-1"].events[events_before:]
    assert not [e for e in new_events if e.action == "codes_changed"]


# --- F20: a schedule attached later is applied at once -----------------------------------------------


@pytest.mark.anyio
async def test_f20_attaching_a_schedule_removes_the_code_within_a_minute(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, schedules=False)  # server-enforced windows
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue()
    await site.settle(rec, passes=3)
    assert site.on_device("l-1", code_id)
    changed = site.clock()  # Monday 12:xx
    with site.engine.begin() as conn:
        change_window(conn, code_id, not_before=datetime(2026, 12, 8, 9, 0, tzinfo=OSLO),
                      not_after=datetime(2026, 12, 8, 10, 0, tzinfo=OSLO), now=changed,
                      actor="account:acc-op")
    await site.settle(rec, passes=6, step=timedelta(seconds=10))
    (clear,) = site.ops("clear")
    assert clear[0] - changed <= timedelta(seconds=60)
    assert not site.on_device("l-1", code_id)
    assert "keypad_code:deactivated" in site.audit_actions(code_id)
    with site.engine.connect() as conn:
        details = conn.execute(select(t.audit_events.c.details).where(
            t.audit_events.c.action == "keypad_code:deactivated")).scalar_one()
    assert details["reason"] == "schedule changed"
    # Tuesday: added a lead time before 09:00, removed at 10:00.
    site.clock.at = datetime(2026, 12, 8, 8, 44, tzinfo=OSLO)
    await site.settle(rec, passes=2)
    assert not site.on_device("l-1", code_id)
    site.clock.at = datetime(2026, 12, 8, 8, 46, tzinfo=OSLO)
    await site.settle(rec, passes=2)
    assert site.on_device("l-1", code_id)
    site.clock.at = datetime(2026, 12, 8, 10, 0, tzinfo=OSLO)
    await site.settle(rec, passes=2)
    assert not site.on_device("l-1", code_id)


# --- F21: masked reads, read lag, "already exists" ----------------------------------------------------


@pytest.mark.anyio
async def test_f21_masked_reads_cause_no_rewrites_over_an_hour(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, masked_reads=True)
    await site.onboard(site.reconciler())
    rec, codes = await _confirmed_codes(site, 2)
    mark = site.clock()
    for _ in range(6):  # restarts every 10 minutes force a verification read each time
        rec = site.reconciler()
        await site.settle(rec, passes=20, step=timedelta(seconds=30))
    assert site.clock() - mark >= timedelta(hours=1)
    assert site.ops("set", since=mark) == [] and site.ops("clear", since=mark) == []
    assert len(site.ops("read", since=mark)) >= 6
    assert {p.state for p in site.placements()} == {"confirmed"}
    with site.engine.connect() as conn:
        observed = {r.observed for r in conn.execute(select(t.lock_slots).where(
            t.lock_slots.c.code_id.is_not(None)))}
    assert observed == {"masked"}


@pytest.mark.anyio
async def test_f21_empty_read_soon_after_add_is_not_readded(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec, codes = await _confirmed_codes(site, 1)
    site.devices["l-1"].faults.read_lag = timedelta(minutes=2)
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 1), site.digits(codes[0]))  # re-added now
    mark = site.clock()
    rec = site.reconciler()
    await site.settle(rec, passes=12, step=timedelta(seconds=10))  # 2 minutes
    assert len(site.ops("read", since=mark)) >= 1
    assert site.ops("set", since=mark) == []
    assert {p.state for p in site.placements()} == {"confirmed"}


@pytest.mark.anyio
async def test_f21_already_exists_is_read_and_adopted(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 1), site.digits(code_id))
    site.ports["l-1"].fail_next_set.append(refused(Refusal.DUPLICATE_CODE, "already exists"))
    await site.settle(rec, passes=10)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and p.slot == 1
    assert len(site.ops("set")) == 1 and site.alarms() == []


# --- F22: failures stay with their lock ----------------------------------------------------------------


@pytest.mark.anyio
async def test_f22_one_lock_times_out_once_and_converges(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, locks=2)
    rec = site.reconciler()
    site.devices["l-2"].go_offline()  # the first write to lock 2 times out
    code_id = site.issue()
    await rec.run_once(site.clock())
    p1, p2 = site.placements(code_id)
    assert p1.state == "confirmed"
    assert p2.state == "pending" and p2.last_refusal == "timed_out"
    assert not site.on_device("l-2", code_id)
    site.devices["l-2"].go_online()
    await site.settle(rec, passes=60, step=timedelta(seconds=5))
    p1, p2 = site.placements(code_id)
    assert p1.state == p2.state == "confirmed"
    assert site.on_device("l-2", code_id)


# --- F23: removal confirmation, suspected missing, reappearing codes ----------------------------------


@pytest.mark.anyio
async def test_f23_revocation_and_removal_are_separate_audit_events(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec, (code_id,) = await _confirmed_codes(site, 1)
    site.devices["l-1"].go_offline()
    site.revoke(code_id)
    await site.settle(rec, passes=5)
    actions = site.audit_actions(code_id)
    assert "keypad_code:revocation_requested" in actions
    assert "keypad_code:removal_confirmed" not in actions
    site.devices["l-1"].go_online()
    await site.settle(rec, passes=60)
    actions = site.audit_actions(code_id)
    assert actions.index("keypad_code:revocation_requested") < actions.index("keypad_code:removal_confirmed")
    assert not site.on_device("l-1", code_id)


@pytest.mark.anyio
async def test_f23_missing_code_is_suspected_and_reread_before_reprogramming(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    _, (code_id,) = await _confirmed_codes(site, 1)
    site.clock.advance(timedelta(minutes=10))  # past the read-lag grace
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 1), None)  # gone from the lock
    rec = site.reconciler()
    first = site.clock()
    await rec.run_once(first)
    (p,) = site.placements(code_id)
    assert p.state == "suspected_missing"
    site.clock.advance(timedelta(seconds=30))
    await rec.run_once(site.clock())
    assert site.ops("set", since=first) == []
    assert len(site.ops("read", since=first)) == 1  # no re-read before 60 s
    site.clock.advance(timedelta(seconds=31))
    await site.settle(rec, passes=5)
    reads = site.ops("read", since=first)
    assert len(reads) >= 2 and reads[1][0] - first >= timedelta(seconds=60)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and site.on_device("l-1", code_id)
    assert "keypad_code:missing_on_lock" in site.audit_actions(code_id)


@pytest.mark.anyio
async def test_f23_revoked_code_reappearing_raises_alarm_and_is_removed_again(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec, (code_id,) = await _confirmed_codes(site, 1)
    site.revoke(code_id)
    await site.settle(rec, passes=3)
    assert not site.on_device("l-1", code_id)
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 1), site.digits(code_id))  # it is back
    rec = site.reconciler()  # the next verification (a restart here) reads the managed slots
    await site.settle(rec, passes=5)
    assert [a.subject for a in site.alarms("code_reappeared")] == ["1"]
    assert not site.on_device("l-1", code_id)
    (p,) = site.placements(code_id)
    assert p.state == "removed"
    assert site.audit_actions(code_id).count("keypad_code:removal_confirmed") == 2


# --- F25: radio budget in steady state --------------------------------------------------------------


@pytest.mark.anyio
async def test_f25_steady_state_day_stays_within_the_traffic_budget(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, capacity=250)
    rec, _ = await _confirmed_codes(site, 10)
    mark = site.clock()
    await site.settle(rec, passes=24 * 12, step=timedelta(minutes=5))
    day = site.ops(since=mark)
    kinds = Counter(e[2] for e in day)
    assert kinds["set"] == 0 and kinds["clear"] == 0
    assert kinds["read"] <= 1 and kinds["health"] <= 24
    assert all(len(e[3]) <= 10 for e in day if e[2] == "read")  # never a 250-slot scan
    per_hour = Counter(((e[0] - mark) // timedelta(hours=1), e[2], e[3]) for e in day)
    assert max(per_hour.values()) <= 3


# --- F27: unverifiable slots -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_f27_unverifiable_slot_is_quarantined_and_never_allocated(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, capacity=12)
    device = site.devices["l-1"]
    for slot in range(1, 10):
        device.program_at_keypad(native(site, "l-1", slot), f"{slot}0{slot}7{slot}")
    device.program_at_keypad(native(site, "l-1", 10), "918273")
    device.faults.unreadable.add(native(site, "l-1", 10))
    rec = site.reconciler()
    await site.onboard(rec)
    with site.engine.connect() as conn:
        rows = {r.slot: r for r in conn.execute(select(t.lock_slots).where(t.lock_slots.c.lock_id == "l-1"))}
    assert rows[10].quarantine_reason == "unverifiable" and rows[10].unreadable_reads == 3
    assert {s for s, r in rows.items() if r.quarantine_reason == "foreign"} == set(range(1, 10))
    (alarm,) = site.alarms("slot_unverifiable")
    assert alarm.subject == "10" and "link quality" in alarm.detail
    assert len(site.alarms("slot_foreign")) == 9
    code_id = site.issue()
    await site.settle(rec, passes=3)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and p.slot == 11
    assert device.stored(native(site, "l-1", 10)) == "918273"  # never overwritten
    for slot in range(1, 10):
        assert device.stored(native(site, "l-1", slot)) == f"{slot}0{slot}7{slot}"


def test_codes_never_reach_commands_or_audit(sqlite_engine: Engine) -> None:
    """Privacy: command args and audit details carry ids, never digits."""
    site = KeypadSite.build(sqlite_engine, START)
    code_id = site.issue()
    site.revoke(code_id)
    digits = site.digits(code_id)
    with site.engine.connect() as conn:
        texts = [str(r.args) for r in conn.execute(select(t.lock_commands))]
        texts += [str(r.details) for r in conn.execute(select(t.audit_events))]
    assert texts and not any(digits in text for text in texts)
