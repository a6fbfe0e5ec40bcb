"""Expand a FHIR Timing (activity.detail.scheduledTiming) into concrete visits.

Rules (the same for STU3 and R4, whose Timing is identical):

- A repeat with only `boundsPeriod` (start and end with times) is the visit itself. Without an end,
  `duration` gives the end. Date-only bounds and no recurrence: "no time of day".
- Otherwise it recurs: `periodUnit` d or wk (absent: weekly when `dayOfWeek` is given, else daily),
  every `period` units counted from the first day, on the `dayOfWeek` days, at each `timeOfDay`.
  A recurring activity without `timeOfDay` is a problem, never guessed. `frequency`, when given,
  must agree with the times listed (per day: number of timeOfDay; per week: dayOfWeek x timeOfDay).
- Wall-clock times are kept across DST (08:00 stays 08:00 local). A time in the spring gap is read
  with the UTC offset before the gap (RFC 5545 3.3.5; Python's fold=0), so 02:30 becomes 03:30
  summer time; an ambiguous autumn time takes its first occurrence (fold=0, summer time).
- `duration` is elapsed time added to the UTC start; absent, the caller's default is used.
- `count` counts occurrences from the first one, before the horizon cuts, so the horizon never
  changes which occurrences exist. Open-ended plans stop at the horizon end (exclusive); nothing
  starting before the horizon start is returned. A date-only end includes that whole day.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from portner.fhir.tree import decimal, one, text, texts

# Guard against absurd plans (every minute for years): one activity yields at most this many.
MAX_OCCURRENCES = 5000

_DAYS = {"mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6}
_DURATION_UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


class TimingError(ValueError):
    """The timing cannot be turned into visits; `field` is relative to the Timing."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Bound:
    """A period boundary as an instant. Date-only values become local midnights.

    A start date means its first instant; an end date means the midnight after it, exclusive.
    """

    at: datetime
    has_time: bool


@dataclass(frozen=True, slots=True)
class Window:
    """Where occurrences may lie: horizon, plan period and the zone to read wall times in.

    The plan period stands in for missing activity bounds, and its end also caps recurrences
    (an ended plan yields nothing after its end). It does not filter a visit given explicitly by
    its boundsPeriod: real plans carry periods that differ from their visits by milliseconds.
    """

    zone: ZoneInfo
    horizon_start: datetime
    horizon_end: datetime
    plan_start: Bound | None = None
    plan_end: Bound | None = None


@dataclass(frozen=True, slots=True)
class Slot:
    """One visit's start and end."""

    start: datetime  # UTC
    end: datetime  # UTC


@dataclass(slots=True)
class Expansion:
    """The visits of one timing, and whether the horizon cut them short."""

    slots: list[Slot]
    truncated: bool = False  # expansion stopped at the horizon end, not at the plan's own end


# Parsed bounds by (text, zone, is_end). Plans repeat the same few period and slot texts
# thousands of times a day; Bound is immutable, so one parse serves them all. Failures are not
# cached (their message names the field, which differs).
_BOUNDS: dict[tuple[str, ZoneInfo, bool], Bound] = {}
_BOUNDS_MAX = 65536


def parse_bound(raw: str, zone: ZoneInfo, *, is_end: bool, field: str) -> Bound:
    """Parse a FHIR date or dateTime into a Bound; a time without a zone is refused."""
    key = (raw, zone, is_end)
    found = _BOUNDS.get(key)
    if found is None:
        found = _parse_bound(raw, zone, is_end=is_end, field=field)
        if len(_BOUNDS) < _BOUNDS_MAX:
            _BOUNDS[key] = found
    return found


def _parse_bound(raw: str, zone: ZoneInfo, *, is_end: bool, field: str) -> Bound:
    value = raw.strip()
    try:
        if "T" in value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if parsed.tzinfo is None:
                raise TimingError(field, "date-time has a time but no time zone")
            return Bound(parsed.astimezone(UTC), has_time=True)
        parts = [int(p) for p in value.split("-")]
    except ValueError as exc:
        if isinstance(exc, TimingError):
            raise
        raise TimingError(field, "not a valid FHIR date or date-time") from exc
    if not 1 <= len(parts) <= 3:
        raise TimingError(field, "not a valid FHIR date or date-time")
    year, month, day = (parts + [1, 1])[:3]
    try:
        first = date(year, month, day)
    except ValueError as exc:
        raise TimingError(field, "not a valid FHIR date") from exc
    if is_end:  # the end of the year, month or day given, as the next midnight
        if len(parts) == 1:
            first = date(year + 1, 1, 1)
        elif len(parts) == 2:
            first = date(year + (month == 12), month % 12 + 1, 1)
        else:
            first = first + timedelta(days=1)
    return Bound(local_to_utc(first, time(0), zone), has_time=False)


