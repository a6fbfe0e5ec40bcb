"""Import visit plans: care-record records in, residents, visits and grants out, in one transaction.

Rules (each one a choice we made where the issue is silent, see docs/import.md):
- Residents are matched by national id; a plan whose subject matches no resident is quarantined.
- Performers are matched to actors by HER-id, national id or HPR number. No match, or identifiers
  that point at different actors, quarantines that occurrence: we never guess who a nurse is.
- Anything not validly in the plan has no visit and no grant (fail closed): an occurrence that
  disappears, is cancelled, or becomes invalid on re-import cancels its visit and revokes its grants.
- Re-importing a plan that yields the same occurrences changes nothing (content hash).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Column, Connection, Engine

from portner.domain.care_record import (
    IdKind,
    ImportProblem,
    ParsedSource,
    PatientRecord,
    PlannedOccurrence,
    PractitionerRecord,
    Severity,
    VisitPlanRecord,
)
from portner.domain.model import (
    Actor,
    ActorId,
    Door,
    DoorId,
    DoorKind,
    Grant,
    GrantId,
    GrantOrigin,
    GrantStatus,
    Home,
    HomeId,
    Lock,
    LockId,
    Municipality,
    Resident,
    ResidentId,
    Role,
    Visit,
    VisitId,
    VisitStatus,
    ZoneId,
)
from portner.domain.national_id import redact_national_ids
from portner.domain.windows import visit_window
from portner.services.ids import IdSource
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.bulk import instant_writer, json_id_list
from portner.storage.db import refresh_statistics
from portner.storage.repository import Repository

SYSTEM_ACTOR = "system:import"
# Limits that stop one malformed or hostile plan from flooding the day (or the database).
MAX_VISITS_PER_PLAN = 2000
MAX_VISIT_LENGTH = timedelta(hours=24)
MAX_RELATIVES = 20
_DESCRIPTION_LIMIT = t.visits.c.description.type.length or 0
_SOURCE_KEY_LIMIT = t.visits.c.source_key.type.length or 0


@dataclass(frozen=True, slots=True)
class DoorSpec:
    """One door of an installation: Portner's own registry of what is mounted where."""

    door_id: str
    lock_id: str
    kind: DoorKind
    model: str = ""
    backend: str = "simulated"


@dataclass(slots=True)
class ImportReport:
    """What one import did; printed for people and as JSON for machines."""

    files: int = 0
    patients: int = 0
    practitioners: int = 0
    plans_seen: int = 0
    plans_unchanged: int = 0
    plans_rejected: int = 0
    visits_added: int = 0
    visits_moved: int = 0
    visits_cancelled: int = 0
    grants_created: int = 0
    grants_revoked: int = 0
    quarantined: int = 0
    skipped: int = 0
    problems: list[ImportProblem] = field(default_factory=list)
    physical_key_visits: int = 0
    revoked_grant_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "patients": self.patients,
            "practitioners": self.practitioners,
            "plans_seen": self.plans_seen,
            "plans_unchanged": self.plans_unchanged,
            "plans_rejected": self.plans_rejected,
            "visits_added": self.visits_added,
            "visits_moved": self.visits_moved,
            "visits_cancelled": self.visits_cancelled,
            "grants_created": self.grants_created,
            "grants_revoked": self.grants_revoked,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "physical_key_visits": self.physical_key_visits,
            "problems": [
                {
                    "file": p.source.file,
                    "resource": f"{p.source.resource_type}/{p.source.resource_id}",
                    "field": p.field,
                    "message": p.message,
                    "severity": p.severity.value,
                }
                for p in self.problems
            ],
        }


