"""FHIR R4 JSON resources of the synthetic municipality, good ones and deliberately bad ones.

The shapes follow the VKP 0.9.0 R4 profiles in shared/fixtures/vkp/profiles-r4: vkp-sone on the
Patient (and Practitioner), vkp-elock on Patient.address, CarePlan category from
vkp-careplan-category-v090, subject and performers by identifier.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from portner.demo import names as N
from portner.domain.care_record import OID_HER_ID, OID_HPR_NUMBER, OID_NATIONAL_ID, Severity

PROFILE_PATIENT = "http://ehelse.no/fhir/StructureDefinition/vkp-Patient-v090"
PROFILE_CAREPLAN = "http://ehelse.no/fhir/StructureDefinition/vkp-CarePlan-v090"
PROFILE_PRACTITIONER = "http://hl7.no/fhir/StructureDefinition/no-basis-Practitioner"
PROFILE_UNKNOWN = "http://example.org/fhir/StructureDefinition/not-a-vkp-CarePlan"
EXT_ELOCK = "http://ehelse.no/fhir/StructureDefinition/vkp-elock-v090"
EXT_SONE = "http://ehelse.no/fhir/StructureDefinition/vkp-sone-v090"
CATEGORY_SYSTEM = "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category-v090"
CATEGORY_VISIT_PLAN = ("3", "besoksplan")
# The R4 code system has no "tiltaksplan" code; the STU3 examples file tiltaksplan under code 1.
CATEGORY_TILTAKSPLAN = ("1", "behandlingsplan")
V2_0131 = "http://terminology.hl7.org/CodeSystem/v2-0131"


def dump(path: Path, resource: dict[str, Any]) -> None:
    """Write one resource as canonical JSON: sorted keys, UTF-8, one line and a final newline."""
    # No indent: json's C encoder only runs without one, and it is ten times faster, which the
    # Oslo-size run (60,000 files) needs. `python -m json.tool` shows a file indented.
    text = json.dumps(resource, ensure_ascii=False, sort_keys=True)
    path.write_bytes(text.encode("utf-8") + b"\n")


class Clock:
    """Turns minutes after local midnight of the demo day into ISO 8601 with the zone's offset."""

    def __init__(self, day: date, timezone: str) -> None:
        self.midnight = datetime.combine(day, time())
        self.tz = ZoneInfo(timezone)
        self.cache: dict[int, str] = {}

    def iso(self, minute: int) -> str:
        """Wall-clock time `minute` minutes after midnight, with the offset valid then."""
        if minute not in self.cache:
            local = (self.midnight + timedelta(minutes=minute)).replace(tzinfo=self.tz)
            self.cache[minute] = local.isoformat(timespec="seconds")
        return self.cache[minute]


def phone(rng: random.Random) -> str:
    """A phone number that cannot reach anyone."""
    # Norwegian 8-digit numbers never start with 0 (0xxxx are the 5-digit series).
    return f"+47000{rng.randrange(100000):05d}"


def contacts(rng: random.Random, family: str) -> list[dict[str, Any]]:
    """0-2 relatives: the first is the emergency contact (C), the second next of kin (N)."""
    codes = (("C", "Emergency Contact"), ("N", "Next-of-Kin"))
    count = rng.choices((0, 1, 2), weights=(25, 50, 25))[0]
    out = []
    for code, display in codes[:count]:
        given = rng.choice(N.GIVEN_STAFF)
        out.append(
            {
                "name": {"family": rng.choice((family, rng.choice(N.FAMILY))), "given": [given]},
                "relationship": [
                    {
                        "coding": [{"code": code, "display": display, "system": V2_0131}],
                        "text": rng.choice(N.RELATIONSHIP_TEXTS),
                    }
                ],
                "telecom": [{"system": "phone", "use": "mobile", "value": phone(rng)}],
            }
        )
    return out


