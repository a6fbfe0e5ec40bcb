"""Input meant to hurt: links out of the folder, devices, odd encodings, times with offsets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from portner.fhir import SourceFileError, read_source, read_sources, read_text
from tests.fhir.fhir_helpers import YEAR_2026

KW = {
    "timezone": "Europe/Oslo",
    "horizon_start": YEAR_2026[0],
    "horizon_end": YEAR_2026[1],
    "accept_synthetic_ids": True,
}


def test_links_in_a_folder_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"resourceType": "Practitioner", "id": "x"}))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "real.json").write_text(json.dumps({"resourceType": "Practitioner", "id": "y"}))
    (folder / "link.json").symlink_to(outside)
    (folder / "sub").symlink_to(tmp_path, target_is_directory=True)
    sources = read_sources([folder], **KW)
    assert [Path(s.file).name for s in sources] == ["real.json"]


def test_a_fifo_is_refused_not_waited_for(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(SourceFileError, match="not a regular file"):
        read_source(fifo, **KW)


def test_an_unknown_xml_encoding_in_a_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "klingon.xml"
    path.write_bytes(b'<?xml version="1.0" encoding="klingon"?><Patient xmlns="http://hl7.org/fhir"/>')
    source = read_source(path, **KW)
    assert [p.message for p in source.problems] == [
        "XML declares an encoding that cannot be read (LookupError)"
    ]


@pytest.mark.parametrize("value", ["08:00:00+05:00", "0800", "8:00", "24:00:00"])
def test_time_of_day_must_be_a_fhir_time(value: str) -> None:
    plan = {
        "resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category", "code": "3"}]}],
        "subject": {"reference": "Patient/p1"},
        "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {"repeat": {
            "boundsPeriod": {"start": "2026-05-01", "end": "2026-05-03"},
            "frequency": 1, "period": 1, "periodUnit": "d", "timeOfDay": [value]}}}}],
    }
    source = read_text(json.dumps(plan), "tod.json", **KW)
    assert [(p.field, p.message) for p in source.problems] == [
        ("activity[0].detail.scheduledTiming.repeat.timeOfDay", "timeOfDay must be hh:mm:ss without offset")
    ]
    assert not any(plan.occurrences for plan in source.plans)


def test_an_absolute_subject_reference_is_passed_on_unshortened() -> None:
    plan = {
        "resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan",
        "category": [{"coding": [{"system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category", "code": "3"}]}],
        "subject": {"reference": "https://evil.example/fhir/Patient/pat-000002"},
        "activity": [{"detail": {"status": "scheduled", "scheduledTiming": {"repeat": {
            "boundsPeriod": {"start": "2026-05-01T08:00:00+02:00", "end": "2026-05-01T08:30:00+02:00"}}}}}],
    }
    source = read_text(json.dumps(plan), "abs.json", **KW)
    assert [p.subject_ref for p in source.plans] == ["https://evil.example/fhir/Patient/pat-000002"]


def test_occurrence_keys_cannot_collide_through_separators() -> None:
    def plan(identifier: str, activity_id: str) -> str:
        return json.dumps({
            "resourceType": "CarePlan", "id": "cp", "status": "active", "intent": "plan",
            "identifier": [{"system": "urn:x", "value": identifier}],
            "category": [{"coding": [{"system": "http://ehelse.no/fhir/CodeSystem/vkp-careplan-category", "code": "3"}]}],
            "subject": {"reference": "Patient/p"},
            "activity": [{"id": activity_id, "detail": {"status": "scheduled", "scheduledTiming": {"repeat": {
                "boundsPeriod": {"start": "2026-05-01T08:00:00+02:00", "end": "2026-05-01T08:30:00+02:00"}}}}}],
        })

    a = read_text(plan("K#id:x", "y"), "a.json", **KW).plans[0].occurrences[0].key
    b = read_text(plan("K", "x#id:y"), "b.json", **KW).plans[0].occurrences[0].key
    assert a != b
