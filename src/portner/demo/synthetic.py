"""A synthetic municipality for the demo: VKP R4 JSON Patients, Practitioners, CarePlans, locks.

`generate_municipality` writes what a care-record system would export (one FHIR resource per
file) plus Portner's own lock-installation registry, and returns a `SyntheticSite` that says what
an import of those files must find. Everything comes from seeded `random.Random` streams and is
written with sorted keys, so the same seed and day give byte-identical files. People, numbers and
places are invented: national ids are test-registry numbers (month + 80), phone numbers cannot
be dialled, and the municipality does not exist.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NamedTuple

from portner.demo import names as N
from portner.demo import synthetic_fhir as F
from portner.demo.synthetic_fhir import ExpectedProblem, ProblemKind
from portner.demo.synthetic_routes import Need, PlannedVisit, plan_zone
from portner.domain.care_record import OID_NATIONAL_ID
from portner.domain.model import DoorKind, Role
from portner.domain.national_id import check_digits

__all__ = [
    "ExpectedProblem",
    "ProblemKind",
    "SyntheticSite",
    "SyntheticStaff",
    "generate_municipality",
]

INSTALLATIONS_FORMAT = "portner-installations/1"
RECURRING_DAYS = 7  # recurring plans run from the demo day for a week

_NO_ELOCK_SHARE = 0.08
_MULTI_DOOR_SHARE = 0.25
_HOME_HELP_SHARE = 0.30
_HER_ID_SHARE = 0.25
_OVERNIGHT_SHARE = 0.05
# 1-4 visits a resident: 25/35/25/15 % gives about 2.3 visits each (~700 for 300 residents).
_VISIT_WEIGHTS = (25, 35, 25, 15)


class SyntheticStaff(NamedTuple):
    """A generated staff member; `zone` is the vkp-sone path of their zone down to zone level."""

    resource_id: str
    hpr_number: str
    her_id: str | None
    role: Role
    display_name: str
    zone: str


@dataclass(frozen=True, slots=True)
class SyntheticSite:
    """What was generated, and what an import of it must find.

    Counts cover the good records only; the deliberately bad files are in `expected_problems`.
    `visit_count` is the number of occurrences starting on `day` (local time) in the good plans:
    every plan activity yields one, recurring ones too (their week starts on `day`).
    """

    out_dir: Path
    day: date
    timezone: str
    municipality: str
    patient_count: int
    practitioner_count: int
    plan_count: int
    visit_count: int
    overnight_visit_count: int
    recurring_plan_count: int
    homes_without_elock: int
    multi_door_homes: int
    staff: tuple[SyntheticStaff, ...]
    zone_paths: tuple[str, ...]
    expected_problems: tuple[ExpectedProblem, ...]
    patients_dir: Path
    practitioners_dir: Path
    plans_dir: Path
    installations_path: Path
    recurring_days: int = RECURRING_DAYS


@dataclass(frozen=True, slots=True)
class _Resident:
    index: int
    resource_id: str
    national_id: str
    name: str
    zone: int
    sort_key: tuple[str, str, int]
    windows: tuple[str, ...]
    overnight: bool


def _prepare(out_dir: Path) -> tuple[Path, Path, Path]:
    """Create the folders and remove files an earlier run left there (ours only, by pattern)."""
    folders = (out_dir / "patients", out_dir / "practitioners", out_dir / "plans")
    for folder, pattern in zip(
        folders, ("Patient-*.json", "Practitioner-*.json", "CarePlan-*.json"), strict=True
    ):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(pattern):
            stale.unlink()
    return folders


def _national_id(rng: random.Random, used: set[str]) -> tuple[str, date, str]:
    """Draw an unused synthetic fødselsnummer (month + 80) for someone born 1925-1962."""
    while True:
        born = date(1925, 1, 1) + timedelta(days=rng.randrange(38 * 365))
        individual = rng.randint(0, 499)  # 000-499 means born 1900-1999
        first_nine = f"{born.day:02d}{born.month + 80:02d}{born.year % 100:02d}{individual:03d}"
        check = check_digits(first_nine)
        if check is None or first_nine + check in used:
            continue  # remainder 10 has no check digit: draw another number
        used.add(first_nine + check)
        # The third individual digit is odd for men and even for women.
        return first_nine + check, born, "male" if individual % 2 else "female"


def _zones(rng: random.Random, zones: int) -> list[tuple[str, list[str]]]:
    """Return (path down to zone, subzone names) for each zone."""
    out = []
    for z in range(zones):
        district = N.DISTRICTS[z // 2 % len(N.DISTRICTS)]
        name = N.ZONE_NAMES[z] if z < len(N.ZONE_NAMES) else f"Sone {z + 1}"
        subzones = rng.sample(N.SUBZONE_NAMES, 3)
        out.append((f"{N.MUNICIPALITY}|{district}|{name}", subzones))
    return out


def _doors(door_count: int, next_door: int) -> list[dict[str, Any]]:
    """The door path of one home from the street inwards, with one lock per door."""
    kinds = {
        1: (DoorKind.FLAT,),
        2: (DoorKind.BUILDING, DoorKind.FLAT),
        3: (DoorKind.BUILDING, DoorKind.STAIRWELL, DoorKind.FLAT),
    }[door_count]
    models = {
        DoorKind.FLAT: N.LOCK_MODEL_FLAT,
        DoorKind.STAIRWELL: N.LOCK_MODEL_STAIRWELL,
        DoorKind.BUILDING: N.LOCK_MODEL_BUILDING,
    }
    return [
        {
            "door_id": f"d-{next_door + i:06d}",
            "kind": kind.value,
            "lock": {
                "backend": "simulated",
                "lock_id": f"l-{next_door + i:06d}",
                "model": models[kind],
            },
            "position": i + 1,
        }
        for i, kind in enumerate(kinds)
    ]


class _Population:
    """Writes Patients and the installation registry as it draws residents, keeping little."""

    def __init__(self, rng: random.Random, zones: list[tuple[str, list[str]]]) -> None:
        self.rng = rng
        self.zones = zones
        self.zone_weights = [rng.uniform(0.7, 1.3) for _ in zones]
        self.used_ids: set[str] = set()
        self.residents: list[_Resident] = []
        self.without_elock = 0
        self.multi_door = 0
        self.next_door = 1

    def patient(
        self, index: int, *, keep: bool = True
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Draw resident `index`: its Patient and installation entry; `keep` counts it in."""
        rng = self.rng
        nid, born, gender = _national_id(rng, self.used_ids)
        given = rng.choice(N.GIVEN_MALE if gender == "male" else N.GIVEN_FEMALE)
        family = rng.choice(N.FAMILY)
        zone = rng.choices(range(len(self.zones)), weights=self.zone_weights)[0]
        zone_path, subzones = self.zones[zone]
        subzone = rng.choice(subzones)
        street = rng.choice(N.STREET_STEMS) + rng.choice(N.STREET_SUFFIXES)
        number = rng.randint(1, 80)
        door_count = rng.choice((2, 3)) if rng.random() < _MULTI_DOOR_SHARE else 1
        lines = [f"{street} {number}"]
        if door_count > 1:
            lines.append(f"Leilighet H0{rng.randint(1, 6)}0{rng.randint(1, 4)}")
        address: dict[str, Any] = {
            "city": N.MUNICIPALITY,
            "country": "NO",
            "district": zone_path.split("|")[1],
            "line": lines,
            "use": "home",
        }
        has_elock = rng.random() >= _NO_ELOCK_SHARE
        if has_elock:
            address["extension"] = [{"url": F.EXT_ELOCK, "valueString": N.ELOCK_SYSTEM}]
        resource_id = f"pat-{index:06d}"
        resource = {
            "resourceType": "Patient",
            "id": resource_id,
            "meta": {"profile": [F.PROFILE_PATIENT]},
            "extension": [{"url": F.EXT_SONE, "valueString": f"{zone_path}|{subzone}"}],
            "identifier": [{"system": f"urn:oid:{OID_NATIONAL_ID}", "value": nid}],
            "name": [{"family": family, "given": [given], "use": "official"}],
            "gender": gender,
            "birthDate": born.isoformat(),
            "address": [address],
        }
        contacts = F.contacts(rng, family)
        if contacts:
            resource["contact"] = contacts
        k = rng.choices((1, 2, 3, 4), weights=_VISIT_WEIGHTS)[0]
        windows = {
            1: (("day_a",) if rng.random() < 0.7 else ("eve_b",)),
            2: ("day_a", "eve_b"),
            3: ("day_a", "day_b", "eve_b"),
            4: ("day_a", "day_b", "eve_a", "eve_b"),
        }[k]
        overnight = rng.random() < _OVERNIGHT_SHARE
        if not keep:
            return resource, None
        self.residents.append(
            _Resident(
                index,
                resource_id,
                nid,
                f"{given} {family}",
                zone,
                (subzone, street, number),
                windows,
                overnight,
            )
        )
        if not has_elock:
            self.without_elock += 1
            return resource, None
        self.multi_door += door_count > 1
        doors = _doors(door_count, self.next_door)
        self.next_door += door_count
        home = {"address": ", ".join(lines), "doors": doors, "elock_system": N.ELOCK_SYSTEM}
        return resource, home


