"""The demo municipality in a database: its care record written as VKP files and imported.

Shared by `portner demo` (which then runs the day) and `portner serve` (which serves it, with
development accounts for each kind of user). The same seed gives the same municipality.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine

from portner.demo.files import read_installations
from portner.domain.model import Actor, ActorId, Municipality, MunicipalityId
from portner.fhir import read_sources
from portner.services.ids import IdSource
from portner.services.importing import ImportReport, import_sources
from portner.services.keys import MunicipalitySecrets, load_or_create_secrets
from portner.storage.repository import Repository

MUNICIPALITY = "demokommune"


@dataclass(frozen=True, slots=True)
class DemoSite:
    municipality: Municipality
    secrets: MunicipalitySecrets
    site: Any  # demo.synthetic.GeneratedSite
    report: ImportReport
    fixtures: Path | None
    fixture_files: int


def load_demo_site(
    engine: Engine,
    folder: Path,
    *,
    seed: int,
    day: date,
    ids: IdSource,
    now: datetime,
    residents: int = 300,
    staff: int = 40,
    fixtures: Path | None = None,
) -> DemoSite:
    """Write the synthetic care record under `folder`, create the municipality and import it.

    `fixtures`: the HL7 Norway examples folder to import as well (None: only the synthetic files).
    Plans are expanded from the day before `day` to two days after it.
    """
    from portner.demo.synthetic import generate_municipality

    zone = ZoneInfo("Europe/Oslo")
    site = generate_municipality(
        folder / "care-record", seed=seed, day=day, residents=residents, staff=staff,
        timezone="Europe/Oslo",
    )
    municipality = Municipality(
        id=MunicipalityId(MUNICIPALITY), name="Demokommune", accept_synthetic_ids=True
    )
    with engine.begin() as conn:
        repo = Repository(conn)
        if repo.get_municipality(MUNICIPALITY) is not None:
            raise SystemExit(
                "portner demo: this database already holds the demo municipality; "
                "give a fresh database with --db"
            )
        repo.add_municipality(municipality)
        secrets = load_or_create_secrets(conn, folder, MUNICIPALITY, now=now, seed_bytes=str(seed).encode())
        for s in site.staff:
            repo.upsert_actor(
                Actor(
                    id=ActorId(ids.new("stf")),
                    municipality_id=municipality.id,
                    role=s.role,
                    organisation="Hjemmetjenesten Demokommune",
                    display_name=s.display_name,
                    her_id=s.her_id,
                    hpr_number=s.hpr_number,
                )
            )
    day0 = datetime.combine(day, time(0), zone)
    horizon = (day0 - timedelta(days=1), day0 + timedelta(days=2))
    reading = dict(timezone=municipality.timezone, horizon_start=horizon[0], horizon_end=horizon[1],
                   accept_synthetic_ids=True)
    sources = read_sources([site.patients_dir, site.practitioners_dir, site.plans_dir], **reading)
    fixture_sources = read_sources([fixtures], **reading) if fixtures is not None else []
    report = import_sources(
        engine,
        municipality,
        [*sources, *fixture_sources],
        now=now,
        ids=ids,
        installations=read_installations(site.installations_path),
    )
    return DemoSite(municipality, secrets, site, report, fixtures, len(fixture_sources))
