"""Pure rules for windows a lock enforces itself, their native forms, and the lock's clock.

Portner stores instants in UTC and one IANA zone per lock. A lock enforcing a window compares it
with its own wall clock, so this module turns instants into the lock's local terms and back, and
decides when the lock's clock or UTC offset must be corrected before it misjudges a window:

- year-day windows (`lock_windows`) and weekly rules (`weekly_rules`, split at midnight, F17);
- Matter's local epoch (seconds since 2000-01-01 00:00 *local*) and Nuki's minutes after midnight
  with its weekday bitmask, with daylight-saving gaps and repeats handled explicitly;
- clock discipline: drift over a threshold, a lost offset (F16), the next offset change (F15), and
  padding a window while the lock's clock is unverified.

Rounding always shrinks a window towards what the plan allows (a start rounds up, an end down),
except in `pad_window`, whose whole point is to widen a window by a known clock uncertainty.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from portner.domain.errors import PortnerError
from portner.domain.windows import require_aware
from portner.locks.port import LockWindow

__all__ = [
    "AmbiguousLocalTime",
    "ClockAction",
    "Gap",
    "MATTER_EPOCH",
    "NonexistentLocalTime",
    "Repeat",
    "ScheduleError",
    "WeeklyRule",
    "WindowNotExpressible",
    "clock_action",
    "from_matter_local_epoch",
    "from_nuki_minutes",
    "lock_windows",
    "local_date",
    "lock_zone",
    "matter_days_mask",
    "matter_local_epoch",
    "matter_window",
    "needs_clock_set",
    "next_offset_change",
    "nuki_minutes",
    "next_rule_start",
    "nuki_weekdays",
    "offset_update_due",
    "pad_window",
    "weekly_rules",
    "weekdays_from_nuki",
]

DEFAULT_CLOCK_THRESHOLD = timedelta(seconds=60)
SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)

# --- errors ---------------------------------------------------------------------------------------


class ScheduleError(PortnerError, ValueError):
    """A window or rule a lock cannot hold as given."""


class NonexistentLocalTime(ScheduleError):
    """A local time that the clocks skip over (spring forward)."""


class AmbiguousLocalTime(ScheduleError):
    """A local time that happens twice (fall back); the caller must say which."""


class WindowNotExpressible(ScheduleError):
    """A window that a lock counting local wall time cannot hold without opening outside it; it
    must be enforced by the server (add and remove the code) instead."""


# --- zones and windows ----------------------------------------------------------------------------


def lock_zone(zone: str) -> ZoneInfo:
    """The IANA zone of a lock, refusing a name that is not one (nothing silently becomes UTC)."""
    if not isinstance(zone, str) or not zone:
        raise ScheduleError("zone must be an IANA time zone name such as Europe/Oslo")
    try:
        return ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"zone {zone!r} is not a known IANA time zone") from exc


def _ceil_second(value: datetime) -> datetime:
    whole = value.replace(microsecond=0)
    return whole if whole == value else whole + SECOND


def lock_windows(not_before: datetime, not_after: datetime, zone: str) -> list[LockWindow]:
    """The year-day window(s) a lock enforces for access from `not_before` through `not_after`
    (inclusive), in the lock's zone, to whole seconds: the start rounds up and the end down, so
    the lock never opens outside the plan. Today this is always one window (a year-day entry
    does not wrap); the list leaves room for locks whose entries are bounded in length.
    An empty or inverted window is refused (F17: start == end)."""
    tz = lock_zone(zone)
    start = _ceil_second(require_aware(not_before, "window start (not_before)"))
    end = require_aware(not_after, "window end (not_after)").replace(microsecond=0)
    if end <= start:
        raise ScheduleError("a lock window must end after it starts (not_after <= not_before)")
    return [LockWindow(start.astimezone(tz), end.astimezone(tz))]


def pad_window(window: LockWindow, uncertainty: timedelta) -> LockWindow:
    """Widen a lock-enforced window by the lock's clock uncertainty on both sides, so a visit
    still opens while the lock's clock is unverified (F16). Closing on time is then the server's
    job: the reconciler removes the code at the true end."""
    if not isinstance(uncertainty, timedelta) or uncertainty < timedelta(0):
        raise ScheduleError("uncertainty must be a non-negative duration")
    return LockWindow(window.start - uncertainty, window.end + uncertainty)


# --- weekly rules ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WeeklyRule:
    """A repeating rule in the lock's local wall time, on the given weekdays (0 = Monday, as in
    Python). `end` is inclusive to the minute, as in Matter and ZCL week-day schedules: an end
    of 23:59 means through 23:59:59. A rule never wraps midnight (weekly_rules splits it)."""

    weekdays: frozenset[int]
    start: time
    end: time
    zone: str

    def __post_init__(self) -> None:
        if not self.weekdays or not self.weekdays <= frozenset(range(7)):
            raise ScheduleError("weekdays must be a non-empty set of 0 (Monday) to 6 (Sunday)")
        if self.end <= self.start:
            raise ScheduleError("a weekly rule must end after it starts on the same day")

    def covers(self, local: datetime) -> bool:
        """Whether the rule allows the naive or aware local wall time `local` (in its zone)."""
        if local.tzinfo is not None:
            local = local.astimezone(lock_zone(self.zone)).replace(tzinfo=None)
        wall = local.time().replace(second=0, microsecond=0)
        return local.weekday() in self.weekdays and self.start <= wall <= self.end


def _whole_minutes(value: time, what: str) -> time:
    if not isinstance(value, time):
        raise ScheduleError(f"{what} must be a time of day")
    if value.tzinfo is not None:
        raise ScheduleError(f"{what} is wall-clock time in the lock's zone; give it without a zone")
    if value.second or value.microsecond:
        raise ScheduleError(f"{what} must be whole minutes (locks keep hours and minutes)")
    return value


def _weekday_set(weekdays: Iterable[int]) -> frozenset[int]:
    days = list(weekdays)
    if not days:
        raise ScheduleError("weekdays must name at least one day")
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
            raise ScheduleError(f"weekday {day!r} is not 0 (Monday) to 6 (Sunday)")
    return frozenset(days)


def weekly_rules(start: time, end: time, weekdays: Iterable[int], zone: str) -> list[WeeklyRule]:
    """A weekly rule from `start` through `end` (inclusive to the minute; an end of 00:00 means
    "until midnight", that is through 23:59:59) on `weekdays`, as entries a lock can hold.

    An overnight rule (F17: 18:00 -> 08:00) becomes two entries: 18:00-23:59 on the given days and
    00:00-08:00 on the days after. start == end is refused: it is either nothing or everything,
    and we do not guess which."""
    lock_zone(zone)
    start = _whole_minutes(start, "start")
    end = _whole_minutes(end, "end")
    days = _weekday_set(weekdays)
    if start == end:
        raise ScheduleError("a weekly rule must not start and end at the same time")
    last_minute = time(23, 59)
    if end == time(0, 0):
        return [WeeklyRule(days, start, last_minute, zone)]
    if end > start:
        return [WeeklyRule(days, start, end, zone)]
    evening = WeeklyRule(days, start, last_minute, zone)
    morning = WeeklyRule(frozenset((d + 1) % 7 for d in days), time(0, 0), end, zone)
    return [evening, morning]


# --- local time, explicitly -----------------------------------------------------------------------


class Gap(StrEnum):
    """What a local time that does not exist (spring forward) means."""

    RAISE = "raise"
    OFFSET_BEFORE = "offset_before"  # read it with the offset in force before the jump
    OFFSET_AFTER = "offset_after"  # read it with the offset in force after the jump
    SHIFT_FORWARD = "shift_forward"  # the instant the clocks jump: when a wall clock passes it


class Repeat(StrEnum):
    """Which of the two instants a local time that happens twice (fall back) means."""

    RAISE = "raise"
    EARLIER = "earlier"
    LATER = "later"


def _resolve_local(local: datetime, tz: ZoneInfo, gap: Gap, repeat: Repeat) -> datetime:
    """The UTC instant of a naive local wall time in `tz`, with gaps and repeats explicit."""
    first = local.replace(tzinfo=tz, fold=0)
    second = local.replace(tzinfo=tz, fold=1)
    exists = first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local
    if not exists:
        if gap is Gap.RAISE:
            raise NonexistentLocalTime(
                f"{local.isoformat()} does not exist in {tz.key} (the clocks skip it)"
            )
        # zoneinfo reads a skipped time with fold=0 using the offset before the jump, and with
        # fold=1 using the offset after it (which lands before the jump).
        if gap is Gap.OFFSET_BEFORE:
            return first.astimezone(UTC)
        if gap is Gap.OFFSET_AFTER:
            return second.astimezone(UTC)
        jump = next_offset_change(tz.key, second.astimezone(UTC), within=timedelta(hours=3))
        assert jump is not None  # a skipped time implies a jump right after its early reading
        return jump
    if first.utcoffset() != second.utcoffset():
        if repeat is Repeat.RAISE:
            raise AmbiguousLocalTime(f"{local.isoformat()} happens twice in {tz.key}")
        return (first if repeat is Repeat.EARLIER else second).astimezone(UTC)
    return first.astimezone(UTC)


# --- Matter: local epoch --------------------------------------------------------------------------

MATTER_EPOCH = datetime(2000, 1, 1)  # naive on purpose: the lock counts local wall seconds
_UINT32_MAX = 2**32 - 1


def matter_local_epoch(instant: datetime, zone: str) -> int:
    """Seconds since 2000-01-01 00:00 in the lock's local wall time, as a Matter lock's year-day
    schedule counts them. Fractions of a second are dropped. During a repeated hour two instants
    give the same value: see matter_window for what that means for a window."""
    local = require_aware(instant, "instant").astimezone(lock_zone(zone)).replace(tzinfo=None)
    seconds = (local.replace(microsecond=0) - MATTER_EPOCH) // SECOND
    if not 0 <= seconds <= _UINT32_MAX:
        raise ScheduleError(f"{instant.isoformat()} is outside the Matter epoch range (2000-2136)")
    return seconds


def from_matter_local_epoch(
    seconds: int, zone: str, *, gap: Gap = Gap.RAISE, repeat: Repeat = Repeat.RAISE
) -> datetime:
    """The UTC instant of a Matter local-epoch value. A value in a skipped hour or in a repeated
    hour raises unless the caller says how to read it (`gap`, `repeat`)."""
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= _UINT32_MAX:
        raise ScheduleError(
            f"a Matter epoch value is a whole number 0..{_UINT32_MAX} (got {seconds!r})"
        )
    return _resolve_local(MATTER_EPOCH + timedelta(seconds=seconds), lock_zone(zone), gap, repeat)


def _repeated_span(tz: ZoneInfo, local: datetime) -> tuple[datetime, datetime] | None:
    """If naive `local` lies in a repeated (fall-back) hour, that span [first, end) as naive
    local times; else None."""
    first = local.replace(tzinfo=tz, fold=0)
    before, after = first.utcoffset(), local.replace(tzinfo=tz, fold=1).utcoffset()
    if before is None or after is None or before <= after:
        return None
    change = next_offset_change(tz.key, first.astimezone(UTC), within=before - after)
    if change is None:  # pragma: no cover - a repeat implies a change within its length
        return None
    repeat_start = change.astimezone(tz).replace(tzinfo=None)
    return repeat_start, repeat_start + (before - after)


def matter_window(window: LockWindow, zone: str) -> tuple[int, int]:
    """(start, end) in Matter local epoch seconds for a year-day schedule, end inclusive.

    A lock counting local wall time lives through a repeated (fall-back) hour twice, so a window
    that starts in the second pass or ends in the first pass would also open in the other pass,
    outside the plan. Such an edge moves out of the repeated hour, which shortens the window by
    at most that hour: an end moves to just before it, a start to just after it. A window that
    lies wholly inside a repeated hour cannot be held and raises WindowNotExpressible."""
    tz = lock_zone(zone)
    start_utc = require_aware(window.start, "window start")
    end_utc = require_aware(window.end, "window end")
    start_local = _ceil_second(start_utc).astimezone(tz)
    end_local = end_utc.replace(microsecond=0).astimezone(tz)
    start_naive = start_local.replace(tzinfo=None)
    end_naive = end_local.replace(tzinfo=None)
    start_span = _repeated_span(tz, start_naive)
    if start_span is not None and start_local.fold == 1:
        start_naive = start_span[1]
    end_span = _repeated_span(tz, end_naive)
    if end_span is not None and end_local.fold == 0:
        end_naive = end_span[0] - SECOND
    if end_naive < start_naive:
        raise WindowNotExpressible(
            "this window lies inside an hour the clocks repeat; a lock counting local time would "
            "open it twice, so Portner must enforce it by adding and removing the code"
        )
    to_epoch = lambda naive: (naive - MATTER_EPOCH) // SECOND  # noqa: E731
    start, end = to_epoch(start_naive), to_epoch(end_naive)
    if not 0 <= start <= end <= _UINT32_MAX:
        raise ScheduleError("window is outside the Matter epoch range (2000-2136)")
    return start, end


# Matter DaysMaskMap: bit 0 Sunday, bit 1 Monday ... bit 6 Saturday.
def matter_days_mask(weekdays: Iterable[int]) -> int:
    return sum(1 << ((day + 1) % 7) for day in _weekday_set(weekdays))


# --- Nuki: minutes after midnight and a weekday bitmask -------------------------------------------

# Nuki Web API allowedWeekDays: 64 Monday, 32 Tuesday ... 2 Saturday, 1 Sunday.
def nuki_weekdays(weekdays: Iterable[int]) -> int:
    return sum(64 >> day for day in _weekday_set(weekdays))


def weekdays_from_nuki(mask: int) -> frozenset[int]:
    if isinstance(mask, bool) or not isinstance(mask, int) or not 0 < mask <= 127:
        raise ScheduleError(f"allowedWeekDays must be 1..127 (got {mask!r})")
    return frozenset(day for day in range(7) if mask & (64 >> day))


def nuki_minutes(value: time) -> int:
    """Minutes after midnight (Nuki allowedFromTime / allowedUntilTime)."""
    value = _whole_minutes(value, "time of day")
    return value.hour * 60 + value.minute


def from_nuki_minutes(minutes: int) -> time:
    if isinstance(minutes, bool) or not isinstance(minutes, int) or not 0 <= minutes < 24 * 60:
        raise ScheduleError(f"minutes after midnight must be 0..1439 (got {minutes!r})")
    return time(minutes // 60, minutes % 60)


# --- clock discipline -----------------------------------------------------------------------------


def needs_clock_set(
    offset: timedelta | None, threshold: timedelta = DEFAULT_CLOCK_THRESHOLD
) -> bool:
    """True when a lock's clock is off by more than `threshold`, or its offset is unknown."""
    return offset is None or abs(offset) > threshold