def _staff(
    rng: random.Random, count: int, zone_paths: list[str], demand: list[float]
) -> list[SyntheticStaff]:
    """Draw staff and spread them over zones in proportion to each zone's routes."""
    helpers = round(count * _HOME_HELP_SHARE)
    roles = [Role.HOME_HELP] * helpers + [Role.HOME_NURSING] * (count - helpers)
    rng.shuffle(roles)
    total = sum(demand) or 1.0
    shares = [count * d / total for d in demand]
    per_zone = [int(s) for s in shares]
    if count >= len(zone_paths):  # every zone with residents needs somebody
        for z, d in enumerate(demand):
            if d and not per_zone[z]:
                per_zone[z] = 1
    by_remainder = sorted(range(len(shares)), key=lambda z: (per_zone[z] - shares[z], z))
    while sum(per_zone) < count:
        for z in by_remainder:
            if sum(per_zone) < count:
                per_zone[z] += 1
    while sum(per_zone) > count:
        per_zone[per_zone.index(max(per_zone))] -= 1
    zone_of = [z for z, n in enumerate(per_zone) for _ in range(n)]
    out = []
    for i, role in enumerate(roles):
        name = f"{rng.choice(N.GIVEN_STAFF)} {rng.choice(N.FAMILY)}"
        hpr = str(9_100_000 + 10 * i + rng.randrange(10))
        her_id = str(8_900_000 + i) if rng.random() < _HER_ID_SHARE else None
        out.append(
            SyntheticStaff(f"prac-{i + 1:06d}", hpr, her_id, role, name, zone_paths[zone_of[i]])
        )
    return out


