"""Input that tries to misdirect access: the import reports it and never guesses."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import Engine, func, select

from portner.domain.care_record import Identifier, IdKind, PerformerRef
from portner.services.ids import IdSource
from portner.services.importing import MAX_VISITS_PER_PLAN, import_sources
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository
from tests.services.test_importing import (
    BASE,
    NID_A,
    NID_B,
    NOW,
    M,
    at,
    occ,
    patient,
    plan,
    source,
)


def _setup(engine: Engine) -> None:
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)
    import_sources(engine, M, BASE, now=NOW, ids=IdSource(1))


def _grants(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(t.grants)).scalar() or 0)


def _messages(report) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.message for p in report.problems]


def test_subject_identifier_and_reference_must_agree(engine: Engine) -> None:
    _setup(engine)
    both = replace(plan("cp1", NID_A, occ("k1", at(8), 30, "9000001")), subject_ref="Patient/p2")
    report = import_sources(engine, M, [source(plans=[both])], now=NOW, ids=IdSource(2))
    assert _messages(report) == ["subject identifier and reference name different residents"]
    assert _grants(engine) == 0


def test_an_unknown_identifier_never_falls_back_to_the_reference(engine: Engine) -> None:
    _setup(engine)
    stranger = replace(plan("cp1", "05914512345", occ("k1", at(8), 30, "9000001")), subject_ref="Patient/p1")
    report = import_sources(engine, M, [source(plans=[stranger])], now=NOW, ids=IdSource(2))
    assert _messages(report) == ["subject matches no known resident"]
    assert _grants(engine) == 0


def test_only_relative_patient_references_count(engine: Engine) -> None:
    _setup(engine)
    for ref in ("https://elsewhere.example/fhir/Group/p1", "Group/p1", "Patient/"):
        p = replace(plan("cp1", NID_A, occ("k1", at(8), 30, "9000001")), subject=(), subject_ref=ref)
        report = import_sources(engine, M, [source(plans=[p])], now=NOW, ids=IdSource(2))
        assert report.visits_added == 0, ref
        assert "is not a Patient/<id> reference" in _messages(report)[0]


def test_a_record_without_national_id_cannot_take_over_a_resident(engine: Engine) -> None:
    _setup(engine)
    hijack = replace(patient("p1", NID_A), identifiers=(), name="Mallory", elock_system=None)
    report = import_sources(engine, M, [source(patients=[hijack])], now=NOW, ids=IdSource(2))
    assert "belongs to a resident known by national id" in _messages(report)[0]
    with engine.connect() as conn:
        row = conn.execute(select(t.residents).where(t.residents.c.source_ref == "p1")).one()
        home = conn.execute(select(t.homes).where(t.homes.c.resident_id == row.id)).one()
    assert row.national_id == NID_A
    assert row.display_name == "Testperson"
    assert home.elock_system is not None


def test_a_second_resident_does_not_steal_a_patient_id(engine: Engine) -> None:
    _setup(engine)
    other = patient("p1", "06914512345")
    report = import_sources(engine, M, [source(patients=[other])], now=NOW, ids=IdSource(2))
    assert _messages(report) == ["another resident already has this Patient id; plans cannot reference it"]
    with engine.connect() as conn:
        holders = conn.execute(select(t.residents.c.national_id).where(t.residents.c.source_ref == "p1")).scalars().all()
    assert holders == [NID_A]


def test_one_identifier_for_two_different_plans_in_one_import(engine: Engine) -> None:
    _setup(engine)
    first = plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))
    second = plan("cp1", NID_B, occ("k1", at(8), 30, "9000002"))
    report = import_sources(engine, M, [source(plans=[first, second])], now=NOW, ids=IdSource(2))
    assert report.visits_added == 1
    assert _messages(report) == ["plan identifier is used by another plan with different content in this import"]


def test_an_identifier_reused_for_another_resident_later(engine: Engine) -> None:
    _setup(engine)
    import_sources(engine, M, [source(plans=[plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))])], now=NOW, ids=IdSource(2))
    again = plan("cp1", NID_B, occ("k9", at(9), 30, "9000002"))
    for _ in range(3):
        report = import_sources(engine, M, [source(plans=[again])], now=NOW, ids=IdSource(3))
        assert _messages(report) == ["plan identifier already belongs to another resident's plan"]
    with engine.connect() as conn:
        statuses = conn.execute(select(t.visits.c.status)).scalars().all()
        assert statuses == ["planned"]  # resident A's visit untouched, nothing flip-flopped
        assert verify_audit(conn).ok


def test_a_plan_that_floods_the_day_is_refused(engine: Engine) -> None:
    _setup(engine)
    many = [occ(f"k{i}", at(0) + timedelta(minutes=i), 1, "9000001") for i in range(MAX_VISITS_PER_PLAN + 1)]
    report = import_sources(engine, M, [source(plans=[plan("cp1", NID_A, *many)])], now=NOW, ids=IdSource(2))
    assert report.visits_added == 0
    assert "more than 2000 is not accepted" in _messages(report)[0]


def test_a_visit_longer_than_a_day_is_refused(engine: Engine) -> None:
    _setup(engine)
    long = occ("cp1#a0#x", at(8), 60 * 24 * 3650, "9000001")
    ok = occ("cp1#a1#y", at(10), 30, "9000001")
    report = import_sources(engine, M, [source(plans=[plan("cp1", NID_A, long, ok)])], now=NOW, ids=IdSource(2))
    assert report.visits_added == 1
    assert _messages(report) == ["visit lasts longer than 24 hours"]
    assert report.problems[0].field.startswith("activity[0]")


def test_a_performer_whose_identifiers_name_two_people_is_ambiguous(engine: Engine) -> None:
    _setup(engine)
    two = PerformerRef((Identifier(IdKind.HPR_NUMBER, "9000001"), Identifier(IdKind.HPR_NUMBER, "9000002")))
    o = replace(occ("k1", at(8), 30, None), performers=(two,))
    report = import_sources(engine, M, [source(plans=[plan("cp1", NID_A, o)])], now=NOW, ids=IdSource(2))
    assert _messages(report) == ["ambiguous performer"]
    assert _grants(engine) == 0


def test_national_id_like_digits_in_a_field_are_redacted_not_fatal(engine: Engine) -> None:
    _setup(engine)
    o = occ("cp1#id:11905818009#2026", at(8), 30, "1111111")  # an activity id that looks like one
    report = import_sources(engine, M, [source(plans=[plan("cp1", NID_A, o)])], now=NOW, ids=IdSource(2))
    assert _messages(report) == ["unknown performer"]
    assert "11905818009" not in report.problems[0].field
    with engine.connect() as conn:
        assert verify_audit(conn).ok


def test_an_absolute_reference_never_names_a_local_resident(engine: Engine) -> None:
    _setup(engine)
    p = replace(
        plan("cp1", NID_A, occ("k1", at(8), 30, "9000001")),
        subject=(),
        subject_ref="https://evil.example/fhir/Patient/p1",
    )
    report = import_sources(engine, M, [source(plans=[p])], now=NOW, ids=IdSource(2))
    assert report.visits_added == 0
    assert "is not a Patient/<id> reference" in _messages(report)[0]
