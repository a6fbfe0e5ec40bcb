"""Lock events as JSON-safe dicts: the body of an upload, and what waits in door_event_pending.

One event on the wire (the lock id travels once, with the upload, not in every event):

    {"seq": 7, "at": "2026-12-03T07:02:00.000000+00:00", "kind": "unlock", "allowed": true,
     "reason": "ok", "credential_id": "3f9c...", "subject": "stf-...",
     "prev_hash": "<64 hex>", "hash": "<64 hex>", "mac": "<64 hex>"}

`allowed`, `credential_id` and `subject` may be null or left out; everything else is required.
Decoding checks only the form (types, sizes, zones); whether the event is authentic is for
`check_upload` to say, against the lock's key and the verified chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from string import hexdigits
from typing import Any, Final

from portner.domain.lock_log import HASH_SIZE, MAX_TEXT, LockEvent, event_problem

_MAX_SEQ: Final = 2**63 - 1
_REQUIRED: Final = ("seq", "at", "kind", "reason", "prev_hash", "hash", "mac")
_OPTIONAL: Final = ("allowed", "credential_id", "subject")
# Accepted for events encoded with the lock id inside (lock_log.event_to_dict), if it matches.
_KNOWN: Final = frozenset((*_REQUIRED, *_OPTIONAL, "lock_id"))
_HEX: Final = frozenset(hexdigits)


class WireError(ValueError):
    """A malformed event on the wire; `field` names the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def event_to_wire(ev: LockEvent) -> dict[str, Any]:
    """Encode an event as JSON-safe values: ISO 8601 UTC time, bytes as lower-case hex."""
    return {
        "seq": ev.seq,
        "at": ev.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "kind": ev.kind,
        "allowed": ev.allowed,
        "reason": ev.reason,
        "credential_id": ev.credential_id,
        "subject": ev.subject,
        "prev_hash": ev.prev_hash.hex(),
        "hash": ev.hash.hex(),
        "mac": None if ev.mac is None else ev.mac.hex(),
    }


def event_from_wire(d: Mapping[str, Any], lock_id: str) -> LockEvent:
    """Decode one event of `lock_id`'s upload; raise WireError naming the field on bad input."""
    if not isinstance(d, Mapping):
        raise WireError("event", "is not an object")
    for name in d:
        if name not in _KNOWN:
            raise WireError(str(name)[:40], "unknown field")
    for name in _REQUIRED:
        if name not in d:
            raise WireError(name, "missing")
    if "lock_id" in d and d["lock_id"] != lock_id:
        raise WireError("lock_id", "names another lock than the upload")
    seq = d["seq"]
    if type(seq) is not int or not 1 <= seq <= _MAX_SEQ:
        raise WireError("seq", "must be an integer from 1 to 2**63-1")
    allowed = d.get("allowed")
    if allowed is not None and type(allowed) is not bool:
        raise WireError("allowed", "must be true, false or null")
    event = LockEvent(
        lock_id=lock_id,
        seq=seq,
        at=_instant(d["at"]),
        kind=_text(d, "kind", optional=False),
        allowed=allowed,
        reason=_text(d, "reason", optional=False),
        credential_id=_text(d, "credential_id", optional=True),
        subject=_text(d, "subject", optional=True),
        prev_hash=_digest(d, "prev_hash"),
        hash=_digest(d, "hash"),
        mac=_digest(d, "mac"),
    )
    if not event.kind:
        raise WireError("kind", "is empty")
    problem = event_problem(event)  # the domain's own rules, should they ever be stricter
    if problem is not None:
        raise WireError("event", problem)
    return event


def _instant(value: Any) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise WireError("at", "must be an ISO 8601 time of at most 40 characters")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise WireError("at", "is not an ISO 8601 time") from None
    if at.tzinfo is None or at.utcoffset() is None:
        raise WireError("at", "has no time zone (give an offset, e.g. +00:00 or Z)")
    try:
        return at.astimezone(UTC)
    except OverflowError:
        raise WireError("at", "is out of range") from None


def _text(d: Mapping[str, Any], name: str, *, optional: bool) -> Any:
    value = d.get(name)
    if value is None and optional:
        return None
    limit = MAX_TEXT[name]
    if not isinstance(value, str) or len(value) > limit:
        kind = "text or null" if optional else "text"
        raise WireError(name, f"must be {kind} of at most {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from JSON "\ud800": cannot be hashed
        raise WireError(name, "is not valid Unicode text") from None
    if "\x00" in value:  # JSON "\u0000": PostgreSQL text cannot hold it (SQLite could)
        raise WireError(name, "must not contain the NUL character (U+0000)")
    return value


def _digest(d: Mapping[str, Any], name: str) -> bytes:
    value = d[name]
    # bytes.fromhex alone would accept spaces: insist on exactly 64 hex digits.
    if not isinstance(value, str) or len(value) != 2 * HASH_SIZE or not _HEX.issuperset(value):
        raise WireError(name, f"must be {2 * HASH_SIZE} hex digits")
    return bytes.fromhex(value)
