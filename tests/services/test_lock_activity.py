"""Lock events into the activity log, status and alarms, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update

from portner.domain.model import Municipality, MunicipalityId
from portner.locks.port import Condition, HealthEvent, LockEvent, Operation, Source
from portner.services import lock_alarms
from portner.services.lock_activity import (
    check_attribution,
    check_unconfirmed_remote,
    record_events,
)
from portner.services.notices import KIND_CODE_OUTSIDE_VISIT, notices_for, sms_text, sweep_notices
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository

T0 = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
M = Municipality(id=MunicipalityId("m1"), name="Testkommune")
LOCK, ADDRESS = "l-1", "front_door"
NURSE, OTHER_NURSE = "nurse-1", "nurse-2"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


class World:
    """One resident, one flat door with a Zigbee2MQTT lock "front_door", two nurses, a visit
    09:00-09:30 for nurse 1, whose visit code sits in slot 2; slot 7 held nurse 2's code until
    07:00 (removed)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        with engine.begin() as conn:
            Repository(conn).add_municipality(M)
            conn.execute(
                insert(t.residents).values(id="r-1", municipality_id=M.id, display_name="Beboer")
            )
            conn.execute(insert(t.homes).values(id="h-1", resident_id="r-1", address="Gata 1"))
            conn.execute(
                insert(t.doors).values(
                    id="d-1", home_id="h-1", position=1, kind="flat", lock_id=LOCK
                )
            )
            conn.execute(
                insert(t.locks).values(
                    id=LOCK, door_id="d-1", backend="zigbee2mqtt", address=ADDRESS, synced_seq=0
                )
            )
            for actor, name in ((NURSE, "Sykepleier A"), (OTHER_NURSE, "Sykepleier B")):
                conn.execute(
                    insert(t.actors).values(
                        id=actor,
                        municipality_id=M.id,
                        role="home_nursing",
                        organisation="Hjemmetjenesten",
                        display_name=name,
                    )
                )
            conn.execute(
                insert(t.visits).values(
                    id="v-1",
                    municipality_id=M.id,
                    resident_id="r-1",
                    plan_key="p",
                    source_key="s-1",
                    planned_start=at(60),
                    planned_end=at(90),
                    staff_ids=[NURSE],
                    status="planned",
                )
            )
            conn.execute(
                insert(t.grants).values(
                    id="g-1",
                    actor_id=NURSE,
                    door_ids=["d-1"],
                    not_before=at(45),
                    not_after=at(120),
                    origin="visit",
                    visit_id="v-1",
                    status="active",
                    created_at=at(-60),
                )
            )
        self.code("k-1", NURSE, slot=2, grant="g-1", placed=at(-30))
        self.code("k-old", OTHER_NURSE, slot=7, placed=at(-600), removed=at(-60))

    def code(
        self,
        code_id: str,
        actor: str | None,
        *,
        slot: int,
        placed: datetime,
        grant: str | None = None,
        removed: datetime | None = None,
        max_uses: Any = None,
        notify: bool = True,
        state: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.keypad_codes).values(
                    id=code_id,
                    municipality_id=M.id,
                    actor_id=actor,
                    grant_id=grant,
                    purpose="visit",
                    ciphertext=b"sealed",
                    key_id="kk",
                    code_mac=b"mac:" + code_id.encode(),
                    max_uses=max_uses,
                    uses=0,
                    notify=notify,
                    created_at=placed,
                )
            )
            conn.execute(
                insert(t.code_placements).values(
                    code_id=code_id,
                    lock_id=LOCK,
                    slot=slot,
                    intent="absent" if removed else "present",
                    state=state or ("removed" if removed else "confirmed"),
                    enforcement="server",
                    attempts=1,
                    requested_at=placed,
                    confirmed_at=placed + timedelta(seconds=5),
                    removed_at=removed,
                    updated_at=removed or placed,
                )
            )

    def rows(self) -> list[Any]:
        with self.engine.connect() as conn:
            return conn.execute(select(t.lock_activity).order_by(t.lock_activity.c.id)).all()

    def status(self) -> Any:
        with self.engine.connect() as conn:
            s = t.lock_status
            return conn.execute(
                select(
                    s.c.online,
                    s.c.bolt,
                    s.c.jammed_since,
                    s.c.tamper_at,
                    s.c.last_event_at,
                    s.c.last_user_event_at,
                    s.c.clock_verified_at,
                ).where(s.c.lock_id == LOCK)
            ).first()

    def alarms(self, kind: str | None = None, *, open_only: bool = False) -> list[Any]:
        a = t.lock_alarms
        query = select(a).order_by(a.c.id)
        if kind:
            query = query.where(a.c.kind == kind)
        if open_only:
            query = query.where(a.c.cleared_at.is_(None))
        with self.engine.connect() as conn:
            return conn.execute(query).all()

    def audit_actions(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.audit_events.c.action).order_by(t.audit_events.c.seq)
                ).scalars()
            )

    def command(
        self,
        command_id: str,
        *,
        created: datetime,
        operation: str = "unlock",
        state: str = "confirmed",
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.lock_commands).values(
                    id=command_id,
                    lock_id=LOCK,
                    kind="operate",
                    args={"operation": operation},
                    state=state,
                    attempts=1,
                    not_before=created,
                    created_at=created,
                    sent_at=created,
                    finished_at=created + timedelta(seconds=2),
                )
            )


