"""`portner demo`: a synthetic municipality's home-care day, end to end, on simulated locks.

The day follows the real path: the care record's visit plans are written as VKP files and imported;
each nurse's phone gets signed credentials for exactly her visits; at each door the phone answers
the lock's challenge and the lock decides offline; locks upload their logs; finished visits go back
to the care record as Encounters; the audit chain is verified. Along the way some nurses are late,
one visit is cancelled mid-day, one phone is lost and revoked, and the platform is unreachable for
two hours. A fixed seed reproduces the day exactly.
"""

from __future__ import annotations

import heapq
import itertools
import json
import random
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.progress import Progress
from sqlalchemy import Engine, make_url, select, update

from portner.credentials import DeviceKey
from portner.demo.files import write_plan_cancelling
from portner.demo.report import print_summary
from portner.demo.site import MUNICIPALITY, load_demo_site
from portner.domain.model import (
    Municipality,
    Role,
    Visit,
    VisitStatus,
)
from portner.fhir import read_sources
from portner.locks.simulated import Battery, LockClock, SimulatedLock, seeded_random
from portner.services.checkpoints import write_checkpoint
from portner.services.devices import register_device
from portner.services.door_events import HeadAttestation, ingest_upload
from portner.services.ids import IdSource
from portner.services.importing import ImportReport, import_sources
from portner.services.issuing import IssuedCredential, issue_for_shift
from portner.services.keys import MunicipalitySecrets, trusted_issuers
from portner.services.queries import physical_key_list
from portner.services.revocation import (
    latest_revocation_list,
    publish_revocation_list,
    revoke_device,
)
from portner.services.writeback import FolderSink, deliver_outbox
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.db import open_database
from portner.storage.repository import Repository

DEMO_MARKER = ".portner-demo"
STAFF_ROLES = frozenset({Role.HOME_NURSING, Role.HOME_HELP})
DEFAULT_DAY = date(2026, 12, 3)


@dataclass(frozen=True, slots=True)
class DemoOptions:
    seed: int = 2026
    data_dir: Path = Path("portner-data") / "demo"
    db_url: str | None = None
    residents: int = 300
    staff: int = 40
    fixtures: Path | None = None
    use_fixtures: bool = True
    json: bool = False
    day: date = DEFAULT_DAY
    # "simulated": phone keys verified offline by the simulated locks. "zigbee2mqtt": every lock is
    # a Zigbee keypad lock reached through the MQTT broker at `broker` (see demo.zigbee).
    locks: str = "simulated"
    broker: str = "mqtt://127.0.0.1:1883"


class SimClock:
    """The demo's one clock: every component asks it, so the day replays exactly."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass(slots=True)
class Phone:
    """A staff member's phone: its key, its credentials, and the newest revocation list it holds."""

    actor_id: str
    device_id: str
    key: DeviceKey
    credentials: dict[str, IssuedCredential] = field(default_factory=dict)  # by grant id
    revocation_list: tuple[int, bytes] | None = None  # (version, signed list)
    lost: bool = False


@dataclass(slots=True)
class DayStats:
    attempts: int = 0
    opened: int = 0
    denied: Counter[str] = field(default_factory=Counter)
    opened_offline: int = 0
    late_arrivals: int = 0
    uploads: int = 0
    anomalies: Counter[str] = field(default_factory=Counter)
    low_battery: int = 0
    lists_published: int = 0
    lists_applied: int = 0
    finder_denied: int = 0


def find_fixtures(explicit: Path | None) -> Path | None:
    """Return the HL7 Norway fixtures folder: the given one, or ../shared/fixtures upwards."""
    if explicit is not None:
        return explicit if explicit.is_dir() else None
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        candidate = folder.parent / "shared" / "fixtures"
        if candidate.is_dir():
            return candidate
    return None


def _prepare_folder(folder: Path) -> None:
    if folder.exists():
        if not (folder / DEMO_MARKER).exists() and any(folder.iterdir()):
            raise SystemExit(
                f"portner demo: {folder} exists and is not a demo folder; refusing to wipe it "
                "(choose another --data-dir)"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True, mode=0o700)
    folder.chmod(0o700)  # the demo's database and Encounters hold (synthetic) personal data
    (folder / DEMO_MARKER).write_text("made by portner demo; wiped on the next run\n")


