"""Shared helpers for the FHIR adapter tests (a uniquely named module, not a conftest)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from portner.domain.care_record import ParsedSource
from portner.fhir import read_source

DATA = Path(__file__).resolve().parent / "data"
FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
YEAR_2026 = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def utc(*args: int) -> datetime:
    """An aware UTC datetime."""
    return datetime(*args, tzinfo=UTC)


def read_data(
    name: str,
    horizon: tuple[datetime, datetime] = YEAR_2026,
    *,
    accept_synthetic_ids: bool = True,
) -> ParsedSource:
    """Read tests/fhir/data/<name> in Europe/Oslo (synthetic test ids accepted by default)."""
    return read_source(
        DATA / name,
        timezone="Europe/Oslo",
        horizon_start=horizon[0],
        horizon_end=horizon[1],
        accept_synthetic_ids=accept_synthetic_ids,
    )