def ends_before_start(start: Bound, end: Bound) -> bool:
    """Say whether a period ends before it starts (a date-only end covers its whole day)."""
    return end.at < start.at if end.has_time else end.at <= start.at


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Resolve a wall-clock time to UTC; gap and fold handling as in the module docstring."""
    # fold=0: in a gap Python applies the offset before the transition (as RFC 5545 asks); in
    # an overlap it picks the first of the two instants.
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def _positive_int(node: Any, key: str, field: str) -> int | None:
    try:
        value = decimal(node, key)
    except ValueError as exc:
        raise TimingError(f"{field}.{key}", str(exc)) from exc
    if value is None:
        return None
    if value != value.to_integral_value() or value < 1:
        raise TimingError(f"{field}.{key}", f"{key} must be a positive whole number")
    return int(value)


def _duration(repeat: Any, field: str, default: timedelta) -> timedelta:
    try:
        amount = decimal(repeat, "duration")
    except ValueError as exc:
        raise TimingError(f"{field}.duration", str(exc)) from exc
    if amount is None:
        return default
    unit = text(repeat, "durationUnit")
    if unit not in _DURATION_UNITS:
        raise TimingError(f"{field}.durationUnit", f"duration unit {unit!r} is not supported")
    if amount <= 0:
        raise TimingError(f"{field}.duration", "duration must be positive")
    return timedelta(seconds=float(amount * Decimal(_DURATION_UNITS[unit])))


_FHIR_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?")


def _times(repeat: Any, field: str) -> list[time]:
    result = []
    for raw in texts(repeat, "timeOfDay"):
        # FHIR `time` is hh:mm:ss[.fff] local time with no offset; "0800" or "08:00+05:00" are
        # not times of day we may reinterpret.
        if not _FHIR_TIME.fullmatch(raw):
            raise TimingError(f"{field}.timeOfDay", "timeOfDay must be hh:mm:ss without offset")
        try:
            result.append(time.fromisoformat(raw))
        except ValueError as exc:
            raise TimingError(f"{field}.timeOfDay", "timeOfDay is not a valid time") from exc
    return sorted(set(result))


def _weekdays(repeat: Any, field: str) -> set[int]:
    days = set()
    for raw in texts(repeat, "dayOfWeek"):
        if raw not in _DAYS:
            raise TimingError(f"{field}.dayOfWeek", f"unknown dayOfWeek {raw!r}")
        days.add(_DAYS[raw])
    return days


def expand(
    timing: Any, *, field: str, window: Window, default_duration: timedelta
) -> Expansion:
    """Expand a Timing into slots inside the window; raise TimingError when it cannot."""
    zone = window.zone
    repeat = one(timing, "repeat")
    events = texts(timing, "event")
    if repeat is None and not events:
        raise TimingError(field, "timing has neither repeat nor event")
    rfield = f"{field}.repeat"
    duration = default_duration if repeat is None else _duration(repeat, rfield, default_duration)
    slots: list[Slot] = []
    for index, raw in enumerate(events):
        bound = parse_bound(raw, zone, is_end=False, field=f"{field}.event[{index}]")
        if not bound.has_time:
            raise TimingError(f"{field}.event[{index}]", "no time of day")
        slots.append(Slot(bound.at, bound.at + duration))
    result = Expansion([s for s in slots if _inside(s.start, window, None)])
    if repeat is None:
        return result
    for key in _UNSUPPORTED_BOUNDS:
        if one(repeat, key) is not None:
            raise TimingError(f"{rfield}.{key}", f"{key} is not supported; use boundsPeriod")
    bounds = one(repeat, "boundsPeriod")
    start = optional_bound(bounds, "start", zone, field=f"{rfield}.boundsPeriod")
    end = optional_bound(bounds, "end", zone, field=f"{rfield}.boundsPeriod")
    if start is not None and end is not None and ends_before_start(start, end):
        raise TimingError(f"{rfield}.boundsPeriod", "ends before it starts")
    recurring = _has_any(repeat, _RECURRENCE_KEYS)
    if not recurring:
        result.slots.extend(_direct(repeat, rfield, start, end, window))
        return result
    recurrence = _recurrence(repeat, rfield, start, end, window, duration)
    result.slots.extend(recurrence.slots)
    result.truncated = recurrence.truncated
    return result


_RECURRENCE_KEYS = ("frequency", "period", "periodUnit", "dayOfWeek", "timeOfDay", "when")
_UNSUPPORTED_BOUNDS = ("boundsDuration", "boundsRange")


def _has_any(node: Any, keys: tuple[str, ...]) -> bool:
    """Say whether any of `keys` has a value in `node` (a plain loop: cheaper than any())."""
    for key in keys:
        if one(node, key) is not None:
            return True
    return False


def optional_bound(period: Any, key: str, zone: ZoneInfo, *, field: str) -> Bound | None:
    """Parse Period.start or Period.end if present (`field` is the Period's path)."""
    raw = text(period, key)
    if raw is None:
        return None
    return parse_bound(raw, zone, is_end=key == "end", field=f"{field}.{key}")


def _inside(start: datetime, window: Window, end: Bound | None) -> bool:
    """Say whether an occurrence starting at `start` lies in the horizon and before `end`."""
    if not window.horizon_start <= start < window.horizon_end:
        return False
    return end is None or _before_end(start, end)


def _before_end(start: datetime, end: Bound) -> bool:
    """An end with a time is inclusive; a date-only end is the next midnight, exclusive."""
    return start < end.at or (end.has_time and start == end.at)


def _direct(
    repeat: Any, field: str, start: Bound | None, end: Bound | None, window: Window
) -> list[Slot]:
    """A boundsPeriod with times and no recurrence: the visit itself."""
    if start is None:
        raise TimingError(f"{field}.boundsPeriod.start", "visit has no start")
    if not start.has_time or (end is not None and not end.has_time):
        raise TimingError(f"{field}.boundsPeriod", "no time of day")
    if end is None:
        if one(repeat, "duration") is None:
            raise TimingError(f"{field}.boundsPeriod.end", "visit has no end and no duration")
        stop = start.at + _duration(repeat, field, timedelta(0))
    else:
        stop = end.at
    if not _inside(start.at, window, None):
        return []
    return [Slot(start.at, stop)]


def _recurrence(
    repeat: Any,
    field: str,
    start: Bound | None,
    end: Bound | None,
    window: Window,
    duration: timedelta,
) -> Expansion:
    """Expand frequency/period/dayOfWeek/timeOfDay/count (see the module docstring)."""
    times = _times(repeat, field)
    if not times:
        if one(repeat, "when") is not None:
            raise TimingError(f"{field}.when", "'when' is not supported; give timeOfDay")
        raise TimingError(f"{field}.timeOfDay", "no time of day")
    if one(repeat, "when") is not None:
        raise TimingError(f"{field}.when", "both 'when' and timeOfDay given")
    days = _weekdays(repeat, field)
    unit = text(repeat, "periodUnit")
    period = _positive_int(repeat, "period", field)
    frequency = _positive_int(repeat, "frequency", field)
    count = _positive_int(repeat, "count", field)
    if unit is None:
        if period is not None:
            raise TimingError(f"{field}.periodUnit", "period given without periodUnit")
        unit = "wk" if days else "d"
    if unit not in ("d", "wk"):
        raise TimingError(f"{field}.periodUnit", f"periodUnit {unit!r} is not supported")
    period = period or 1
    if unit == "d":
        per = len(times)
        if frequency is not None and frequency != per:
            raise TimingError(
                f"{field}.frequency", f"frequency {frequency} per day but {per} time(s) of day"
            )
    else:
        if not days and frequency is not None and frequency > len(times):
            message = f"frequency {frequency} per week needs dayOfWeek"
            raise TimingError(f"{field}.dayOfWeek", message)
        per = max(len(days), 1) * len(times)
        if frequency is not None and frequency != per:
            raise TimingError(
                f"{field}.frequency", f"frequency {frequency} per week but {per} time(s) listed"
            )
    anchor = start or window.plan_start
    if anchor is None:
        raise TimingError(f"{field}.boundsPeriod.start", "recurring activity has no start")
    zone = window.zone
    anchor_day = anchor.at.astimezone(zone).date()
    if unit == "wk" and not days:
        days = {anchor_day.weekday()}  # RFC 5545: a weekly rule without BYDAY uses the start's day
    stops = [b for b in (end, window.plan_end) if b is not None]
    own_end = min(stops, key=lambda b: b.at) if stops else None
    result = Expansion([])
    produced = 0
    for day in _active_days(anchor_day, unit, period, days, window, zone, skip=count is None):
        for at in times:
            occurrence = local_to_utc(day, at, zone)
            if occurrence < anchor.at:
                continue  # before the first instant of the bounds: not an occurrence at all
            if own_end is not None and not _before_end(occurrence, own_end):
                return result
            if occurrence >= window.horizon_end:
                result.truncated = True
                return result
            produced += 1
            if _inside(occurrence, window, own_end):
                result.slots.append(Slot(occurrence, occurrence + duration))
                if len(result.slots) > MAX_OCCURRENCES:
                    raise TimingError(field, f"more than {MAX_OCCURRENCES} visits in the horizon")
            if count is not None and produced >= count:
                return result
    # Past the horizon without meeting the plan's own end or count: the horizon cut it short.
    result.truncated = own_end is None or own_end.at > window.horizon_end
    return result


def _active_days(
    anchor: date,
    unit: str,
    period: int,
    days: set[int],
    window: Window,
    zone: ZoneInfo,
    *,
    skip: bool,
) -> Iterator[date]:
    """Yield the local days the rule is active on, from the anchor until past the horizon."""
    step = period * (7 if unit == "wk" else 1)
    anchor_monday = anchor - timedelta(days=anchor.weekday())
    first = anchor
    if skip:
        # Without a count, nothing before the horizon matters: jump whole periods towards it.
        lead = (window.horizon_start.astimezone(zone).date() - anchor).days - 8
        if lead > 0:
            first = anchor + timedelta(days=lead - lead % step)
    last = window.horizon_end.astimezone(zone).date() + timedelta(days=1)
    day = first
    while day <= last:
        if unit == "d":
            active = (day - anchor).days % period == 0
        else:
            active = ((day - anchor_monday).days // 7) % period == 0
        if active and (not days or day.weekday() in days):
            yield day
        day += timedelta(days=1)