def _plans(
    plans_dir: Path,
    rng: random.Random,
    clock: F.Clock,
    day: date,
    residents: list[_Resident],
    visits: list[PlannedVisit],
    staff: list[SyntheticStaff],
) -> tuple[int, int]:
    """Write one CarePlan per resident with visits; return (plans, recurring plans)."""
    by_resident: dict[int, list[PlannedVisit]] = {}
    for visit in visits:
        by_resident.setdefault(visit.resident, []).append(visit)
    # Wall-clock midnights, so a week across a DST change still starts and ends at 00:00.
    week = (clock.iso(0), clock.iso(RECURRING_DAYS * 1440))
    plans = recurring = 0
    for res in residents:
        mine = sorted(by_resident.get(res.index, ()), key=lambda v: v.start)
        if not mine:
            continue
        acts = []
        for v in mine:
            member = staff[v.staff]
            who = F.performer(member.display_name, member.hpr_number, member.her_id, rng)
            if v.anchored:
                repeat = F.daily(*week, "08:00:00", v.end - v.start)
            else:
                repeat = F.bounds(clock.iso(v.start), clock.iso(v.end))
            acts.append(F.activity(v.description, who, repeat))
        anchored = any(v.anchored for v in mine)
        end = week[1] if anchored else clock.iso(max(1440, mine[-1].end))
        resource = F.careplan(
            f"cp-{day:%Y%m%d}-{res.index:06d}",
            rng,
            (res.national_id, res.name),
            (clock.iso(0), end),
            acts,
        )
        F.dump(plans_dir / f"CarePlan-{res.index:06d}.json", resource)
        plans += 1
        recurring += anchored
    return plans, recurring


def _write_patients(
    population: _Population, count: int, patients_dir: Path, registry_path: Path
) -> None:
    """Write the Patients and, streaming alongside, the installation registry of e-lock homes."""
    with registry_path.open("w", encoding="utf-8", newline="\n") as registry:
        registry.write(f'{{\n  "format": "{INSTALLATIONS_FORMAT}",\n  "homes": {{')
        separator = ""
        for index in range(1, count + 1):
            resource, home = population.patient(index)
            F.dump(patients_dir / f"Patient-{index:06d}.json", resource)
            if home is not None:
                entry = json.dumps(home, ensure_ascii=False, sort_keys=True)
                registry.write(f'{separator}\n    "{resource["id"]}": {entry}')
                separator = ","
        registry.write(f'\n  }},\n  "municipality": "{N.MUNICIPALITY}"\n}}\n')