def unlock(
    key: str,
    when: datetime,
    *,
    slot: int | None = None,
    source: Source = Source.KEYPAD,
    success: bool = True,
    failure: str = "",
    attribution: str = "event",
    operation: Operation = Operation.UNLOCK,
    received: datetime | None = None,
    sequence: int | None = None,
) -> LockEvent:
    return LockEvent(
        ADDRESS,
        operation,
        source,
        success,
        received or when + timedelta(seconds=1),
        key,
        slot=slot,
        lock_time=when,
        sequence=sequence,
        attribution=attribution,
        failure=failure,
    )


def lock_op(key: str, when: datetime, **kw: Any) -> LockEvent:
    return unlock(key, when, operation=Operation.LOCK, **kw)


def health(key: str, condition: Condition, when: datetime, **kw: Any) -> HealthEvent:
    return HealthEvent(ADDRESS, condition, when + timedelta(seconds=1), key, lock_time=when, **kw)


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine)


# --- the log -------------------------------------------------------------------------------------


def test_a_managed_code_unlock_names_its_holder_and_links_the_visit(world: World) -> None:
    result = record_events(world.engine, [unlock("seq:10", at(62), slot=2)], now=at(63))
    assert (result.recorded, result.duplicates) == (1, 0)
    (row,) = world.rows()
    assert (row.lock_id, row.code_id, row.actor_id, row.visit_id, row.attribution, row.success) == (
        LOCK,
        "k-1",
        NURSE,
        "v-1",
        "event",
        True,
    )
    assert world.audit_actions() == ["lock_activity:recorded", "visit:arrived"]
    with world.engine.connect() as conn:
        assert verify_audit(conn).ok


def test_a_code_opening_is_the_visits_arrival_and_the_first_opening_counts(world: World) -> None:
    def visit() -> tuple[str, datetime | None]:
        with world.engine.connect() as conn:
            row = conn.execute(select(t.visits.c.status, t.visits.c.arrived_at).where(t.visits.c.id == "v-1")).one()
        return row.status, row.arrived_at

    assert visit() == ("planned", None)
    record_events(world.engine, [unlock("seq:12", at(64), slot=2)], now=at(65))
    assert visit() == ("in_progress", at(64))
    # The second door of the path, a minute later, is not a second arrival; a late report of an
    # earlier opening moves the arrival back to it.
    record_events(world.engine, [unlock("seq:13", at(65), slot=2)], now=at(66))
    assert visit() == ("in_progress", at(64))
    record_events(world.engine, [unlock("seq:11", at(61), slot=2)], now=at(67))
    assert visit() == ("in_progress", at(61))
    assert world.audit_actions().count("visit:arrived") == 2
    # A failed attempt with the right slot is no arrival.
    with world.engine.begin() as conn:
        conn.execute(update(t.visits).where(t.visits.c.id == "v-1").values(status="planned", arrived_at=None))
    record_events(world.engine, [unlock("seq:14", at(70), slot=2, success=False)], now=at(71))
    assert visit() == ("planned", None)


