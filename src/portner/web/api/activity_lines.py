"""Keypad, Matter and vendor locks' reports (lock_activity) as lines of the console's live stream.

The live stream (web.api.access, `/events/stream`) sends two kinds of rows in one line format:
the phone-credential locks' door events, followed by a (received_at, lock_id, seq) cursor, and
lock_activity rows, followed by their id. Every SSE id carries both places, `<door id>~<activity
id>`, so a reconnecting EventSource (Last-Event-ID) resumes both. Each line also has a `key`, its
own identity, by which the console drops a line it already shows.

Ids are allotted when a transaction inserts, not when it commits, so a row with a smaller id can
become visible after a larger one was sent: after the first fresh row each poll looks back
LATE_IDS ids and sends what it has not sent (never before the id the stream started or resumed at).
A line never shows a slot number or a code: who, which door, how, and the outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from portner.locks.attribution import UNKNOWN_CREDENTIAL
from portner.storage import tables as t
from portner.web.i18n import translate

LATE_IDS = 100
POLL_LIMIT = 200
_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"
_MAX_ACTIVITY_ID = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Cursor = tuple[datetime, str, int]  # a door event's (received_at, lock_id, seq)
NO_DOOR_EVENT: Cursor = (EPOCH, "", 0)


def base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _DIGITS[r] + out
        if n == 0:
            return out


# --- ids ----------------------------------------------------------------------------------------


def encode_event_id(key: Cursor) -> str:
    """Opaque to clients; base 36 so that no long digit run looks like a national id to scanners."""
    at, lock_id, seq = key
    return f"{base36((at - EPOCH) // timedelta(microseconds=1))}-{seq}-{lock_id}"


# base36 microseconds since 1970 (12 digits reach past year 9999), a BIGINT seq, a lock id.
_EVENT_ID = re.compile(r"([0-9a-z]{1,12})-([0-9]{1,18})-([A-Za-z0-9_.:-]{1,64})", re.ASCII)
_LAST_EVENT_AT = datetime(9000, 1, 1, tzinfo=UTC)


def decode_event_id(value: str | None) -> Cursor | None:
    """The cursor of a door event id we gave out; None (start afresh) for anything else."""
    match = _EVENT_ID.fullmatch(value or "")
    if match is None:
        return None
    micros, seq, lock_id = match.groups()
    try:
        at = EPOCH + timedelta(microseconds=int(micros, 36))
    except OverflowError:
        return None
    if at >= _LAST_EVENT_AT or int(seq) > 2**63 - 1:
        return None
    return (at, lock_id, int(seq))


def door_key(row: Any) -> Cursor:
    return (row.received_at, row.lock_id, row.seq)


def door_part(cursor: Cursor) -> str:
    return "" if cursor == NO_DOOR_EVENT else encode_event_id(cursor)


def stream_id(door_part: str, activity_id: int) -> str:
    """The SSE id: the door-event cursor's id and the lock_activity cursor, joined by "~"."""
    return f"{door_part}~{base36(activity_id)}"


def split_stream_id(value: str | None) -> tuple[str, int | None]:
    """(door part, activity cursor) of a Last-Event-ID; the activity cursor is None when the id
    has none (given out before lock_activity was streamed) or it is not one we give out."""
    door, sep, activity = (value or "").partition("~")
    if not sep:
        return door, None
    if not 1 <= len(activity) <= 13 or any(c not in _DIGITS for c in activity):
        return "", None  # forged: start afresh
    number = int(activity, 36)
    return (door, number) if number <= _MAX_ACTIVITY_ID else ("", None)


def resume(last_event_id: str | None) -> tuple[Cursor | None, int | None]:
    """Both places of a Last-Event-ID; (None, None) starts afresh (no id, or not one of ours).
    A door event id alone (given out before lock_activity was streamed) resumes the door events."""
    door, activity_cursor = split_stream_id(last_event_id)
    if door == "" and activity_cursor is not None:
        return NO_DOOR_EVENT, activity_cursor  # no door event had come yet
    cursor = decode_event_id(door)
    return (cursor, activity_cursor) if cursor is not None else (None, None)


# --- reads --------------------------------------------------------------------------------------


def _activity_query(municipality_id: str) -> Any:
    a = t.lock_activity
    return (
        select(a.c.id, a.c.lock_id, a.c.operation, a.c.source, a.c.success, a.c.actor_id, a.c.attribution,
               a.c.failure, a.c.lock_time, a.c.received_at, t.doors.c.id.label("door_id"),
               t.doors.c.kind.label("door_kind"), t.residents.c.id.label("resident_id"),
               t.residents.c.display_name.label("resident_name"), t.actors.c.display_name.label("actor_name"),
               t.actors.c.role.label("actor_role"))
        .join(t.locks, t.locks.c.id == a.c.lock_id)
        .join(t.doors, t.doors.c.id == t.locks.c.door_id)
        .join(t.homes, t.homes.c.id == t.doors.c.home_id)
        .join(t.residents, t.residents.c.id == t.homes.c.resident_id)
        .outerjoin(t.actors, t.actors.c.id == a.c.actor_id)
        .where(t.residents.c.municipality_id == municipality_id)
    )


