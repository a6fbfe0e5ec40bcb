"""A Hypothesis state machine: the reconciler against simulated keypad locks with faults.

Rules issue and revoke codes (with and without windows, on one lock or the whole door path),
move simulated time, take locks off the network and back, switch faults on (masked reads, read
lag, busy answers, lost/duplicated/reordered reports) and restart the reconciler. Invariants:

- after every pass, a code still on a lock later than its window's end (or its revocation) plus
  the removal margin has an open `removal_overdue` alarm (the lock was unreachable, or busy);
- nothing is ever confirmed that the lock does not hold (intent is not copied into state);
- once the faults stop and the locks are back, intent and the locks' state converge: every code
  the plan wants now is confirmed and on its lock in its slot, and no other code of ours is.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import insert, select

from portner.services.keypad import KeypadCodeError, change_window
from portner.services.keypad.plan import Timing, removal_deadline, wanted_on_lock
from portner.storage import tables as t
from portner.storage.db import make_engine
from tests.locks.test_faults_reconcile import START, KeypadSite

MARGIN = Timing().removal_margin
LOCKS = ("l-1", "l-2")


def _fresh_engine(directory: Path):  # type: ignore[no-untyped-def]
    engine = make_engine(f"sqlite:///{directory / 'portner.sqlite'}")
    t.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(t.audit_head).values(id=1, seq=0, hash=bytes(32)))
    return engine


class ReconcileMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="portner-conv-"))
        self.engine = _fresh_engine(self.dir)
        self.site = KeypadSite.build(self.engine, START, locks=2, capacity=30)
        self.loop = asyncio.new_event_loop()
        self.rec = self.site.reconciler()
        self.codes: list[str] = []
        self.last_pass = self.site.clock()

    def _pass(self) -> None:
        self.last_pass = self.site.clock()
        self.loop.run_until_complete(self.rec.run_once(self.last_pass))

    # --- the plan ---------------------------------------------------------------------------------

    @rule(
        locks=st.sampled_from([("l-1",), ("l-2",), LOCKS]),
        start_in=st.sampled_from([None, 0, 20, 90]),
        length=st.sampled_from([None, 10, 45, 240]),
    )
    def issue(self, locks: tuple[str, ...], start_in: int | None, length: int | None) -> None:
        if len(self.codes) >= 12:
            return
        now = self.site.clock()
        not_before = None if start_in is None else now + timedelta(minutes=start_in)
        not_after = None
        if length is not None:
            not_after = (not_before or now) + timedelta(minutes=length)
        self.codes.append(self.site.issue(list(locks), not_before=not_before, not_after=not_after))

    @precondition(lambda self: bool(self.codes))
    @rule(index=st.integers(min_value=0))
    def revoke(self, index: int) -> None:
        self.site.revoke(self.codes[index % len(self.codes)])

    @precondition(lambda self: bool(self.codes))
    @rule(index=st.integers(min_value=0), start_in=st.sampled_from([None, 0, 30, 600]),
          length=st.sampled_from([None, 20, 120]))
    def reschedule(self, index: int, start_in: int | None, length: int | None) -> None:
        """Attach or change a window on a live code (F20: re-evaluated at once)."""
        now = self.site.clock()
        not_before = None if start_in is None else now + timedelta(minutes=start_in)
        not_after = None if length is None else (not_before or now) + timedelta(minutes=length)
        try:
            with self.engine.begin() as conn:
                change_window(conn, self.codes[index % len(self.codes)], not_before=not_before,
                              not_after=not_after, now=now, actor="account:acc-op")
        except KeypadCodeError:
            pass  # revoked already: nothing to change

    # --- time, network, faults, restarts ------------------------------------------------------------

    @rule(seconds=st.sampled_from([2, 5, 30, 120, 600]))
    def step(self, seconds: int) -> None:
        self.site.clock.advance(timedelta(seconds=seconds))
        self._pass()

    @rule(lock=st.sampled_from(LOCKS), online=st.booleans())
    def network(self, lock: str, online: bool) -> None:
        device = self.site.devices[lock]
        device.go_online() if online else device.go_offline()

    @rule(lock=st.sampled_from(LOCKS), mask=st.sampled_from([0.0, 0.5, 1.0]),
          lag=st.sampled_from([0, 60, 180]), busy=st.integers(0, 2),
          events=st.sampled_from([0.0, 0.3]))
    def faults(self, lock: str, mask: float, lag: int, busy: int, events: float) -> None:
        faults = self.site.devices[lock].faults
        faults.mask_reads, faults.read_lag = mask, timedelta(seconds=lag)
        faults.busy_next += busy
        faults.drop_events = faults.duplicate_events = faults.reorder_events = events

    @rule()
    def restart(self) -> None:
        self.rec = self.site.reconciler()

    # --- invariants ------------------------------------------------------------------------------------

    def _rows(self) -> list:  # type: ignore[type-arg]
        p, c = t.code_placements, t.keypad_codes
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(p, c.c.not_before, c.c.not_after, c.c.revoked_at, c.c.created_at)
                .join(c, c.c.id == p.c.code_id)).all())

    @invariant()
    def overdue_codes_have_an_alarm(self) -> None:
        now = self.last_pass
        with self.engine.connect() as conn:
            open_alarms = {(a.lock_id, a.subject) for a in conn.execute(
                select(t.lock_alarms).where(t.lock_alarms.c.kind == "removal_overdue",
                                            t.lock_alarms.c.cleared_at.is_(None)))}
        for p in self._rows():
            deadline = removal_deadline(p)
            if wanted_on_lock(p, now, Timing()) or deadline is None or now <= deadline + MARGIN:
                continue
            if self.site.on_device(p.lock_id, p.code_id):
                assert (p.lock_id, p.code_id) in open_alarms, (p.code_id, p.lock_id, p.state)

    @invariant()
    def confirmed_means_on_the_lock(self) -> None:
        for p in self._rows():
            if p.state == "confirmed":
                device = self.site.devices[p.lock_id]
                stored = device.stored(p.slot - 1 + device.first_native)
                # (a code removed behind our back is only noticed at the next verification)
                assert stored in (None, self.site.digits(p.code_id)), (p.code_id, p.lock_id)

    def teardown(self) -> None:
        try:
            for device in self.site.devices.values():
                device.go_online()
                f = device.faults
                f.mask_reads, f.read_lag, f.busy_next = 0.0, timedelta(0), 0
            for _ in range(120):
                self.site.clock.advance(timedelta(seconds=60))
                self._pass()
                if self._converged(strict=False):
                    break
            assert self._converged(strict=True)
        finally:
            self.loop.close()
            self.engine.dispose()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _converged(self, *, strict: bool) -> bool:
        now = self.site.clock()
        ours: dict[str, set[str]] = {lock: set() for lock in LOCKS}
        for p in self._rows():
            digits = self.site.digits(p.code_id)
            ours[p.lock_id].add(digits)
            device = self.site.devices[p.lock_id]
            on_lock = digits in device.occupied().values()
            if wanted_on_lock(p, now, Timing()):
                ok = p.state == "confirmed" and device.stored(p.slot - 1 + device.first_native) == digits
            else:
                ok = not on_lock and p.state in ("removed", "pending")
            if not ok:
                assert not strict, (p.code_id, p.lock_id, p.state, p.intent, on_lock)
                return False
        for lock, device in self.site.devices.items():
            assert set(device.occupied().values()) <= ours[lock]  # no stray code of any kind
        return True


ReconcileMachine.TestCase.settings = settings(
    # Modest by default (the suite's budget); PORTNER_CONVERGENCE_EXAMPLES=500 for a deeper run.
    max_examples=int(os.environ.get("PORTNER_CONVERGENCE_EXAMPLES", "30")), stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReconcileConvergence = ReconcileMachine.TestCase
