"""Where windows are enforced, overdue removals, and the other answers a lock can give."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, select

from portner.locks.port import Refusal, refused
from portner.services.keypad import change_window
from portner.storage import tables as t
from tests.locks.test_faults_reconcile import START, KeypadSite, native


@pytest.mark.anyio
async def test_lock_enforced_window_is_written_at_once_and_still_removed_at_the_end(
    sqlite_engine: Engine,
) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue(not_before=START + timedelta(hours=2), not_after=START + timedelta(hours=3))
    await site.settle(rec, passes=2)
    (p,) = site.placements(code_id)
    assert (p.enforcement, p.state) == ("lock", "confirmed")
    window = site.devices["l-1"].stored_window(native(site, "l-1", p.slot))
    assert window is not None and window.start == START + timedelta(hours=2)
    assert window.end == START + timedelta(hours=3)
    assert site.devices["l-1"].enter_code(site.digits(code_id)).success is False  # not yet
    site.clock.at = START + timedelta(hours=3)
    await site.settle(rec, passes=2)
    assert not site.on_device("l-1", code_id)
    assert site.placements(code_id)[0].state == "removed"


@pytest.mark.anyio
async def test_server_enforced_window_adds_with_lead_time_and_removes_at_the_end(
    sqlite_engine: Engine,
) -> None:
    site = KeypadSite.build(sqlite_engine, START, schedules=False)
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue(not_before=START + timedelta(hours=1), not_after=START + timedelta(hours=2))
    await site.settle(rec, passes=3)
    assert site.ops("set") == []
    site.clock.at = START + timedelta(minutes=45)  # the municipality-independent 15 min lead
    await site.settle(rec, passes=2)
    assert site.on_device("l-1", code_id)
    assert site.devices["l-1"].stored_window(1) is None
    site.clock.at = START + timedelta(hours=2)
    await rec.run_once(site.clock())
    assert not site.on_device("l-1", code_id)
    assert "keypad_code:deactivated" in site.audit_actions(code_id)


@pytest.mark.anyio
async def test_removal_overdue_raises_an_alarm_while_the_lock_is_unreachable(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, schedules=False)
    rec = site.reconciler()
    code_id = site.issue(not_after=START + timedelta(minutes=30))
    await site.settle(rec, passes=2)
    site.devices["l-1"].go_offline()
    site.clock.at = START + timedelta(minutes=31)
    await site.settle(rec, passes=20, step=timedelta(seconds=20))  # past the 5 min margin
    assert site.on_device("l-1", code_id)
    (alarm,) = site.alarms("removal_overdue")
    assert alarm.subject == code_id and alarm.cleared_at is None
    site.devices["l-1"].go_online()
    await site.settle(rec, passes=80, step=timedelta(seconds=30))
    assert not site.on_device("l-1", code_id)
    (alarm,) = site.alarms("removal_overdue")
    assert alarm.cleared_at is not None


@pytest.mark.anyio
async def test_f20_lock_enforced_code_is_rewritten_with_its_new_window(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    await site.onboard(rec)
    code_id = site.issue()
    await site.settle(rec, passes=2)
    assert site.devices["l-1"].stored_window(1) is None
    with sqlite_engine.begin() as conn:
        change_window(conn, code_id, not_before=START + timedelta(days=1),
                      not_after=START + timedelta(days=1, hours=1), now=site.clock(), actor="account:a")
    await site.settle(rec, passes=3)
    window = site.devices["l-1"].stored_window(1)
    assert window is not None and window.start == START + timedelta(days=1)
    assert site.placements(code_id)[0].state == "confirmed"


@pytest.mark.anyio
async def test_f10_write_unconfirmed_alarms_and_is_retried_until_it_lands(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    site.devices["l-1"].faults.lose_writes_next = 1
    rec = site.reconciler()
    code_id = site.issue()
    await rec.run_once(site.clock())
    (p,) = site.placements(code_id)
    assert p.state == "write_unconfirmed"
    assert [a.kind for a in site.alarms()] == ["write_unconfirmed"]
    await site.settle(rec, passes=30)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and site.on_device("l-1", code_id)
    assert site.alarms()[0].cleared_at is not None


@pytest.mark.anyio
async def test_permanent_refusal_fails_at_once_and_reaches_an_operator(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    site.ports["l-1"].fail_next_set.append(refused(Refusal.LOCK_FULL, "memory full"))
    rec = site.reconciler()
    code_id = site.issue()
    await site.settle(rec, passes=20)
    (p,) = site.placements(code_id)
    assert (p.state, p.attempts, p.last_refusal) == ("failed", 1, "lock_full")
    assert len(site.ops("set")) == 1
    (alarm,) = site.alarms("code_rejected")
    assert alarm.subject == code_id and "memory full" in alarm.detail
    assert "keypad_code:rejected" in site.audit_actions(code_id)


@pytest.mark.anyio
async def test_foreign_code_in_our_slot_is_quarantined_and_ours_moves(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START)
    rec = site.reconciler()
    code_id = site.issue()
    await site.settle(rec, passes=2)
    site.clock.advance(timedelta(minutes=10))
    site.devices["l-1"].program_at_keypad(native(site, "l-1", 1), "583920")  # overwritten at the door
    rec = site.reconciler()
    await site.settle(rec, passes=4)
    (p,) = site.placements(code_id)
    assert p.state == "confirmed" and p.slot == 2 and site.on_device("l-1", code_id)
    assert site.devices["l-1"].stored(native(site, "l-1", 1)) == "583920"  # left as it is
    with sqlite_engine.connect() as conn:
        row = conn.execute(select(t.lock_slots).where(t.lock_slots.c.slot == 1)).one()
    assert row.quarantine_reason == "foreign"
    assert [a.subject for a in site.alarms("slot_foreign")] == ["1"]


@pytest.mark.anyio
async def test_full_sweep_only_on_request(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, capacity=50)
    rec = site.reconciler()
    site.issue()
    await site.settle(rec, passes=3)
    assert site.ops("read") == []  # a new placement is written, not scanned for
    assert await rec.sweep_slots("l-1", site.clock()) == "swept"
    assert [len(e[3]) for e in site.ops("read")] == [1]  # managed slots only
    site.clock.advance(timedelta(seconds=5))
    await rec.sweep_slots("l-1", site.clock(), full=True)
    assert [len(e[3]) for e in site.ops("read")] == [1, 50]


@pytest.mark.anyio
async def test_f16_heartbeat_finds_a_drifted_clock_and_sets_it_once(sqlite_engine: Engine) -> None:
    site = KeypadSite.build(sqlite_engine, START, clock_offset=timedelta(minutes=-7))
    rec = site.reconciler()
    await site.onboard(rec)
    await site.settle(rec, passes=6)
    device = site.devices["l-1"]
    assert abs(device.read_clock() - site.clock()) < timedelta(seconds=60)
    assert device.command_counts["set_clock"] == 1
    with sqlite_engine.connect() as conn:
        status = conn.execute(select(t.lock_status)).one()
    assert status.clock_verified_at is not None