def run_demo(opts: DemoOptions, *, console: Console) -> dict[str, Any]:
    """Run the whole day and return its summary (also printed for people unless --json)."""
    zone = ZoneInfo("Europe/Oslo")
    folder = opts.data_dir
    _prepare_folder(folder)
    rng = random.Random(opts.seed)
    ids = IdSource(opts.seed)
    day0 = datetime.combine(opts.day, time(0), zone)
    clock = SimClock(datetime.combine(opts.day, time(5, 30), zone))

    console.print(f"[bold]Portner demo[/bold] - Demokommune, {opts.day.isoformat()}, seed {opts.seed}")
    engine = open_database(opts.db_url or f"sqlite:///{(folder / 'portner.sqlite').as_posix()}")
    try:
        return _run_day(opts, engine, folder, zone, rng, ids, day0, clock, console)
    finally:
        engine.dispose()


def _run_day(
    opts: DemoOptions,
    engine: Engine,
    folder: Path,
    zone: ZoneInfo,
    rng: random.Random,
    ids: IdSource,
    day0: datetime,
    clock: SimClock,
    console: Console,
) -> dict[str, Any]:
    """Everything after the database is open: import, phones, locks, the day, the summary."""
    fixtures = find_fixtures(opts.fixtures) if opts.use_fixtures else None
    demo = load_demo_site(
        engine, folder, seed=opts.seed, day=opts.day, ids=ids, now=clock(),
        residents=opts.residents, staff=opts.staff, fixtures=fixtures,
    )
    municipality, secrets, site, report = demo.municipality, demo.secrets, demo.site, demo.report
    fixture_sources = range(demo.fixture_files)
    console.print(
        f"Care record: {site.patient_count} residents, {site.practitioner_count} staff, "
        f"{site.plan_count} visit plans written as VKP R4 files"
    )
    with engine.connect() as conn:
        issuers = trusted_issuers(conn, MUNICIPALITY)
    console.print(
        f"Imported: {report.visits_added} visits and {report.grants_created} door grants "
        f"(today and tomorrow morning); {report.quarantined} entries quarantined, "
        f"{report.skipped} resources skipped as not visit sources"
        + (f" (with {len(fixture_sources)} HL7 Norway example files)" if fixture_sources else "")
    )

    # 2. Phones: every staff member registers a device; the day's credentials are issued.
    # (Relatives registered from the care record's contacts get no door keys.)
    with engine.connect() as conn:
        actors = [a for a in Repository(conn).actors(MUNICIPALITY) if a.role in STAFF_ROLES]
    phones: dict[str, Phone] = {}
    for actor in actors:
        key = DeviceKey.from_private_bytes(ids.token(32))
        device = register_device(
            engine, actor.id, key.public_key_bytes, now=clock(), ids=ids, by="demo:enrolment"
        )
        phones[actor.id] = Phone(actor.id, device.id, key)
    clock.now = datetime.combine(opts.day, time(6, 0), zone)
    shift = (day0, day0 + timedelta(days=1, hours=4))
    issued = issue_for_shift(
        engine,
        secrets.issuer,
        [p.device_id for p in phones.values()],
        window_start=shift[0],
        window_end=shift[1],
        now=clock(),
        ids=ids,
    )
    by_device = {p.device_id: p for p in phones.values()}
    for cred in issued:
        by_device[cred.device_id].credentials[cred.grant.id] = cred
    sizes = [len(c.blob) for c in issued]
    console.print(
        f"Issued {len(issued)} offline door credentials to {len(phones)} phones "
        f"({min(sizes, default=0)}-{max(sizes, default=0)} bytes each)"
    )

    # 3. The locks: simulated devices holding the issuer's public key and their own log key.
    with engine.connect() as conn:
        lock_rows = Repository(conn).all_locks(MUNICIPALITY)
    locks: dict[str, SimulatedLock] = {}
    lock_by_door: dict[str, SimulatedLock] = {}
    for i, row in enumerate(lock_rows):
        # Every 40th lock starts just above the low-battery threshold, so the day raises alarms.
        battery = Battery(percent=rng.choice([100.0, 90.0, 75.0, 60.0]) if i % 40 else 20.02)
        lock = SimulatedLock(
            lock_id=row.id,
            door_id=row.door_id,
            issuers=issuers,
            lock_key=secrets.lock_key(row.id),
            clock=LockClock(
                clock,
                offset=timedelta(seconds=rng.uniform(-8, 8)),
                drift_ppm=rng.uniform(-30, 30),
            ),
            battery=battery,
            random=seeded_random(opts.seed * 100_003 + i),
        )
        lock.online = True
        locks[row.id] = lock
        lock_by_door[row.door_id] = lock

    # 3b. Or the same locks as Zigbee keypad locks through the broker.
    fleet = None
    if opts.locks == "zigbee2mqtt":
        from portner.demo.zigbee import ZigbeeFleet

        fleet = ZigbeeFleet(engine, clock, broker=opts.broker, seed=opts.seed, municipality_id=MUNICIPALITY,
                            secrets=secrets, ids=ids, lock_ids=list(locks))
        fleet.start()
        console.print(f"Locks: {len(locks)} Zigbee keypad locks behind Zigbee2MQTT on {opts.broker} "
                      f"(topic {fleet.base}/), onboarded and swept")
    try:
        return _day_and_close(opts, engine, folder, zone, rng, ids, day0, clock, console, municipality, secrets,
                              site, report, fixtures, issued, phones, locks, lock_by_door, fleet)
    finally:
        if fleet is not None:
            fleet.stop()


