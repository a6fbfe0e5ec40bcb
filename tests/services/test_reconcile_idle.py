"""An idle lock costs a reconciler pass nothing (issue 4): the fleet is read in a few set-based
queries and only locks with something due get statements of their own. Counted with a SQLAlchemy
statement listener on the engine, never timed. Codes written by other transactions (with their
own clocks) are still placed on the next pass, and a new reconciler still verifies first (F19).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, event

from portner.services.keypad import change_window
from portner.services.keypad.due import LockView, lock_needs_step, read_fleet
from portner.services.keypad.reconcile import Reconciler
from tests.locks.test_faults_reconcile import START, KeypadSite

LOCKS = 5
FLEET_QUERIES = 5  # read_fleet: placements, recently removed, status, outstanding commands,
# open removal_overdue alarms
_TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "ROLLBACK"}


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.strip().upper() not in _TRANSACTION_CONTROL:  # SQLite's explicit BEGIN
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _writes(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")]


async def _idle_fleet(engine: Engine) -> tuple[KeypadSite, Reconciler, list[str]]:
    """Five locks, two codes confirmed on each, verified and heartbeat done: nothing is due."""
    site = KeypadSite.build(engine, START, locks=LOCKS)
    rec = site.reconciler()
    await site.onboard(rec)
    codes = [site.issue(), site.issue()]
    await site.settle(rec, passes=40)
    assert {p.state for p in site.placements()} == {"confirmed"}
    assert all(site.on_device(lock, c) for lock in site.devices for c in codes)
    return site, rec, codes


@pytest.mark.anyio
async def test_idle_pass_does_no_per_lock_work(sqlite_engine: Engine) -> None:
    await _idle_pass_statements(sqlite_engine)


@pytest.mark.anyio
@pytest.mark.postgres
async def test_idle_pass_does_no_per_lock_work_on_postgres(pg_engine: Engine) -> None:
    await _idle_pass_statements(pg_engine)


async def _idle_pass_statements(engine: Engine) -> None:
    site, rec, _ = await _idle_fleet(engine)
    site.clock.advance(timedelta(seconds=30))
    ops_before = len(site.log)
    with statements(engine) as seen:
        report = await rec.run_once(site.clock())
    assert report.operations == 0 and len(site.log) == ops_before  # no radio
    # The fleet reads only: not one statement per lock (five locks would need five at least).
    assert len(seen) == FLEET_QUERIES, seen
    assert _writes(seen) == []
    # Still idle a few minutes on: the same four reads every pass, whatever the pass count.
    for _ in range(10):
        site.clock.advance(timedelta(seconds=20))
        with statements(engine) as seen:
            assert (await rec.run_once(site.clock())).operations == 0
        assert len(seen) == FLEET_QUERIES


@pytest.mark.anyio
async def test_heartbeat_still_comes_for_an_idle_lock(sqlite_engine: Engine) -> None:
    site, rec, _ = await _idle_fleet(sqlite_engine)
    mark = site.clock()
    await site.settle(rec, passes=5, step=timedelta(minutes=15))  # an hour and a quarter on
    beats = site.ops("health", since=mark)
    assert sorted({b[1] for b in beats}) == sorted(site.devices)  # every lock, once the hour is up
    assert len(beats) == LOCKS


@pytest.mark.anyio
async def test_code_issued_in_another_transaction_is_placed_on_the_next_pass(sqlite_engine: Engine) -> None:
    site, rec, _ = await _idle_fleet(sqlite_engine)
    site.clock.advance(timedelta(seconds=30))
    assert (await rec.run_once(site.clock())).operations == 0
    # Another process issues a code for one lock, with a clock a minute behind ours: nothing in
    # the reconciler's memory knows of it, and its timestamps are older than the reconciler's.
    site.clock.advance(timedelta(minutes=-1))
    code_id = site.issue(["l-3"])
    site.clock.advance(timedelta(minutes=1, seconds=5))
    with statements(sqlite_engine) as seen:
        report = await rec.run_once(site.clock())
    assert report.by_lock == {"l-3": "set_code:confirmed"}
    assert site.on_device("l-3", code_id)
    assert len(_writes(seen)) > 0
    # Then revoked elsewhere: off the lock on the next pass.
    site.clock.advance(timedelta(seconds=5))
    site.revoke(code_id)
    report = await rec.run_once(site.clock())
    assert report.by_lock == {"l-3": "clear_code:confirmed"}
    assert not site.on_device("l-3", code_id)


@pytest.mark.anyio
async def test_window_changed_elsewhere_is_applied_on_the_next_pass(sqlite_engine: Engine) -> None:
    site, rec, codes = await _idle_fleet(sqlite_engine)
    site.clock.advance(timedelta(seconds=30))
    with site.engine.begin() as conn:  # a later window: lock-enforced, so rewritten with it
        change_window(conn, codes[0], not_before=site.clock() + timedelta(hours=1),
                      not_after=site.clock() + timedelta(hours=3), now=site.clock() - timedelta(minutes=5),
                      actor="account:acc-op")
    report = await rec.run_once(site.clock())
    assert set(report.by_lock.values()) == {"set_code:confirmed"} and len(report.by_lock) == LOCKS


@pytest.mark.anyio
async def test_a_new_reconciler_verifies_an_idle_fleet_before_anything_else(sqlite_engine: Engine) -> None:
    site, _, _ = await _idle_fleet(sqlite_engine)
    site.clock.advance(timedelta(seconds=30))
    mark = site.clock()
    rec = site.reconciler()  # restart: no memory of the locks
    report = await rec.run_once(site.clock())
    assert sorted(report.by_lock) == sorted(site.devices)
    assert set(report.by_lock.values()) == {"verify"}
    assert {op[2] for op in site.ops(since=mark)} == {"read"}
    site.clock.advance(timedelta(seconds=30))
    assert (await rec.run_once(site.clock())).operations == 0  # and idle again after


@pytest.mark.anyio
@pytest.mark.parametrize(("seed", "schedules"), [(7, True), (11, False)], ids=["lock-windows", "server-windows"])
async def test_locks_called_idle_have_nothing_to_do(sqlite_engine: Engine, seed: int, schedules: bool) -> None:
    """The skip must never hide work: through a seeded day of issues, revocations, windows,
    outages, faults and restarts, every lock the pass would skip is handed to reconcile_lock
    itself, which must then send nothing and write nothing."""
    site = KeypadSite.build(sqlite_engine, START, locks=3, capacity=12, schedules=schedules)
    rng = random.Random(seed)
    rec = site.reconciler()
    await site.onboard(rec)
    codes: list[str] = []
    skipped = 0
    seen_states: set[str] = set()
    for step in range(240):
        action = rng.random()
        now = site.clock()
        if action < 0.12 and len(codes) < 10:
            start = rng.choice([None, 0, 20, 90, 300])
            length = rng.choice([None, 10, 45, 240])
            not_before = None if start is None else now + timedelta(minutes=start)
            not_after = None if length is None else (not_before or now) + timedelta(minutes=length)
            locks = rng.choice([["l-1"], ["l-2"], ["l-3"], list(site.devices)])
            codes.append(site.issue(locks, not_before=not_before, not_after=not_after))
        elif action < 0.2 and codes:
            site.revoke(rng.choice(codes))
        elif action < 0.25:
            device = site.devices[rng.choice(sorted(site.devices))]
            device.go_online() if rng.random() < 0.6 else device.go_offline()
        elif action < 0.28:
            faults = site.devices[rng.choice(sorted(site.devices))].faults
            faults.busy_next += rng.randint(0, 2)
            faults.mask_reads = rng.choice([0.0, 0.5])
            faults.read_lag = timedelta(seconds=rng.choice([0, 60, 180]))
        elif action < 0.31 and codes:
            with site.engine.begin() as conn:
                start = now + timedelta(minutes=rng.choice([0, 30]))
                try:
                    change_window(conn, rng.choice(codes), not_before=start,
                                  not_after=start + timedelta(minutes=rng.choice([20, 120])), now=now,
                                  actor="account:acc-op")
                except ValueError:
                    pass  # revoked meanwhile: the service refuses, as it should
        elif action < 0.36:
            rec = site.reconciler()
        skipped += await _skips_are_idle(site, rec, now)
        await rec.run_once(now)
        seen_states |= {p.state for p in site.placements()}
        site.clock.advance(timedelta(seconds=rng.choice([2, 5, 30, 120, 600, 1800, 3 * 3600])))
    assert skipped > 150  # the check saw many idle locks, not a vacuous run
    assert seen_states >= {"confirmed", "removed", "pending"}


@pytest.mark.anyio
async def test_a_delivery_cut_short_is_redelivered_by_the_same_reconciler(sqlite_engine: Engine) -> None:
    """A pass cancelled while a set_code was out (the runtime stopping) leaves the command
    written and the placement "writing", nothing due on it: the outstanding command alone makes
    the lock due, and the same reconciler delivers it on its next pass."""
    site, rec, _ = await _idle_fleet(sqlite_engine)
    site.clock.advance(timedelta(seconds=30))
    code_id = site.issue(["l-2"])
    real = site.ports["l-2"]

    class Cancelled:
        address = real.address

        def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        async def set_code(self, slot, code, window=None, *, idempotency_key=None):  # type: ignore[no-untyped-def]
            raise asyncio.CancelledError

    site.ports["l-2"] = Cancelled()  # type: ignore[assignment]
    with pytest.raises(asyncio.CancelledError):
        await rec.run_once(site.clock())
    site.ports["l-2"] = real
    (placement,) = site.placements(code_id)
    assert placement.state == "writing"
    site.clock.advance(timedelta(seconds=5))
    report = await rec.run_once(site.clock())
    assert report.by_lock == {"l-2": "set_code:confirmed"} and site.on_device("l-2", code_id)


@pytest.mark.anyio
async def test_rereads_are_not_skipped(sqlite_engine: Engine) -> None:
    """Suspected-missing (a code gone from the lock behind Portner's back, F23) and unverified
    (the daily read while the lock is away, F18) codes are re-read by a verified reconciler: the
    skip check holds through both, and both come back to confirmed."""
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    await site.onboard(rec)
    device = site.devices["l-1"]
    code_id = site.issue()
    seen: set[str] = set()

    async def passes(count: int, step: timedelta) -> None:
        for _ in range(count):
            await _skips_are_idle(site, rec, site.clock())
            await rec.run_once(site.clock())
            seen.update(p.state for p in site.placements())
            site.clock.advance(step)

    await passes(3, timedelta(seconds=5))
    (placement,) = site.placements()
    assert placement.state == "confirmed"
    site.clock.advance(timedelta(minutes=10))  # past the read-lag grace of a fresh add
    device.clear_pin(placement.slot)  # someone at the lock deletes it
    rec = site.reconciler()  # restart: the verification read shows the slot empty
    await passes(60, timedelta(seconds=10))
    assert "suspected_missing" in seen and {p.state for p in site.placements()} == {"confirmed"}
    device.go_offline()
    await passes(30, timedelta(hours=1))  # the daily read finds nobody there
    assert "unverified" in seen
    device.go_online()
    await passes(30, timedelta(seconds=30))
    assert {p.state for p in site.placements()} == {"confirmed"} and site.on_device("l-1", code_id)


async def _skips_are_idle(site: KeypadSite, rec: Reconciler, now: datetime) -> int:
    """Hand every lock the pass would skip to reconcile_lock itself: it must send nothing and
    write nothing. Returns how many locks were skipped."""
    with site.engine.connect() as conn:
        snap = read_fleet(conn, now, rec.settings.timing)
    skipped = 0
    for lock_id in snap.lock_ids:
        rt = rec.runtime(lock_id)
        view = LockView(rt.capabilities, rt.verified, rt.next_verify_at)
        if lock_needs_step(lock_id, snap, view, now, timing=rec.settings.timing,
                           budget=rec.settings.budget, verify_every=rec.settings.verify_every,
                           heartbeat_every=rec.settings.heartbeat_every):
            continue
        skipped += 1
        ops_before = len(site.log)
        with statements(site.engine) as seen:
            done = await rec.reconcile_lock(lock_id, now, check_overdue=False)
        assert not done, (now, lock_id, done)
        assert len(site.log) == ops_before, (now, lock_id)
        assert _writes(seen) == [], (now, lock_id, _writes(seen))
    return skipped
