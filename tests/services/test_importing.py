"""The import service on both databases: visits and grants from records, re-import, updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select

from portner.domain.care_record import (
    Identifier,
    IdKind,
    ParsedSource,
    PatientRecord,
    PerformerRef,
    PlannedOccurrence,
    PractitionerRecord,
    SourceRef,
    VisitPlanRecord,
)
from portner.domain.model import DoorKind, Municipality, MunicipalityId
from portner.services.ids import IdSource
from portner.services.importing import DoorSpec, import_sources
from portner.services.queries import physical_key_list
from portner.storage import tables as t
from portner.storage.audit import verify_audit
from portner.storage.repository import Repository

OSLO = ZoneInfo("Europe/Oslo")
NOW = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
M = Municipality(id=MunicipalityId("m1"), name="Testkommune", accept_synthetic_ids=True)
NID_A = "01914512345"  # shaped like a synthetic id; the service does not validate (the adapter does)
NID_B = "02914512345"


def _setup(engine: Engine) -> None:
    with engine.begin() as conn:
        Repository(conn).add_municipality(M)


def patient(ref: str, nid: str, *, elock: str | None = "Portner simulert lås") -> PatientRecord:
    return PatientRecord(
        source=SourceRef("patients.json", "Patient", ref),
        identifiers=(Identifier(IdKind.NATIONAL_ID, nid),),
        name="Testperson",
        elock_system=elock,
        zone_path=("Testkommune", "Nord", "Sone 1"),
    )


def nurse(ref: str, hpr: str) -> PractitionerRecord:
    return PractitionerRecord(
        source=SourceRef("staff.json", "Practitioner", ref),
        identifiers=(Identifier(IdKind.HPR_NUMBER, hpr),),
        name="Sykepleier",
    )


def occ(key: str, start_local: datetime, minutes: int, hpr: str | None) -> PlannedOccurrence:
    performers = (PerformerRef((Identifier(IdKind.HPR_NUMBER, hpr),)),) if hpr else ()
    start = start_local.astimezone(UTC)
    return PlannedOccurrence(key, start, start + timedelta(minutes=minutes), performers, "Tilsyn")


def plan(key: str, nid: str, *occurrences: PlannedOccurrence) -> VisitPlanRecord:
    return VisitPlanRecord(
        source=SourceRef("plans.json", "CarePlan", key),
        plan_key=key,
        subject=(Identifier(IdKind.NATIONAL_ID, nid),),
        subject_ref=None,
        status="active",
        occurrences=tuple(occurrences),
    )


def source(*, patients=(), practitioners=(), plans=()) -> ParsedSource:  # type: ignore[no-untyped-def]
    return ParsedSource("test", list(patients), list(practitioners), list(plans), [])


def at(h: int, m: int = 0) -> datetime:
    return datetime(2026, 12, 3, h, m, tzinfo=OSLO)


BASE = [
    source(
        patients=[patient("p1", NID_A), patient("p2", NID_B, elock=None)],
        practitioners=[nurse("n1", "9000001"), nurse("n2", "9000002")],
    )
]


def _count(engine: Engine, table: t.Table, *where: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar() or 0)


def test_visits_become_grants_on_the_whole_door_path(engine: Engine) -> None:
    _setup(engine)
    specs = {
        "p1": [
            DoorSpec("d-1", "l-1", DoorKind.BUILDING),
            DoorSpec("d-2", "l-2", DoorKind.STAIRWELL),
            DoorSpec("d-3", "l-3", DoorKind.FLAT),
        ]
    }
    sources = [*BASE, source(plans=[plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))])]
    report = import_sources(engine, M, sources, now=NOW, ids=IdSource(1), installations=specs)
    assert (report.patients, report.practitioners, report.visits_added) == (2, 2, 1)
    assert report.grants_created == 1
    with engine.connect() as conn:
        grant = conn.execute(select(t.grants)).one()
        assert grant.door_ids == ["d-1", "d-2", "d-3"]  # street first, flat last
        assert grant.not_before == at(7, 45).astimezone(UTC)  # 15 min lead
        assert grant.not_after == at(9, 0).astimezone(UTC)  # 30 min grace after 08:30
        assert verify_audit(conn).ok


def test_reimport_of_the_same_plan_changes_nothing(engine: Engine) -> None:
    _setup(engine)
    sources = [*BASE, source(plans=[plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))])]
    import_sources(engine, M, sources, now=NOW, ids=IdSource(1))
    audit_before = _count(engine, t.audit_events)
    again = import_sources(engine, M, sources, now=NOW, ids=IdSource(2))
    assert again.plans_unchanged == 1
    assert (again.visits_added, again.grants_created, again.grants_revoked) == (0, 0, 0)
    assert _count(engine, t.visits) == 1
    assert _count(engine, t.grants) == 1
    # Residents and staff are re-read, but nothing about access changed.
    with engine.connect() as conn:
        actions = [
            r.action
            for r in conn.execute(select(t.audit_events.c.action).where(t.audit_events.c.seq > audit_before))
        ]
    assert not [a for a in actions if a.startswith(("grant:", "visit:"))]


def test_updated_plan_moves_adds_cancels_and_revokes(engine: Engine) -> None:
    _setup(engine)
    first = plan(
        "cp1",
        NID_A,
        occ("k1", at(8), 30, "9000001"),
        occ("k2", at(12), 30, "9000001"),
        occ("k3", at(18), 30, "9000001"),
    )
    import_sources(engine, M, [*BASE, source(plans=[first])], now=NOW, ids=IdSource(1))
    updated = plan(
        "cp1",
        NID_A,
        occ("k1", at(9), 30, "9000001"),  # moved an hour
        occ("k2", at(12), 30, "9000002"),  # reassigned
        occ("k4", at(20), 30, "9000002"),  # new; k3 removed
    )
    report = import_sources(engine, M, [*BASE, source(plans=[updated])], now=NOW, ids=IdSource(2))
    assert (report.visits_moved, report.visits_added, report.visits_cancelled) == (2, 1, 1)
    assert report.grants_revoked == 3
    with engine.connect() as conn:
        visits = {r.source_key: r for r in conn.execute(select(t.visits))}
        assert visits["k3"].status == "cancelled"
        assert visits["k1"].planned_start == at(9).astimezone(UTC)
        active = list(conn.execute(select(t.grants).where(t.grants.c.status == "active")))
        assert len(active) == 3
        by_visit = {g.visit_id: g for g in active}
        assert visits["k3"].id not in by_visit
        assert by_visit[visits["k1"].id].not_before == at(8, 45).astimezone(UTC)
        assert verify_audit(conn).ok


def test_unknown_performer_is_quarantined_and_the_rest_imported(engine: Engine) -> None:
    _setup(engine)
    bad = plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"), occ("k2", at(9), 30, "1234567"))
    report = import_sources(engine, M, [*BASE, source(plans=[bad])], now=NOW, ids=IdSource(1))
    assert report.visits_added == 1
    assert report.quarantined == 1
    assert [p.message for p in report.problems] == ["unknown performer"]
    assert report.problems[0].source.file == "plans.json"
    # Importing the same bad input again does not add a second quarantine entry.
    import_sources(engine, M, [*BASE, source(plans=[bad])], now=NOW, ids=IdSource(2))
    assert _count(engine, t.quarantine) == 1


def test_plan_for_unknown_resident_is_quarantined(engine: Engine) -> None:
    _setup(engine)
    orphan = plan("cp9", "03914512345", occ("k1", at(8), 30, "9000001"))
    report = import_sources(engine, M, [*BASE, source(plans=[orphan])], now=NOW, ids=IdSource(1))
    assert report.visits_added == 0
    assert [p.field for p in report.problems] == ["subject"]


def test_home_without_elock_gets_no_key_but_a_physical_key_entry(engine: Engine) -> None:
    _setup(engine)
    p = plan("cp2", NID_B, occ("k1", at(10), 30, "9000002"))
    report = import_sources(engine, M, [*BASE, source(plans=[p])], now=NOW, ids=IdSource(1))
    assert report.visits_added == 1
    assert report.grants_created == 0
    assert report.physical_key_visits == 1
    listed = physical_key_list(engine, M.id, at(0), at(23), "Europe/Oslo")
    assert [v.start_local for v in listed] == ["10:00"]


def test_import_is_one_transaction(engine: Engine) -> None:
    """A failure halfway leaves nothing behind (no half-imported day)."""
    _setup(engine)
    broken = plan("cp1", NID_A, occ("k1", at(8), 30, "9000001"))
    # Two visits with the same source key violate the unique constraint at the end.
    duplicate = plan("cp2", NID_A, occ("k1", at(9), 30, "9000001"))
    try:
        import_sources(engine, M, [*BASE, source(plans=[broken, duplicate])], now=NOW, ids=IdSource(1))
    except Exception:  # noqa: BLE001 - the database error is the point
        pass
    else:
        raise AssertionError("expected the duplicate source key to fail the import")
    assert _count(engine, t.visits) == 0
    assert _count(engine, t.residents) == 0
    assert _count(engine, t.audit_events) == 0


def test_relatives_become_actors_related_to_their_resident_once(engine: Engine) -> None:
    from dataclasses import replace

    from portner.domain.care_record import Relative

    _setup(engine)
    with_family = replace(
        patient("p1", NID_A),
        relatives=(Relative("Kari Datter", "CHILD", "+4700000001"), Relative("Ola Nabo", "N")),
    )
    for seed in (1, 2):  # importing the same record again adds nobody
        import_sources(engine, M, [source(patients=[with_family])], now=NOW, ids=IdSource(seed))
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.actors.c.role, t.actors.c.display_name, t.relations.c.relationship)
            .join(t.relations, t.relations.c.actor_id == t.actors.c.id)
            .order_by(t.actors.c.display_name)
        ).all()
        assert [tuple(r) for r in rows] == [
            ("relative", "Kari Datter", "CHILD"),
            ("relative", "Ola Nabo", "N"),
        ]
        assert verify_audit(conn).ok


def _statistics_refreshed(engine: Engine) -> dict[str, float]:
    # reltuples is -1 on PostgreSQL (14 and later) until a table is first analyzed or vacuumed.
    with engine.connect() as conn:
        return dict(conn.exec_driver_sql(  # type: ignore[arg-type]
            "SELECT relname, reltuples FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
            " AND relname IN ('residents', 'homes', 'actors')").all())


@pytest.mark.postgres
def test_a_bulk_import_refreshes_the_statistics_of_what_it_filled(pg_engine: Engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from portner.services import importing

    _setup(pg_engine)
    small = source(patients=[patient("pat-a", NID_A)], practitioners=[nurse("prac-1", "9100001")])
    import_sources(pg_engine, M, [small], now=NOW, ids=IdSource())
    monkeypatch.setattr(importing, "BULK_ROWS", 0)  # any import is a bulk load here
    bulk = source(patients=[patient("pat-a", NID_A), patient("pat-b", NID_B)])
    import_sources(pg_engine, M, [bulk], now=NOW, ids=IdSource())
    assert _statistics_refreshed(pg_engine) == {"residents": 2, "homes": 2, "actors": 1}


@pytest.mark.postgres
def test_an_import_whose_statistics_cannot_be_refreshed_is_still_reported(pg_engine: Engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from portner.services import importing
    from portner.storage.db import make_engine

    _setup(pg_engine)
    monkeypatch.setattr(importing, "BULK_ROWS", 0)
    with pg_engine.connect() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar()
    impatient = make_engine(pg_engine.url.render_as_string(hide_password=False),
                            connect_args={"options": f"-csearch_path={schema} -clock_timeout=200"})
    # A maintenance command (VACUUM, CREATE INDEX CONCURRENTLY, another ANALYZE) on one table.
    with pg_engine.connect() as holder:
        holder.exec_driver_sql("LOCK TABLE visits IN SHARE UPDATE EXCLUSIVE MODE")
        try:
            report = import_sources(impatient, M, [source(patients=[patient("pat-a", NID_A)])], now=NOW,
                                    ids=IdSource())
        finally:
            holder.rollback()
            impatient.dispose()
    assert report.patients == 1 and _count(pg_engine, t.residents) == 1