def practitioner(
    resource_id: str, hpr: str, her_id: str | None, name: str, zone: str, qualification: str
) -> dict[str, Any]:
    """A Practitioner with HPR number, maybe a HER-id, name, zone and qualification text."""
    identifiers = [{"system": f"urn:oid:{OID_HPR_NUMBER}", "value": hpr}]
    if her_id:
        identifiers.append({"system": f"urn:oid:{OID_HER_ID}", "value": her_id})
    given, family = name.split(" ", 1)
    return {
        "resourceType": "Practitioner",
        "id": resource_id,
        "meta": {"profile": [PROFILE_PRACTITIONER]},
        "extension": [{"url": EXT_SONE, "valueString": zone}],
        "identifier": identifiers,
        "active": True,
        "name": [{"family": family, "given": [given]}],
        "qualification": [{"code": {"text": qualification}}],
    }


def performer(name: str, hpr: str, her_id: str | None, rng: random.Random) -> dict[str, Any]:
    """Reference a staff member by HPR number, or by HER-id in half the visits of those with one."""
    if her_id and rng.random() < 0.5:
        system, value = OID_HER_ID, her_id
    else:
        system, value = OID_HPR_NUMBER, hpr
    return {"display": name, "identifier": {"system": f"urn:oid:{system}", "value": value}}


def activity(
    description: str, who: dict[str, Any] | None, repeat: dict[str, Any]
) -> dict[str, Any]:
    """One plan activity: a visit with its timing, performer and what is to be done."""
    detail: dict[str, Any] = {
        "description": description,
        "status": "scheduled",
        "scheduledTiming": {"repeat": repeat},
    }
    if who is not None:
        detail["performer"] = [who]
    return {"detail": detail}


def bounds(start: str, end: str) -> dict[str, Any]:
    """A Timing.repeat for a single visit from `start` to `end`."""
    return {"boundsPeriod": {"start": start, "end": end}}


def daily(start: str, end: str, time_of_day: str | None, minutes: int) -> dict[str, Any]:
    """A Timing.repeat for once a day at `time_of_day` (omitted when None) within a period."""
    repeat: dict[str, Any] = {
        "boundsPeriod": {"start": start, "end": end},
        "duration": minutes,
        "durationUnit": "min",
        "frequency": 1,
        "period": 1,
        "periodUnit": "d",
    }
    if time_of_day is not None:
        repeat["timeOfDay"] = [time_of_day]
    return repeat


def careplan(
    plan_id: str,
    rng: random.Random,
    subject: tuple[str, str],
    period: tuple[str, str],
    activities: list[dict[str, Any]],
    category: tuple[str, str] = CATEGORY_VISIT_PLAN,
    profile: str = PROFILE_CAREPLAN,
) -> dict[str, Any]:
    """A VKP CarePlan for `subject` (national id, name) with the given activities."""
    nid, name = subject
    plan_uuid = uuid.UUID(int=rng.getrandbits(128), version=4)
    return {
        "resourceType": "CarePlan",
        "id": plan_id,
        "meta": {"profile": [profile]},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{plan_uuid}"}],
        "status": "active",
        "intent": "plan",
        "category": [
            {"coding": [{"code": category[0], "display": category[1], "system": CATEGORY_SYSTEM}]}
        ],
        "title": "Besøksplan" if category == CATEGORY_VISIT_PLAN else "Tiltaksplan",
        "subject": {
            "display": name,
            "identifier": {"system": f"urn:oid:{OID_NATIONAL_ID}", "value": nid},
        },
        "period": {"start": period[0], "end": period[1]},
        "activity": activities,
    }


class ProblemKind(StrEnum):
    """What is wrong with a deliberately bad record."""

    INVALID_NATIONAL_ID = "invalid_national_id"
    UNKNOWN_PERFORMER = "unknown_performer"
    MISSING_TIME_OF_DAY = "missing_time_of_day"
    END_BEFORE_START = "end_before_start"
    UNKNOWN_PROFILE = "unknown_profile"
    NOT_A_VISIT_PLAN = "not_a_visit_plan"