def newest_activity_id(engine: Any) -> int:
    """The largest id stored (any municipality): a cursor after which only new rows come."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.max(t.lock_activity.c.id))).scalar() or 0)


def recent_activity(engine: Any, municipality_id: str, limit: int) -> list[Any]:
    """The municipality's newest `limit` rows, oldest first."""
    a = t.lock_activity
    with engine.connect() as conn:
        rows = list(conn.execute(_activity_query(municipality_id).order_by(a.c.id.desc()).limit(limit)))
    return list(reversed(rows))


def activity_after(engine: Any, municipality_id: str, floor: int, *, limit: int = POLL_LIMIT) -> list[Any]:
    a = t.lock_activity
    with engine.connect() as conn:
        return list(conn.execute(_activity_query(municipality_id).where(a.c.id > floor)
                                 .order_by(a.c.id).limit(limit)))


@dataclass
class ActivityFollower:
    """One stream's place in lock_activity: `cursor` is the largest id sent (or passed at start)."""

    cursor: int
    start: int = -1  # never resend at or below where the stream started or resumed
    seen: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.start < 0:
            self.start = self.cursor

    def poll(self, engine: Any, municipality_id: str) -> list[Any]:
        late = bool(self.seen)  # after a first fresh row, look back for late commits
        floor = max(self.start, self.cursor - LATE_IDS) if late else self.cursor
        fresh = [r for r in activity_after(engine, municipality_id, floor) if r.id not in self.seen]
        if fresh:
            self.cursor = max(self.cursor, max(r.id for r in fresh))
            self.seen = {i for i in self.seen | {r.id for r in fresh} if i > self.cursor - LATE_IDS}
        return fresh


# --- words --------------------------------------------------------------------------------------


def _words(key: str, lang: str, fallback: str) -> str:
    text = translate(key, lang)
    return fallback if text == key else text


def _who(row: Any, lang: str) -> str:
    if row.actor_name:
        return str(row.actor_name)
    if row.attribution == UNKNOWN_CREDENTIAL:
        key = "unknown_code" if row.source == "keypad" else "unknown_key"
    else:
        key = {"auto": "the_lock", "keypad": "unknown_who", "rfid": "unknown_who"}.get(row.source, "someone")
    return translate(f"console.activity.who.{key}", lang)


def activity_out(row: Any, door_part: str, lang: str, zone: ZoneInfo) -> dict[str, Any]:
    """A lock_activity row in the door events' line format (web.api.access.event_out)."""
    at: datetime = row.lock_time or row.received_at
    opened = bool(row.success) and row.operation == "unlock"
    if row.success:
        outcome = _words(f"console.activity.{row.operation}.{row.source}", lang,
                         translate(f"console.activity.{row.operation}.unknown", lang))
        state = "opened" if opened else "locked"
    else:
        outcome, state = translate("console.event.refused", lang), "refused"
    return {
        "id": stream_id(door_part, row.id),
        "key": f"a{base36(row.id)}",
        "kind": "lock_activity",
        "at": at.isoformat(),
        "time": at.astimezone(zone).strftime("%H:%M:%S"),
        "resident_id": row.resident_id,
        "resident": row.resident_name or "",
        "door_id": row.door_id,
        "door": _words(f"console.door.{row.door_kind}", lang, row.door_kind),
        "opened": opened,
        "state": state,
        "outcome": outcome,
        "source": row.source,
        "reason_code": "ok" if row.success else (row.failure or "unspecified"),
        "reason": "" if row.success else _words(f"console.activity.failure.{row.failure}", lang,
                                                row.failure or translate("console.activity.failure.unspecified", lang)),
        "who": _who(row, lang),
        "role": _words(f"console.role.{row.actor_role}", lang, "") if row.actor_role else "",
    }


def backlog_lines(doors: list[Any], activity: list[Any], backlog: int) -> list[tuple[str, Any, str, int]]:
    """The newest `backlog` lines of both kinds by arrival, oldest first, each with the places
    in both logs as of that line: [("door" | "activity", row, door part, activity cursor)].

    `doors` and `activity` are each the newest backlog + 1 rows (oldest first), so the place just
    before the first line sent is known."""
    merged = sorted([(r.received_at, 0, door_key(r), 0, "door", r) for r in doors]
                    + [(r.received_at, 1, (), r.id, "activity", r) for r in activity],
                    key=lambda item: item[:4])
    cut = max(len(merged) - backlog, 0)
    dropped, kept = merged[:cut], merged[cut:]
    door_at = next((item[2] for item in reversed(dropped) if item[4] == "door"), None)
    activity_at = next((item[3] for item in reversed(dropped) if item[4] == "activity"), 0)
    out = []
    for _, _, key, ident, kind, row in kept:
        if kind == "door":
            door_at = key
        else:
            activity_at = ident
        out.append((kind, row, door_part(door_at) if door_at is not None else "", activity_at))
    return out
