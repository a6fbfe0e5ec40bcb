"""Lock event-log records and the hash-chain rules shared by the lock and the platform.

Every lock numbers its events 1, 2, 3, ... and chains them: each event carries the hash of the
previous one (32 zero bytes before the first), and a MAC made with a per-lock key the platform
received at installation. The phone that relays the log is untrusted; `check_upload` finds
what it dropped, repeated, reordered or changed (security goal G7).

Canonical encoding hashed by `event_hash` (SHA-256), a fixed field order with length prefixes:

    b"portner/lock-event/v1"
    str(lock_id) | u64 seq | i64 at (microseconds since 1970-01-01T00:00Z) | str(kind)
    | u8 allowed (0 false, 1 true, 2 none) | str(reason) | str?(credential_id) | str?(subject)
    | bytes(prev_hash)

where str/bytes is 0x01, u32 big-endian length, then the UTF-8 text or raw bytes, and a
missing optional value is the single byte 0x00. All integers are big-endian. The MAC is
HMAC-SHA256(lock_key, b"portner/lock-event-mac/v1" || hash); the prefix keeps the lock key
from ever MACing anything that could be mistaken for another message type.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Literal

HASH_SIZE: Final = 32
GENESIS_HASH: Final = bytes(HASH_SIZE)
_HASH_DOMAIN: Final = b"portner/lock-event/v1"
_MAC_DOMAIN: Final = b"portner/lock-event-mac/v1"
_HEAD_DOMAIN: Final = b"portner/lock-head/v1"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SEQ: Final = 2**63 - 1
# Sizes match the platform's columns (door_events, lock_log_anomalies); anything longer is
# hostile or broken and must not reach the database.
MAX_TEXT: Final = {"lock_id": 64, "kind": 32, "reason": 64, "credential_id": 64, "subject": 64}
# An upload larger than this is cut; the rest is reported and can be sent again.
MAX_UPLOAD: Final = 10_000

AnomalyKind = Literal[
    "gap", "duplicate", "reordered", "broken_chain", "bad_mac", "foreign_lock", "rewritten",
    "malformed",
    # Found against the lock's attested head rather than within the upload itself.
    "withheld", "forked", "bad_head_mac",
]


@dataclass(frozen=True, slots=True)
class LockEvent:
    """One entry of a lock's own log; `at` is the lock's clock, which may be wrong."""

    lock_id: str
    seq: int
    at: datetime
    kind: str
    allowed: bool | None
    reason: str
    credential_id: str | None
    subject: str | None
    prev_hash: bytes
    hash: bytes
    mac: bytes | None = None

    def computed_hash(self) -> bytes:
        """Return the hash this event's content should carry."""
        return event_hash(
            self.lock_id, self.seq, self.at, self.kind, self.allowed, self.reason,
            self.credential_id, self.subject, self.prev_hash,
        )


@dataclass(frozen=True, slots=True)
class LogAnomaly:
    """Something wrong with an upload, over the range of sequence numbers it concerns."""

    kind: AnomalyKind
    first_seq: int
    last_seq: int
    detail: str


@dataclass(frozen=True, slots=True)
class UploadCheck:
    """The outcome of checking one upload against what the platform has verified so far.

    `pending` holds well-formed events beyond a gap: the caller keeps them and passes them back
    as `pending=` with the next upload, so that an upload which fills the gap completes the chain.
    """

    accepted: tuple[LockEvent, ...]
    anomalies: tuple[LogAnomaly, ...]
    pending: tuple[LockEvent, ...]
    new_synced_seq: int
    new_synced_hash: bytes

    def kinds(self) -> set[str]:
        """Return the set of anomaly kinds found."""
        return {a.kind for a in self.anomalies}


