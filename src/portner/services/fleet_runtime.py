"""The lock fleet at work: the configured lock backends, their events recorded, and the plan kept on
the locks. `portner serve` runs one of these (web.api.fleet's worker); the demo drives its own.

Each step, in order:
0. remote unlocks the response center asked for and that were not delivered at once;
1. onboard locks of a configured backend that Portner has not met yet (capabilities read, every
   slot swept for codes Portner did not set);
2. record what the backends reported since the last step (services.lock_activity);
3. keypad codes for new grants and withdrawals for ended ones (services.keypad_grants);
4. one reconciler pass (services.keypad.Reconciler): writes, removals, verifications;
5. alarm upkeep: escalations, unconfirmed remote unlocks, locks that stopped saying who opened.

Which backend serves a lock is the lock row's `backend`; its address there is `locks.address`
(the lock's id when empty). A lock whose backend is not configured here is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from portner.config import Settings
from portner.domain.errors import PortnerError
from portner.locks.attribution import check_event, check_health_event
from portner.locks.port import BackendConfig, HealthEvent, LockBackend, LockEvent, LockPort
from portner.locks.registry import UnknownBackend, create_backend
from portner.services.ids import IdSource
from portner.services.keypad import Reconciler
from portner.services.keypad.vault import KeypadKeys
from portner.services.keypad_grants import sync_grant_codes
from portner.services.keys import MunicipalitySecrets
from portner.services.lock_activity import record_events
from portner.services.lock_alarms import check_attribution, check_unconfirmed_remote, escalate_due
from portner.services.remote_operation import (
    Reason,
    RemoteOutcome,
    command_outcome,
    deliver_remote_commands,
    request_remote_unlock,
)
from portner.services.threads import finish_in_thread
from portner.storage import tables as t

log = logging.getLogger(__name__)


def backends_from_settings(settings: Settings, *, now: Callable[[], datetime]) -> dict[str, LockBackend]:
    """The backends `PORTNER_LOCKS` names (comma-separated), each at `PORTNER_LOCKS_URL` (or its own
    PORTNER_LOCK_<BACKEND>_URL) with its PORTNER_LOCK_<BACKEND>_<OPTION> options; none for the
    default "simulated", whose demo locks verify phone keys on their own."""
    names = [n.strip() for n in settings.lock_backend.split(",") if n.strip() and n.strip() != "simulated"]
    backends = {}
    for name in names:
        options = dict(settings.lock_backend_options.get(name, {}))
        url = options.pop("url", None) or settings.lock_backend_url
        try:
            backends[name] = create_backend(BackendConfig(name, url=url, options=options), now=now)
        except UnknownBackend:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            # The adapter names its own option; say which variable sets it.
            prefix = f"PORTNER_LOCK_{name.upper()}_"
            said = re.sub(r"options\[['\"](\w+)['\"]\]|\boption (\w+)",
                          lambda m: prefix + (m.group(1) or m.group(2)).upper(), str(exc))
            raise BackendSettingError(
                f"PORTNER_LOCKS={name}: {said} (the URL comes from PORTNER_LOCKS_URL or {prefix}URL, "
                f"an option X from {prefix}X)"
            ) from None
    return backends


class BackendSettingError(PortnerError):
    """A lock backend's settings are missing or wrong (the message names the variable)."""


def port_for(engine: Engine, backends: dict[str, LockBackend], lock_id: str) -> LockPort:
    """The port of `lock_id` through the backend its row names (LookupError when not configured)."""
    with engine.connect() as conn:
        row = conn.execute(select(t.locks.c.backend, t.locks.c.address)
                           .where(t.locks.c.id == lock_id, t.locks.c.removed_at.is_(None))).first()
    if row is None or row.backend not in backends:
        raise LookupError(f"lock {lock_id} is not mounted, or not served by a configured backend")
    return backends[row.backend].lock(row.address or lock_id)


async def remote_unlock_now(engine: Engine, backends: dict[str, LockBackend], municipality_id: str,
                            lock_id: str, *, reason: Reason, actor: str, now: Callable[[], datetime],
                            ids: IdSource) -> RemoteOutcome:
    """Ask for a remote unlock, then deliver it at once through the configured backends (the fleet
    worker delivers what this could not, within a minute); the same path for API and console."""
    with engine.begin() as conn:
        command_id = request_remote_unlock(conn, municipality_id, lock_id, reason=reason, actor=actor,
                                           now=now(), ids=ids)
    delivered = await deliver_remote_commands(engine, lambda lock: port_for(engine, backends, lock),
                                              now=now(), command_id=command_id)
    if delivered:
        return delivered[0]
    with engine.connect() as conn:
        return command_outcome(conn, command_id) or RemoteOutcome(command_id, "requested")


async def remote_unlock_by_fleet(engine: Engine, municipality_id: str, lock_id: str, *, reason: Reason,
                                 actor: str, now: Callable[[], datetime], ids: IdSource,
                                 wait_s: float = 8.0) -> RemoteOutcome:
    """Ask for a remote unlock that another process delivers (the one running the lock fleet,
    at its next step), and wait up to `wait_s` for the lock's answer; "requested" if none yet.
    The database is asked in a thread: the request may queue behind others on the audit log."""
    def ask() -> str:
        with engine.begin() as conn:
            return request_remote_unlock(conn, municipality_id, lock_id, reason=reason, actor=actor,
                                         now=now(), ids=ids)

    def answer(command_id: str) -> RemoteOutcome:
        with engine.connect() as conn:
            return command_outcome(conn, command_id) or RemoteOutcome(command_id, "requested")

    command_id = await asyncio.to_thread(ask)
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        outcome = await asyncio.to_thread(answer, command_id)
        if outcome.state not in ("requested", "sending"):
            return outcome
        if asyncio.get_running_loop().time() >= deadline:
            # Still on its way to the lock: what the operator is told is that it was asked.
            return RemoteOutcome(command_id, "requested")
        await asyncio.sleep(0.25)