def _day_and_close(opts: DemoOptions, engine: Engine, folder: Path, zone: ZoneInfo, rng: random.Random,
                   ids: IdSource, day0: datetime, clock: SimClock, console: Console, municipality: Municipality,
                   secrets: MunicipalitySecrets, site: Any, report: ImportReport, fixtures: Path | None,
                   issued: list[IssuedCredential], phones: dict[str, Phone], locks: dict[str, SimulatedLock],
                   lock_by_door: dict[str, SimulatedLock], fleet: Any) -> dict[str, Any]:
    # 4. The day itself.
    sim = _Day(
        engine=engine,
        clock=clock,
        rng=rng,
        zone=zone,
        day=opts.day,
        municipality=municipality,
        secrets=secrets,
        ids=ids,
        phones=phones,
        locks=locks,
        lock_by_door=lock_by_door,
        site_plans_dir=site.plans_dir,
        console=console,
        seed=opts.seed,
        fleet=fleet,
    )
    sim.run(show_progress=not opts.json)

    # 5. Close the day: last sync, missed visits, write-back, audit.
    clock.now = day0 + timedelta(days=1, hours=5)
    sim.sync_all()
    if fleet is not None:
        for _ in range(3):  # the last removals after the last windows
            clock.now += timedelta(minutes=10)
            fleet.sync()
    missed = sim.close_day()
    delivery = deliver_outbox(
        engine, FolderSink(folder / "encounters"), municipality_id=MUNICIPALITY, now=clock()
    )
    write_checkpoint(engine, folder, now=clock())
    with engine.connect() as conn:
        audit = verify_audit(conn)
    summary = sim.summary(
        report=report,
        issued=issued,
        missed=missed,
        delivered=delivery.delivered,
        audit_ok=audit.ok,
        audit_count=audit.count,
        fixtures=fixtures,
        folder=folder,
        site=site,
        # A password in the URL is not written to summary.json or the screen.
        database=make_url(opts.db_url).render_as_string(hide_password=True) if opts.db_url else None,
    )
    if fleet is not None:
        summary["zigbee2mqtt"] = fleet.summary()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if not opts.json:
        print_summary(summary, console)
    return summary