def import_sources(
    engine: Engine,
    municipality: Municipality,
    sources: Sequence[ParsedSource],
    *,
    now: datetime,
    ids: IdSource,
    installations: Mapping[str, Sequence[DoorSpec]] | None = None,
    practitioner_role: Role = Role.HOME_NURSING,
    practitioner_organisation: str = "Hjemmesykepleien",
) -> ImportReport:
    """Import everything the sources yielded, in one transaction; return what changed."""
    with engine.begin() as conn:
        run = _ImportRun(conn, municipality, now, ids, installations or {})
        report = run.report
        report.files = len(sources)
        for src in sources:
            for prac in src.practitioners:
                run.practitioner(prac, practitioner_role, practitioner_organisation)
        for src in sources:
            for pat in src.patients:
                run.patient(pat)
        for src in sources:
            for plan in src.plans:
                run.plan(plan)
        for src in sources:
            for problem in src.problems:
                run.problem(problem)
        run.flush()
    if isinstance(engine, Engine) and report.visits_added + report.grants_created >= BULK_ROWS:
        # Not inside a caller's transaction (a quarantine correction): its own, after the commit.
        refresh_statistics(engine, list(_FILLED_IN_BULK))
    return report


# An import that adds this many visits and grants is a bulk load (the demo's, a
# municipality's first or a nightly one); the planner's statistics of what it filled are
# refreshed after it (storage.db.refresh_statistics). A FHIR push of one plan is not.
BULK_ROWS = 500
_FILLED_IN_BULK = ("residents", "homes", "doors", "locks", "actors", "relations", "visit_plans",
                   "visits", "grants")