def test_a_code_outside_its_grant_without_visit_links_no_visit(world: World) -> None:
    world.code("k-2", OTHER_NURSE, slot=3, placed=at(-30))  # a standing code, no grant
    record_events(world.engine, [unlock("seq:11", at(62), slot=3)], now=at(63))
    (row,) = world.rows()
    assert (row.code_id, row.actor_id, row.visit_id) == ("k-2", OTHER_NURSE, None)


def test_a_redelivered_batch_changes_nothing_and_counts_duplicates(world: World) -> None:
    events = [unlock("seq:10", at(62), slot=2), lock_op("seq:11", at(63), source=Source.AUTO)]
    record_events(world.engine, events, now=at(64))
    before = (world.rows(), world.status(), world.audit_actions())
    again = record_events(world.engine, events, now=at(65))
    assert (again.recorded, again.duplicates) == (0, 2)
    assert (world.rows(), world.audit_actions()) == before[0::2]
    assert world.status().bolt == before[1].bolt == "locked"


def test_an_event_from_an_unknown_lock_is_reported_not_stored(world: World) -> None:
    stray = LockEvent("somewhere_else", Operation.UNLOCK, Source.MANUAL, True, at(1), "x")
    result = record_events(world.engine, [stray], now=at(2))
    assert result.unknown_locks == ["somewhere_else"] and world.rows() == []


def test_bad_input_is_refused_with_the_field_named(world: World) -> None:
    bad_key = LockEvent(ADDRESS, Operation.UNLOCK, Source.MANUAL, True, at(1), "")
    with pytest.raises(ValueError, match=r"events\[0\]\.key"):
        record_events(world.engine, [bad_key], now=at(2))
    naive = LockEvent(ADDRESS, Operation.UNLOCK, Source.MANUAL, True, datetime(2026, 12, 3, 8), "k")
    with pytest.raises(ValueError, match=r"events\[0\]\.received_at"):
        record_events(world.engine, [naive], now=at(2))
    with pytest.raises(ValueError, match=r"events\[1\]\.slot"):
        record_events(world.engine, [unlock("a", at(1)), unlock("b", at(1), slot=0)], now=at(2))
    with pytest.raises(ValueError, match="now"):
        record_events(world.engine, [], now=datetime(2026, 12, 3, 8))
    assert world.rows() == []


def test_the_lock_is_found_by_its_id_when_it_has_no_address(world: World) -> None:
    with world.engine.begin() as conn:
        conn.execute(insert(t.doors).values(id="d-2", home_id="h-1", position=2, kind="building"))
        conn.execute(
            insert(t.locks).values(id="l-sim", door_id="d-2", backend="simulated", synced_seq=0)
        )
    ev = LockEvent("l-sim", Operation.UNLOCK, Source.MANUAL, True, at(1), "s1", lock_time=at(1))
    assert record_events(world.engine, [ev], now=at(2)).recorded == 1
    assert world.rows()[0].lock_id == "l-sim"


# --- state follows lock time, not arrival ------------------------------------------------------


def test_bolt_follows_lock_time_when_events_arrive_out_of_order(world: World) -> None:
    # The relock at 08:05 arrives first, the unlock at 08:01 later: the door is locked.
    record_events(
        world.engine, [lock_op("seq:2", at(5), source=Source.AUTO, sequence=2)], now=at(6)
    )
    record_events(
        world.engine, [unlock("seq:1", at(1), source=Source.MANUAL, sequence=1)], now=at(7)
    )
    st = world.status()
    assert (st.bolt, st.last_event_at, st.online) == ("locked", at(5), True)
    assert st.last_user_event_at == at(5)


def test_within_a_batch_the_sequence_breaks_a_tie_of_lock_time(world: World) -> None:
    same = at(3)
    events = [
        lock_op("seq:9", same, source=Source.MANUAL, sequence=9),
        unlock("seq:8", same, source=Source.MANUAL, sequence=8),
    ]
    record_events(world.engine, events, now=at(4))
    assert world.status().bolt == "locked"


def test_a_stale_offline_report_does_not_hide_a_lock_that_worked_since(world: World) -> None:
    record_events(world.engine, [unlock("seq:1", at(10), source=Source.MANUAL)], now=at(11))
    record_events(world.engine, [health("h:off", Condition.OFFLINE, at(5))], now=at(12))
    assert world.status().online is True
    record_events(world.engine, [health("h:off2", Condition.OFFLINE, at(15))], now=at(16))
    assert world.status().online is False


