"""The composition root: settings in, an opened database and the municipality out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Engine, update

from portner.config import Settings
from portner.domain.errors import PortnerError
from portner.domain.model import Municipality, MunicipalityId
from portner.storage import tables as t
from portner.storage.db import open_database
from portner.storage.repository import Repository


@dataclass(frozen=True, slots=True)
class App:
    settings: Settings
    engine: Engine
    municipality: Municipality


class UnknownMunicipality(PortnerError):
    """The configured municipality does not exist in this database."""


def open_app(
    settings: Settings,
    *,
    create: bool = False,
    create_with: Municipality | None = None,
    accept_synthetic_ids: bool | None = None,
) -> App:
    """Open (and migrate) the database; with `create`, make the municipality on first use.

    Read-only commands never create one: a typo in --municipality must be an error, not an empty
    new tenant.
    """
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        raise PortnerError(f"data directory {settings.data_dir} exists and is not a folder")
    # Personal data lives here (the database, Encounters, keys): owner only. A folder that
    # already exists keeps its mode: --data-dir might point at something the user shares.
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = open_database(settings.db_url)
    with engine.begin() as conn:
        repo = Repository(conn)
        m = repo.get_municipality(settings.municipality_id)
        if m is None and not create:
            engine.dispose()
            raise UnknownMunicipality(
                f"no municipality {settings.municipality_id!r} in this database; "
                "import into it first, or give --municipality"
            )
        if m is None:
            m = create_with or Municipality(
                id=MunicipalityId(settings.municipality_id),
                name=settings.municipality_id,
                timezone=settings.timezone,
            )
            if accept_synthetic_ids is not None:
                m = replace(m, accept_synthetic_ids=accept_synthetic_ids)
            repo.add_municipality(m)
        elif accept_synthetic_ids is not None and accept_synthetic_ids != m.accept_synthetic_ids:
            conn.execute(
                update(t.municipalities)
                .where(t.municipalities.c.id == m.id)
                .values(accept_synthetic_ids=accept_synthetic_ids)
            )
            m = replace(m, accept_synthetic_ids=accept_synthetic_ids)
    return App(settings, engine, m)


def utcnow() -> datetime:
    """The platform's clock: the only place that reads the wall clock."""
    return datetime.now(UTC)