class _ImportRun:
    """State of one import transaction: lookup indexes, pending rows and audit entries."""

    def __init__(
        self,
        conn: Connection,
        municipality: Municipality,
        now: datetime,
        ids: IdSource,
        installations: Mapping[str, Sequence[DoorSpec]],
    ) -> None:
        self.repo = Repository(conn)
        self.conn = conn
        self.m = municipality
        # Everything `now` touches is stored or hashed in UTC; converting once saves a zone
        # lookup per audit entry. A naive `now` is kept as it is, to be refused where it was.
        self.now = now if now.utcoffset() is None else now.astimezone(UTC)
        self.stored = instant_writer(conn)
        self.zone = ZoneInfo(municipality.timezone)
        self.ids = ids
        self.installations = installations
        self.report = ImportReport()
        self.audit: list[AuditEntry] = []
        self.quarantine_rows: list[dict[str, object]] = []
        self.open_quarantine = self.repo.open_quarantine_keys(municipality.id)
        self.residents, self.residents_by_ref = self.repo.resident_indexes(municipality.id)
        self.homes = self.repo.homes_by_resident(municipality.id)
        self.paths = self.repo.door_paths(municipality.id)
        self.zones = self.repo.zone_ids_by_path(municipality.id)
        self.plan_hashes = self.repo.plan_hashes(municipality.id)
        self.actor_index: dict[tuple[IdKind, str], ActorId] = {}
        for actor in self.repo.actors(municipality.id):
            self._index_actor(actor)
        # New rows go straight into driver-ready tuples (see Repository.insert_visit_rows):
        # a national day has ~50,000 of each, and objects built only to be converted cost time.
        self.new_visit_rows: list[tuple[object, ...]] = []
        self.new_grant_rows: list[tuple[object, ...]] = []
        self.new_plans: list[dict[str, object]] = []
        self.seen_in_run: dict[str, str] = {}  # plan key -> digest, to catch reused identifiers

    def _local(self, at: datetime) -> str:
        """An instant as the municipality's people read it, for problem reports."""
        return at.astimezone(self.zone).strftime("%Y-%m-%d %H:%M %Z")

    # -- actors ---------------------------------------------------------------------------
    def _index_actor(self, a: Actor) -> None:
        for kind, value in (
            (IdKind.HER_ID, a.her_id),
            (IdKind.HPR_NUMBER, a.hpr_number),
            (IdKind.NATIONAL_ID, a.national_id),
        ):
            if value:
                self.actor_index[(kind, value)] = a.id

    def practitioner(self, rec: PractitionerRecord, role: Role, organisation: str) -> None:
        known = {self.actor_index.get((i.kind, i.value)) for i in rec.identifiers} - {None}
        if len(known) > 1:
            self.problem(
                ImportProblem(rec.source, "identifier", "identifiers name different staff members")
            )
            return
        by_kind = {i.kind: i.value for i in rec.identifiers}
        existing = self.repo.get_actor(known.pop()) if known else None  # type: ignore[arg-type]
        actor_id = existing.id if existing else ActorId(self.ids.new("stf"))
        actor = Actor(
            id=actor_id,
            municipality_id=self.m.id,
            role=existing.role if existing else role,
            organisation=existing.organisation if existing else (rec.organisation or organisation),
            display_name=rec.name,
            her_id=by_kind.get(IdKind.HER_ID) or (existing.her_id if existing else None),
            hpr_number=by_kind.get(IdKind.HPR_NUMBER) or (existing.hpr_number if existing else None),
            national_id=by_kind.get(IdKind.NATIONAL_ID)
            or (existing.national_id if existing else None),
            active=existing.active if existing else True,
        )
        self.repo.upsert_actor(actor)
        self._index_actor(actor)
        self.report.practitioners += 1
        if existing is None:
            self.audit.append(
                AuditEntry(self.now, SYSTEM_ACTOR, "actor:registered", actor.id, {"role": actor.role})
            )

    # -- residents ----------------------------------------------------------------------
    def patient(self, rec: PatientRecord) -> None:
        too_long = _too_long(
            [
                ("name", rec.name, t.residents.c.display_name),
                ("address", rec.address, t.homes.c.address),
                ("address.extension(vkp-elock)", rec.elock_system, t.homes.c.elock_system),
                ("extension(vkp-sone)", "|".join(rec.zone_path), t.zones.c.path),
                ("id", rec.source.resource_id, t.residents.c.source_ref),
            ]
        )
        if too_long:
            self.problem(ImportProblem(rec.source, too_long, "too long to store"))
            return
        nid = rec.national_id
        # Without a national id the resident is still known by the care record's logical id, which
        # plans and appointments can reference ("Patient/<id>"); that is a match, not a guess. A
        # resource without an id (the reader labels it by position, or masked an id that looked
        # like a national id) cannot be referenced.
        ref = rec.source.resource_id if _referenceable(rec.source.resource_id) else None
        if nid is None:
            if ref is None:
                self.problem(
                    ImportProblem(rec.source, "identifier", "no national id and no id to match plans by")
                )
                return
            existing = self.residents_by_ref.get(ref)
            if existing is not None and existing.national_id is not None:
                # Never let a record without a national id take over a resident who has one.
                self.problem(
                    ImportProblem(
                        rec.source,
                        "identifier",
                        "this Patient id belongs to a resident known by national id; the record has none",
                    )
                )
                return
        else:
            existing = self.residents.get(nid)
            holder = self.residents_by_ref.get(ref) if ref else None
            if holder is not None and holder.national_id != nid:
                self.problem(
                    ImportProblem(
                        rec.source,
                        "id",
                        "another resident already has this Patient id; plans cannot reference it",
                    )
                )
                ref = None
        zone_id = self._zone(rec.zone_path)
        resident = Resident(
            id=existing.id if existing else ResidentId(self.ids.new("res")),
            municipality_id=self.m.id,
            national_id=nid,
            display_name=rec.name,
            zone_id=zone_id,
            source_ref=ref or (existing.source_ref if existing else None),
        )
        self.repo.upsert_resident(resident)
        if nid:
            self.residents[nid] = resident
        if resident.source_ref:
            self.residents_by_ref[resident.source_ref] = resident
        home = self.homes.get(resident.id)
        new_home = Home(
            id=home.id if home else HomeId(self.ids.new("hom")),
            resident_id=resident.id,
            address=rec.address,
            elock_system=rec.elock_system,
        )
        self.repo.upsert_home(new_home)
        self.homes[resident.id] = new_home
        if new_home.has_elock and new_home.id not in self.paths:
            self._install(new_home, rec.source.resource_id)
        if home is not None and home.has_elock != new_home.has_elock:
            self._elock_changed(resident, gained=new_home.has_elock)
        self.report.patients += 1
        self._relatives(resident, rec)
        if existing is None:
            self.audit.append(
                AuditEntry(
                    self.now,
                    SYSTEM_ACTOR,
                    "resident:registered",
                    resident.id,
                    {"elock": new_home.has_elock, "zone": zone_id},
                )
            )
            return
        changed = [
            name
            for name, before, after in (
                ("name", existing.display_name, resident.display_name),
                ("zone", existing.zone_id, resident.zone_id),
                ("address", home.address if home else None, new_home.address),
                ("elock", home.elock_system if home else None, new_home.elock_system),
            )
            if before != after
        ]
        if changed:
            # Which fields changed, never their values (names and addresses stay out of the log).
            self.audit.append(
                AuditEntry(self.now, SYSTEM_ACTOR, "resident:updated", resident.id, {"fields": changed})
            )

    def _elock_changed(self, resident: Resident, *, gained: bool) -> None:
        """Give or take door keys for the resident's coming visits when the e-lock comes or goes.

        Without this a visit planned before the lock was installed would have neither a key nor
        a place on the physical-key list; and a removed lock would keep its grants.
        """
        coming = self.repo.coming_visits_of_resident(resident.id, self.now)
        grants = self.repo.active_grants_of_visits([v.id for v in coming])
        if gained:
            granted = {g.visit_id for g in grants}
            for v in coming:
                if v.id not in granted:
                    self._grant(v.id, resident.id, v.planned_start, v.planned_end, v.staff_ids)
        else:
            self._revoke(grants, "e-lock removed")

    def _relatives(self, resident: Resident, rec: PatientRecord) -> None:
        """Keep the resident's relatives as the record lists them: add new ones, end removed ones.

        Matched by name, since the care record gives contacts no identifiers.
        """
        known = self.repo.relatives_of(resident.id)
        if len(rec.relatives) > MAX_RELATIVES:
            self.problem(
                ImportProblem(rec.source, "contact", f"more than {MAX_RELATIVES} contacts")
            )
            return
        listed: set[str] = set()
        for index, relative in enumerate(rec.relatives):
            field = f"contact[{index}]"
            bad = _too_long(
                [
                    (f"{field}.name", relative.name, t.actors.c.display_name),
                    (f"{field}.relationship", relative.relationship, t.relations.c.relationship),
                    (f"{field}.telecom", relative.phone, t.relations.c.phone),
                ]
            )
            if bad:
                self.problem(ImportProblem(rec.source, bad, "too long to store"))
                continue
            if not relative.name:
                continue
            listed.add(relative.name)
            if relative.name in known:
                continue
            actor = Actor(
                id=ActorId(self.ids.new("rel")),
                municipality_id=self.m.id,
                role=Role.RELATIVE,
                organisation="pårørende",
                display_name=relative.name,
            )
            self.repo.upsert_actor(actor)
            # Free text may hold anything, even a national id: redact before storing and logging.
            relationship = redact_national_ids(relative.relationship)
            self.repo.add_relation(resident.id, actor.id, relationship, relative.phone)
            known[relative.name] = actor.id
            self.audit.append(
                AuditEntry(
                    self.now,
                    SYSTEM_ACTOR,
                    "relation:registered",
                    actor.id,
                    {"resident": resident.id, "relationship": relationship[:40]},
                )
            )
        for name, actor_id in known.items():
            if name not in listed:
                self.repo.remove_relation(resident.id, actor_id)
                self.audit.append(
                    AuditEntry(
                        self.now, SYSTEM_ACTOR, "relation:ended", actor_id, {"resident": resident.id}
                    )
                )

    def _zone(self, path: tuple[str, ...]) -> ZoneId | None:
        if not path:
            return None
        key = "|".join(path)
        if key not in self.zones:
            zone_id = ZoneId(self.ids.new("zon"))
            self.repo.add_zone(zone_id, self.m.id, key)
            self.zones[key] = zone_id
        return self.zones[key]

    def _install(self, home: Home, patient_ref: str) -> None:
        # Without a registered installation we assume the one door the care record's vkp-elock
        # names: the flat door. Multi-door paths come from the installation registry.
        specs = self.installations.get(patient_ref) or [
            DoorSpec(
                door_id=self.ids.new("d"),
                lock_id=self.ids.new("l"),
                kind=DoorKind.FLAT,
                model=home.elock_system or "",
            )
        ]
        for position, spec in enumerate(specs):
            door = Door(DoorId(spec.door_id), home.id, position, spec.kind, LockId(spec.lock_id))
            lock = Lock(LockId(spec.lock_id), door.id, spec.backend, spec.model)
            self.repo.add_door_with_lock(door, lock)
            self.audit.append(
                AuditEntry(
                    self.now,
                    SYSTEM_ACTOR,
                    "lock:installed",
                    spec.lock_id,
                    {"door": spec.door_id, "home": home.id, "position": position},
                )
            )
        self.paths[home.id] = tuple(DoorId(s.door_id) for s in specs)

    # -- plans --------------------------------------------------------------------------
    def _resident_for(self, plan: VisitPlanRecord) -> Resident | str:
        """Return the plan's resident, or why there is none; identifier and reference must agree."""
        nids = [i.value for i in plan.subject if i.kind is IdKind.NATIONAL_ID]
        by_id = {self.residents[n].id: self.residents[n] for n in nids if n in self.residents}
        by_ref = None
        if plan.subject_ref and not (nids and "://" in plan.subject_ref):
            # (An absolute reference that the reader resolved inside its Bundle brought the
            # Patient's identifiers along; those decide. Otherwise it must be Patient/<id>.)
            kind, _, ref = plan.subject_ref.partition("/")
            # Only a relative "Patient/<id>" reference names a resident we know; an absolute URL
            # or another resource type is another server's or another thing's id.
            if kind != "Patient" or not _referenceable(ref) or "/" in ref:
                return f"subject reference {plan.subject_ref!r} is not a Patient/<id> reference"
            by_ref = self.residents_by_ref.get(ref)
        if len(by_id) > 1:
            return "subject identifiers name different residents"
        if nids and not by_id:
            return "subject matches no known resident"  # never fall back to the reference
        found = next(iter(by_id.values()), None)
        if found is not None and by_ref is not None and by_ref.id != found.id:
            return "subject identifier and reference name different residents"
        result = found or by_ref
        return result if result is not None else "subject matches no known resident"

    def _match_staff(
        self, plan: VisitPlanRecord, index: int, occ: PlannedOccurrence
    ) -> tuple[ActorId, ...] | None:
        staff: list[ActorId] = []
        index_get = self.actor_index.get
        for p_index, performer in enumerate(occ.performers):
            matches = {index_get((i.kind, i.value)) for i in performer.identifiers}
            matches.discard(None)
            if len(matches) != 1:
                # Built only here: formatting it for every performer cost more than matching.
                where = (
                    f"{_activity_path(occ.key)}.detail.performer[{p_index}]"
                    f" ({self._local(occ.start)})"
                )
                message = "unknown performer" if not matches else "ambiguous performer"
                self.problem(ImportProblem(plan.source, where, message))
                return None
            staff.append(next(iter(matches)))  # type: ignore[arg-type]
        del index
        if len(staff) == 1:
            return (staff[0],)
        return tuple(dict.fromkeys(staff))

    def plan(self, plan: VisitPlanRecord) -> None:
        self.report.plans_seen += 1
        too_long = _too_long(
            [
                ("identifier", plan.plan_key, t.visits.c.plan_key),
                ("meta.versionId", plan.version, t.visit_plans.c.version),
                ("file", plan.source.file, t.visit_plans.c.source_file),
            ]
            + [
                # Field names are built only for the rare occurrence that is too long.
                (f"{_activity_path(o.key)}.detail.description", o.description, t.visits.c.description)
                for o in plan.occurrences
                if len(o.description) > _DESCRIPTION_LIMIT
            ]
            + [
                (_activity_path(o.key), o.key, t.visits.c.source_key)
                for o in plan.occurrences
                if len(o.key) > _SOURCE_KEY_LIMIT
            ]
        )
        if too_long:
            self.report.plans_rejected += 1
            self.problem(ImportProblem(plan.source, too_long, "too long to store"))
            return
        resident = self._resident_for(plan)
        if isinstance(resident, str):
            self.report.plans_rejected += 1
            self.problem(ImportProblem(plan.source, "subject", resident))
            return
        live = [o for o in plan.occurrences if not o.cancelled]
        if len(live) > MAX_VISITS_PER_PLAN:
            self.report.plans_rejected += 1
            message = f"plan yields {len(live)} visits; more than {MAX_VISITS_PER_PLAN} is not accepted"
            self.problem(ImportProblem(plan.source, "activity", message))
            return
        wanted: dict[str, tuple[PlannedOccurrence, tuple[ActorId, ...]]] = {}
        for i, occ in enumerate(live):
            if occ.end - occ.start > MAX_VISIT_LENGTH:
                where = f"{_activity_path(occ.key)}.detail.scheduledTiming ({self._local(occ.start)})"
                self.problem(ImportProblem(plan.source, where, "visit lasts longer than 24 hours"))
                continue
            staff = self._match_staff(plan, i, occ)
            if staff is not None:
                wanted[occ.key] = (occ, staff)
        digest = _plan_digest(resident.id, wanted)
        first_in_run = self.seen_in_run.setdefault(plan.plan_key, digest)
        if first_in_run != digest:
            # Two different plans under one identifier: neither overwrites the other.
            self.report.plans_rejected += 1
            message = "plan identifier is used by another plan with different content in this import"
            self.problem(ImportProblem(plan.source, "identifier", message))
            return
        known = plan.plan_key in self.plan_hashes
        if known and self.plan_hashes[plan.plan_key] == digest:
            self.report.plans_unchanged += 1
            return
        # A plan seen for the first time has no visits yet: skip the query (the common case on a
        # national day is tens of thousands of new plans, and every round trip counts).
        existing = (
            {v.source_key: v for v in self.repo.visits_of_plan(self.m.id, plan.plan_key)}
            if known
            else {}
        )
        if any(v.resident_id != resident.id for v in existing.values()):
            self.report.plans_rejected += 1
            message = "plan identifier already belongs to another resident's plan"
            self.problem(ImportProblem(plan.source, "identifier", message))
            return
        if existing:
            self._reconcile(plan, resident, wanted, existing)
        else:
            for occ, staff in wanted.values():
                self._add_visit(plan.plan_key, resident, occ, staff)
        if known:
            self.repo.save_plan(
                self.m.id,
                plan.plan_key,
                source_file=plan.source.file,
                version=plan.version,
                content_hash=digest,
                at=self.now,
                known=True,
            )
        else:
            self.new_plans.append(
                {
                    "municipality_id": self.m.id,
                    "plan_key": plan.plan_key,
                    "source_file": plan.source.file,
                    "version": plan.version,
                    "content_hash": digest,
                    "imported_at": self.now,
                }
            )
        self.plan_hashes[plan.plan_key] = digest

    def _reconcile(
        self,
        plan: VisitPlanRecord,
        resident: Resident,
        wanted: Mapping[str, tuple[PlannedOccurrence, tuple[ActorId, ...]]],
        existing: Mapping[str, Visit],
    ) -> None:
        live = [v.id for v in existing.values() if v.status is not VisitStatus.CANCELLED]
        grants_by_visit: dict[str, list[Grant]] = {}
        for g in self.repo.active_grants_of_visits(live):
            grants_by_visit.setdefault(g.visit_id or "", []).append(g)
        for key, visit in existing.items():
            if key not in wanted:
                if visit.status is not VisitStatus.CANCELLED:
                    self.repo.update_visit(visit.id, status=VisitStatus.CANCELLED)
                    self._revoke(grants_by_visit.get(visit.id, []), "visit removed from plan")
                    self.report.visits_cancelled += 1
                    self.audit.append(
                        AuditEntry(self.now, SYSTEM_ACTOR, "visit:cancelled", visit.id, {})
                    )
                continue
            occ, staff = wanted[key]
            same = (
                visit.status is not VisitStatus.CANCELLED
                and visit.planned_start == occ.start
                and visit.planned_end == occ.end
                and visit.staff_ids == staff
            )
            if same:
                continue
            self.repo.update_visit(
                visit.id,
                status=VisitStatus.PLANNED,
                planned_start=occ.start,
                planned_end=occ.end,
                staff_ids=staff,
                description=occ.description,
            )
            self._revoke(grants_by_visit.get(visit.id, []), "visit moved or reassigned")
            self._grant(visit.id, resident.id, occ.start, occ.end, staff)
            self.report.visits_moved += 1
            self.audit.append(
                AuditEntry(
                    self.now,
                    SYSTEM_ACTOR,
                    "visit:moved",
                    visit.id,
                    {"start": occ.start.isoformat(), "staff": list(staff)},
                )
            )
        for key, (occ, staff) in wanted.items():
            if key not in existing:
                self._add_visit(plan.plan_key, resident, occ, staff)

    def _add_visit(
        self,
        plan_key: str,
        resident: Resident,
        occ: PlannedOccurrence,
        staff: tuple[ActorId, ...],
    ) -> None:
        visit_id = VisitId(self.ids.new("vis"))
        stored = self.stored
        # The row of Visit(visit_id, m.id, resident.id, occ.key, occ.start, occ.end, staff,
        # PLANNED, occ.description), in Repository.insert_visit_rows order.
        self.new_visit_rows.append(
            (
                visit_id,
                self.m.id,
                resident.id,
                plan_key,
                occ.key,
                stored(occ.start),
                stored(occ.end),
                json_id_list(staff),
                _PLANNED,
                occ.description,
            )
        )
        self.report.visits_added += 1
        # No audit entry of its own: a planned visit opens nothing. Its grants are audited,
        # naming the visit, and so are its cancellation, move and completion.
        self._grant(visit_id, resident.id, occ.start, occ.end, staff)

    def _grant(
        self,
        visit_id: VisitId,
        resident_id: ResidentId,
        planned_start: datetime,
        planned_end: datetime,
        staff_ids: tuple[ActorId, ...],
    ) -> None:
        home = self.homes.get(resident_id)
        path = self.paths.get(home.id) if home and home.has_elock else None
        if not path:
            self.report.physical_key_visits += 1
            return
        not_before, not_after = visit_window(
            planned_start, planned_end, self.m.window_lead, self.m.window_grace
        )
        stored = self.stored
        doors_json = json_id_list(path)
        window = (stored(not_before), stored(not_after))
        for actor_id in staff_ids:
            grant_id = GrantId(self.ids.new("grt"))
            self.report.grants_created += 1
            self.audit.append(
                AuditEntry(
                    self.now,
                    SYSTEM_ACTOR,
                    "grant:created",
                    grant_id,
                    {
                        "actor": actor_id,
                        "visit": visit_id,
                        "doors": list(path),
                        "not_before": _iso(not_before),
                        "not_after": _iso(not_after),
                    },
                )
            )
            # The row of Grant(grant_id, actor_id, path, not_before, not_after, VISIT, visit_id),
            # in Repository.insert_grant_rows order.
            self.new_grant_rows.append(
                (grant_id, actor_id, doors_json, *window, _VISIT, visit_id, _ACTIVE, "",
                 stored(self.now))
            )

    def _revoke(self, grants: Sequence[Grant], reason: str) -> None:
        if not grants:
            return
        ids = [g.id for g in grants]
        self.repo.revoke_grants(ids, self.now, reason)
        creds = self.repo.credentials_of_grants(ids)
        self.repo.revoke_credentials([c.id for c in creds], self.now)
        self.report.grants_revoked += len(ids)
        self.report.revoked_grant_ids.extend(ids)
        for g in grants:
            self.audit.append(
                AuditEntry(self.now, SYSTEM_ACTOR, "grant:revoked", g.id, {"reason": reason})
            )

    # -- problems -----------------------------------------------------------------------
    def problem(self, p: ImportProblem) -> None:
        # Defence in depth: a field path or id built from input may carry an 11-digit run (an
        # activity id that is a national id); it must reach neither the report nor the log.
        p = replace(
            p,
            field=redact_national_ids(p.field),
            message=redact_national_ids(p.message),
            source=replace(p.source, resource_id=redact_national_ids(p.source.resource_id)),
        )
        self.report.problems.append(p)
        if p.severity is Severity.SKIPPED:
            self.report.skipped += 1
            return
        self.report.quarantined += 1
        key = (p.source.file, f"{p.source.resource_type}/{p.source.resource_id}", p.field, p.message)
        if key in self.open_quarantine:
            return  # already waiting for correction; importing the same file again adds nothing
        self.open_quarantine.add(key)
        self.quarantine_rows.append(
            {
                "municipality_id": self.m.id,
                "file": key[0],
                "resource": key[1],
                "field": p.field,
                "message": p.message,
                "severity": p.severity.value,
                "raw": p.raw,
                "created_at": self.now,
            }
        )
        self.audit.append(
            AuditEntry(
                self.now,
                SYSTEM_ACTOR,
                "import:quarantined",
                key[1],
                {"file": key[0], "field": p.field, "message": p.message},
            )
        )

    def flush(self) -> None:
        self.repo.insert_plans(self.new_plans)
        self.repo.insert_visit_rows(self.new_visit_rows)
        self.repo.insert_grant_rows(self.new_grant_rows)
        self.repo.add_quarantine(self.quarantine_rows)
        if self.audit:
            append_audit(self.conn, self.audit)