def _text(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode("utf-8")
    return b"\x01" + len(raw).to_bytes(4, "big") + raw


def _blob(value: bytes) -> bytes:
    return b"\x01" + len(value).to_bytes(4, "big") + value


def _micros(at: datetime) -> int:
    # Integer arithmetic on timedelta parts: no float rounding, identical on every platform.
    delta = at.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_hash(
    lock_id: str, seq: int, at: datetime, kind: str, allowed: bool | None, reason: str,
    credential_id: str | None, subject: str | None, prev_hash: bytes,
) -> bytes:
    """Hash an event's content and its predecessor's hash with the canonical encoding above."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("event time has no time zone")
    flag = b"\x02" if allowed is None else (b"\x01" if allowed else b"\x00")
    encoded = b"".join((
        _HASH_DOMAIN, _text(lock_id), seq.to_bytes(8, "big"),
        _micros(at).to_bytes(8, "big", signed=True), _text(kind), flag, _text(reason),
        _text(credential_id), _text(subject), _blob(prev_hash),
    ))
    return hashlib.sha256(encoded).digest()


def event_mac(lock_key: bytes, digest: bytes) -> bytes:
    """MAC an event hash with the lock's key."""
    return hmac.new(lock_key, _MAC_DOMAIN + digest, hashlib.sha256).digest()


def seal_event(
    *, lock_id: str, seq: int, at: datetime, kind: str, allowed: bool | None, reason: str,
    credential_id: str | None, subject: str | None, prev_hash: bytes, lock_key: bytes | None,
) -> LockEvent:
    """Build an event with its hash and (given a key) its MAC; refuse out-of-range fields."""
    draft = LockEvent(
        lock_id=lock_id, seq=seq, at=at, kind=kind, allowed=allowed, reason=reason,
        credential_id=credential_id, subject=subject, prev_hash=prev_hash, hash=GENESIS_HASH,
    )
    problem = event_problem(draft)
    if problem is not None:
        raise ValueError(f"invalid lock event: {problem}")
    digest = draft.computed_hash()
    return replace(
        draft, at=at.astimezone(UTC), hash=digest,
        mac=None if lock_key is None else event_mac(lock_key, digest),
    )


def head_attestation_mac(
    lock_key: bytes, lock_id: str, nonce: bytes, head_seq: int, head_hash: bytes
) -> bytes:
    """MAC the lock's log head for a platform nonce, so a relay cannot hide the newest events."""
    lock = lock_id.encode("utf-8")
    body = b"".join((
        _HEAD_DOMAIN, _blob(lock), _blob(nonce), head_seq.to_bytes(8, "big"), _blob(head_hash)
    ))
    return hmac.new(lock_key, body, hashlib.sha256).digest()


def event_problem(event: object) -> str | None:
    """Say what is structurally wrong with `event` (types, sizes), or None if nothing is."""
    if not isinstance(event, LockEvent):
        return "not a LockEvent"
    if type(event.seq) is not int or not 1 <= event.seq <= _MAX_SEQ:
        return "sequence number out of range"
    at = event.at
    if not isinstance(at, datetime) or at.tzinfo is None or at.utcoffset() is None:
        return "time missing or without zone"
    try:
        event.at.astimezone(UTC)
    except OverflowError:
        return "time out of range"
    if event.allowed is not None and type(event.allowed) is not bool:
        return "allowed is not a boolean"
    for name, limit in MAX_TEXT.items():
        value = getattr(event, name)
        optional = name in ("credential_id", "subject")
        if value is None and optional:
            continue
        if not isinstance(value, str) or len(value) > limit or not _encodable(value):
            return f"{name} is not text of at most {limit} characters"
    if not event.lock_id or not event.kind:
        return "lock id or kind empty"
    for name in ("prev_hash", "hash"):
        value = getattr(event, name)
        if not isinstance(value, bytes) or len(value) != HASH_SIZE:
            return f"{name} is not {HASH_SIZE} bytes"
    if event.mac is not None and not isinstance(event.mac, bytes):
        return "mac is not bytes"
    return None


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: cannot be hashed canonically
        return False
    return True


def event_to_dict(event: LockEvent) -> dict[str, object]:
    """Encode an event for the relay as JSON-safe values (hex bytes, ISO 8601 UTC time)."""
    return {
        "lock_id": event.lock_id, "seq": event.seq,
        "at": event.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "kind": event.kind, "allowed": event.allowed, "reason": event.reason,
        "credential_id": event.credential_id, "subject": event.subject,
        "prev_hash": event.prev_hash.hex(), "hash": event.hash.hex(),
        "mac": None if event.mac is None else event.mac.hex(),
    }


def event_from_dict(data: object) -> LockEvent:
    """Decode an event from the relay; raise ValueError on anything malformed."""
    if not isinstance(data, dict):
        raise ValueError("event is not an object")
    try:
        at_text, mac_text = data["at"], data.get("mac")
        if not isinstance(at_text, str) or len(at_text) > 40:
            raise ValueError("bad time")
        at = datetime.fromisoformat(at_text)
        if at.tzinfo is None:
            raise ValueError("time without zone")
        event = LockEvent(
            lock_id=data["lock_id"], seq=data["seq"], at=at, kind=data["kind"],
            allowed=data["allowed"], reason=data["reason"],
            credential_id=data.get("credential_id"), subject=data.get("subject"),
            prev_hash=_unhex(data["prev_hash"]), hash=_unhex(data["hash"]),
            mac=None if mac_text is None else _unhex(mac_text),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError("event is missing or mistypes a field") from exc
    problem = event_problem(event)
    if problem is not None:
        raise ValueError(f"invalid lock event: {problem}")
    return event


def _unhex(value: object) -> bytes:
    if not isinstance(value, str) or len(value) > 2 * HASH_SIZE:
        raise ValueError("not a short hex string")
    return bytes.fromhex(value)


class _Report:
    """Collects anomalies and merges adjacent ones of the same kind and detail."""

    def __init__(self) -> None:
        self.items: list[LogAnomaly] = []

    def add(self, kind: AnomalyKind, first: int, last: int, detail: str) -> None:
        if self.items:
            prev = self.items[-1]
            same = prev.kind == kind and prev.detail == detail
            if same and first <= prev.last_seq + 1 and last >= prev.first_seq - 1:
                merged = LogAnomaly(
                    kind, min(prev.first_seq, first), max(prev.last_seq, last), detail
                )
                self.items[-1] = merged
                return
        self.items.append(LogAnomaly(kind, first, last, detail))


def _screen(
    event: object, lock_id: str, lock_key: bytes | None, report: _Report
) -> LockEvent | None:
    """Return the event if it is well formed, ours, and authentic; report it otherwise."""
    problem = event_problem(event)
    if problem is not None:
        seq = getattr(event, "seq", 0)
        seq = seq if type(seq) is int and 0 <= seq <= _MAX_SEQ else 0
        report.add("malformed", seq, seq, problem)
        return None
    assert isinstance(event, LockEvent)
    if event.lock_id != lock_id:
        report.add("foreign_lock", event.seq, event.seq, "event belongs to another lock")
        return None
    if lock_key is not None and (
        event.mac is None or not hmac.compare_digest(event.mac, event_mac(lock_key, event.hash))
    ):
        report.add("bad_mac", event.seq, event.seq, "MAC does not verify with the lock key")
        return None
    if not hmac.compare_digest(event.hash, event.computed_hash()):
        report.add("rewritten", event.seq, event.seq, "content does not match its hash")
        return None
    return event


class _Screener:
    """`_screen` for many events of one lock, with the per-event work that repeats done once.

    A well-formed, authentic event (the usual case) is checked here with the lock's pre-keyed
    MAC and cached field encodings; anything else goes through `_screen`, which reports it
    exactly as it would have without this shortcut. The shortcut accepts only what `_screen`
    accepts: it does the same checks, just without diagnosing what failed.
    """

    def __init__(self, lock_id: str, lock_key: bytes | None, report: _Report) -> None:
        self.lock_id, self.lock_key, self.report = lock_id, lock_key, report
        self.mac = None if lock_key is None else hmac.new(lock_key, _MAC_DOMAIN, hashlib.sha256)
        self.texts: dict[str, bytes] = {}  # text -> its canonical encoding (_text)
        # The hash's fixed start; None if no event of this lock id can be well formed.
        usable = bool(lock_id) and _plain_text(lock_id, MAX_TEXT["lock_id"])
        self.head = _HASH_DOMAIN + _text(lock_id) if usable else None

    def screen(self, events: Sequence[object]) -> list[LockEvent]:
        fast, slow, out = self._authentic, _screen, []
        lock_id, lock_key, report = self.lock_id, self.lock_key, self.report
        for event in events:
            if fast(event):
                out.append(event)  # type: ignore[arg-type]
            elif (checked := slow(event, lock_id, lock_key, report)) is not None:
                out.append(checked)
        return out

    def _authentic(self, e: object) -> bool:
        """True if `_screen` would accept `e`; False if it might not (then ask `_screen`)."""
        if type(e) is not LockEvent or self.head is None:
            return False
        if type(e.lock_id) is not str or e.lock_id != self.lock_id:
            return False
        seq, at, allowed, mac, prev, digest = e.seq, e.at, e.allowed, e.mac, e.prev_hash, e.hash
        if type(seq) is not int or not 1 <= seq <= _MAX_SEQ or type(at) is not datetime:
            return False
        if at.tzinfo is not UTC or (allowed is not None and type(allowed) is not bool):
            return False  # other zones are fine, but rare: _screen handles them
        if type(prev) is not bytes or len(prev) != HASH_SIZE:
            return False
        if type(digest) is not bytes or len(digest) != HASH_SIZE:
            return False
        if self.mac is None:
            if mac is not None and type(mac) is not bytes:
                return False
        elif type(mac) is not bytes:
            return False
        field, optional = self._field, self._optional
        kind = field(e.kind, MAX_TEXT["kind"])
        reason = field(e.reason, MAX_TEXT["reason"])
        cred = optional(e.credential_id, MAX_TEXT["credential_id"])
        subject = optional(e.subject, MAX_TEXT["subject"])
        if kind is None or reason is None or cred is None or subject is None or not e.kind:
            return False
        if self.mac is not None:
            check = self.mac.copy()
            check.update(digest)
            if not hmac.compare_digest(mac, check.digest()):  # type: ignore[arg-type]
                return False
        delta = at - _EPOCH  # at is in UTC: no conversion (see _micros)
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        flag = b"\x02" if allowed is None else (b"\x01" if allowed else b"\x00")
        encoded = b"".join((
            self.head, seq.to_bytes(8, "big"), micros.to_bytes(8, "big", signed=True), kind,
            flag, reason, cred, subject, b"\x01\x00\x00\x00\x20", prev,
        ))
        return hmac.compare_digest(digest, hashlib.sha256(encoded).digest())

    def _field(self, value: object, limit: int) -> bytes | None:
        """A text field's encoding (`_text`) if it is text of at most `limit` characters."""
        if type(value) is not str or len(value) > limit:
            return None
        raw = self.texts.get(value)
        if raw is None:
            if not _encodable(value):
                return None
            raw = self.texts[value] = _text(value)
        return raw

    def _optional(self, value: object, limit: int) -> bytes | None:
        return b"\x00" if value is None else self._field(value, limit)


def _plain_text(value: object, limit: int) -> bool:
    return type(value) is str and len(value) <= limit and _encodable(value)


def _extends(events: Sequence[LockEvent], seq: int, head: bytes) -> bool:
    """Whether `events` are exactly seq+1, seq+2, ... each linking to the one before."""
    for event in events:
        seq += 1
        if event.seq != seq or event.prev_hash != head:
            return False
        head = event.hash
    return True


def _report_reordering(events: Sequence[LockEvent], report: _Report) -> None:
    highest, low, high = 0, None, 0
    for event in events:
        if event.seq < highest:
            low = event.seq if low is None else min(low, event.seq)
            high = max(high, highest)
        highest = max(highest, event.seq)
    if low is not None:
        report.add("reordered", low, high, "upload was not in sequence order")


def _check_history(
    old: dict[int, dict[bytes, LockEvent]], synced_seq: int, synced_hash: bytes,
    known_hash: Callable[[int], bytes | None] | None, report: _Report,
) -> None:
    """Compare re-sent events (seq <= synced_seq) with what was verified before."""
    # Walking down from the verified head, each matching event vouches for its predecessor,
    # so a contiguous run of re-sent events ending at the head is fully verifiable. Only the
    # seqs present are visited: a hostile seq of 1 against a head of 10**9 costs nothing.
    vouched_seq, vouched_hash = synced_seq, synced_hash
    for seq in sorted(old, reverse=True):
        expected = vouched_hash if seq == vouched_seq else None
        if expected is None and known_hash is not None:
            expected = known_hash(seq)
        versions = old[seq]
        if expected is None:
            report.add("duplicate", seq, seq, "re-sent old event, not verifiable here")
        elif set(versions) == {expected}:
            report.add("duplicate", seq, seq, "re-sent event already verified")
        else:
            report.add("rewritten", seq, seq, "differs from the verified event")
        match = versions.get(expected) if expected is not None else None
        if match is not None:
            vouched_seq, vouched_hash = seq - 1, match.prev_hash


def check_upload(
    lock_id: str, events: Sequence[LockEvent], *, synced_seq: int, synced_hash: bytes | None,
    lock_key: bytes | None, pending: Sequence[LockEvent] = (),
    known_hash: Callable[[int], bytes | None] | None = None,
) -> UploadCheck:
    """Verify an upload of lock events and extend the verified chain as far as it safely goes.

    `synced_seq`/`synced_hash` describe the verified head (0 and None or GENESIS_HASH before
    the first event); `pending` is what the previous check returned as pending; `known_hash`,
    if given, returns the stored hash of an already verified seq so re-sent old events can be
    told apart from rewritten ones. Never raises on hostile events, only on an inconsistent
    head from the caller.

    Order of checks per event: well formed ("malformed"), this lock ("foreign_lock"), MAC
    ("bad_mac"), content matches hash ("rewritten"). Then: upload not in seq order
    ("reordered", still accepted); seq <= synced_seq re-sent ("duplicate" if identical to the
    verified event, "rewritten" if not); two versions of one seq ("rewritten"); a seq missing
    ("gap": nothing after it is accepted, later events come back in `pending`); an event not
    linking to the verified head ("broken_chain": dropped, later events pending). A missing
    tail cannot be seen here; compare with the lock's attested head (`head_attestation_mac`).
    """
    bad_head = synced_seq > 0 and (synced_hash is None or len(synced_hash) != HASH_SIZE)
    if synced_seq < 0 or bad_head:
        raise ValueError("synced state is inconsistent")
    head_hash = GENESIS_HASH if synced_hash is None or synced_seq == 0 else synced_hash
    report = _Report()
    incoming = list(events)
    if len(incoming) > MAX_UPLOAD:
        ignored = len(incoming) - MAX_UPLOAD
        report.add("malformed", 0, 0, f"upload too large; {ignored} events ignored")
        incoming = incoming[:MAX_UPLOAD]
    screen = _Screener(lock_id, lock_key, report).screen
    uploaded, held = screen(incoming), screen(pending)
    if not held and _extends(uploaded, synced_seq, head_hash):
        # The usual upload: the next events, in order, each linking to the one before. What the
        # general walk below would find for it, without its per-seq bookkeeping.
        return UploadCheck(
            accepted=tuple(uploaded), anomalies=tuple(report.items), pending=(),
            new_synced_seq=synced_seq + len(uploaded),
            new_synced_hash=uploaded[-1].hash if uploaded else head_hash,
        )
    _report_reordering(uploaded, report)

    # Versions per seq, keyed by hash. Copies inside one upload are the relay repeating itself;
    # a copy of a held event is just the lock re-sending, which is expected after a gap.
    versions: dict[int, dict[bytes, LockEvent]] = {}
    for event in held:
        versions.setdefault(event.seq, {})[event.hash] = event
    seen_in_upload: set[bytes] = set()
    for event in uploaded:
        if event.hash in seen_in_upload and event.seq > synced_seq:
            report.add("duplicate", event.seq, event.seq, "sent twice in one upload")
        seen_in_upload.add(event.hash)
        versions.setdefault(event.seq, {})[event.hash] = event

    old = {s: v for s, v in versions.items() if s <= synced_seq}
    new = {s: v for s, v in versions.items() if s > synced_seq}
    _check_history(old, synced_seq, head_hash, known_hash, report)

    accepted: list[LockEvent] = []
    head_seq = synced_seq
    broken_at: int | None = None
    while (candidates := new.get(head_seq + 1)) is not None:
        linking = [e for e in candidates.values() if e.prev_hash == head_hash]
        seq = head_seq + 1
        if not linking:
            report.add("broken_chain", seq, seq, "previous hash does not match the verified head")
            del new[seq]  # it can never link; keep what follows in case a good copy comes
            broken_at = seq
            break
        if len(candidates) > 1:
            report.add("rewritten", seq, seq, "several versions of one event")
        if len(linking) > 1:
            break  # both claim the same place: only a person can decide; keep them pending
        del new[seq]
        accepted.append(linking[0])
        head_seq, head_hash = seq, linking[0].hash

    rest = sorted(new)
    expected_next = head_seq + 1 if broken_at is None else broken_at + 1
    for seq in rest:
        if seq > expected_next:
            report.add("gap", expected_next, seq - 1, "events missing from the upload")
        expected_next = seq + 1
    return UploadCheck(
        accepted=tuple(accepted),
        anomalies=tuple(report.items),
        pending=tuple(e for seq in rest for e in sorted(new[seq].values(), key=lambda x: x.hash)),
        new_synced_seq=head_seq,
        new_synced_hash=head_hash,
    )