@dataclass(frozen=True, slots=True)
class ClockAction:
    set_time: bool
    set_zone: bool
    drift: timedelta | None  # lock clock minus true time; None when the lock gave no time
    offset: timedelta  # the UTC offset the lock should hold now
    reason: str

    @property
    def needed(self) -> bool:
        return self.set_time or self.set_zone


def clock_action(
    lock_time: datetime | None,
    true_time: datetime,
    *,
    zone: str,
    lock_utc_offset: timedelta | None,
    threshold: timedelta = DEFAULT_CLOCK_THRESHOLD,
) -> ClockAction:
    """What to correct on a lock after reading its clock (on contact and after a battery swap,
    F16): the time when it is off by more than `threshold` or unknown, and the UTC offset when it
    differs from the zone's offset now or is unknown (a lost offset reads as 0 or nothing)."""
    now = require_aware(true_time, "true time")
    expected = now.astimezone(lock_zone(zone)).utcoffset() or timedelta(0)
    drift = None if lock_time is None else require_aware(lock_time, "lock time") - now
    set_time = needs_clock_set(drift, threshold)
    set_zone = lock_utc_offset is None or lock_utc_offset != expected
    reasons = []
    if drift is None:
        reasons.append("the lock gave no time")
    elif set_time:
        reasons.append(f"the lock's clock is off by {_describe(drift)}")
    if set_zone:
        have = "unknown" if lock_utc_offset is None else _describe(lock_utc_offset, signed=True)
        reasons.append(f"its UTC offset is {have}, {zone} is {_describe(expected, signed=True)}")
    return ClockAction(set_time, set_zone, drift, expected, "; ".join(reasons) or "clock is right")