class _Day:
    """The simulated day: a time-ordered queue of what phones, locks and people do."""

    OUTAGE = (time(14, 0), time(16, 0))
    CANCEL_AT = time(11, 0)
    LOST_AT = time(12, 0)
    SYNC_EVERY = timedelta(minutes=30)
    WALK_BETWEEN_DOORS = timedelta(seconds=45)

    def __init__(
        self,
        *,
        engine: Engine,
        clock: SimClock,
        rng: random.Random,
        zone: ZoneInfo,
        day: date,
        municipality: Municipality,
        secrets: MunicipalitySecrets,
        ids: IdSource,
        phones: dict[str, Phone],
        locks: dict[str, SimulatedLock],
        lock_by_door: dict[str, SimulatedLock],
        site_plans_dir: Path,
        console: Console,
        seed: int,
        fleet: Any = None,
    ) -> None:
        self.fleet = fleet  # the locks behind Zigbee2MQTT (demo.zigbee), or None for phone keys
        if fleet is not None:
            fleet.schedule, fleet.platform_up = self.at, self.platform_up
        self.engine, self.clock, self.rng, self.zone, self.day = engine, clock, rng, zone, day
        self.municipality, self.secrets, self.ids, self.seed = municipality, secrets, ids, seed
        self.phones, self.locks, self.lock_by_door = phones, locks, lock_by_door
        self.site_plans_dir, self.console = site_plans_dir, console
        self.stats = DayStats()
        self._queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self._order = itertools.count()
        day0 = datetime.combine(self.day, time(0), self.zone)
        self.outage = (
            datetime.combine(self.day, self.OUTAGE[0], self.zone),
            datetime.combine(self.day, self.OUTAGE[1], self.zone),
        )
        self.day0 = day0
        self.cancelled_visit: str | None = None
        self.inside: set[str] = set()  # visits whose nurse got through the whole door path (keypad)
        self.lost_phone: Phone | None = None

    # -- scheduling ---------------------------------------------------------------------------
    def at(self, when: datetime, action: Callable[[], None]) -> None:
        heapq.heappush(self._queue, (when, next(self._order), action))

    def platform_up(self) -> bool:
        return not (self.outage[0] <= self.clock.now < self.outage[1])

    def run(self, *, show_progress: bool) -> None:
        with self.engine.connect() as conn:
            visits = Repository(conn).visits_between(
                self.municipality.id, self.day0, self.day0 + timedelta(days=1, hours=4)
            )
            self.visits = {v.id: v for v in visits}
            grants = Repository(conn).active_grants_of_visits(list(self.visits))
        self.grants_by_visit: dict[str, list[Any]] = {}
        for g in grants:
            self.grants_by_visit.setdefault(g.visit_id, []).append(g)
        for v in visits:
            if v.status is VisitStatus.PLANNED and v.id in self.grants_by_visit:
                self._plan_visit(v)
        tick = self.day0 + timedelta(hours=6)
        while tick <= self.day0 + timedelta(days=1, hours=4):
            self.at(tick, self.sync_all)
            tick += self.SYNC_EVERY
        self.at(datetime.combine(self.day, self.CANCEL_AT, self.zone), self.cancel_one_visit)
        self.at(datetime.combine(self.day, self.LOST_AT, self.zone), self.lose_a_phone)
        total = len(self._queue)
        with Progress(console=self.console, transient=True, disable=not show_progress) as bar:
            task = bar.add_task("Running the day", total=total)
            while self._queue:
                when, _, action = heapq.heappop(self._queue)
                self.clock.now = max(self.clock.now, when)
                action()
                bar.advance(task)

    def _plan_visit(self, v: Visit) -> None:
        roll = self.rng.random()
        if roll < 0.03:
            # Very late: past the end of the visit plus grace; the lock must refuse.
            delay = (v.planned_end - v.planned_start) + self.municipality.window_grace + timedelta(minutes=10)
        elif roll < 0.18:
            delay = timedelta(minutes=self.rng.randint(15, 40))
            self.stats.late_arrivals += 1
        else:
            delay = timedelta(minutes=self.rng.randint(-10, 10))
        duration = (v.planned_end - v.planned_start) + timedelta(minutes=self.rng.randint(-5, 5))
        arrive = v.planned_start + delay
        for actor_id in v.staff_ids[:1]:  # the first assigned staff member does the visit
            self.at(arrive, lambda v=v, a=actor_id: self.arrive(v, a))
            self.at(arrive + max(duration, timedelta(minutes=5)), lambda v=v: self.depart(v))

    # -- what people and phones do -------------------------------------------------------------
    def arrive(self, visit: Visit, actor_id: str) -> None:
        if visit.id == self.cancelled_visit:
            return  # the nurse's app removed the visit when it was cancelled
        phone = self.phones.get(actor_id)
        if phone is None:
            return
        if self.platform_up():
            self._phone_sync(phone)
        grant = next((g for g in self.grants_by_visit.get(visit.id, []) if g.actor_id == actor_id), None)
        if grant is None:
            return
        if self.fleet is not None:
            self._walk_keypad(grant, 0)
            return
        cred = phone.credentials.get(grant.id)
        if cred is None:
            return
        self._walk(phone, cred.blob, grant.door_ids, 0)

    def _walk(self, phone: Phone, credential: bytes, doors: tuple[str, ...], index: int) -> None:
        """Open the door path in order, with the walk up the stairs between two doors."""
        if self.open_door(phone, credential, doors[index]) and index + 1 < len(doors):
            step = self.clock.now + self.WALK_BETWEEN_DOORS
            self.at(step, lambda: self._walk(phone, credential, doors, index + 1))

    def _walk_keypad(self, grant: Any, index: int) -> None:
        """The same walk at Zigbee keypad locks: the nurse types the code her phone showed her."""
        lock = self.lock_by_door[grant.door_ids[index]]
        opened = self.fleet.type_code(grant.id, lock.lock_id)
        self.stats.attempts += 1
        if not opened:
            self.stats.denied["keypad_refused"] += 1
            return
        self.stats.opened += 1
        if not self.platform_up():
            self.stats.opened_offline += 1
        if index + 1 < len(grant.door_ids):
            self.at(self.clock.now + self.WALK_BETWEEN_DOORS, lambda: self._walk_keypad(grant, index + 1))
        else:
            self.inside.add(grant.visit_id)

    def open_door(self, phone: Phone, credential: bytes, door_id: str) -> bool:
        lock = self.lock_by_door[door_id]
        if phone.revocation_list and lock.revocation_version < phone.revocation_list[0]:
            # Phones carry the newest signed list to every lock they touch (offline revocation).
            if lock.install_revocation_list(phone.revocation_list[1]):
                self.stats.lists_applied += 1
        challenge = lock.challenge()
        proof = phone.key.sign_proof(challenge, door_id, "unlock")
        verdict = lock.present(credential, proof, challenge=challenge, action="unlock")
        self.stats.attempts += 1
        if verdict.allowed:
            self.stats.opened += 1
            if not self.platform_up():
                self.stats.opened_offline += 1
            return True
        self.stats.denied[str(verdict.reason)] += 1
        return False

    def depart(self, visit: Visit) -> None:
        grants = self.grants_by_visit.get(visit.id, [])
        if not grants or visit.id == self.cancelled_visit:
            return
        if self.fleet is not None:
            # At a keypad lock the nurse who got in locks the flat door from outside as she leaves.
            if visit.id in self.inside:
                self.fleet.press_lock(self.lock_by_door[grants[0].door_ids[-1]].lock_id)
            return
        inner = grants[0].door_ids[-1]
        lock = self.lock_by_door[inner]
        # Only a visit that got in can leave; the lock reports the door locked from inside.
        if lock.log and any(e.kind == "unlock" and e.allowed for e in lock.log[-6:]):
            lock.record_exit(source="inside")

    def _phone_sync(self, phone: Phone) -> None:
        latest = latest_revocation_list(self.engine, self.municipality.id)
        if latest is not None and latest != phone.revocation_list:
            phone.revocation_list = latest

    # -- the platform's side -------------------------------------------------------------------
    def sync_all(self) -> None:
        """Locks reachable through their gateways upload what is new since the last sync."""
        if not self.platform_up():
            return
        if self.fleet is not None:
            self.fleet.sync()
            return
        with self.engine.connect() as conn:
            synced = dict(conn.execute(select(t.locks.c.id, t.locks.c.synced_seq)).all())
        for lock_id, lock in self.locks.items():
            events = lock.events_since(int(synced.get(lock_id, 0)))
            if not events:
                continue
            events = self._relay_faults(lock_id, events)
            nonce = self.ids.token(16)
            seq, digest, mac = lock.attest_head(nonce)
            status = lock.status()
            result = ingest_upload(
                self.engine,
                lock_id,
                events,
                lock_key=self.secrets.lock_key(lock_id),
                now=self.clock.now,
                battery_percent=status.battery_percent,
                clock_offset_s=(status.lock_time - self.clock.now).total_seconds(),
                head=HeadAttestation(nonce, seq, digest, mac),
            )
            self.stats.uploads += 1
            self.stats.anomalies.update(result.anomalies)
            self.stats.low_battery += sum(1 for e in events if e.kind == "battery_low")

    def _relay_faults(self, lock_id: str, events: list[Any]) -> list[Any]:
        """Inject what real relays do now and then: duplicate, reorder and drop uploads."""
        if len(events) < 3:
            return events
        roll = self.rng.random()
        if roll < 0.02:
            return [*events, events[0]]  # duplicated
        if roll < 0.04:
            return [events[1], events[0], *events[2:]]  # reordered
        if roll < 0.05:
            return [events[0], *events[2:]]  # one dropped: a gap until the next upload
        if roll < 0.06:
            return events[:-1]  # the newest withheld: only the lock's attested head shows it
        return events

    def cancel_one_visit(self) -> None:
        """The care record cancels an afternoon visit; its grant and credential are revoked."""
        later = [
            v
            for v in self.visits.values()
            if v.planned_start > self.clock.now + timedelta(hours=2) and v.id in self.grants_by_visit
        ]
        if not later:
            return
        victim = sorted(later, key=lambda v: (v.planned_start, v.id))[0]
        plan_key = self._plan_key(victim.id)
        updated = write_plan_cancelling(self.site_plans_dir, plan_key, victim, self.zone)
        if updated is None:
            return
        sources = read_sources(
            [updated],
            timezone=self.municipality.timezone,
            horizon_start=self.day0 - timedelta(days=1),
            horizon_end=self.day0 + timedelta(days=2),
            accept_synthetic_ids=True,
        )
        import_sources(self.engine, self.municipality, sources, now=self.clock.now, ids=self.ids)
        with self.engine.connect() as conn:
            status = Repository(conn).get_visit(victim.id)
        if status is not None and status.status is VisitStatus.CANCELLED:
            self.cancelled_visit = victim.id
            self._publish()

    def _plan_key(self, visit_id: str) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(select(t.visits.c.plan_key).where(t.visits.c.id == visit_id)).scalar())

    def lose_a_phone(self) -> None:
        """A nurse loses her phone: revoke it, publish the list, give her a new phone."""
        candidates = sorted(
            {g.actor_id for gs in self.grants_by_visit.values() for g in gs
             if g.not_before > self.clock.now + timedelta(hours=1)}
        )
        if not candidates:
            return
        actor_id = candidates[len(candidates) // 2]
        old = self.phones[actor_id]
        old.lost = True
        revoke_device(self.engine, old.device_id, now=self.clock.now, by="operator:demo", reason="lost phone")
        self._publish()
        key = DeviceKey.from_private_bytes(self.ids.token(32))
        device = register_device(
            self.engine, actor_id, key.public_key_bytes, now=self.clock.now, ids=self.ids,
            by="operator:demo",
        )
        new = Phone(actor_id, device.id, key)
        for cred in issue_for_shift(
            self.engine, self.secrets.issuer, [device.id],
            window_start=self.clock.now, window_end=self.day0 + timedelta(days=1, hours=4),
            now=self.clock.now, ids=self.ids,
        ):
            new.credentials[cred.grant.id] = cred
        self._phone_sync(new)
        self.phones[actor_id] = new
        self.lost_phone = old
        # Whoever found the phone tries the door of her next visit after she has been there.
        future = sorted(
            (g for gs in self.grants_by_visit.values() for g in gs
             if g.actor_id == actor_id and g.not_before > self.clock.now and g.id in old.credentials),
            key=lambda g: g.not_before,
        )
        if future and self.fleet is None:  # (keypad locks never see the phone: nothing to try)
            target = future[0]
            self.at(target.not_after - timedelta(minutes=5), lambda: self._finder_tries(old, target))

    def _finder_tries(self, phone: Phone, grant: Any) -> None:
        cred = phone.credentials.get(grant.id)
        if cred is None:
            return
        before = sum(self.stats.denied.values())
        self.open_door(phone, cred.blob, grant.door_ids[0])
        if sum(self.stats.denied.values()) > before:
            self.stats.finder_denied += 1

    def _publish(self) -> None:
        if not self.platform_up():
            return
        published = publish_revocation_list(
            self.engine, self.secrets.issuer, self.municipality.id, now=self.clock.now, by="system:revocation"
        )
        self.stats.lists_published += 1
        for phone in self.phones.values():
            if not phone.lost:
                phone.revocation_list = (published.version, published.blob)

    def close_day(self) -> int:
        """Visits nobody opened the door for are marked missed (their grants simply lapse)."""
        # Visits at homes without an e-lock leave no door events; they are not "missed".
        with_elock = select(t.homes.c.resident_id).where(t.homes.c.elock_system.is_not(None))
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.visits)
                .where(
                    t.visits.c.municipality_id == self.municipality.id,
                    t.visits.c.status == VisitStatus.PLANNED.value,
                    t.visits.c.planned_end < self.clock.now,
                    t.visits.c.resident_id.in_(with_elock),
                )
                .values(status=VisitStatus.MISSED.value)
            )
            return int(result.rowcount or 0)

    # -- the report ------------------------------------------------------------------------------
    def summary(self, **kw: Any) -> dict[str, Any]:
        report: ImportReport = kw["report"]
        with self.engine.connect() as conn:
            statuses = Counter(
                r.status
                for r in conn.execute(
                    select(t.visits.c.status).where(
                        t.visits.c.municipality_id == self.municipality.id,
                        t.visits.c.planned_start >= self.day0,
                        t.visits.c.planned_start < self.day0 + timedelta(days=1),
                    )
                )
            )
            anomalies = Counter(r.kind for r in conn.execute(select(t.lock_log_anomalies.c.kind)))
            example = conn.execute(
                select(t.visits.c.resident_id)
                .where(t.visits.c.status == VisitStatus.COMPLETED.value)
                .order_by(t.visits.c.resident_id)
                .limit(1)
            ).scalar()
        planned = sum(statuses.values())
        keyed = len({c.grant.visit_id for c in kw["issued"]})
        physical = physical_key_list(
            self.engine, self.municipality.id, self.day0, self.day0 + timedelta(days=1), self.municipality.timezone
        )
        staff_on_shift = {a for v in self.visits.values() for a in v.staff_ids}
        staff_needing_key = {a for pk in physical for a in pk.staff_ids}
        baseline = self.municipality.baseline_key_minutes_per_shift
        shifts_without_key = len(staff_on_shift - staff_needing_key)
        minutes_saved = baseline * shifts_without_key
        problems = Counter(p.message for p in report.problems if p.severity.value == "error")
        return {
            "seed": self.seed,
            "day": self.day.isoformat(),
            "municipality": self.municipality.name,
            "municipality_id": self.municipality.id,
            "import": {
                "files": report.files,
                "residents": report.patients,
                "staff": report.practitioners,
                "visit_plans": report.plans_seen,
                "visits": report.visits_added,
                "grants": report.grants_created,
                "quarantined": report.quarantined,
                "skipped": report.skipped,
                "problems": dict(sorted(problems.items())),
                "hl7_norway_fixtures": str(kw["fixtures"]) if kw["fixtures"] else None,
            },
            "visits": {
                "planned": planned,
                "keyed": keyed,
                "opened": statuses.get("completed", 0) + statuses.get("in_progress", 0),
                "completed": statuses.get("completed", 0),
                "cancelled": statuses.get("cancelled", 0),
                "missed": statuses.get("missed", 0),
                "physical_key": len(physical),
                "late_arrivals": self.stats.late_arrivals,
            },
            "doors": {
                "attempts": self.stats.attempts,
                "opened": self.stats.opened,
                "denied": sum(self.stats.denied.values()),
                "denied_reasons": dict(sorted(self.stats.denied.items())),
                "opened_while_platform_unreachable": self.stats.opened_offline,
            },
            "outage": {
                "from": self.outage[0].strftime("%H:%M"),
                "to": self.outage[1].strftime("%H:%M"),
            },
            "revocation": {
                "lists_published": self.stats.lists_published,
                "lists_applied_by_locks": self.stats.lists_applied,
                "cancelled_visit": self.cancelled_visit,
                "lost_phone_revoked": self.lost_phone is not None,
                "lost_phone_denied_at_door": self.stats.finder_denied,
            },
            "locks": {
                "count": len(self.locks),
                "uploads": self.stats.uploads,
                "log_anomalies_detected": dict(sorted(anomalies.items())),
                "low_battery_alarms": self.stats.low_battery,
            },
            "write_back": {
                "encounters_delivered": kw["delivered"],
                "folder": str(kw["folder"] / "encounters"),
            },
            "time_saved": {
                "baseline_minutes_per_shift": baseline,
                "staff_shifts": len(staff_on_shift),
                "shifts_without_key_store_trip": shifts_without_key,
                "minutes_saved": minutes_saved,
                "hours_saved": round(minutes_saved / 60, 1),
            },
            "audit": {"ok": kw["audit_ok"], "entries": kw["audit_count"]},
            "missed_marked": kw["missed"],
            "example_resident": example,
            "data_dir": str(kw["folder"]),
            "database": kw["database"],
        }