def test_battery_low_raises_and_a_full_battery_clears(world: World) -> None:
    record_events(world.engine, [health("b1", Condition.BATTERY, at(1), percent=9.0)], now=at(2))
    assert [a.kind for a in world.alarms(open_only=True)] == ["battery_low"]
    with world.engine.connect() as conn:
        assert conn.execute(select(t.locks.c.battery_percent)).scalar() == 9.0
    record_events(world.engine, [health("b2", Condition.BATTERY, at(3), percent=18.0)], now=at(4))
    assert len(world.alarms(open_only=True)) == 1  # between the two thresholds: no flapping
    record_events(world.engine, [health("b3", Condition.BATTERY_REPLACED, at(5))], now=at(6))
    assert world.alarms(open_only=True) == []


# --- alarms service ------------------------------------------------------------------------------


def test_an_open_alarm_is_raised_once_and_listed_for_its_municipality(world: World) -> None:
    with world.engine.begin() as conn:
        first = lock_alarms.raise_alarm(conn, LOCK, "tamper", at=at(1))
        second = lock_alarms.raise_alarm(conn, LOCK, "tamper", at=at(2))
        assert first[1] and not second[1] and first[0] == second[0]
        assert [a.kind for a in lock_alarms.open_alarms(conn, M.id)] == ["tamper"]
        assert lock_alarms.open_alarms(conn, "other") == []
        assert (
            lock_alarms.clear_alarm(
                conn, LOCK, "tamper", at=at(3), reason="checked", actor="operator-1"
            )
            == first[0]
        )
        assert lock_alarms.open_alarms(conn, M.id) == []
    (alarm,) = world.alarms()
    assert (alarm.cleared_at, alarm.acknowledged_by) == (at(3), "operator-1")
    assert world.audit_actions() == ["lock_alarm:raised", "lock_alarm:cleared"]


def test_alarm_input_is_checked(world: World) -> None:
    with world.engine.begin() as conn:
        with pytest.raises(ValueError, match="kind"):
            lock_alarms.raise_alarm(conn, LOCK, "", at=at(1))
        with pytest.raises(ValueError, match="at"):
            lock_alarms.raise_alarm(conn, LOCK, "tamper", at=datetime(2026, 1, 1))
        with pytest.raises(ValueError, match="reason"):
            lock_alarms.clear_alarm(conn, LOCK, "tamper", at=at(1), reason="")


def test_an_alarm_raised_by_two_writers_at_once_is_one_row(pg_engine: Engine) -> None:
    # PostgreSQL's case: SQLite has one writer, so its transactions cannot interleave.
    world = World(pg_engine)
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def raise_it() -> None:
        try:
            with world.engine.begin() as conn:
                barrier.wait(timeout=10)
                lock_alarms.raise_alarm(conn, LOCK, "wrong_code", at=at(1))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=raise_it) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(world.alarms("wrong_code")) == 1


# --- remote unlocks and attribution health -------------------------------------------------------


def test_a_confirmed_remote_unlock_with_its_device_event_logs_nothing_more(world: World) -> None:
    world.command("cmd-1", created=at(10))
    record_events(world.engine, [unlock("seq:5", at(10.1), source=Source.REMOTE)], now=at(10.2))
    with world.engine.begin() as conn:
        assert check_unconfirmed_remote(conn, at(12)) == []
    assert len(world.rows()) == 1 and world.alarms() == []


def test_a_remote_lock_command_is_not_an_unlock_to_confirm(world: World) -> None:
    world.command("cmd-2", created=at(10), operation="lock")
    world.command("cmd-3", created=at(10), state="refused")
    with world.engine.begin() as conn:
        assert check_unconfirmed_remote(conn, at(20)) == []


