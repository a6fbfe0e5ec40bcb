"""Reading files: Bundles, Patients, Practitioners, Appointments, junk input and privacy."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir_helpers import DATA, FIXTURES, YEAR_2026, read_data, utc

from portner.domain.care_record import IdKind, ParsedSource, Severity
from portner.domain.errors import NaiveDatetimeError
from portner.fhir import SourceFileError, read_source, read_sources, read_text


def text_read(text: str, *, accept_synthetic_ids: bool = True) -> ParsedSource:
    return read_text(
        text,
        "inline.txt",
        timezone="Europe/Oslo",
        horizon_start=YEAR_2026[0],
        horizon_end=YEAR_2026[1],
        accept_synthetic_ids=accept_synthetic_ids,
    )


def test_bundle_with_patient_practitioner_and_careplan() -> None:
    parsed = read_data("r4-bundle-patient-careplan.json")
    (patient,) = parsed.patients
    assert patient.name == "Kari Mellom Testesen"  # no-basis-middlename between given and family
    assert patient.address == "Kampengata 3, H0201, 0654 Oslo"  # the home address, not work
    assert patient.elock_system == "Glue"
    assert patient.zone_path == ("Oslo", "Gamle Oslo", "Øst", "Kampen")
    assert [i.kind for i in patient.identifiers] == [IdKind.NATIONAL_ID, IdKind.OTHER]
    assert [(r.name, r.relationship, r.phone) for r in patient.relatives] == [
        ("Lise Testesen", "Datter", "+4790000001"),
        ("Per Nabo", "C", None),
    ]
    (practitioner,) = parsed.practitioners
    assert practitioner.name == "Kari Nordmann"

    (plan,) = parsed.plans
    assert plan.subject_ref == "Patient/p1"
    assert plan.subject == patient.identifiers  # resolved against the Patient in the Bundle
    assert plan.version == "2026-05-30T12:00:00Z"
    first, second = plan.occurrences
    resolved, unknown = first.performers
    assert [(i.kind, i.value) for i in resolved.identifiers] == [(IdKind.HPR_NUMBER, "9144889")]
    assert resolved.display == "Kari Nordmann"
    assert unknown.identifiers == () and unknown.display == "Vikar"
    assert second.performers == ()  # no performer: an unassigned visit, not a problem
    # Two Encounters, one note per resource type.
    assert [(p.severity, p.message) for p in parsed.problems] == [
        (Severity.SKIPPED, "resource type Encounter is not a visit source")
    ]


def test_nested_message_bundle_in_stu3_xml() -> None:
    parsed = read_data("stu3-message-bundle.xml")
    (patient,) = parsed.patients
    assert patient.zone_path == ("Tromsø", "Sentrum", "Sone 1")  # parts stripped
    assert patient.elock_system is None  # no vkp-elock: no e-lock installed
    assert patient.address == "Storgata 1, Tromsø"
    (plan,) = parsed.plans
    assert plan.subject_ref == "urn:uuid:5b7e0000-0000-4000-8000-0000000000aa"
    assert plan.subject == patient.identifiers
    assert plan.plan_key.startswith("sha256:")  # no identifier, no id: a hash of the content
    (occurrence,) = plan.occurrences  # scheduledPeriod is read like a boundsPeriod
    assert (occurrence.start, occurrence.end) == (utc(2026, 6, 2, 7), utc(2026, 6, 2, 7, 20))
    assert [p.message for p in parsed.problems] == [
        "resource type MessageHeader is not a visit source"
    ]


def test_synthetic_ids_are_refused_unless_accepted() -> None:
    parsed = read_data("r4-bundle-patient-careplan.json", accept_synthetic_ids=False)
    assert parsed.patients == []
    errors = [p for p in parsed.problems if p.severity is Severity.ERROR]
    assert [(p.source.resource_type, p.field, p.message) for p in errors] == [
        (
            "Patient",
            "identifier[0]",
            "invalid national id number: synthetic test number not accepted",
        )
    ]
    # The plan still arrives, as a reference the import service must resolve.
    (plan,) = parsed.plans
    assert plan.subject == () and plan.subject_ref == "Patient/p1"


def test_invalid_subject_rejects_the_whole_plan() -> None:
    source = (DATA / "r4-count.json").read_text(encoding="utf-8")
    parsed = text_read(source.replace("15869012332", "15869012333"))
    assert parsed.plans == []
    (error,) = parsed.problems
    assert (error.field, error.message) == (
        "subject.identifier",
        "invalid national id number: check digit mismatch",
    )
    assert error.raw is not None  # the plan is kept for correction


def test_appointments() -> None:
    parsed = read_data("r4-appointments.json")
    plans = {p.plan_key: p for p in parsed.plans}
    assert set(plans) == {
        "Appointment|a1",
        "Appointment|a2",
        "Appointment|https://epj.example/avtale|A-77",
        "Appointment|a4",
    }
    booked = plans["Appointment|a1"]
    assert booked.version == "2"
    assert booked.subject_ref == "Patient/p1"
    assert [i.kind for i in booked.subject] == [IdKind.NATIONAL_ID]
    (visit,) = booked.occurrences
    assert visit.key == "Appointment|a1#a0#2026-06-01T09:00:00Z"
    assert (visit.start, visit.end, visit.cancelled) == (
        utc(2026, 6, 1, 9),
        utc(2026, 6, 1, 9, 30),
        False,
    )
    # Bare reference resolved in the Bundle; unknown one kept without identifiers; the one who
    # declined and the Location are not performers.
    assert [(p.display, [i.kind for i in p.identifiers]) for p in visit.performers] == [
        ("Kari Nordmann", [IdKind.HPR_NUMBER]),
        ("Vikar", []),
    ]
    assert plans["Appointment|a2"].occurrences[0].cancelled is True
    noshow = plans["Appointment|https://epj.example/avtale|A-77"]
    assert noshow.subject_ref is None and noshow.subject[0].kind is IdKind.NATIONAL_ID
    assert noshow.occurrences[0].cancelled is True
    assert noshow.occurrences[0].end - noshow.occurrences[0].start == timedelta(minutes=20)
    assert plans["Appointment|a4"].occurrences == ()  # waitlist: not a planned visit
    assert {(p.source.resource_id, p.field, p.message) for p in parsed.problems} == {
        (
            "a5",
            "participant[1].actor.identifier",
            "invalid national id number: must be 11 digits, got 10",
        ),
        ("a6", "end", "ends before it starts"),
    }


def test_appointment_outside_the_horizon_has_no_occurrence() -> None:
    parsed = read_data("r4-appointments.json", (utc(2026, 7, 1), utc(2026, 8, 1)))
    assert all(p.occurrences == () for p in parsed.plans)


def test_unknown_careplan_profile_is_an_error() -> None:
    parsed = read_data("r4-unknown-profile.json")
    assert parsed.plans == []
    (error,) = parsed.problems
    assert error.severity is Severity.ERROR
    assert error.field == "meta.profile"
    assert "acme-CarePlan" in error.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<CarePlan xmlns='http://hl7.org/fhir'><status value='active'/>", "not well-formed XML"),
        ("{\"resourceType\": \"CarePlan\",", "not valid JSON"),
        ("{\"foo\": 1}", "not FHIR: JSON object has no resourceType"),
        ("<html><body>report</body></html>", "not FHIR: root element <html>"),
        ("hello", "neither XML nor JSON"),
        ("", "neither XML nor JSON"),
        (
            "<?xml version='1.0'?><!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>"
            "<Patient xmlns='http://hl7.org/fhir'><name><family value='&e;'/></name></Patient>",
            "XML uses a forbidden construct",
        ),
    ],
)
def test_junk_is_one_error_naming_the_file(text: str, message: str) -> None:
    parsed = text_read(text)
    (error,) = parsed.problems
    assert error.severity is Severity.ERROR
    assert error.source.file == "inline.txt"
    assert error.message.startswith(message)
    assert parsed.patients == [] and parsed.plans == []


def test_missing_file_raises_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.xml"
    with pytest.raises(SourceFileError, match="nope.xml"):
        read_source(
            missing,
            timezone="Europe/Oslo",
            horizon_start=YEAR_2026[0],
            horizon_end=YEAR_2026[1],
            accept_synthetic_ids=False,
        )


def test_naive_horizon_is_refused() -> None:
    with pytest.raises(NaiveDatetimeError):
        read_text(
            "{}",
            "x.json",
            timezone="Europe/Oslo",
            horizon_start=datetime(2026, 1, 1),
            horizon_end=datetime(2026, 2, 1, tzinfo=UTC),
            accept_synthetic_ids=False,
        )


def test_directories_are_walked_sorted_for_xml_and_json(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/z.json", "a.xml", "b/c.XML", "notes.txt"):
        (tmp_path / name).write_text("{}" if name.endswith("json") else "<x/>", encoding="utf-8")
    parsed = read_sources(
        [tmp_path],
        timezone="Europe/Oslo",
        horizon_start=YEAR_2026[0],
        horizon_end=YEAR_2026[1],
        accept_synthetic_ids=False,
    )
    assert [Path(p.file).relative_to(tmp_path).as_posix() for p in parsed] == [
        "a.xml",
        "b/c.XML",
        "b/z.json",
    ]


ELEVEN_DIGITS = re.compile(r"(?<!\d)\d{11}(?!\d)")


def all_inputs() -> list[Path]:
    inputs = sorted(DATA.glob("*"))
    if FIXTURES.is_dir():
        inputs += sorted(p for p in FIXTURES.rglob("*") if p.is_file())
    return inputs


def test_no_problem_message_or_field_contains_a_national_id() -> None:
    parsed = read_sources(
        all_inputs(),
        timezone="Europe/Oslo",
        horizon_start=utc(2018, 1, 1),
        horizon_end=utc(2027, 1, 1),
        accept_synthetic_ids=False,  # so that synthetic ids also produce messages
    )
    problems = [p for source in parsed for p in source.problems]
    assert any("national id" in p.message for p in problems)  # the scan saw the id problems
    for p in problems:
        assert not ELEVEN_DIGITS.search(p.message), p.message
        assert not ELEVEN_DIGITS.search(p.field), p.field
        assert not ELEVEN_DIGITS.search(str(p)), str(p)
    # Records do not show sensitive values in their repr either.
    for source in parsed:
        for record in [*source.patients, *source.plans]:
            assert not ELEVEN_DIGITS.search(repr(record))


def without_file(parsed: ParsedSource) -> tuple[object, ...]:
    """The records with the file name blanked, to compare two encodings of the same content."""
    from dataclasses import replace

    def strip(record: object) -> object:
        return replace(record, source=replace(record.source, file=""))  # type: ignore[type-var]

    return (
        [strip(p) for p in parsed.patients],
        [strip(p) for p in parsed.practitioners],
        [strip(p) for p in parsed.plans],
        [strip(p) for p in parsed.problems],
    )


def test_r4_xml_and_json_of_the_same_content_map_identically() -> None:
    from_json = read_data("r4-bundle-patient-careplan.json")
    from_xml = read_data("r4-bundle-patient-careplan.xml")
    assert from_xml.plans and from_xml.patients  # not vacuously equal
    assert without_file(from_xml) == without_file(from_json)
    # Values hidden from repr must match too.
    assert from_xml.patients[0].national_id == from_json.patients[0].national_id
    assert from_xml.patients[0].relatives == from_json.patients[0].relatives


def test_input_echoed_in_messages_and_sources_is_scrubbed() -> None:
    # A care system that uses the national id as resource id, and junk in a status field.
    appointment = {
        "resourceType": "Appointment",
        "id": "15869012332",
        "status": "booked 15869012332",
        "participant": [],
    }
    parsed = text_read(json.dumps(appointment))
    (error,) = parsed.problems
    assert error.message == "unknown appointment status 'booked ***********'"
    assert error.source.resource_id == "***********"


def test_byte_order_marks_and_declared_encodings(tmp_path: Path) -> None:
    source = (DATA / "r4-count.json").read_text(encoding="utf-8")
    (tmp_path / "bom.json").write_bytes(b"\xef\xbb\xbf" + source.encode())
    latin = (
        "<?xml version='1.0' encoding='ISO-8859-1'?>"
        "<Patient xmlns='http://hl7.org/fhir'><name><family value='Sørgård'/></name></Patient>"
    )
    (tmp_path / "latin1.xml").write_bytes(latin.encode("iso-8859-1"))
    latin_json_text = '{"resourceType": "Patient", "id": "ø"}'
    (tmp_path / "latin1.json").write_bytes(latin_json_text.encode("latin-1"))
    bom, latin_json, latin_xml = read_sources(
        [tmp_path],
        timezone="Europe/Oslo",
        horizon_start=YEAR_2026[0],
        horizon_end=YEAR_2026[1],
        accept_synthetic_ids=True,
    )
    assert len(bom.plans) == 1 and bom.problems == []
    assert latin_xml.patients[0].name == "Sørgård"
    assert [p.message for p in latin_json.problems] == ["not valid JSON (not UTF-8 text)"]
