"""Tests for the lock event-log chain and the platform's upload check."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest

from portner.domain.lock_log import (
    GENESIS_HASH,
    LockEvent,
    check_upload,
    event_from_dict,
    event_hash,
    event_mac,
    event_to_dict,
    seal_event,
)
from portner.locks.eventlog import LockEventLog

KEY = b"k" * 32
LOCK = "lock-1"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def make_log(n: int, lock_id: str = LOCK, key: bytes = KEY) -> list[LockEvent]:
    log = LockEventLog(lock_id, key)
    for i in range(n):
        log.append(at=T0 + timedelta(minutes=i), kind="unlock" if i % 2 else "denied",
                   allowed=bool(i % 2), reason="ok" if i % 2 else "expired",
                   credential_id=f"{i:032x}", subject=f"actor-{i}")
    return list(log.events)


def check(events: list[LockEvent], synced: int = 0, head: bytes | None = None, **kw: object):
    return check_upload(LOCK, events, synced_seq=synced, synced_hash=head, lock_key=KEY, **kw)


def test_hash_is_deterministic_and_covers_every_field() -> None:
    base = dict(lock_id=LOCK, seq=1, at=T0, kind="unlock", allowed=True, reason="ok",
                credential_id="ab", subject="s", prev_hash=GENESIS_HASH)
    digest = event_hash(**base)
    assert digest == event_hash(**base)
    # The same instant in another zone is the same event.
    oslo = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Oslo"))
    assert event_hash(**{**base, "at": oslo}) == digest
    changes = {"lock_id": "lock-2", "seq": 2, "at": T0 + timedelta(microseconds=1),
               "kind": "denied", "allowed": None, "reason": "ok ", "credential_id": None,
               "subject": "", "prev_hash": b"\x01" * 32}
    for name, value in changes.items():
        assert event_hash(**{**base, name: value}) != digest, name
    # Length prefixes: moving a character from one field to the next changes the hash.
    assert event_hash(**{**base, "reason": "o", "credential_id": "kab"}) != event_hash(
        **{**base, "reason": "ok", "credential_id": "ab"}
    )


def test_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="zone"):
        naive = datetime(2026, 1, 1)  # noqa: DTZ001 - deliberately naive
        event_hash(LOCK, 1, naive, "boot", None, "", None, None, GENESIS_HASH)


def test_log_chain_verifies_from_genesis() -> None:
    events = make_log(6)
    assert events[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.hash for a, b in zip(events, events[1:], strict=False))
    assert all(e.mac == event_mac(KEY, e.hash) for e in events)
    result = check(events)
    assert result.anomalies == ()
    assert result.accepted == tuple(events)
    assert (result.new_synced_seq, result.new_synced_hash) == (6, events[-1].hash)


def test_incremental_uploads_extend_the_head() -> None:
    events = make_log(5)
    first = check(events[:2])
    second = check(events[2:], first.new_synced_seq, first.new_synced_hash)
    assert second.anomalies == ()
    assert second.accepted == tuple(events[2:])
    assert second.new_synced_seq == 5


def test_gap_stops_acceptance_and_a_later_upload_completes_it() -> None:
    events = make_log(6)
    first = check([events[0], events[1], events[4], events[5]])
    assert first.accepted == tuple(events[:2])
    assert [(a.kind, a.first_seq, a.last_seq) for a in first.anomalies] == [("gap", 3, 4)]
    assert first.pending == (events[4], events[5])
    assert first.new_synced_seq == 2
    # The relay later delivers 3 and 4 (and repeats 5): the held events complete the chain.
    second = check([events[2], events[3], events[4]], 2, first.new_synced_hash,
                   pending=first.pending)
    assert second.anomalies == ()
    assert second.accepted == tuple(events[2:])
    assert second.pending == ()
    assert second.new_synced_hash == events[-1].hash


def test_duplicates_are_reported_and_not_reaccepted() -> None:
    events = make_log(4)
    head = check(events[:3])
    again = check(events[1:], 3, head.new_synced_hash)
    assert again.accepted == (events[3],)
    dup = [a for a in again.anomalies if a.kind == "duplicate"]
    # Seq 3 matches the head, and 2 is vouched for by 3's prev_hash: both verified.
    assert [(a.first_seq, a.last_seq) for a in dup] == [(2, 3)]
    assert all("already verified" in a.detail for a in dup)
    twice = check([events[0], events[1], events[1]])
    assert twice.accepted == tuple(events[:2])
    assert [(a.kind, a.first_seq) for a in twice.anomalies] == [("duplicate", 2)]


def test_reordered_upload_is_reported_but_accepted() -> None:
    events = make_log(5)
    shuffled = [events[2], events[0], events[1], events[4], events[3]]
    result = check(shuffled)
    assert result.accepted == tuple(events)
    assert result.kinds() == {"reordered"}


def test_rewritten_event_is_detected_and_not_accepted() -> None:
    events = make_log(4)
    # Content changed, hash and MAC left alone: the lock vouched for other content.
    forged = dataclasses.replace(events[2], allowed=True, reason="ok", kind="unlock")
    result = check([events[0], events[1], forged, events[3]])
    assert result.accepted == tuple(events[:2])
    assert "rewritten" in result.kinds()
    # An already-synced event re-sent with other content, re-hashed and re-MACed (so only a
    # key holder could make it): still different from the verified event.
    head = check(events)
    resealed = seal_event(
        lock_id=LOCK, seq=2, at=events[1].at, kind="unlock", allowed=True, reason="ok",
        credential_id=None, subject=None, prev_hash=events[1].prev_hash, lock_key=KEY,
    )
    later = check([resealed], 4, head.new_synced_hash,
                  known_hash=lambda seq: events[seq - 1].hash)
    assert [(a.kind, a.first_seq) for a in later.anomalies] == [("rewritten", 2)]
    assert later.accepted == ()


def test_two_versions_of_the_next_event_are_rewritten() -> None:
    events = make_log(3)
    other = seal_event(
        lock_id=LOCK, seq=3, at=events[2].at, kind="unlock", allowed=True, reason="ok",
        credential_id=None, subject=None, prev_hash=events[1].hash, lock_key=KEY,
    )
    result = check([*events, other])
    assert "rewritten" in result.kinds()
    assert result.accepted == tuple(events[:2])  # nobody can tell which is genuine


def test_broken_chain_is_detected() -> None:
    events = make_log(4)
    # A validly sealed event that does not link to its predecessor (e.g. a lock reset).
    stray = seal_event(
        lock_id=LOCK, seq=3, at=events[2].at, kind="boot", allowed=None, reason="",
        credential_id=None, subject=None, prev_hash=b"\x07" * 32, lock_key=KEY,
    )
    result = check([events[0], events[1], stray, events[3]])
    assert [(a.kind, a.first_seq) for a in result.anomalies] == [("broken_chain", 3)]
    assert result.accepted == tuple(events[:2])
    assert result.pending == (events[3],)  # waits for a genuine seq 3
    fixed = check([events[2]], 2, result.new_synced_hash, pending=result.pending)
    assert fixed.accepted == tuple(events[2:])
    # Without a lock key the hash chain alone still catches a re-hashed forgery.
    keyless = check_upload(LOCK, [events[0], events[1], dataclasses.replace(stray, mac=None)],
                           synced_seq=0, synced_hash=None, lock_key=None)
    assert keyless.accepted == tuple(events[:2])
    assert keyless.kinds() == {"broken_chain"}


def test_bad_mac_and_foreign_lock_are_refused() -> None:
    events = make_log(3)
    wrong_key = make_log(3, key=b"x" * 32)
    assert check([events[0], wrong_key[1]]).kinds() == {"bad_mac"}
    no_mac = dataclasses.replace(events[1], mac=None)
    assert check([events[0], no_mac]).kinds() == {"bad_mac"}
    other_lock = make_log(1, lock_id="lock-2")
    result = check([other_lock[0]])
    assert result.kinds() == {"foreign_lock"}
    assert result.accepted == ()


def test_hostile_input_is_reported_not_raised() -> None:
    events = make_log(2)
    junk: list[object] = [
        "not an event", None, 17,
        dataclasses.replace(events[0], seq=True),
        dataclasses.replace(events[0], seq=-1),
        dataclasses.replace(events[0], at=datetime(2026, 1, 1)),  # noqa: DTZ001
        dataclasses.replace(events[0], hash=b"short"),
        dataclasses.replace(events[0], reason="x" * 10_000),
        dataclasses.replace(events[0], subject="\ud800"),
        dataclasses.replace(events[0], allowed="yes"),
        dataclasses.replace(events[0], at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))),
    ]
    for item in junk:
        alone = check([item])  # type: ignore[list-item]
        assert alone.kinds() == {"malformed"}, item
        assert alone.accepted == ()
    result = check([*junk, *events])  # type: ignore[list-item]
    assert result.accepted == tuple(events)
    # A lone seq far below a huge head costs nothing and is only a duplicate report.
    far = check([events[0]], 10**15, b"\x01" * 32)
    assert [a.kind for a in far.anomalies] == ["duplicate"]


def test_wire_round_trip_and_rejection() -> None:
    events = make_log(2)
    wire = [event_to_dict(e) for e in events]
    assert [event_from_dict(d) for d in wire] == events
    assert check([event_from_dict(d) for d in wire]).anomalies == ()
    bad = [
        [], {**wire[0], "at": "2026-03-02T08:00:00"}, {**wire[0], "hash": "zz"},
        {**wire[0], "seq": "1"}, {k: v for k, v in wire[0].items() if k != "kind"},
        {**wire[0], "prev_hash": "00" * 1000},
    ]
    for item in bad:
        with pytest.raises(ValueError):
            event_from_dict(item)


def test_seal_refuses_bad_fields() -> None:
    with pytest.raises(ValueError):
        seal_event(lock_id=LOCK, seq=0, at=T0, kind="boot", allowed=None, reason="",
                   credential_id=None, subject=None, prev_hash=GENESIS_HASH, lock_key=KEY)
    with pytest.raises(ValueError):
        LockEventLog(LOCK, b"short")
