"""Faults F1, F11-F14, F26, F28 and F29 of ../shared/reference/locks.md: lock events, with each
fault's input and its expected result, through the real ingestion on SQLite and PostgreSQL.

The adapters turn vendor payloads into LockEvents (their own fault tests cover the parsing); here
each payload appears as the LockEvent its adapter yields, with the native user id mapped through
the lock's SlotRange exactly as the adapter maps it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from portner.locks import attribution as rules
from portner.locks.attribution import EventKind, Notification, notifications
from portner.locks.port import Condition, HealthEvent, LockEvent, Operation, SlotRange, Source
from portner.services.lock_activity import (
    check_attribution,
    check_unconfirmed_remote,
    record_events,
)
from portner.services.lock_alarms import escalate_due
from portner.services.notices import sweep_notices
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from tests.services.test_lock_activity import (
    ADDRESS,
    LOCK,
    NURSE,
    OTHER_NURSE,
    World,
    at,
    health,
    lock_op,
    unlock,
)

ZIGBEE = SlotRange(count=30, first_native=0)  # ZCL users 0..29
ZWAVE = SlotRange(count=30, first_native=1)  # Z-Wave users 1..30


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


def _text(row) -> str:
    holder = {NURSE: "Sykepleier A", OTHER_NURSE: "Sykepleier B"}.get(row.actor_id or "", "")
    return rules.entry_text(row.operation, row.source, row.success, row.attribution, holder)


# --- F1 ------------------------------------------------------------------------------------------


def test_f01_use_count_decrements_from_a_float_limit_and_the_used_up_code_leaves(
    world: World,
) -> None:
    # A credential with max_uses=2.0 (a float, as from JSON or a UI), in slot 5.
    world.code("k-limited", OTHER_NURSE, slot=5, placed=at(-30), max_uses=2.0)
    record_events(world.engine, [unlock("seq:1", at(10), slot=5)], now=at(10.1))
    assert _code(world).uses == 1 and _code(world).revoked_at is None  # 1 left
    record_events(world.engine, [unlock("seq:2", at(20), slot=5)], now=at(20.1))
    code = _code(world)
    assert code.uses == 2 and code.revoked_at == at(20.1)  # 0 left: revoked "used_up"
    with world.engine.connect() as conn:
        placement = conn.execute(
            select(t.code_placements.c.intent, t.code_placements.c.state).where(
                t.code_placements.c.code_id == "k-limited"
            )
        ).one()
        clears = conn.execute(
            select(t.lock_commands.c.kind, t.lock_commands.c.slot).where(
                t.lock_commands.c.lock_id == LOCK
            )
        ).all()
    assert tuple(placement) == ("absent", "removing")  # removed from the lock after the 2nd use
    assert [tuple(c) for c in clears] == [("clear_code", 5)]
    # A redelivery of the 2nd use counts nothing.
    record_events(world.engine, [unlock("seq:2", at(20), slot=5)], now=at(20.5))
    assert _code(world).uses == 2
    # A 3rd keypad attempt: the lock refuses it (the code is gone) -> a rejected attempt...
    record_events(
        world.engine, [unlock("seq:3", at(30), success=False, failure="wrong_code")], now=at(30.1)
    )
    rows = world.rows()
    assert (rows[-1].success, rows[-1].failure, rows[-1].visit_id) == (False, "wrong_code", None)
    # ...and had the lock still let it in before the removal landed, a security alarm says so.
    record_events(world.engine, [unlock("seq:4", at(31), slot=5)], now=at(31.1))
    assert [a.kind for a in world.alarms(open_only=True)] == ["revoked_code_used"]
    assert _code(world).uses == 2


def _code(world: World):
    with world.engine.connect() as conn:
        return conn.execute(
            select(t.keypad_codes.c.uses, t.keypad_codes.c.revoked_at).where(
                t.keypad_codes.c.id == "k-limited"
            )
        ).one()


# --- F11 -----------------------------------------------------------------------------------------


def test_f11_user_in_action_user_is_attributed_and_a_null_user_is_unidentified(
    world: World,
) -> None:
    # {"action":"keypad_unlock","action_user":2,"action_source_user":null}: ZCL user 2 is slot 3.
    slot = ZIGBEE.slot(2)
    assert slot == 3
    world.code("k-3", NURSE, slot=3, grant="g-1", placed=at(-30))
    # {"action":"keypad_unlock","action_user":null}
    record_events(
        world.engine,
        [unlock("z2m:1", at(62), slot=slot), unlock("z2m:2", at(70), slot=None)],
        now=at(71),
    )
    named, anonymous = world.rows()
    assert (named.code_id, named.actor_id, named.visit_id, named.attribution) == (
        "k-3",
        NURSE,
        "v-1",
        "event",
    )
    assert (anonymous.code_id, anonymous.actor_id, anonymous.visit_id) == (None, None, None)
    assert _text(anonymous) == "keypad unlock – unidentified"


def test_f11_state_toggles_without_user_events_for_24h_flag_attribution_unavailable(
    world: World,
) -> None:
    # A Yale LIA: only lock_state changes arrive (source unknown), never an operation event.
    day = 24 * 60
    toggles = [
        unlock(f"state:{i}", at(i * 150), source=Source.UNKNOWN)
        if i % 2 == 0
        else lock_op(f"state:{i}", at(i * 150), source=Source.UNKNOWN)
        for i in range(8)
    ]
    record_events(world.engine, toggles, now=at(7 * 150 + 1))
    assert world.alarms() == []  # watched for 17.5 h only: not yet a day
    with world.engine.begin() as conn:
        assert check_attribution(conn, at(day + 30)) == [LOCK]
    assert [a.kind for a in world.alarms(open_only=True)] == ["attribution_unavailable"]
    assert world.status().bolt == "locked"  # the toggles still keep the state


def test_f11_a_quiet_lock_that_does_not_toggle_is_not_flagged(world: World) -> None:
    record_events(world.engine, [unlock("seq:1", at(0), source=Source.MANUAL)], now=at(1))
    with world.engine.begin() as conn:
        assert check_attribution(conn, at(3 * 24 * 60)) == []


# --- F12 -----------------------------------------------------------------------------------------


def test_f12_an_empty_slot_is_an_unknown_credential_never_its_last_holder(world: World) -> None:
    # keypad_unlock userId=7 (Z-Wave); placement 7 held nurse 2's code until 07:00 (removed).
    slot = ZWAVE.slot(7)
    assert slot == 7
    result = record_events(world.engine, [unlock("zw:40", at(62), slot=slot)], now=at(63))
    (row,) = world.rows()
    assert (row.slot, row.attribution, row.code_id, row.actor_id, row.visit_id) == (
        7,
        "unknown_credential",
        None,
        None,
        None,
    )
    assert row.actor_id != OTHER_NURSE
    assert _text(row) == "keypad unlock – unknown credential"
    assert result.alarms == [(LOCK, "unknown_credential")]
    (alarm,) = world.alarms(open_only=True)
    assert (alarm.kind, alarm.subject) == ("unknown_credential", "slot:7")
    assert world.audit_actions() == ["lock_activity:recorded", "lock_alarm:raised"]
    with world.engine.connect() as conn:
        assert verify_audit(conn).ok


def test_f12_a_slot_that_never_had_a_placement_and_a_refused_write_are_unknown(
    world: World,
) -> None:
    world.code("k-dup", NURSE, slot=8, placed=at(-30), state="failed")
    with world.engine.begin() as conn:
        conn.execute(
            t.code_placements.update()
            .where(t.code_placements.c.code_id == "k-dup")
            .values(last_refusal="duplicate_code")
        )
    record_events(
        world.engine, [unlock("a", at(10), slot=8), unlock("b", at(11), slot=20)], now=at(12)
    )
    assert [r.attribution for r in world.rows()] == ["unknown_credential"] * 2
    assert {a.subject for a in world.alarms(open_only=True)} == {"slot:8", "slot:20"}


# --- F13 -----------------------------------------------------------------------------------------


def _notification(key: str, minutes: float) -> LockEvent:
    # Access Control event 6 (keypad unlock) with parameters={}: no user id.
    return unlock(key, at(minutes), slot=None)


def _legacy(key: str, minutes: float, slot: int) -> LockEvent:
    # The vendor's legacy Alarm report: keypad-unlock alarmType, the user in alarmLevel.
    return unlock(key, at(minutes), slot=slot, attribution="legacy_alarm")


def test_f13_notification_without_user_is_unidentified(world: World) -> None:
    record_events(world.engine, [_notification("n:1", 62)], now=at(63))
    (row,) = world.rows()
    assert (row.attribution, _text(row)) == ("unidentified", "keypad unlock – unidentified")


@pytest.mark.parametrize("order", ["one batch", "notification first", "legacy first", "both again"])
def test_f13_a_legacy_alarm_within_2s_names_the_user(world: World, order: str) -> None:
    note, legacy = _notification("n:1", 62), _legacy("alarm:1", 62 + 1.5 / 60, slot=2)
    if order == "one batch":
        record_events(world.engine, [legacy, note], now=at(63))
    elif order == "both again":  # the notification alone, then a retry brings both
        record_events(world.engine, [note], now=at(63))
        record_events(world.engine, [note, legacy], now=at(63.1))
    else:
        first, second = (note, legacy) if order == "notification first" else (legacy, note)
        record_events(world.engine, [first], now=at(63))
        record_events(world.engine, [second], now=at(63.1))
    # Redeliveries of either change nothing.
    record_events(world.engine, [note, legacy], now=at(64))
    (row,) = world.rows()
    assert (row.attribution, row.slot, row.code_id, row.actor_id, row.visit_id) == (
        "legacy_alarm",
        2,
        "k-1",
        NURSE,
        "v-1",
    )
    assert _text(row) == "keypad unlock – Sykepleier A (legacy alarm)"


def test_f13_a_legacy_alarm_after_more_than_2s_is_not_merged(world: World) -> None:
    record_events(
        world.engine,
        [_notification("n:1", 62), _legacy("alarm:1", 62 + 3 / 60, slot=2)],
        now=at(63),
    )
    assert [r.attribution for r in world.rows()] == ["unidentified", "legacy_alarm"]


# --- F14 -----------------------------------------------------------------------------------------


def test_f14_two_unlocks_five_minutes_apart_are_two_entries(world: World) -> None:
    world.code("k-5", OTHER_NURSE, slot=5, placed=at(-30))
    result = record_events(
        world.engine,
        [unlock("seq:20", at(10), slot=5), unlock("seq:21", at(15), slot=5)],
        now=at(16),
    )
    assert result.recorded == 2 and len(world.rows()) == 2


def test_f14_the_same_unlock_delivered_twice_within_1s_is_one_entry(world: World) -> None:
    world.code("k-5", OTHER_NURSE, slot=5, placed=at(-30))
    first = unlock("seq:20", at(10), slot=5, received=at(10) + timedelta(seconds=0.2))
    again = unlock("seq:20", at(10), slot=5, received=at(10) + timedelta(seconds=0.9))
    result = record_events(world.engine, [first, again], now=at(11))
    assert (result.recorded, result.duplicates) == (1, 1)
    later = record_events(world.engine, [again], now=at(12))  # and in a later batch
    assert (later.recorded, later.duplicates) == (0, 1)
    assert len(world.rows()) == 1


def test_f14_an_empty_action_is_ignored(world: World) -> None:
    blank = LockEvent(ADDRESS, "", Source.KEYPAD, True, at(10), "seq:22")  # type: ignore[arg-type]
    result = record_events(world.engine, [blank], now=at(11))
    assert (result.ignored, result.recorded) == (1, 0) and world.rows() == []


# --- F26 -----------------------------------------------------------------------------------------


def test_f26_a_failed_unlock_is_a_failed_attempt_not_a_visit(world: World) -> None:
    record_events(
        world.engine,
        [unlock("ttl:1", at(62), slot=2, success=False, failure="wrong_code")],
        now=at(63),
    )
    (row,) = world.rows()
    assert (row.success, row.visit_id) == (False, None)
    assert _text(row).startswith("failed keypad unlock")
    assert sweep_notices(world.engine, "m1", now=at(64)).notices == 0


def test_f26_remote_unlock_unconfirmed_by_the_device_is_logged_and_alarmed(world: World) -> None:
    world.command("cmd-1", created=at(10))  # the API said success at 08:10:02
    with world.engine.begin() as conn:
        assert check_unconfirmed_remote(conn, at(10.9)) == []  # 60 s not yet over
        assert check_unconfirmed_remote(conn, at(11.1)) == ["cmd-1"]
        assert check_unconfirmed_remote(conn, at(12)) == []  # logged once
    (row,) = world.rows()
    assert (row.operation, row.source, row.attribution) == (
        "unlock",
        "remote",
        "command_unconfirmed",
    )
    assert _text(row) == "remote unlock commanded (unconfirmed by device)"
    (alarm,) = world.alarms(open_only=True)
    assert (alarm.kind, alarm.subject) == (
        "remote_unconfirmed",
        "cmd-1",
    )  # the door state is unknown
    # The device's event comes late after all: the alarm clears.
    record_events(world.engine, [unlock("seq:7", at(12.5), source=Source.REMOTE)], now=at(12.6))
    assert world.alarms(open_only=True) == []


def test_f26_unconfirmed_remote_unlock_with_a_known_door_state_is_logged_without_alarm(
    world: World,
) -> None:
    world.command("cmd-1", created=at(10))
    # The lock reported itself locked after the command (so the door's state is known).
    record_events(world.engine, [lock_op("seq:8", at(10.5), source=Source.AUTO)], now=at(10.6))
    with world.engine.begin() as conn:
        assert check_unconfirmed_remote(conn, at(11.1)) == ["cmd-1"]
    assert world.alarms() == []


def test_f26_five_wrong_codes_raise_a_wrong_code_alarm(world: World) -> None:
    wrong = [
        unlock(f"bad:{i}", at(10 + i * 0.5), success=False, failure="wrong_code") for i in range(5)
    ]
    result = record_events(world.engine, wrong[:4], now=at(13))
    assert result.alarms == [] and world.alarms() == []  # 4 are not yet an alarm
    result = record_events(world.engine, wrong[4:], now=at(13))
    assert result.alarms == [(LOCK, "wrong_code")]
    record_events(
        world.engine, [unlock("bad:9", at(13), success=False, failure="wrong_code")], now=at(14)
    )
    assert len(world.alarms("wrong_code")) == 1  # one open alarm, not one per try


def test_f26_five_wrong_codes_spread_beyond_the_window_are_no_alarm(world: World) -> None:
    wrong = [unlock(f"bad:{i}", at(i * 2), success=False, failure="wrong_code") for i in range(5)]
    record_events(world.engine, wrong, now=at(9))
    assert world.alarms() == []


# --- F28 -----------------------------------------------------------------------------------------

_HOLDER = "Sykepleier A"
_CELLS = [
    # (kind, operation, global, credential, expected)
    *[
        (EventKind.KEYPAD_UNLOCK, Operation.UNLOCK, g, c, e)
        for g, c, e in (
            (False, False, set()),
            (False, True, {Notification("code_unlock", "keypad", _HOLDER)}),
            (True, False, {Notification("unlocked", "keypad")}),
            (True, True, {Notification("code_unlock", "keypad", _HOLDER)}),
        )
    ],
    *[
        (EventKind.KEYPAD_LOCK, Operation.LOCK, g, c, e)
        for g, c, e in (
            (False, False, set()),
            (False, True, {Notification("code_lock", "keypad", _HOLDER)}),
            (True, False, {Notification("locked", "keypad")}),
            (True, True, {Notification("code_lock", "keypad", _HOLDER)}),
        )
    ],
    *[
        (kind, op, g, c, {Notification(state, source)} if g else set())
        for kind, op, state, source in (
            (EventKind.MANUAL, Operation.UNLOCK, "unlocked", "manual"),
            (EventKind.REMOTE, Operation.UNLOCK, "unlocked", "remote"),
            (EventKind.AUTO_LOCK, Operation.LOCK, "locked", "auto"),
        )
        for g in (False, True)
        for c in (False, True)
    ],
]


@pytest.mark.parametrize(("kind", "operation", "global_on", "credential_on", "expected"), _CELLS)
def test_f28_notification_matrix(
    kind: str,
    operation: Operation,
    global_on: bool,
    credential_on: bool,
    expected: set[Notification],
) -> None:
    holder = _HOLDER if kind in (EventKind.KEYPAD_UNLOCK, EventKind.KEYPAD_LOCK) else None
    got = notifications(
        kind, operation, global_on=global_on, credential_on=credential_on, holder=holder
    )
    assert got == expected
    if kind == EventKind.KEYPAD_UNLOCK and credential_on:
        assert [n.holder for n in got] == [_HOLDER]  # a code unlock always names its holder


def test_f28_the_matrix_has_every_cell_and_refuses_unknown_rows() -> None:
    assert len(_CELLS) == 20
    assert {(k, g, c) for k, _, g, c, _ in _CELLS} == {
        (k, g, c) for k in rules.EVENT_KINDS for g in (False, True) for c in (False, True)
    }
    with pytest.raises(ValueError, match="kind"):
        notifications("doorbell", Operation.UNLOCK, global_on=True, credential_on=True)
    with pytest.raises(ValueError, match="operation"):
        notifications(EventKind.AUTO_LOCK, Operation.UNLOCK, global_on=True, credential_on=True)


def test_f28_an_unidentified_keypad_unlock_follows_the_global_switch_unnamed() -> None:
    got = notifications(
        EventKind.KEYPAD_UNLOCK, Operation.UNLOCK, global_on=True, credential_on=True
    )
    assert got == {Notification("unlocked", "keypad")}


def test_f28_event_rows_of_the_matrix() -> None:
    def ev(source: Source, op: Operation = Operation.UNLOCK, success: bool = True) -> LockEvent:
        return LockEvent(ADDRESS, op, source, success, at(0), "k")

    assert rules.event_kind(ev(Source.KEYPAD)) == EventKind.KEYPAD_UNLOCK
    assert rules.event_kind(ev(Source.KEYPAD, Operation.LOCK)) == EventKind.KEYPAD_LOCK
    assert rules.event_kind(ev(Source.MANUAL, Operation.LOCK)) == EventKind.MANUAL
    assert rules.event_kind(ev(Source.REMOTE)) == EventKind.REMOTE
    assert rules.event_kind(ev(Source.AUTO, Operation.LOCK)) == EventKind.AUTO_LOCK
    assert rules.event_kind(ev(Source.KEYPAD, success=False)) is None


def test_f28_a_code_unlock_notice_names_the_holder_when_its_notifications_are_on(
    world: World,
) -> None:
    world.code("k-loud", OTHER_NURSE, slot=4, placed=at(-30), notify=True)
    world.code("k-quiet", OTHER_NURSE, slot=6, placed=at(-30), notify=False)
    record_events(
        world.engine,
        [unlock("seq:1", at(300), slot=4), unlock("seq:2", at(400), slot=6)],
        now=at(401),
    )
    assert sweep_notices(world.engine, "m1", now=at(402)).notices == 1
    from portner.services.notices import notices_for

    with world.engine.connect() as conn:
        (notice,) = notices_for(conn, "r-1")
    assert notice.params["name"] == "Sykepleier B"
    assert not any(ch.isdigit() for ch in notice.params["name"])  # a display name, never a PIN


# --- F29 -----------------------------------------------------------------------------------------


def test_f29_jammed_then_locked_30s_later_clears_at_that_moment(world: World) -> None:
    t0 = at(10)
    record_events(
        world.engine, [health("jam:1", Condition.JAMMED, t0)], now=t0 + timedelta(seconds=1)
    )
    assert world.status().jammed_since == t0 and world.status().bolt == "jammed"
    record_events(
        world.engine,
        [lock_op("seq:3", t0 + timedelta(seconds=30), source=Source.MANUAL)],
        now=t0 + timedelta(seconds=31),
    )
    st = world.status()
    assert (st.jammed_since, st.bolt) == (None, "locked")
    (alarm,) = world.alarms("jammed")
    assert alarm.cleared_at == t0 + timedelta(seconds=30)


def test_f29_jammed_with_nothing_further_stays_and_escalates_at_5_minutes(world: World) -> None:
    t0 = at(10)
    record_events(
        world.engine, [health("jam:1", Condition.JAMMED, t0)], now=t0 + timedelta(seconds=1)
    )
    with world.engine.begin() as conn:
        assert escalate_due(conn, t0 + timedelta(minutes=4, seconds=59)) == []
        (escalated,) = escalate_due(conn, t0 + timedelta(minutes=5))
        assert escalate_due(conn, t0 + timedelta(hours=5)) == []  # once
    (alarm,) = world.alarms("jammed")
    assert (alarm.id, alarm.escalated_at, alarm.cleared_at) == (
        escalated,
        t0 + timedelta(minutes=5),
        None,
    )
    assert world.status().jammed_since == t0  # no timer clears it, not even after 5 h


def test_f29_a_jam_that_arrives_after_the_lock_that_ended_it_is_history(world: World) -> None:
    t0 = at(10)
    record_events(
        world.engine, [lock_op("seq:3", t0 + timedelta(seconds=30), source=Source.MANUAL)], now=t0
    )
    record_events(
        world.engine, [health("jam:1", Condition.JAMMED, t0)], now=t0 + timedelta(minutes=1)
    )
    st = world.status()
    assert (st.jammed_since, st.bolt) == (None, "locked")
    assert world.alarms() == []
    # In one batch, arriving lock-then-jam: taken in lock time, the jam at +2 min happened and
    # the lock at +3 min ended it. History keeps it; nothing is left open.
    record_events(
        world.engine,
        [
            lock_op("seq:5", t0 + timedelta(minutes=3), source=Source.MANUAL),
            health("jam:2", Condition.JAMMED, t0 + timedelta(minutes=2)),
        ],
        now=t0 + timedelta(minutes=4),
    )
    assert world.status().jammed_since is None and world.alarms(open_only=True) == []
    (alarm,) = world.alarms("jammed")
    assert (alarm.raised_at, alarm.cleared_at) == (
        t0 + timedelta(minutes=2),
        t0 + timedelta(minutes=3),
    )


def test_f29_a_redelivered_jam_after_the_clearing_raises_nothing(world: World) -> None:
    t0 = at(10)
    jam = health("jam:1", Condition.JAMMED, t0)
    record_events(
        world.engine,
        [jam, lock_op("seq:3", t0 + timedelta(seconds=30), source=Source.MANUAL)],
        now=t0 + timedelta(minutes=1),
    )
    record_events(world.engine, [jam], now=t0 + timedelta(minutes=2))
    assert world.alarms(open_only=True) == [] and world.status().jammed_since is None


# --- the pure rules underneath ---------------------------------------------------------------------


def test_merge_legacy_folds_each_report_into_the_nearest_notification_once() -> None:
    a, b = _notification("n:a", 10), _notification("n:b", 10 + 1 / 60)
    report = _legacy("alarm:1", 10 + 1.5 / 60, slot=4)
    merged = rules.merge_legacy([a, b, report])
    assert [(e.key, e.slot, e.attribution) for e in merged] == [
        ("n:a", None, "event"),
        ("n:b", 4, "legacy_alarm"),
    ]
    manual = unlock("m:1", at(10), source=Source.MANUAL)  # another source: not the same operation
    assert rules.merge_legacy([manual, report]) == [manual, report]


def test_placement_at_picks_the_holder_of_the_moment() -> None:
    old = rules.SlotFacts(
        "k-old", OTHER_NURSE, "removed", "absent", placed_at=at(0), removed_at=at(60)
    )
    new = rules.SlotFacts("k-new", NURSE, "confirmed", "present", placed_at=at(61))
    assert rules.placement_at([old, new], at(30)) is old
    assert rules.placement_at([old, new], at(62)) is new
    assert rules.placement_at([old, new], at(60.5)) is new  # within the clock tolerance of new
    assert rules.placement_at([old], at(90)) is None
    never_sent = rules.SlotFacts("k-p", NURSE, "pending", "present", placed_at=None)
    assert rules.placement_at([never_sent], at(1)) is None


def test_apply_jam_never_clears_by_time() -> None:
    jammed = rules.apply_jam(rules.JamState(None), jammed_at=at(0))
    assert jammed == rules.JamState(at(0))
    assert rules.apply_jam(jammed, operated_at=at(0)) == jammed  # not after the jam
    assert rules.apply_jam(jammed, jammed_at=at(5)) == jammed  # still the first jam
    assert rules.apply_jam(jammed, operated_at=at(1)) == rules.JamState(None, cleared_at=at(1))
    assert (
        rules.apply_jam(rules.JamState(None), jammed_at=at(0), last_operated=at(1)).jammed_since
        is None
    )
    assert rules.escalation_due("jammed", at(0), at(5)) and not rules.escalation_due(
        "tamper", at(0), at(500)
    )


# --- bounds of what a lock may report (the callback route and the activity log refuse the rest) -----

_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _event(**over: object) -> LockEvent:
    fields: dict[str, object] = {"lock": "door", "operation": Operation.UNLOCK, "source": Source.KEYPAD,
                                 "success": True, "received_at": _AT, "key": "k-1", "slot": 3}
    return LockEvent(**{**fields, **over})  # type: ignore[arg-type]


def _health(**over: object) -> HealthEvent:
    fields: dict[str, object] = {"lock": "door", "condition": Condition.BATTERY, "received_at": _AT,
                                 "key": "h-1", "percent": 50.0}
    return HealthEvent(**{**fields, **over})  # type: ignore[arg-type]


@pytest.mark.parametrize(("over", "field"), [
    ({"slot": 0}, "event.slot"), ({"slot": 65536}, "event.slot"),
    ({"slot": 2147483648}, "event.slot"), ({"slot": 2**63}, "event.slot"),
    ({"key": "k" * 201}, "event.key"),
    ({"lock_time": _AT + timedelta(hours=24, seconds=1)}, "event.lock_time"),
])
def test_an_event_outside_the_bounds_is_refused_naming_the_field(over: dict[str, object],
                                                                 field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        rules.check_event(_event(**over))


def test_events_at_the_bounds_are_taken() -> None:
    rules.check_event(_event(slot=1, key="k" * 200, lock_time=_AT + timedelta(hours=24)))
    rules.check_event(_event(slot=65535, lock_time=_AT - timedelta(days=400)))  # a late report
    rules.check_health_event(_health(percent=0, slot=65535))
    rules.check_health_event(_health(percent=100.0, lock_time=_AT + timedelta(hours=23)))


@pytest.mark.parametrize(("over", "field"), [
    ({"percent": float("nan")}, "event.percent"), ({"percent": float("inf")}, "event.percent"),
    ({"percent": -0.5}, "event.percent"), ({"percent": 100.5}, "event.percent"),
    ({"percent": True}, "event.percent"),
    ({"slot": 0}, "event.slot"), ({"slot": 65536}, "event.slot"),
    ({"key": "h" * 201}, "event.key"), ({"key": ""}, "event.key"),
    ({"lock_time": _AT + timedelta(days=2)}, "event.lock_time"),
])
def test_a_health_event_outside_the_bounds_is_refused_naming_the_field(over: dict[str, object],
                                                                       field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        rules.check_health_event(_health(**over))
