"""Interoperability: every HL7 Norway file in ../shared/fixtures, with what each must yield.

The table says, per file, how many patients, practitioners and plans (status, occurrences) are
imported and exactly which problems are reported. A fixture added without an expectation fails.
Horizon: two weeks around the VKP visit plan's date (2018-09-11); 2023 for the no-basis
Appointments.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from fhir_helpers import FIXTURES, utc

from portner.domain.care_record import IdKind, ParsedSource, Severity
from portner.fhir import read_source

pytestmark = pytest.mark.fixtures

H2018 = (utc(2018, 9, 10), utc(2018, 9, 24))
H2023 = (utc(2023, 1, 1), utc(2024, 1, 1))

CATEGORY_2_TJENESTE = ("SKIPPED", "category", "not a visit plan (category 2 tjeneste)")
CATEGORY_2_EGEN = ("SKIPPED", "category", "not a visit plan (category 2 egenbehandlingsplan)")
BAD_CHECK_DIGITS = ("ERROR", "identifier[0]", "invalid national id number: check digit mismatch")
MESSAGE = ("MessageHeader", "MedicationDispense")
MESSAGE_WITH_COMPOSITION = ("MessageHeader", "Composition", "MedicationDispense")


@dataclass(frozen=True)
class Expect:
    patients: int = 0
    practitioners: int = 0
    plans: tuple[tuple[str, int], ...] = ()  # (status, number of occurrences)
    not_sources: tuple[str, ...] = ()  # resource types noted "not a visit source" (SKIPPED)
    problems: tuple[tuple[str, str, str], ...] = ()  # other problems: (severity, field, message)
    horizon: tuple = H2018


EXPECTED: dict[str, Expect] = {
    "README.md": Expect(problems=(("ERROR", "", "neither XML nor JSON"),)),
    # no-basis (R4 JSON)
    "no-basis/Appointment-NoBasisAppointmentExample1.json": Expect(
        plans=(("waitlist", 0),), horizon=H2023
    ),
    "no-basis/Appointment-d6c523ec-b520-4221-a8d6-c1c58911ce7a.json": Expect(
        plans=(("booked", 1),), horizon=H2023
    ),
    "no-basis/AppointmentResponse-PatientAppointmentResponseExample.json": Expect(
        not_sources=("AppointmentResponse",), horizon=H2023
    ),
    "no-basis/Patient-e70f0ba2-44d8-4f14-9c3a-ff4c6ead7473.json": Expect(patients=1, horizon=H2023),
    # VKP STU3 XML
    "vkp/examples-stu3/AllergyIntolerance.xml": Expect(not_sources=("AllergyIntolerance",)),
    "vkp/examples-stu3/Arbeidsplan-CarePlan.xml": Expect(
        plans=(("active", 14),),
        problems=(
            ("ERROR", "activity[1].detail.scheduledTiming.repeat.timeOfDay", "no time of day"),
        ),
    ),
    "vkp/examples-stu3/Composition-example.xml": Expect(not_sources=("Composition",)),
    "vkp/examples-stu3/Evonodos-use-case-1a.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Evonodos-use-case-1b.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Evonodos-use-case-2a.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    "vkp/examples-stu3/Evonodos-use-case-2b.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    "vkp/examples-stu3/Evonodos-use-case-3a.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    "vkp/examples-stu3/Evonodos-use-case-3b.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    "vkp/examples-stu3/Evonodos-use-case-3c.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    "vkp/examples-stu3/Evonodos-use-case-3d.xml": Expect(not_sources=MESSAGE_WITH_COMPOSITION),
    # The .cml holds the same message as FHIR JSON: read by content, not by suffix.
    "vkp/examples-stu3/Evonodos-use-case-4.cml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Evonodos-use-case-4.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Flag-Trondheim-example.xml": Expect(not_sources=("Flag",)),
    "vkp/examples-stu3/Hendelse-Bundle-composition.xml": Expect(
        not_sources=MESSAGE_WITH_COMPOSITION
    ),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-Dosageinstructions.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-feil-subject-system.xml": Expect(
        not_sources=MESSAGE
    ),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-person.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-response-feilmelding.xml": Expect(
        not_sources=("MessageHeader", "OperationOutcome")
    ),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-response-ok.xml": Expect(
        not_sources=("MessageHeader",)
    ),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-teknisk.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Hendelse-Bundle-skinny-with-flag.xml": Expect(
        not_sources=(*MESSAGE, "Flag")
    ),
    "vkp/examples-stu3/Hendelse-Bundle-skinny.xml": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/Hendelse-Encounter-note-device.xml": Expect(not_sources=("Encounter",)),
    "vkp/examples-stu3/Hendelse-Encounter-note.xml": Expect(not_sources=("Encounter",)),
    "vkp/examples-stu3/Hendelse-Encounter.xml": Expect(not_sources=("Encounter",)),
    "vkp/examples-stu3/Hendelse-Trondheim-Location-Bundle.xml": Expect(
        patients=1, not_sources=("MessageHeader", "Device", "Location", "Flag")
    ),
    "vkp/examples-stu3/Patient-DagnyTestbruker.xml": Expect(problems=(BAD_CHECK_DIGITS,)),
    "vkp/examples-stu3/Tiltaksplan-CarePlan-activity-detail.xml": Expect(
        problems=(("SKIPPED", "category", "not a visit plan (category 1 tiltaksplan)"),)
    ),
    "vkp/examples-stu3/Tjeneste-CarePlan.xml": Expect(problems=(CATEGORY_2_TJENESTE,)),
    # A validator's HTML report, not FHIR.
    "vkp/examples-stu3/bugs-hendelse-trondheim-bundle.html": Expect(
        problems=(("ERROR", "", "not FHIR: root element <html> is not in the FHIR namespace"),)
    ),
    "vkp/examples-stu3/meddispense06_categoryMissing.json": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/meddispense06_performerMissing.json": Expect(not_sources=MESSAGE),
    "vkp/examples-stu3/no-basis-Patient-Jannice-Søreng.xml": Expect(patients=1),
    "vkp/examples-stu3/no-patient-Ærlend-Sørgård.xml": Expect(patients=1),
    "vkp/examples-stu3/vkp-Bundle-CarePlan-and-Patient.xml": Expect(
        patients=1, problems=(CATEGORY_2_TJENESTE,)
    ),
    "vkp/examples-stu3/vkp-CarePlan-Arbeidsplan-Magnar-Solbakken.xml": Expect(
        plans=(("active", 1),),
        problems=(
            (
                "ERROR",
                "activity[1].detail.performer[0].identifier",
                "invalid national id number: check digit mismatch",
            ),
            (
                "ERROR",
                "activity[1].detail.performer[1].identifier",
                "invalid national id number: must be 11 digits, got 10",
            ),
        ),
    ),
    "vkp/examples-stu3/vkp-CarePlan-Tjeneste-Magnar-Solbakken-2.xml": Expect(
        problems=(CATEGORY_2_EGEN,)
    ),
    "vkp/examples-stu3/vkp-CarePlan-Tjeneste-Magnar-Solbakken.xml": Expect(
        problems=(CATEGORY_2_EGEN,)
    ),
    "vkp/examples-stu3/vkp-Patient-Jannice-Søreng.xml": Expect(patients=1),
    "vkp/examples-stu3/vkp-Patient-Magnar-Solbakken-ekstra-info.xml": Expect(patients=1),
    "vkp/examples-stu3/vkp-Patient-Magnar-Solbakken.xml": Expect(patients=1),
    # VKP R4 profiles and an R4 JSON patient
    "vkp/profiles-r4/patient-vft-example-Andre.json": Expect(problems=(BAD_CHECK_DIGITS,)),
    "vkp/profiles-r4/vkp-CarePlan-v090.structuredefinition-profile.xml": Expect(
        not_sources=("StructureDefinition",)
    ),
    "vkp/profiles-r4/vkp-Encounter-v090.StructureDefinition-profile.xml": Expect(
        not_sources=("StructureDefinition",)
    ),
    "vkp/profiles-r4/vkp-Patient-Server-Requirements.xml": Expect(
        not_sources=("CapabilityStatement",)
    ),
    "vkp/profiles-r4/vkp-Patient-v090.structuredefinition-profile.xml": Expect(
        not_sources=("StructureDefinition",)
    ),
    "vkp/profiles-r4/vkp-careplan-category-v090.codesystem.xml": Expect(
        not_sources=("CodeSystem",)
    ),
    "vkp/profiles-r4/vkp-elock-v090.structuredefinition-extension.xml": Expect(
        not_sources=("StructureDefinition",)
    ),
    "vkp/profiles-r4/vkp-encounter-class-v090.codesystem.xml": Expect(
        not_sources=("CodeSystem",)
    ),
    "vkp/profiles-r4/vkp-sone-v090.structuredefinition-extension.xml": Expect(
        not_sources=("StructureDefinition",)
    ),
}


def _key(path: Path) -> str:
    return unicodedata.normalize("NFC", path.relative_to(FIXTURES).as_posix())


def fixture_files() -> list[object]:
    if not FIXTURES.is_dir():
        reason = f"fixtures folder {FIXTURES} is absent"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-fixtures")]
    files = sorted(p for p in FIXTURES.rglob("*") if p.is_file())
    return [pytest.param(p, id=_key(p)) for p in files]


def read(path: Path, expect: Expect = Expect()) -> ParsedSource:
    return read_source(
        path,
        timezone="Europe/Oslo",
        horizon_start=expect.horizon[0],
        horizon_end=expect.horizon[1],
        accept_synthetic_ids=False,
    )


@pytest.mark.parametrize("path", fixture_files())
def test_fixture_yields_exactly_what_is_expected(path: Path) -> None:
    key = _key(path)
    assert key in EXPECTED, f"no expectation for fixture {key}: add one to EXPECTED"
    expect = EXPECTED[key]
    parsed = read(path, expect)
    assert len(parsed.patients) == expect.patients
    assert len(parsed.practitioners) == expect.practitioners
    assert tuple((p.status, len(p.occurrences)) for p in parsed.plans) == expect.plans
    not_sources = [p for p in parsed.problems if p.message.endswith("is not a visit source")]
    assert tuple(p.source.resource_type for p in not_sources) == expect.not_sources
    assert all(p.severity is Severity.SKIPPED for p in not_sources)
    others = [p for p in parsed.problems if p not in not_sources]
    assert tuple((p.severity.name, p.field, p.message) for p in others) == expect.problems
    assert all(p.source.file == str(path) for p in parsed.problems)


def test_every_expectation_has_its_fixture() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(f"fixtures folder {FIXTURES} is absent")
    present = {_key(p) for p in FIXTURES.rglob("*") if p.is_file()}
    assert set(EXPECTED) - present == set()


def fixture(relative: str) -> Path:
    path = FIXTURES / relative
    if not path.is_file():
        pytest.skip(f"fixture {path} is absent")
    return path


def test_magnar_visit_plan_keeps_the_valid_activity() -> None:
    parsed = read(fixture("vkp/examples-stu3/vkp-CarePlan-Arbeidsplan-Magnar-Solbakken.xml"))
    (plan,) = parsed.plans
    # The identifier value carries a trailing space in the file: stripped in the key.
    assert plan.plan_key == "urn:ietf:rfc:3986|urn:uuid:476298fe-21cb-481b-8873-771fc2f8151b"
    assert [i.kind for i in plan.subject] == [IdKind.NATIONAL_ID]
    (visit,) = plan.occurrences
    assert visit.key == f"{plan.plan_key}#a0#2018-09-11T14:00:00Z"
    assert (visit.start, visit.end) == (utc(2018, 9, 11, 14), utc(2018, 9, 11, 14, 50))
    assert visit.description == "Legebesøk"
    (performer,) = visit.performers
    assert [(i.kind, i.value) for i in performer.identifiers] == [(IdKind.HER_ID, "720")]
    assert performer.display == "Sakkeus Hansen"
    assert all(p.raw is not None and "Hjemmehjelp" in p.raw for p in parsed.problems)


def test_arbeidsplan_daily_visit_is_open_ended_and_the_weekly_one_has_no_time() -> None:
    parsed = read(fixture("vkp/examples-stu3/Arbeidsplan-CarePlan.xml"))
    (plan,) = parsed.plans
    assert plan.expanded_until == H2018[1]
    # 08:00 in Oslo in September is 06:00 UTC (summer time).
    assert {o.start.strftime("%H:%M") for o in plan.occurrences} == {"06:00"}
    assert plan.occurrences[0].start == utc(2018, 9, 10, 6)
    assert all(o.performers == () for o in plan.occurrences)


TROMSO = ("KVT", "TROMSØ", "Response Center")


@pytest.mark.parametrize(
    ("relative", "elock", "zone"),
    [
        ("vkp/examples-stu3/vkp-Patient-Magnar-Solbakken.xml", "e-lås", TROMSO),
        ("vkp/examples-stu3/vkp-Bundle-CarePlan-and-Patient.xml", "e-lås", TROMSO),
        (
            "vkp/examples-stu3/vkp-Patient-Jannice-Søreng.xml",
            "BEKEY",
            ("Oslo", "Gamle Oslo", "Øst", "Kampen"),
        ),
        ("vkp/examples-stu3/no-basis-Patient-Jannice-Søreng.xml", None, ()),
        ("vkp/examples-stu3/Hendelse-Trondheim-Location-Bundle.xml", None, ()),
    ],
)
def test_patient_elock_and_zone(relative: str, elock: str | None, zone: tuple[str, ...]) -> None:
    (patient,) = read(fixture(relative)).patients
    assert patient.elock_system == elock
    assert patient.zone_path == zone
    assert patient.national_id is not None


def test_patient_contacts_become_relatives() -> None:
    path = fixture("vkp/examples-stu3/vkp-Patient-Magnar-Solbakken-ekstra-info.xml")
    (patient,) = read(path).patients
    assert patient.name == "Magnar Solbakken"
    assert patient.address == "Gulengvegen 40, 9010 Tromsø"
    assert [(r.name, r.relationship, r.phone) for r in patient.relatives] == [
        ("Ann Ida Hageby", "CP", None),
        ("Arne Lutu", "CP", "22667790"),
    ]


def test_no_basis_appointment_refers_to_its_patient() -> None:
    path = fixture("no-basis/Appointment-d6c523ec-b520-4221-a8d6-c1c58911ce7a.json")
    (plan,) = read(path, Expect(horizon=H2023)).plans
    assert plan.plan_key == "Appointment|d6c523ec-b520-4221-a8d6-c1c58911ce7a"
    assert plan.subject == ()
    assert plan.subject_ref == "Patient/e70f0ba2-44d8-4f14-9c3a-ff4c6ead7473"
    (visit,) = plan.occurrences
    assert (visit.start, visit.end) == (utc(2023, 8, 10, 9), utc(2023, 8, 10, 11))
    assert visit.performers == ()