def _schedule(
    rng: random.Random,
    people: list[_Resident],
    zone_paths: list[str],
    team: list[SyntheticStaff],
    recurring: int,
) -> list[PlannedVisit]:
    """Plan every zone's day on the staff of that zone."""
    needs: list[list[Need]] = [[] for _ in zone_paths]
    # Street order within a zone, so that a route walks one neighbourhood after the other.
    for res in sorted(people, key=lambda r: (r.zone, r.sort_key, r.index)):
        needs[res.zone].append(Need(res.index, res.windows, res.overnight))
    roles = {i: m.role for i, m in enumerate(team)}
    visits: list[PlannedVisit] = []
    for z, path in enumerate(zone_paths):
        # Home helpers first: the route assignment hands day routes out from the front.
        members = sorted(
            (i for i, m in enumerate(team) if m.zone == path),
            key=lambda i: (roles[i] is not Role.HOME_HELP, i),
        )
        anchors = recurring // len(zone_paths) + (z < recurring % len(zone_paths))
        visits.extend(plan_zone(rng, needs[z], members, roles, anchors))
    return visits


def _zone_demand(people: list[_Resident], zones: int) -> list[float]:
    """Routes each zone needs, roughly: 13 visits a day/evening route, 2 a night route."""
    demand = [0.0] * zones
    for res in people:
        demand[res.zone] += len(res.windows) / 13 + res.overnight / 2
    return demand


def generate_municipality(
    out_dir: Path,
    *,
    seed: int,
    day: date,
    residents: int = 300,
    staff: int = 40,
    zones: int = 3,
    timezone: str = "Europe/Oslo",
    bad_records: bool = True,
) -> SyntheticSite:
    """Write a synthetic municipality's FHIR files and lock registry into `out_dir`.

    Raises ValueError when the staff cannot cover the visits (fewer staff than zones, or more
    than about 40 visits a staff member); a realistic day needs about one staff member per
    12 visits, more staff only shortens the routes.
    """
    if residents < 1 or zones < 1:
        raise ValueError("residents and zones must both be at least 1")
    if staff < zones:
        raise ValueError("every zone needs staff: give at least as many staff as zones")
    out_dir = Path(out_dir)
    patients_dir, practitioners_dir, plans_dir = _prepare(out_dir)
    # Separate streams: the population does not depend on the day, only the plans do.
    pop_rng = random.Random(f"portner-demo:{seed}:population")
    day_rng = random.Random(f"portner-demo:{seed}:{day.isoformat()}")
    zone_list = _zones(pop_rng, zones)
    zone_paths = [path for path, _ in zone_list]
    population = _Population(pop_rng, zone_list)
    installations_path = out_dir / "installations.json"
    _write_patients(population, residents, patients_dir, installations_path)
    people = population.residents

    team = _staff(pop_rng, staff, zone_paths, _zone_demand(people, zones))
    for member in team:
        titles = (
            N.QUALIFICATION_HOME_HELP
            if member.role is Role.HOME_HELP
            else (N.QUALIFICATION_NURSING)
        )
        resource = F.practitioner(
            member.resource_id,
            member.hpr_number,
            member.her_id,
            member.display_name,
            member.zone,
            pop_rng.choice(titles),
        )
        F.dump(practitioners_dir / f"Practitioner-{member.resource_id[5:]}.json", resource)

    visits = _schedule(day_rng, people, zone_paths, team, max(1, round(residents / 100)))
    clock = F.Clock(day, timezone)
    plan_count, recurring = _plans(plans_dir, day_rng, clock, day, people, visits, team)

    problems: tuple[ExpectedProblem, ...] = ()
    if bad_records:
        bad_patient, _ = population.patient(residents + 1, keep=False)
        bad_patient["address"][0].pop("extension", None)  # no e-lock: nothing to install
        first = team[0]
        known = {m.hpr_number for m in team}
        unknown_hpr = next(str(n) for n in range(9_099_999, 0, -1) if str(n) not in known)
        problems = F.write_bad_records(
            out_dir,
            day_rng,
            clock,
            bad_patient,
            [(r.national_id, r.name) for r in people[:6]],
            (first.display_name, first.hpr_number, first.her_id),
            unknown_hpr,
        )
    return SyntheticSite(
        out_dir=out_dir,
        day=day,
        timezone=timezone,
        municipality=N.MUNICIPALITY,
        patient_count=len(people),
        practitioner_count=len(team),
        plan_count=plan_count,
        visit_count=len(visits),
        overnight_visit_count=sum(v.end > 1440 for v in visits),
        recurring_plan_count=recurring,
        homes_without_elock=population.without_elock,
        multi_door_homes=population.multi_door,
        staff=tuple(team),
        zone_paths=tuple(zone_paths),
        expected_problems=problems,
        patients_dir=patients_dir,
        practitioners_dir=practitioners_dir,
        plans_dir=plans_dir,
        installations_path=installations_path,
    )
