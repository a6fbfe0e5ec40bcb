"""The reconciler's transactional outbox, backoff and radio budget (SQLite and PostgreSQL)."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from portner.locks.port import KeypadCode, LockWindow, timed_out
from portner.services.keypad.budget import Backoff, RadioBudget
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from tests.locks.test_faults_reconcile import START, KeypadSite


class Crash(BaseException):
    """The process dies mid-delivery (not an adapter error the reconciler would catch)."""


class CrashingPort:
    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.address = inner.address

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)

    async def set_code(self, slot: int, code: KeypadCode, window: LockWindow | None = None, *, idempotency_key=None):  # type: ignore[no-untyped-def]
        raise Crash


@pytest.mark.anyio
@pytest.mark.postgres
async def test_command_is_written_with_the_state_change_and_redelivered_after_a_crash(
    pg_engine: Engine,
) -> None:
    await _crash_and_redeliver(pg_engine)


@pytest.mark.anyio
async def test_command_outbox_on_sqlite(sqlite_engine: Engine) -> None:
    await _crash_and_redeliver(sqlite_engine)


async def _crash_and_redeliver(engine: Engine) -> None:
    site = KeypadSite.build(engine, START)
    code_id = site.issue()
    real = site.ports["l-1"]
    site.ports["l-1"] = CrashingPort(real)  # type: ignore[assignment]
    with pytest.raises(Crash):
        await site.reconciler().run_once(site.clock())
    with engine.connect() as conn:
        (command,) = conn.execute(select(t.lock_commands)).all()
        placement = conn.execute(select(t.code_placements)).one()
    assert (command.kind, command.state, command.slot) == ("set_code", "requested", 1)
    assert (placement.state, placement.slot) == ("writing", 1)  # committed with the command
    assert not site.on_device("l-1", code_id)
    site.ports["l-1"] = real
    site.clock.advance(timedelta(seconds=5))
    await site.reconciler().run_once(site.clock())  # a restart delivers the same command
    with engine.connect() as conn:
        rows = conn.execute(select(t.lock_commands)).all()
        placement = conn.execute(select(t.code_placements)).one()
        assert verify_audit(conn).ok
    assert [(r.id, r.state, r.attempts) for r in rows] == [(command.id, "confirmed", 2)]
    assert placement.state == "confirmed" and site.on_device("l-1", code_id)
    assert site.audit_actions(code_id) == ["keypad_code:issued", "keypad_code:placed"]


@pytest.mark.anyio
@pytest.mark.postgres
async def test_transient_failures_back_off_and_stay_pending(pg_engine: Engine) -> None:
    site = KeypadSite.build(pg_engine, START)
    code_id = site.issue()
    port = site.ports["l-1"]
    port.fail_next_set.extend([timed_out("no answer")] * 4)
    rec = site.reconciler()
    waits = []
    for _ in range(5):
        before = len(site.ops("set"))
        while len(site.ops("set")) == before:
            await rec.run_once(site.clock())
            site.clock.advance(timedelta(seconds=1))
        (p,) = site.placements(code_id)
        if p.next_attempt_at is not None and p.state == "pending":
            waits.append(p.next_attempt_at - site.ops("set")[-1][0])
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and len(waits) == 4
    assert all(timedelta(seconds=2) <= w <= timedelta(seconds=10) * 2 ** i for i, w in enumerate(waits))
    with pg_engine.connect() as conn:
        states = [r.state for r in conn.execute(select(t.lock_commands).order_by(t.lock_commands.c.created_at))]
        assert conn.execute(select(func.count()).select_from(t.lock_alarms)).scalar() == 0
    assert states == ["timed_out"] * 4 + ["confirmed"]


def test_backoff_is_capped_full_jitter_and_seeded() -> None:
    backoff = Backoff(base=timedelta(seconds=10), cap=timedelta(minutes=15))
    a = [backoff.delay(n, random.Random(5)) for n in range(1, 12)]
    b = [backoff.delay(n, random.Random(5)) for n in range(1, 12)]
    assert a == b
    draws = [backoff.delay(20, random.Random(s)) for s in range(200)]
    assert max(draws) <= timedelta(minutes=15) and min(draws) < timedelta(minutes=1)  # jitter
    assert backoff.delay(1, random.Random(1), floor=timedelta(seconds=2)) >= timedelta(seconds=2)


@pytest.mark.anyio
async def test_commands_to_one_lock_are_spaced_and_budgeted(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    for _ in range(3):
        site.issue()
    rec = site.reconciler()
    await rec.run_once(site.clock())
    await rec.run_once(site.clock())  # same instant: the lock's 2 s spacing holds the rest back
    assert len(site.ops("set")) == 1
    site.clock.advance(timedelta(seconds=2))
    await rec.run_once(site.clock())
    assert len(site.ops("set")) == 2
    budget = RadioBudget(window=timedelta(minutes=10), limit=2)
    with sqlite_engine.connect() as conn:
        status = conn.execute(select(t.lock_status)).one()
    assert status.budget_used == 2
    assert not budget.may_send(status, timedelta(seconds=0), site.clock())
    assert budget.may_send(status, timedelta(0), site.clock() + timedelta(minutes=10))