def _describe(delta: timedelta, *, signed: bool = False) -> str:
    total = int(delta.total_seconds())
    sign = "-" if total < 0 else "+"
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}" + (f":{seconds:02d}" if seconds else "")
    return f"{sign}{text}" if signed or sign == "-" else text


def next_offset_change(
    zone: str, after: datetime, *, within: timedelta = timedelta(days=400)
) -> datetime | None:
    """The first instant (UTC, whole seconds) after `after` at which the zone's UTC offset
    changes, or None when it does not change within `within`."""
    tz = lock_zone(zone)
    start = require_aware(after, "after")
    old = start.astimezone(tz).utcoffset()
    step = timedelta(hours=6)  # no zone changes its offset twice within six hours
    low = start
    while low - start < within:
        probe = min(low + step, start + within)
        if probe.astimezone(tz).utcoffset() != old:
            high = probe
            while high - low > SECOND:
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() != old:
                    high = middle
                else:
                    low = middle
            # Offsets change on whole seconds, and (low, high] is at most a second long and
            # holds the change, so the change is high rounded down to the second.
            return high.replace(microsecond=0)
        low = probe
    return None


def offset_update_due(
    lock_offset: timedelta | None, zone: str, now: datetime, next_window_start: datetime
) -> datetime | None:
    """When the lock's UTC offset must be pushed so it is right at the next window's start (F15),
    or None when nothing is due. `now` itself when the offset is already wrong or unknown;
    otherwise the zone's next offset change, when that comes before the window (pushing the new
    offset earlier would make the lock wrong until the change)."""
    tz = lock_zone(zone)
    current = require_aware(now, "now")
    window_start = require_aware(next_window_start, "next window start")
    if lock_offset is None or lock_offset != current.astimezone(tz).utcoffset():
        return current
    if window_start <= current:
        return None
    if window_start.astimezone(tz).utcoffset() == lock_offset:
        return None
    return next_offset_change(zone, current, within=window_start - current)


def local_date(instant: datetime, zone: str) -> date:
    """The calendar date of `instant` in the lock's zone."""
    return require_aware(instant, "instant").astimezone(lock_zone(zone)).date()


def next_rule_start(rules: Iterable[WeeklyRule], after: datetime) -> datetime | None:
    """The first instant after `after` at which one of the weekly rules opens, as a lock counting
    local wall time sees it: a start the clocks skip opens at the jump, a start that happens twice
    opens the first time. None when no rule opens within eight days."""
    current = require_aware(after, "after")
    best: datetime | None = None
    for rule in rules:
        tz = lock_zone(rule.zone)
        today = current.astimezone(tz).date()
        for days in range(9):
            day = today + timedelta(days=days)
            if day.weekday() not in rule.weekdays:
                continue
            local = datetime.combine(day, rule.start)
            instant = _resolve_local(local, tz, Gap.SHIFT_FORWARD, Repeat.EARLIER)
            if instant > current:
                best = instant if best is None else min(best, instant)
                break
    return best