def _too_long(fields: Sequence[tuple[str, str | None, Column[Any]]]) -> str | None:
    """Name the first field whose text does not fit its column (checked before any write)."""
    for name, value, column in fields:
        limit = getattr(column.type, "length", None)
        if value is not None and limit is not None and len(value) > limit:
            return name
    return None


def _activity_path(occurrence_key: str) -> str:
    """Point at the plan activity an occurrence came from ("activity[1]"), from its key."""
    parts = occurrence_key.split("#")
    part = parts[-2] if len(parts) >= 3 else ""
    if part.startswith("a") and part[1:].isdigit():
        return f"activity[{part[1:]}]"
    if part.startswith("id:"):
        return f"activity(id={part[3:]})"
    return "occurrence"


def _referenceable(resource_id: str) -> bool:
    """Say whether a label is a real logical id, not the reader's position label ("root", "entry[2]")."""
    return bool(resource_id) and resource_id != "root" and not any(c in resource_id for c in "[*")


_PLANNED = VisitStatus.PLANNED.value
_VISIT = GrantOrigin.VISIT.value
_ACTIVE = GrantStatus.ACTIVE.value
_DIGEST_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _iso(instant: datetime) -> str:
    """instant.isoformat(), formatted once per distinct UTC instant."""
    # Only UTC values are cached: zoned wall times compare equal across a DST fold.
    return _utc_iso(instant) if instant.tzinfo is UTC else instant.isoformat()


@lru_cache(maxsize=65536)
def _utc_iso(instant: datetime) -> str:
    # Visits cluster on a few hundred slot times a day.
    return instant.isoformat()


def _plan_digest(
    resident_id: str, wanted: Mapping[str, tuple[PlannedOccurrence, tuple[ActorId, ...]]]
) -> str:
    body = [
        [k, _iso(o.start), _iso(o.end), list(s), o.description]
        for k, (o, s) in sorted(wanted.items())
    ]
    # The same text as json.dumps(..., separators=(",", ":"), ensure_ascii=False).
    data = _DIGEST_ENCODER.encode([resident_id, body])
    return hashlib.sha256(data.encode()).hexdigest()
