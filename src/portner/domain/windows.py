"""Access windows: from a planned visit to the interval in which its staff may open the door."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from portner.domain.errors import NaiveDatetimeError

# A credential never lives longer than this, whatever the plan says (security goal G2).
MAX_CREDENTIAL_LIFETIME = timedelta(hours=12)


def require_aware(value: datetime, what: str) -> datetime:
    """Return `value` in UTC, refusing naive datetimes instead of guessing their zone."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise NaiveDatetimeError(f"{what} has no time zone: {value.isoformat()}")
    return value.astimezone(UTC)


def visit_window(
    planned_start: datetime, planned_end: datetime, lead: timedelta, grace: timedelta
) -> tuple[datetime, datetime]:
    """Return (not_before, not_after) in UTC for a visit.

    Lead and grace are durations of elapsed time, so they are applied to the UTC instants: a visit
    at 02:30 local on the night clocks go back still opens 15 real minutes before it starts.
    """
    start = require_aware(planned_start, "planned start")
    end = require_aware(planned_end, "planned end")
    if end < start:
        raise ValueError("a visit cannot end before it starts")
    return start - lead, end + grace
