"""Settings, read once from flags and environment, and passed as plain values to adapters.

Only the composition root (`bootstrap`) and the CLI read this module; the domain and services
never do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = field(default_factory=lambda: Path(os.environ.get("PORTNER_DATA_DIR", "portner-data")))
    database_url: str | None = field(default_factory=lambda: os.environ.get("PORTNER_DB"))
    municipality_id: str = field(default_factory=lambda: os.environ.get("PORTNER_MUNICIPALITY", "kommune"))
    timezone: str = field(default_factory=lambda: os.environ.get("PORTNER_TIMEZONE", "Europe/Oslo"))
    # Where finished visits go: a folder by default, or a FHIR server base URL.
    encounter_outbox: str | None = field(default_factory=lambda: os.environ.get("PORTNER_FHIR_OUTBOX"))

    @property
    def db_url(self) -> str:
        """The database URL: PORTNER_DB, or a SQLite file in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'portner.sqlite').as_posix()}"
