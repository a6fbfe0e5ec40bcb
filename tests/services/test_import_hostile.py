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


def test_a_home_that_gets_an_elock_gets_keys_for_its_coming_visits(engine: Engine) -> None:
    _setup(engine)  # p2 has no e-lock
    visit_plan = plan("cp2", NID_B, occ("k1", at(10), 30, "9000002"))
    first = import_sources(engine, M, [source(plans=[visit_plan])], now=NOW, ids=IdSource(2))
    assert (first.grants_created, first.physical_key_visits) == (0, 1)
    installed = patient("p2", NID_B)  # the same resident, now with an e-lock
    report = import_sources(engine, M, [source(patients=[installed], plans=[visit_plan])], now=NOW, ids=IdSource(3))
    assert report.grants_created == 1
    removed = patient("p2", NID_B, elock=None)
    report = import_sources(engine, M, [source(patients=[removed], plans=[visit_plan])], now=NOW, ids=IdSource(4))
    assert report.grants_revoked == 1
    with engine.connect() as conn:
        active = conn.execute(select(func.count()).select_from(t.grants).where(t.grants.c.status == "active")).scalar()
    assert active == 0


def test_text_too_long_for_its_column_quarantines_that_record_only(engine: Engine) -> None:
    _setup(engine)
    huge_name = replace(patient("p9", "07914512345"), name="N" * 201)
    long_desc = replace(occ("k1", at(8), 30, "9000001"), description="D" * 401)
    fine = plan("cp2", NID_A, occ("k2", at(9), 30, "9000001"))
    report = import_sources(
        engine, M, [source(patients=[huge_name], plans=[plan("cp1", NID_A, long_desc), fine])],
        now=NOW, ids=IdSource(2),
    )
    assert sorted((p.field, p.message) for p in report.problems) == [
        ("name", "too long to store"),
        ("occurrence.detail.description", "too long to store"),  # "k1" names no activity
    ]
    assert report.visits_added == 1  # the fine plan still came in


def test_relatives_follow_the_record_and_free_text_is_redacted(engine: Engine) -> None:
    from portner.domain.care_record import Relative

    _setup(engine)
    two = replace(patient("p1", NID_A), relatives=(Relative("Kari", "datter 01914512345"), Relative("Ola", "N")))
    import_sources(engine, M, [source(patients=[two])], now=NOW, ids=IdSource(2))
    one = replace(patient("p1", NID_A), relatives=(Relative("Ola", "N"),))
    import_sources(engine, M, [source(patients=[one])], now=NOW, ids=IdSource(3))
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.actors.c.display_name, t.relations.c.relationship)
            .join(t.relations, t.relations.c.actor_id == t.actors.c.id)
        ).all()
        kari = conn.execute(select(t.audit_events.c.details).where(t.audit_events.c.action == "relation:registered")).scalars().all()
        assert verify_audit(conn).ok
    assert [tuple(r) for r in rows] == [("Ola", "N")]
    assert not any("01914512345" in str(d) for d in kari)
    many = replace(patient("p1", NID_A), relatives=tuple(Relative(f"R{i}", "N") for i in range(21)))
    report = import_sources(engine, M, [source(patients=[many])], now=NOW, ids=IdSource(4))
    assert _messages(report) == ["more than 20 contacts"]
