"""FHIR input at the limits: numbers Python will not convert, control characters in strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from portner.domain.care_record import Severity
from portner.fhir import read_text
from tests.fhir.fhir_helpers import YEAR_2026

KW = {
    "timezone": "Europe/Oslo",
    "horizon_start": YEAR_2026[0],
    "horizon_end": YEAR_2026[1],
    "accept_synthetic_ids": True,
}
BUNDLE = Path(__file__).parent / "data" / "r4-bundle-patient-careplan.json"


def test_a_number_of_thousands_of_digits_is_a_problem_naming_the_file() -> None:
    source = read_text('{"resourceType":"Patient","x":' + "7" * 5000 + "}", "huge.json", **KW)
    assert not source.patients
    (problem,) = source.problems
    assert problem.source.file == "huge.json" and problem.severity is Severity.ERROR
    assert "digits" in problem.message and "7777" not in problem.message


def _bundle_with(index: int, change: dict) -> tuple[str, dict]:
    bundle = json.loads(BUNDLE.read_text())
    bundle["entry"][index]["resource"].update(change)
    return json.dumps(bundle), bundle


@pytest.mark.parametrize("bad", ["Kari\u0000Nordmann", "Kari\u0007", "\ud800", "a\u007f"])
def test_a_patient_with_a_control_character_is_quarantined_not_imported(bad: str) -> None:
    clean = read_text(BUNDLE.read_text(), "b.json", **KW)
    assert clean.patients and clean.plans and not [p for p in clean.problems if p.severity is Severity.ERROR]
    text, _ = _bundle_with(0, {"name": [{"family": bad, "given": ["Kari"]}]})
    source = read_text(text, "b.json", **KW)
    assert not source.patients
    assert source.practitioners  # the rest of the file is still read
    found = [p for p in source.problems if p.field == "name[0].family"]
    assert len(found) == 1
    (problem,) = found
    assert problem.severity is Severity.ERROR  # quarantined for correction
    assert (problem.source.file, problem.source.resource_type, problem.source.resource_id) == ("b.json", "Patient", "p1")
    assert problem.raw and "\u0000" not in problem.raw and "\ud800" not in problem.raw  # storable as text
    json.loads(problem.raw)  # and still the resource


def test_a_care_plan_with_a_nul_is_quarantined_not_imported() -> None:
    text, _ = _bundle_with(2, {"description": "morning\u0000visit"})
    source = read_text(text, "b.json", **KW)
    assert not source.plans and source.patients
    (problem,) = [p for p in source.problems if p.field == "description"]
    assert (problem.source.resource_type, problem.source.resource_id) == ("CarePlan", "cp1")


def test_a_nul_in_an_element_name_or_id_is_refused_without_repeating_it() -> None:
    source = read_text(json.dumps({"resourceType": "Patient", "id": "p\u00001", "a\u0000": "x"}), "k.json", **KW)
    assert not source.patients
    (problem,) = source.problems
    assert "\u0000" not in problem.source.resource_id and "\u0000" not in problem.field


def test_tabs_and_line_breaks_in_text_are_fine() -> None:
    text, _ = _bundle_with(2, {"description": "morning\tvisit\r\nwith care"})
    source = read_text(text, "b.json", **KW)
    assert source.plans