def test_attribution_unavailable_waits_a_full_day_and_a_user_event_clears_it(world: World) -> None:
    toggles = [unlock(f"st:{i}", at(i * 60), source=Source.UNKNOWN) for i in range(3)]
    result = record_events(world.engine, toggles, now=at(121))
    assert result.alarms == []  # watched for 2 h only
    with world.engine.begin() as conn:
        assert check_attribution(conn, at(60 * 23)) == []
        assert check_attribution(conn, at(60 * 25)) == [LOCK]
        assert check_attribution(conn, at(60 * 25)) == []  # already open: not raised twice
    assert [a.kind for a in world.alarms(open_only=True)] == ["attribution_unavailable"]
    record_events(
        world.engine, [unlock("seq:1", at(60 * 25), source=Source.MANUAL)], now=at(60 * 25 + 1)
    )
    assert world.alarms(open_only=True) == []
    assert world.status().last_user_event_at == at(60 * 25)


# --- resident notices ----------------------------------------------------------------------------


def test_a_code_opening_outside_a_visit_makes_one_notice(world: World) -> None:
    # Inside the visit window (09:00 - 15 min lead .. 09:30 + 30 min grace): no notice.
    record_events(world.engine, [unlock("seq:1", at(62), slot=2)], now=at(63))
    assert sweep_notices(world.engine, M.id, now=at(64)).notices == 0
    # The same code at 11:30, after the window; and a master code (slot 9, nothing placed).
    record_events(
        world.engine,
        [unlock("seq:2", at(210), slot=2), unlock("seq:3", at(300), slot=9)],
        now=at(301),
    )
    assert sweep_notices(world.engine, M.id, now=at(302)).notices == 2
    assert sweep_notices(world.engine, M.id, now=at(303)).notices == 0  # never twice
    with world.engine.connect() as conn:
        notices = sorted(notices_for(conn, "r-1"), key=lambda n: n.params["at"])
    assert [n.kind for n in notices] == [KIND_CODE_OUTSIDE_VISIT] * 2
    named, unknown = (n.params for n in notices)
    assert (named["name"], named["role"], named["visit"], named["doors"]) == (
        "Sykepleier A",
        "home_nursing",
        "v-1",
        ["flat"],
    )
    assert (unknown["name"], unknown["role"], unknown["attribution"]) == (
        "",
        None,
        "unknown_credential",
    )
    from zoneinfo import ZoneInfo

    assert "ukjent nøkkel" in sms_text(KIND_CODE_OUTSIDE_VISIT, unknown, ZoneInfo("Europe/Oslo"))


def test_a_code_whose_holder_asked_not_to_be_told_makes_no_notice(world: World) -> None:
    world.code("k-quiet", OTHER_NURSE, slot=4, placed=at(-30), notify=False)
    record_events(
        world.engine, [unlock("seq:1", at(300), slot=4), unlock("seq:2", at(400))], now=at(401)
    )  # and an unidentified one
    assert sweep_notices(world.engine, M.id, now=at(402)).notices == 0


def test_failed_attempts_are_counted_in_the_log_but_never_visits(world: World) -> None:
    record_events(
        world.engine,
        [unlock("f1", at(62), slot=2, success=False, failure="outside_schedule")],
        now=at(63),
    )
    (row,) = world.rows()
    assert (row.success, row.visit_id, row.failure, row.code_id) == (
        False,
        None,
        "outside_schedule",
        "k-1",
    )
    with world.engine.connect() as conn:
        visit = conn.execute(select(t.visits.c.status, t.visits.c.arrived_at)).one()
        assert tuple(visit) == ("planned", None)
        assert conn.execute(select(func.count()).select_from(t.lock_alarms)).scalar() == 0


def test_locking_the_flat_door_on_leaving_completes_the_visit_and_queues_its_encounter(world: World) -> None:
    record_events(world.engine, [unlock("seq:20", at(62), slot=2)], now=at(63))
    record_events(world.engine, [lock_op("seq:21", at(88), source=Source.KEYPAD)], now=at(89))
    with world.engine.connect() as conn:
        visit = conn.execute(select(t.visits.c.status, t.visits.c.departed_at).where(t.visits.c.id == "v-1")).one()
        queued = conn.execute(select(t.outbox.c.idempotency_key)).scalars().all()
    assert (visit.status, visit.departed_at) == ("completed", at(88))
    assert queued == ["encounter:v-1"]
    # An auto-lock, or a lock with nobody in the home, ends nothing.
    record_events(world.engine, [lock_op("seq:22", at(95), source=Source.KEYPAD)], now=at(96))
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.outbox)).scalar() == 1