@dataclass(frozen=True, slots=True)
class ExpectedProblem:
    """A bad record the import must report.

    `file` is relative to the output folder. `stage` says who can see the problem: "read" (the
    FHIR reader, alone) or "import" (needs the staff register, e.g. an unknown performer).
    `occurrences` is how many visit occurrences the reader still yields from the file.
    """

    file: str
    resource_type: str
    resource_id: str
    field: str
    kind: ProblemKind
    severity: Severity = Severity.ERROR
    stage: str = "read"
    occurrences: int = 0


def write_bad_records(
    out_dir: Path,
    rng: random.Random,
    clock: Clock,
    bad_patient: dict[str, Any],
    subjects: list[tuple[str, str]],
    staff: tuple[str, str, str | None],
    unknown_hpr: str,
) -> tuple[ExpectedProblem, ...]:
    """Write the deliberately bad files and say what each must produce.

    `bad_patient` is a valid Patient whose national id gets a wrong check digit here; `subjects`
    are (national id, name) of real residents; `staff` is (name, hpr, her_id) of a real staff
    member. The bad visits are at 06:00, when no route is out, so even a lenient importer that
    accepts one cannot double-book anybody.
    """
    problems = []
    nid = bad_patient["identifier"][0]["value"]
    bad_patient["identifier"][0]["value"] = nid[:10] + str((int(nid[10]) + 1) % 10)
    bad_patient["id"] = "pat-bad-national-id"
    dump(out_dir / "patients" / "Patient-bad-national-id.json", bad_patient)
    problems.append(
        ExpectedProblem(
            "patients/Patient-bad-national-id.json",
            "Patient",
            "pat-bad-national-id",
            "identifier[0]",
            ProblemKind.INVALID_NATIONAL_ID,
        )
    )
    name, hpr, her_id = staff
    who = performer(name, hpr, None, rng)
    morning = (clock.iso(360), clock.iso(390))
    day_period = (clock.iso(0), clock.iso(1440))
    week = (clock.iso(0), clock.iso(7 * 1440))
    stranger = {
        "display": "Ukjent Vikar",
        "identifier": {"system": f"urn:oid:{OID_HPR_NUMBER}", "value": unknown_hpr},
    }
    cases = [
        (
            "unknown-performer",
            ProblemKind.UNKNOWN_PERFORMER,
            "activity[0].detail.performer[0].identifier",
            [activity("Tilsyn", stranger, bounds(*morning))],
            {"stage": "import", "occurrences": 1},
        ),
        (
            "no-time-of-day",
            ProblemKind.MISSING_TIME_OF_DAY,
            "activity[0].detail.scheduledTiming.repeat.timeOfDay",
            [activity("Medisinering", who, daily(*week, None, 15))],
            {},
        ),
        (
            "end-before-start",
            ProblemKind.END_BEFORE_START,
            "activity[0].detail.scheduledTiming.repeat.boundsPeriod",
            [activity("Tilsyn", who, bounds(morning[1], morning[0]))],
            {},
        ),
        (
            "unknown-profile",
            ProblemKind.UNKNOWN_PROFILE,
            "meta.profile",
            [activity("Tilsyn", who, bounds(*morning))],
            {},
        ),
        (
            "tiltaksplan",
            ProblemKind.NOT_A_VISIT_PLAN,
            "category",
            [activity("Trygghet ved utendørs aktivitet", None, bounds(*morning))],
            {"severity": Severity.SKIPPED},
        ),
    ]
    for i, (slug, kind, field, acts, extra) in enumerate(cases):
        plan_id = f"cp-bad-{slug}"
        resource = careplan(
            plan_id,
            rng,
            subjects[i % len(subjects)],
            week if kind is ProblemKind.MISSING_TIME_OF_DAY else day_period,
            acts,
            category=CATEGORY_TILTAKSPLAN
            if kind is ProblemKind.NOT_A_VISIT_PLAN
            else CATEGORY_VISIT_PLAN,
            profile=PROFILE_UNKNOWN if kind is ProblemKind.UNKNOWN_PROFILE else PROFILE_CAREPLAN,
        )
        file = f"plans/CarePlan-bad-{slug}.json"
        dump(out_dir / file, resource)
        problems.append(ExpectedProblem(file, "CarePlan", plan_id, field, kind, **extra))
    return tuple(problems)
