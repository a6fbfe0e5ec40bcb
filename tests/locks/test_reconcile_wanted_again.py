"""A code the plan wants again while it is being removed (its window moved, F20) converges.

Found by the convergence machine (tests/locks/test_convergence.py): a clear that timed out left
its placement "removing", waiting for a retry; the window was then extended, so the plan wanted
the code again. No step of a pass took it up any more (removals only take codes the plan does
not want, additions only pending/removed ones), so it stayed "removing" on the lock for good.
Now the removal is cancelled by writing the code again in its own slot (confirmed only by the
lock's answer), and a clear already out when the plan changed still finishes, after which the
code is placed again at once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from portner.services.keypad import change_window
from portner.storage import tables as t
from tests.locks.test_convergence import ReconcileMachine
from tests.locks.test_faults_reconcile import START, KeypadSite, native


class _Crash(BaseException):
    """The process dies while a command is on its way (not an adapter error: nothing catches it)."""


def _extend(site: KeypadSite, code_id: str, hours: int = 2):  # type: ignore[no-untyped-def]
    end = site.clock() + timedelta(hours=hours)
    with site.engine.begin() as conn:
        change_window(conn, code_id, not_before=None, not_after=end, now=site.clock(),
                      actor="account:acc-op")
    return end


def _commands(site: KeypadSite) -> list:  # type: ignore[type-arg]
    with site.engine.connect() as conn:
        return list(conn.execute(select(t.lock_commands).order_by(t.lock_commands.c.created_at)).all())


@pytest.mark.anyio
@pytest.mark.parametrize("schedules", [False, True], ids=["server-enforced", "lock-enforced"])
async def test_removal_waiting_for_its_retry_is_cancelled_when_the_window_is_extended(
    sqlite_engine: Engine, schedules: bool
) -> None:
    site = KeypadSite.build(sqlite_engine, START, schedules=schedules)
    device = site.devices["l-1"]
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue(not_after=START + timedelta(minutes=10))
    await site.settle(rec, passes=3)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and p.enforcement == ("lock" if schedules else "server")
    digits, slot = site.digits(code_id), native(site, "l-1", p.slot)

    # The window ends while the lock is off the network: the clear times out and waits.
    device.go_offline()
    site.clock.at = START + timedelta(minutes=10, seconds=10)
    await rec.run_once(site.clock())
    (p,) = site.placements(code_id)
    assert p.state == "removing" and p.next_attempt_at > site.clock()
    assert device.stored(slot) == digits

    # The visit is extended before the retry: the plan wants the code again.
    site.clock.advance(timedelta(seconds=1))
    new_end = _extend(site, code_id)
    device.go_online()
    mark = site.clock()
    await site.settle(rec, passes=30)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed", p.state
    assert device.stored(native(site, "l-1", p.slot)) == digits
    assert site.ops("clear", since=mark) == []  # the removal was cancelled, not carried out
    assert len(site.ops("set", since=mark)) == 1  # one write back into its own slot
    if schedules:  # the lock enforces the new window, not the one that had ended
        assert device.stored_window(native(site, "l-1", p.slot)).end == new_end  # type: ignore[union-attr]

    # The new window's end removes it as any other.
    site.clock.at = new_end
    await site.settle(rec, passes=3)
    (p,) = site.placements(code_id)
    assert p.state == "removed" and not site.on_device("l-1", code_id)
    assert site.alarms("removal_overdue") == []


@pytest.mark.anyio
async def test_clear_out_when_the_window_is_extended_finishes_and_the_code_goes_back(
    sqlite_engine: Engine,
) -> None:
    site = KeypadSite.build(sqlite_engine, START, schedules=False)
    device, port = site.devices["l-1"], site.ports["l-1"]
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue(not_after=START + timedelta(minutes=10))
    await site.settle(rec, passes=3)
    digits = site.digits(code_id)

    # The window ends and the process dies while the clear is on its way.
    async def crash(slot: int, *, idempotency_key: str | None = None) -> None:
        raise _Crash

    port.clear_code = crash  # type: ignore[method-assign]
    site.clock.at = START + timedelta(minutes=10, seconds=10)
    with pytest.raises(_Crash):
        await rec.run_once(site.clock())
    del port.clear_code  # the class's own again
    (p,) = site.placements(code_id)
    assert p.state == "removing"
    assert [c.state for c in _commands(site) if c.kind == "clear_code"] == ["requested"]

    # The visit is extended, then the reconciler comes back: the clear that was written still
    # goes out (a command once written is finished), and the code is placed again at once.
    site.clock.advance(timedelta(seconds=1))
    _extend(site, code_id)
    rec = site.reconciler()
    mark = site.clock()
    await site.settle(rec, passes=6)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed", (p.state, p.next_attempt_at)
    assert device.stored(native(site, "l-1", p.slot)) == digits
    assert len(site.ops("clear", since=mark)) == 1 and len(site.ops("set", since=mark)) == 1


def test_convergence_machine_minimal_sequence() -> None:
    """The shortest form of the CI sequence, replayed on the machine itself."""
    state = ReconcileMachine()
    state.issue(length=10, locks=("l-1",), start_in=None)
    state.step(seconds=2)
    state.network(lock="l-1", online=False)
    state.step(seconds=600)  # the window is over: the clear times out
    state.reschedule(index=0, length=None, start_in=None)  # wanted again, with no end
    state.step(seconds=5)
    state.confirmed_means_on_the_lock()
    state.overdue_codes_have_an_alarm()
    state.teardown()


def _open_overdue(site: KeypadSite) -> list:  # type: ignore[type-arg]
    return [a for a in site.alarms("removal_overdue") if a.cleared_at is None]


async def _late_removal(engine: Engine):  # type: ignore[no-untyped-def]
    """A code whose window ended with its lock off the network, past the removal's margin."""
    site = KeypadSite.build(engine, START, schedules=False)
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue(not_after=START + timedelta(minutes=10))
    await site.settle(rec, passes=3)
    site.devices["l-1"].go_offline()
    site.clock.at = START + timedelta(minutes=10, seconds=10)
    await site.settle(rec, passes=3, step=timedelta(minutes=3))
    (alarm,) = _open_overdue(site)
    assert alarm.subject == code_id
    return site, rec, code_id


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["fleet pass", "one lock"])
async def test_overdue_alarm_is_cleared_when_the_plan_wants_the_code_again(
    sqlite_engine: Engine, path: str
) -> None:
    site, rec, code_id = await _late_removal(sqlite_engine)

    # The visit is extended: the removal the alarm was raised for is not due any more, so the
    # alarm is cleared, even before the lock is back (nothing on the lock needs to change).
    _extend(site, code_id)
    if path == "fleet pass":
        await rec.run_once(site.clock())
    else:
        await rec.reconcile_lock("l-1", site.clock())
    assert _open_overdue(site) == []
    (cleared,) = site.alarms("removal_overdue")
    assert cleared.cleared_at is not None
    with site.engine.connect() as conn:
        reasons = [r.details for r in conn.execute(
            select(t.audit_events).where(t.audit_events.c.action == "lock_alarm:cleared"))]
    assert any("the plan wants the code on the lock again" in str(d) for d in reasons), reasons

    # Back online, the code stays (or is put back) and nothing is raised again while wanted.
    site.devices["l-1"].go_online()
    await site.settle(rec, passes=10)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and site.on_device("l-1", code_id)
    assert _open_overdue(site) == []


@pytest.mark.anyio
async def test_overdue_alarm_of_a_code_still_unwanted_stays_open(sqlite_engine: Engine) -> None:
    """The clearing above is only for codes wanted again: a late removal stays alarmed."""
    site, rec, code_id = await _late_removal(sqlite_engine)
    await site.settle(rec, passes=3, step=timedelta(minutes=3))
    await rec.reconcile_lock("l-1", site.clock())
    assert [a.subject for a in _open_overdue(site)] == [code_id]
