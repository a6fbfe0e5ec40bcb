"""The synthetic demo municipality: deterministic, realistic, and importable."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portner.demo.synthetic import ProblemKind, SyntheticSite, generate_municipality
from portner.domain.care_record import OID_HER_ID, OID_HPR_NUMBER, OID_NATIONAL_ID, Severity
from portner.domain.errors import InvalidNationalId
from portner.domain.model import Role
from portner.domain.national_id import NationalIdKind, validate_national_id

DAY = date(2026, 12, 3)
OSLO = ZoneInfo("Europe/Oslo")
ELOCK = "http://ehelse.no/fhir/StructureDefinition/vkp-elock-v090"
SONE = "http://ehelse.no/fhir/StructureDefinition/vkp-sone-v090"
VKP_CAREPLAN = "http://ehelse.no/fhir/StructureDefinition/vkp-CarePlan-v090"
CATEGORY = "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category-v090"


@dataclass(frozen=True)
class Occurrence:
    file: str
    staff_id: str
    subject: str
    start: datetime
    end: datetime
    recurring: bool


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _good(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if "-bad-" not in p.name)


def _occurrences(site: SyntheticSite) -> list[Occurrence]:
    """Every visit on the demo day in the good plans, with the staff member resolved."""
    by_id = {}
    for member in site.staff:
        by_id[(OID_HPR_NUMBER, member.hpr_number)] = member.resource_id
        if member.her_id:
            by_id[(OID_HER_ID, member.her_id)] = member.resource_id
    out = []
    for path in _good(site.plans_dir, "CarePlan-*.json"):
        plan = _load(path)
        for activity in plan["activity"]:
            detail = activity["detail"]
            repeat = detail["scheduledTiming"]["repeat"]
            ident = detail["performer"][0]["identifier"]
            staff_id = by_id[(ident["system"].removeprefix("urn:oid:"), ident["value"])]
            if "timeOfDay" in repeat:
                at = time.fromisoformat(repeat["timeOfDay"][0])
                start = datetime.combine(site.day, at, tzinfo=OSLO)
                end = start + timedelta(minutes=repeat["duration"])
            else:
                start = datetime.fromisoformat(repeat["boundsPeriod"]["start"])
                end = datetime.fromisoformat(repeat["boundsPeriod"]["end"])
            subject = plan["subject"]["identifier"]["value"]
            out.append(Occurrence(path.name, staff_id, subject, start, end, "timeOfDay" in repeat))
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSite:
    return generate_municipality(tmp_path_factory.mktemp("site"), seed=42, day=DAY)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_seed_and_day_give_byte_identical_files(site: SyntheticSite, tmp_path: Path) -> None:
    again = generate_municipality(tmp_path / "again", seed=42, day=DAY)
    first, second = _tree(site.out_dir), _tree(again.out_dir)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []
    assert again.visit_count == site.visit_count and again.staff == site.staff


def test_another_day_keeps_the_people_and_changes_the_plans(tmp_path: Path) -> None:
    today = generate_municipality(tmp_path / "today", seed=42, day=DAY, residents=30)
    tomorrow = generate_municipality(
        tmp_path / "tomorrow", seed=42, day=DAY + timedelta(days=1), residents=30
    )
    other_seed = generate_municipality(tmp_path / "seed", seed=43, day=DAY, residents=30)
    for name in ("patients/Patient-000001.json", "installations.json"):
        assert (tomorrow.out_dir / name).read_bytes() == (today.out_dir / name).read_bytes()
        assert (other_seed.out_dir / name).read_bytes() != (today.out_dir / name).read_bytes()
    plan = "CarePlan-000001.json"
    assert (tomorrow.plans_dir / plan).read_bytes() != (today.plans_dir / plan).read_bytes()


def test_a_rerun_into_the_same_folder_removes_stale_files(tmp_path: Path) -> None:
    generate_municipality(tmp_path, seed=1, day=DAY, residents=40)
    site = generate_municipality(tmp_path, seed=1, day=DAY, residents=20, bad_records=False)
    assert len(list(site.patients_dir.glob("*.json"))) == 20
    assert len(list(site.plans_dir.glob("*.json"))) == site.plan_count


def test_counts_are_roughly_as_asked(site: SyntheticSite) -> None:
    assert site.patient_count == len(_good(site.patients_dir, "Patient-*.json")) == 300
    assert site.practitioner_count == len(list(site.practitioners_dir.glob("*.json"))) == 40
    assert site.plan_count == len(_good(site.plans_dir, "CarePlan-*.json"))
    assert 250 <= site.plan_count <= 300
    assert 600 <= site.visit_count <= 800
    assert 0.03 * 300 <= site.homes_without_elock <= 0.15 * 300
    elock_homes = 300 - site.homes_without_elock
    assert 0.15 * elock_homes <= site.multi_door_homes <= 0.35 * elock_homes
    roles = Counter(member.role for member in site.staff)
    assert roles[Role.HOME_NURSING] == 28 and roles[Role.HOME_HELP] == 12


def test_national_ids_are_valid_synthetic_and_unique(site: SyntheticSite) -> None:
    seen = set()
    for path in _good(site.patients_dir, "Patient-*.json"):
        patient = _load(path)
        (ident,) = patient["identifier"]
        assert ident["system"] == f"urn:oid:{OID_NATIONAL_ID}"
        nid = ident["value"]
        assert validate_national_id(nid, accept_synthetic=True) is NationalIdKind.SYNTHETIC
        assert int(nid[2:4]) > 80  # Tenor style: month + 80
        assert patient["birthDate"] == _birth_date(nid)
        assert (int(nid[8]) % 2 == 1) == (patient["gender"] == "male")
        seen.add(nid)
    assert len(seen) == site.patient_count
    subjects = {o.subject for o in _occurrences(site)}
    assert subjects <= seen


def _birth_date(nid: str) -> str:
    return f"19{nid[4:6]}-{int(nid[2:4]) - 80:02d}-{nid[0:2]}"


def test_patients_follow_the_vkp_profile(site: SyntheticSite) -> None:
    zones = set(site.zone_paths)
    relationship_codes = Counter()
    for path in _good(site.patients_dir, "Patient-*.json"):
        patient = _load(path)
        assert patient["meta"]["profile"] == [
            "http://ehelse.no/fhir/StructureDefinition/vkp-Patient-v090"
        ]
        (sone,) = (e["valueString"] for e in patient["extension"] if e["url"] == SONE)
        parts = sone.split("|")
        assert len(parts) == 4 and "|".join(parts[:3]) in zones and parts[0] == "Demokommune"
        assert len(patient.get("contact", [])) <= 2
        for contact in patient.get("contact", []):
            coding = contact["relationship"][0]["coding"][0]
            assert coding["system"] == "http://terminology.hl7.org/CodeSystem/v2-0131"
            relationship_codes[coding["code"]] += 1
            assert contact["telecom"][0]["value"].startswith("+47000")
    assert set(relationship_codes) == {"C", "N"}


def test_careplans_are_vkp_visit_plans(site: SyntheticSite) -> None:
    for path in _good(site.plans_dir, "CarePlan-*.json"):
        plan = _load(path)
        assert plan["resourceType"] == "CarePlan"
        assert plan["meta"]["profile"] == [VKP_CAREPLAN]
        assert plan["category"][0]["coding"][0] == {
            "system": CATEGORY,
            "code": "3",
            "display": "besoksplan",
        }
        assert plan["subject"]["identifier"]["system"] == f"urn:oid:{OID_NATIONAL_ID}"
        assert plan["status"] == "active" and 1 <= len(plan["activity"]) <= 5


def test_visits_fall_on_the_day_with_explicit_offsets(site: SyntheticSite) -> None:
    visits = _occurrences(site)
    assert len(visits) == site.visit_count
    for visit in visits:
        local = visit.start.astimezone(OSLO)
        assert local.date() == DAY and visit.start.utcoffset() == timedelta(hours=1)
        assert visit.end > visit.start
        if local.time() < time(23):  # a day or evening visit, not the night round
            assert time(7) <= local.time() and visit.end.astimezone(OSLO).time() <= time(23)
            assert visit.end.astimezone(OSLO).date() == DAY
    per_resident = Counter(v.subject for v in visits)
    assert set(per_resident.values()) <= {1, 2, 3, 4, 5}  # 1-4 by day, plus maybe one at night


def test_overnight_visits_cross_midnight(site: SyntheticSite) -> None:
    overnight = [v for v in _occurrences(site) if v.end.astimezone(OSLO).date() > DAY]
    assert len(overnight) == site.overnight_visit_count > 0
    for visit in overnight:
        assert visit.start.astimezone(OSLO).time() >= time(23)


def test_no_staff_member_is_double_booked_and_routes_are_realistic(site: SyntheticSite) -> None:
    zone_of = {member.resource_id: member.zone for member in site.staff}
    sone_of = {}
    for path in _good(site.patients_dir, "Patient-*.json"):
        patient = _load(path)
        sone = next(e["valueString"] for e in patient["extension"] if e["url"] == SONE)
        sone_of[patient["identifier"][0]["value"]] = sone
    routes: dict[str, list[Occurrence]] = defaultdict(list)
    for visit in _occurrences(site):
        routes[visit.staff_id].append(visit)
        assert sone_of[visit.subject].startswith(zone_of[visit.staff_id] + "|")
    assert len(routes) == len(site.staff)  # nobody idle in the default municipality
    for staff_id, visits in routes.items():
        visits.sort(key=lambda v: v.start)
        for before, after in pairwise(visits):
            assert before.end <= after.start, staff_id
        shifts = Counter(
            "night"
            if v.start.astimezone(OSLO).hour >= 23
            else "day"
            if v.start.astimezone(OSLO).hour < 15
            else "evening"
            for v in visits
        )
        assert all(8 <= shifts[s] <= 15 for s in ("day", "evening") if shifts[s]), shifts
        assert shifts["night"] <= 2


def test_a_resident_never_gets_two_visits_at_once(site: SyntheticSite) -> None:
    by_subject: dict[str, list[Occurrence]] = defaultdict(list)
    for visit in _occurrences(site):
        by_subject[visit.subject].append(visit)
    for visits in by_subject.values():
        visits.sort(key=lambda v: v.start)
        for before, after in pairwise(visits):
            assert before.end < after.start


def test_recurring_plans_repeat_daily_at_eight_for_a_week(site: SyntheticSite) -> None:
    recurring = [v for v in _occurrences(site) if v.recurring]
    assert len(recurring) == site.recurring_plan_count == 3
    for visit in recurring:
        plan = _load(site.plans_dir / visit.file)
        repeat = next(
            a["detail"]["scheduledTiming"]["repeat"]
            for a in plan["activity"]
            if "timeOfDay" in a["detail"]["scheduledTiming"]["repeat"]
        )
        assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 1, "d")
        bounds = repeat["boundsPeriod"]
        span = datetime.fromisoformat(bounds["end"]) - datetime.fromisoformat(bounds["start"])
        assert span == timedelta(days=site.recurring_days)


def test_installations_cover_exactly_the_elock_homes(site: SyntheticSite) -> None:
    elock = set()
    for path in _good(site.patients_dir, "Patient-*.json"):
        patient = _load(path)
        if any(e["url"] == ELOCK for e in patient["address"][0].get("extension", [])):
            elock.add(patient["id"])
    registry = _load(site.installations_path)
    homes = registry["homes"]
    assert set(homes) == elock and len(elock) == site.patient_count - site.homes_without_elock
    order = {"building": 0, "stairwell": 1, "flat": 2}
    door_ids, lock_ids = [], []
    for home in homes.values():
        doors = home["doors"]
        assert [d["position"] for d in doors] == list(range(1, len(doors) + 1))
        kinds = [d["kind"] for d in doors]
        assert kinds[-1] == "flat" and kinds == sorted(kinds, key=order.__getitem__)
        door_ids += [d["door_id"] for d in doors]
        lock_ids += [d["lock"]["lock_id"] for d in doors]
    assert sum(len(h["doors"]) > 1 for h in homes.values()) == site.multi_door_homes
    assert len(set(door_ids)) == len(door_ids) and len(set(lock_ids)) == len(lock_ids)
    assert all(d.startswith("d-") and len(d) == 8 for d in door_ids)


def test_bad_records_are_really_bad(site: SyntheticSite) -> None:
    kinds = {p.kind: p for p in site.expected_problems}
    assert set(kinds) == set(ProblemKind)
    files = {p.kind: _load(site.out_dir / p.file) for p in site.expected_problems}
    bad_nid = files[ProblemKind.INVALID_NATIONAL_ID]["identifier"][0]["value"]
    with pytest.raises(InvalidNationalId):
        validate_national_id(bad_nid, accept_synthetic=True)
    known = {m.hpr_number for m in site.staff}
    stranger = files[ProblemKind.UNKNOWN_PERFORMER]["activity"][0]["detail"]["performer"][0]
    assert stranger["identifier"]["value"] not in known
    repeat = files[ProblemKind.MISSING_TIME_OF_DAY]["activity"][0]["detail"]["scheduledTiming"]
    assert "timeOfDay" not in repeat["repeat"] and repeat["repeat"]["frequency"] == 1
    period = files[ProblemKind.END_BEFORE_START]["activity"][0]["detail"]["scheduledTiming"]
    bounds = period["repeat"]["boundsPeriod"]
    assert datetime.fromisoformat(bounds["end"]) < datetime.fromisoformat(bounds["start"])
    assert files[ProblemKind.UNKNOWN_PROFILE]["meta"]["profile"] != [VKP_CAREPLAN]
    assert files[ProblemKind.NOT_A_VISIT_PLAN]["category"][0]["coding"][0]["code"] != "3"
    assert kinds[ProblemKind.NOT_A_VISIT_PLAN].severity is Severity.SKIPPED


def test_without_bad_records_no_bad_files(tmp_path: Path) -> None:
    site = generate_municipality(tmp_path, seed=1, day=DAY, residents=25, bad_records=False)
    assert site.expected_problems == ()
    assert not list(tmp_path.rglob("*-bad-*")) and not list(tmp_path.rglob("*tiltak*"))


def test_small_municipality_with_few_staff_still_has_no_double_booking(tmp_path: Path) -> None:
    site = generate_municipality(tmp_path, seed=5, day=DAY, residents=40, staff=4, zones=2)
    routes: dict[str, list[Occurrence]] = defaultdict(list)
    for visit in _occurrences(site):
        routes[visit.staff_id].append(visit)
    assert sum(map(len, routes.values())) == site.visit_count > 0
    for visits in routes.values():
        visits.sort(key=lambda v: v.start)
        assert all(a.end <= b.start for a, b in pairwise(visits))


def test_too_few_staff_is_refused_not_overbooked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more staff"):
        generate_municipality(tmp_path / "a", seed=1, day=DAY, residents=200, staff=5, zones=1)
    with pytest.raises(ValueError, match="as many staff as zones"):
        generate_municipality(tmp_path / "b", seed=1, day=DAY, residents=20, staff=2, zones=3)


def test_summer_day_writes_summer_offsets(tmp_path: Path) -> None:
    site = generate_municipality(tmp_path, seed=3, day=date(2026, 6, 15), residents=30)
    assert {v.start.utcoffset() for v in _occurrences(site)} == {timedelta(hours=2)}


def _same_place(found: str, wanted: str) -> bool:
    """Field paths match when one is the other or lies inside it ("a.b" inside "a")."""
    short, long = sorted((found, wanted), key=len)
    return long == short or long.startswith((short + ".", short + "["))


def test_the_fhir_reader_finds_every_visit_and_problem(site: SyntheticSite) -> None:
    fhir = pytest.importorskip("portner.fhir", reason="the FHIR reader is not written yet")
    read_sources = getattr(fhir, "read_sources", None)
    if read_sources is None:
        pytest.skip("portner.fhir.read_sources is not available yet")
    start = datetime.combine(DAY, time(), tzinfo=OSLO)
    sources = read_sources(
        [site.patients_dir, site.practitioners_dir, site.plans_dir],
        timezone=site.timezone,
        horizon_start=start,
        horizon_end=start + timedelta(days=1),
        accept_synthetic_ids=True,
    )
    by_file = {Path(s.file).relative_to(site.out_dir).as_posix(): s for s in sources}
    expected = {p.file: p for p in site.expected_problems}
    good_occurrences = sum(
        len(plan.occurrences)
        for name, s in by_file.items()
        if name not in expected
        for plan in s.plans
    )
    assert good_occurrences == site.visit_count
    assert sum(len(s.patients) for name, s in by_file.items() if name not in expected) == 300
    unexpected = [str(p) for name, s in by_file.items() if name not in expected for p in s.problems]
    assert unexpected == []
    for name, wanted in expected.items():
        source = by_file[name]
        assert sum(len(p.occurrences) for p in source.plans) == wanted.occurrences, name
        if wanted.stage == "read":
            assert any(
                _same_place(p.field, wanted.field) and p.severity is wanted.severity
                for p in source.problems
            ), (name, [str(p) for p in source.problems])
        else:  # an unknown performer: nobody among the practitioners read has that identifier
            known = {
                (i.kind, i.value) for s in sources for r in s.practitioners for i in r.identifiers
            }
            assert len(known) >= len(site.staff)  # the reader did see the practitioners
            performers = [
                i
                for plan in source.plans
                for o in plan.occurrences
                for ref in o.performers
                for i in ref.identifiers
            ]
            assert performers and all((i.kind, i.value) not in known for i in performers)
