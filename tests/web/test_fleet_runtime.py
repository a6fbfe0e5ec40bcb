"""The lock fleet at work in the server: a keypad-only lock is onboarded, gets a code for the
visit grant of its door before the visit, records the nurse's opening as her arrival, and loses
the code when the grant's window ends. Driven step by step with simulated time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from portner.bootstrap import open_app
from portner.config import Settings
from portner.locks.keypad_sim import create_backend
from portner.locks.port import BackendConfig
from portner.services.fleet_runtime import FleetRuntime, backends_from_settings
from portner.services.ids import IdSource
from portner.services.keypad import reveal_once
from portner.services.keys import load_or_create_secrets
from portner.storage import tables as t


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.anyio
@pytest.mark.parametrize("remove_lock_after_opening", [False, True], ids=["kept", "removed"])
async def test_a_keypad_lock_follows_the_visit_plan(demo_settings: Settings, remove_lock_after_opening: bool) -> None:
    app = open_app(demo_settings)
    engine = app.engine
    with engine.begin() as conn:
        secrets = load_or_create_secrets(conn, demo_settings.data_dir, app.municipality.id,
                                         now=datetime.now().astimezone())
        # A visit with a one-door path, and that door's lock as the only keypad lock.
        grant = conn.execute(
            select(t.grants.c.id, t.grants.c.door_ids, t.grants.c.not_before, t.grants.c.not_after,
                   t.grants.c.visit_id)
            .where(t.grants.c.status == "active", t.grants.c.visit_id.is_not(None))
            .order_by(t.grants.c.not_before, t.grants.c.id)
        ).all()
        grant = next(g for g in grant if len(g.door_ids) == 1)
        lock_id = conn.execute(select(t.doors.c.lock_id).where(t.doors.c.id == grant.door_ids[0])).scalar_one()
        conn.execute(update(t.locks).where(t.locks.c.id != lock_id).values(backend="phone"))
        conn.execute(update(t.locks).where(t.locks.c.id == lock_id).values(address="front-door"))
    clock = Clock(grant.not_before - timedelta(hours=1))
    backend = create_backend(BackendConfig("simulated", options={"first_native": "0", "capacity": "10"}),
                             now=clock)
    fleet = FleetRuntime(engine, app.municipality.id, secrets, {"simulated": backend}, now=clock,
                         ids=IdSource(7))
    await fleet.start()
    try:
        first = await fleet.step()
        assert first.onboarded == [lock_id]
        # The lock was met, so the plan's grants for its door got a code; none is on the lock yet
        # (server-enforced windows: it goes on shortly before the window).
        assert first.codes_issued >= 1
        device = backend.device("front-door")
        assert device.occupied() == {}
        with engine.begin() as conn:
            code_id = conn.execute(select(t.keypad_codes.c.id).where(t.keypad_codes.c.grant_id == grant.id)).scalar_one()
            code = reveal_once(conn, code_id, now=clock(), key=fleet.keys, actor="test:nurse-app")
        clock.now = grant.not_before - timedelta(minutes=10)
        for _ in range(3):
            await fleet.step()
            clock.now += timedelta(seconds=5)
        assert code.reveal() in device.occupied().values()

        clock.now = grant.not_before + timedelta(minutes=3)
        opened = device.enter_code(code.reveal())
        assert opened.success
        await fleet.step()
        with engine.connect() as conn:
            row = conn.execute(select(t.lock_activity.c.visit_id, t.lock_activity.c.attribution)
                               .where(t.lock_activity.c.lock_id == lock_id)
                               .where(t.lock_activity.c.success.is_(True))).first()
            visit = conn.execute(select(t.visits.c.status, t.visits.c.arrived_at)
                                 .where(t.visits.c.id == grant.visit_id)).one()
        assert row is not None and (row.visit_id, row.attribution) == (grant.visit_id, "event")
        assert visit.status == "in_progress" and visit.arrived_at is not None

        if remove_lock_after_opening:
            # The lock is taken off its door: its codes stop there, and Portner never speaks to it
            # again (its address may be another lock's soon).
            from portner.services.administration import Administration

            Administration(engine, app.municipality.id, "account:test", clock(), IdSource(9)).remove_lock(lock_id)
            sent = device.commands_sent
            clock.now = grant.not_after + timedelta(minutes=1)
            for _ in range(3):
                await fleet.step()
                clock.now += timedelta(minutes=5)
            assert device.commands_sent == sent
            with engine.connect() as conn:
                states = {r.state for r in conn.execute(select(t.code_placements.c.state)
                                                        .where(t.code_placements.c.lock_id == lock_id))}
            assert states == {"removed"}
            return
        clock.now = grant.not_after + timedelta(minutes=1)
        for _ in range(3):
            await fleet.step()
            clock.now += timedelta(seconds=5)
        assert code.reveal() not in device.occupied().values()
        with engine.connect() as conn:
            states = {r.state for r in conn.execute(select(t.code_placements.c.state)
                                                    .where(t.code_placements.c.code_id == code_id))}
        assert states == {"removed"}
    finally:
        await fleet.stop()
        engine.dispose()


def test_only_named_backends_are_started(tmp_path: Any) -> None:
    assert backends_from_settings(Settings(data_dir=tmp_path, lock_backend="simulated"), now=datetime.now) == {}
    both = backends_from_settings(Settings(data_dir=tmp_path, lock_backend="zigbee2mqtt, simulated",
                                           lock_backend_url="mqtt://127.0.0.1:1883"), now=datetime.now)
    assert list(both) == ["zigbee2mqtt"]
    with pytest.raises(Exception, match="unknown lock backend"):
        backends_from_settings(Settings(data_dir=tmp_path, lock_backend="acme"), now=datetime.now)


def test_backend_options_come_from_their_own_variables(tmp_path: Any) -> None:
    from portner.config import backend_options

    env = {"PORTNER_LOCK_NUKI_TOKEN": "t0k3n", "PORTNER_LOCK_NUKI_URL": "http://127.0.0.1:9/",
           "PORTNER_LOCK_ZIGBEE2MQTT_BASE_TOPIC": "z2m", "PORTNER_LOCKS_URL": "ignored", "PORTNER_LOCK_": "x"}
    assert backend_options(env) == {"nuki": {"token": "t0k3n", "url": "http://127.0.0.1:9/"},
                                    "zigbee2mqtt": {"base_topic": "z2m"}}
    settings = Settings(data_dir=tmp_path, lock_backend="nuki", lock_backend_url="mqtt://elsewhere",
                        lock_backend_options=backend_options(env))
    (nuki,) = backends_from_settings(settings, now=datetime.now).values()
    assert nuki.name == "nuki"
    # A backend without its required option is refused by name at start-up.
    with pytest.raises(Exception, match="PORTNER_LOCK_NUKI_TOKEN"):
        backends_from_settings(Settings(data_dir=tmp_path, lock_backend="nuki", lock_backend_options={}),
                               now=datetime.now)


@pytest.mark.anyio
async def test_a_door_path_no_code_fits_is_an_alarm_and_holds_back_nothing(demo_settings: Settings) -> None:
    """Two keypad locks on one path that share no code length (4 and 6 digits): that grant gets an
    alarm for an operator; every other grant still gets its code, and withdrawals still happen."""
    from portner.locks.port import Capabilities, CodeRules, Feature, SlotRange
    from portner.services.keypad.store import record_capabilities
    from portner.services.keypad.vault import KeypadKeys
    from portner.services.keypad_grants import sync_grant_codes

    app = open_app(demo_settings)
    engine = app.engine
    now = datetime(2026, 12, 3, 6, 0).astimezone()

    def keypad(length: int) -> Capabilities:
        return Capabilities(frozenset({Feature.KEYPAD}), CodeRules(lengths=frozenset({length})), SlotRange(10, 0))

    with engine.begin() as conn:
        secrets = load_or_create_secrets(conn, demo_settings.data_dir, app.municipality.id, now=now)
        grants = conn.execute(select(t.grants.c.id, t.grants.c.door_ids).where(t.grants.c.status == "active")
                              .order_by(t.grants.c.not_before, t.grants.c.id)).all()
        two = next(g for g in grants if len(g.door_ids) == 2)
        one = next(g for g in grants if len(g.door_ids) == 1 and not set(g.door_ids) & set(two.door_ids))
        locks = dict(conn.execute(select(t.doors.c.id, t.doors.c.lock_id)).all())
        record_capabilities(conn, locks[two.door_ids[0]], keypad(4), now)
        record_capabilities(conn, locks[two.door_ids[1]], keypad(6), now)
        record_capabilities(conn, locks[one.door_ids[0]], keypad(6), now)
    result = sync_grant_codes(engine, app.municipality.id, now=now, ids=IdSource(3),
                              key=KeypadKeys.from_secrets(secrets, app.municipality.id))
    assert two.id in result.failed
    with engine.connect() as conn:
        coded = set(conn.execute(select(t.keypad_codes.c.grant_id)).scalars())
        alarms = conn.execute(select(t.lock_alarms.c.kind, t.lock_alarms.c.subject)).all()
    assert one.id in coded and two.id not in coded
    assert ("code_not_possible", f"grant:{two.id}") in [(a.kind, a.subject) for a in alarms]
    engine.dispose()


@pytest.mark.anyio
async def test_a_backend_speaks_only_for_its_own_locks(demo_settings: Settings) -> None:
    """An event naming another backend's lock (by id or address) is not recorded; an invalid event
    is dropped alone, not with the batch."""
    from portner.locks.port import LockEvent, Operation, Source

    app = open_app(demo_settings)
    engine = app.engine
    with engine.begin() as conn:
        ours, theirs = conn.execute(select(t.locks.c.id).order_by(t.locks.c.id).limit(2)).scalars().all()
        conn.execute(update(t.locks).where(t.locks.c.id == ours).values(backend="simulated", address="ours"))
        conn.execute(update(t.locks).where(t.locks.c.id == theirs).values(backend="nuki", address="theirs"))
        secrets = load_or_create_secrets(conn, demo_settings.data_dir, app.municipality.id,
                                         now=datetime.now().astimezone())
    clock = Clock(datetime(2026, 12, 3, 9, 0).astimezone())
    backend = create_backend(BackendConfig("simulated"), now=clock)
    fleet = FleetRuntime(engine, app.municipality.id, secrets, {"simulated": backend}, now=clock, ids=IdSource(1))

    def unlock(lock: str, key: str, slot: int | None = None) -> LockEvent:
        return LockEvent(lock, Operation.UNLOCK, Source.MANUAL, True, clock(), key, slot, clock())

    fleet._pending = [("simulated", unlock("ours", "k1")), ("simulated", unlock("theirs", "k2")),
                      ("simulated", unlock(theirs, "k3")), ("simulated", unlock("ours", "k4", slot=0))]
    report = await fleet.step()
    with engine.connect() as conn:
        rows = conn.execute(select(t.lock_activity.c.lock_id, t.lock_activity.c.key)).all()
    assert [(r.lock_id, r.key) for r in rows] == [(ours, "k1")]
    assert report.recorded == 1
    engine.dispose()