@dataclass(slots=True)
class StepReport:
    onboarded: list[str] = field(default_factory=list)
    recorded: int = 0
    codes_issued: int = 0
    codes_withdrawn: int = 0
    operations: int = 0


class FleetRuntime:
    def __init__(self, engine: Engine, municipality_id: str, secrets: MunicipalitySecrets,
                 backends: dict[str, LockBackend], *, now: Callable[[], datetime], ids: IdSource) -> None:
        self.engine, self.municipality_id, self.backends = engine, municipality_id, backends
        self.now, self.ids = now, ids
        self.keys = KeypadKeys.from_secrets(secrets, municipality_id)
        self.reconciler = Reconciler(engine, self.port_for, secrets_key=self.keys, now=now, ids=ids)
        self._pending: list[tuple[str, LockEvent | HealthEvent]] = []  # (backend, event)
        self._consumers: list[asyncio.Task[None]] = []

    def port_for(self, lock_id: str) -> LockPort:
        return port_for(self.engine, self.backends, lock_id)

    async def start(self) -> None:
        for backend in self.backends.values():
            await backend.start()
            self._consumers.append(asyncio.create_task(self._consume(backend)))

    async def stop(self) -> None:
        for task in self._consumers:
            task.cancel()
        for task in self._consumers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for backend in self.backends.values():
            with contextlib.suppress(Exception):
                await backend.stop()

    async def _consume(self, backend: LockBackend) -> None:
        async for event in backend.events():
            self._pending.append((backend.name, event))

    def _new_locks(self) -> list[str]:
        with self.engine.connect() as conn:
            return list(conn.execute(
                select(t.locks.c.id)
                .outerjoin(t.lock_status, t.lock_status.c.lock_id == t.locks.c.id)
                .where(t.locks.c.backend.in_(sorted(self.backends)), t.locks.c.removed_at.is_(None),
                       t.lock_status.c.capabilities.is_(None))
                .order_by(t.locks.c.id)
            ).scalars())

    async def step(self) -> StepReport:
        """One round of every stage; a stage that fails is logged and the others still run (a
        recording failure must not stop removals, nor a bad grant the reconciler)."""
        report = StepReport()
        await self._stage("onboarding", self._onboard(report))
        await asyncio.sleep(0)  # let the consumers take what the backends have queued
        await self._stage("remote unlocks", deliver_remote_commands(self.engine, self.port_for, now=self.now()))
        await self._stage("recording events", self._record(report))
        await self._stage("keypad codes for grants", self._sync_grants(report))
        await self._stage("reconciling", self._reconcile(report))
        await self._stage("alarm upkeep", finish_in_thread(self._alarm_upkeep, self.now()))
        return report

    async def _stage(self, name: str, work: Any) -> None:
        try:
            await work
        except Exception:
            log.exception("lock fleet: %s failed; the next step tries again", name)

    async def _onboard(self, report: StepReport) -> None:
        for lock_id in self._new_locks():
            try:
                await self.reconciler.onboard_lock(lock_id, self.now())
                report.onboarded.append(lock_id)
            except Exception:  # one lock that cannot be reached does not stop the others
                log.warning("onboarding lock %s failed; trying again next step", lock_id, exc_info=True)

    async def _record(self, report: StepReport) -> None:
        """Record per backend (a backend speaks only for its own locks), dropping, with a log
        line, any event that does not validate instead of losing the whole batch with it."""
        taken, self._pending = self._pending, []
        try:
            await self._record_taken(taken, report)
        except BaseException:
            self._pending[:0] = taken  # not recorded: the next step tries them again (duplicates dedupe)
            raise

    async def _record_taken(self, taken: list[tuple[str, LockEvent | HealthEvent]], report: StepReport) -> None:
        by_backend: dict[str, list[LockEvent | HealthEvent]] = {}
        for name, event in taken:
            try:
                (check_event if isinstance(event, LockEvent) else check_health_event)(event, "event")
            except (ValueError, TypeError) as exc:
                log.warning("lock fleet: dropped an invalid event from %s: %s", name, exc)
                continue
            by_backend.setdefault(name, []).append(event)
        for name, events in by_backend.items():
            result = await finish_in_thread(record_events, self.engine, events, now=self.now(), backend=name,
                                             municipality_id=self.municipality_id)
            report.recorded += result.recorded

    async def _sync_grants(self, report: StepReport) -> None:
        synced = await finish_in_thread(sync_grant_codes, self.engine, self.municipality_id,
                                         now=self.now(), ids=self.ids, key=self.keys)
        report.codes_issued, report.codes_withdrawn = len(synced.issued), len(synced.revoked)

    async def _reconcile(self, report: StepReport) -> None:
        report.operations = (await self.reconciler.run_once(self.now())).operations

    def _alarm_upkeep(self, now: datetime) -> None:
        with self.engine.begin() as conn:
            escalate_due(conn, now)
            check_unconfirmed_remote(conn, now)
            check_attribution(conn, now)
