"""Property tests: whatever a relay does to an upload, no changed event is ever accepted."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from portner.domain.lock_log import GENESIS_HASH, LockEvent, UploadCheck, check_upload
from portner.locks.eventlog import LockEventLog

KEY = b"\x5a" * 32
LOCK = "lock-p"
T0 = datetime(2026, 5, 1, 6, 0, tzinfo=UTC)
KINDS = ("unlock", "denied", "locked", "battery_low", "revocation_applied", "boot")


def build_log(n: int) -> list[LockEvent]:
    log = LockEventLog(LOCK, KEY)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        log.append(at=T0 + timedelta(seconds=37 * i), kind=kind,
                   allowed=None if kind not in ("unlock", "denied") else kind == "unlock",
                   reason="ok" if i % 3 else "expired",
                   credential_id=f"{i:032x}" if i % 2 else None,
                   subject=f"actor-{i % 4}" if i % 2 else None)
    return list(log.events)


def change_field(event: LockEvent, name: str, k: int) -> LockEvent:
    """Change one field of `event` by a small, definite amount (never a no-op)."""
    value = getattr(event, name)
    if name == "at":
        return dataclasses.replace(event, at=value + timedelta(microseconds=k))
    if name == "seq":
        return dataclasses.replace(event, seq=value + k)
    if name == "allowed":
        options = [True, False, None]
        options.remove(value)
        return dataclasses.replace(event, allowed=options[k % 2])
    if isinstance(value, bytes):
        pos = k % len(value)
        changed = value[:pos] + bytes([value[pos] ^ (1 + k % 255)]) + value[pos + 1:]
        return dataclasses.replace(event, **{name: changed})
    text = value or ""
    if not text:
        return dataclasses.replace(event, **{name: "x"})
    pos = k % len(text)
    changed = text[:pos] + chr(ord(text[pos]) ^ 1) + text[pos + 1:]
    return dataclasses.replace(event, **{name: changed})


FIELDS = ("lock_id", "seq", "at", "kind", "allowed", "reason", "credential_id", "subject",
          "prev_hash", "hash", "mac")


def assert_sound(result: UploadCheck, original: list[LockEvent], synced: int) -> None:
    """Everything accepted or held is exactly the lock's own event; the head is consistent."""
    assert [e.seq for e in result.accepted] == list(
        range(synced + 1, synced + 1 + len(result.accepted))
    )
    for event in (*result.accepted, *result.pending):
        assert event == original[event.seq - 1]
    head = original[result.new_synced_seq - 1].hash if result.new_synced_seq else GENESIS_HASH
    assert result.new_synced_seq == synced + len(result.accepted)
    assert result.new_synced_hash == head


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[LockEvent], int, int]:
    n = draw(st.integers(1, 12))
    synced = draw(st.integers(0, n))
    resend_from = draw(st.integers(0, synced))  # relays often re-send what was synced
    return build_log(n), synced, resend_from


def run(upload: list[LockEvent], original: list[LockEvent], synced: int,
        key: bytes | None = KEY) -> UploadCheck:
    head = original[synced - 1].hash if synced else None
    result = check_upload(LOCK, upload, synced_seq=synced, synced_hash=head, lock_key=key)
    assert_sound(result, original, synced)
    return result


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data())
def test_reordering_and_duplication_reconstruct_the_chain(
    case: tuple[list[LockEvent], int, int], data: st.DataObject
) -> None:
    original, synced, resend_from = case
    upload = list(original[resend_from:])
    extra = data.draw(st.lists(st.sampled_from(upload), max_size=3)) if upload else []
    mixed = data.draw(st.permutations(upload + extra))
    result = run(mixed, original, synced)
    assert result.accepted == tuple(original[synced:])
    assert result.pending == ()
    if extra:
        assert "duplicate" in result.kinds()
    if [e.seq for e in mixed] != sorted(e.seq for e in mixed):
        assert "reordered" in result.kinds()
    assert result.kinds() <= {"duplicate", "reordered"}


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data())
def test_deletion_is_a_gap_unless_it_is_the_tail(
    case: tuple[list[LockEvent], int, int], data: st.DataObject
) -> None:
    original, synced, resend_from = case
    upload = list(original[resend_from:])
    if not upload:
        return
    index = data.draw(st.integers(0, len(upload) - 1))
    dropped = upload.pop(index)
    result = run(upload, original, synced)
    if dropped.seq <= synced:
        assert result.accepted == tuple(original[synced:])
    elif dropped.seq == len(original):
        # Tail suppression looks like "not yet uploaded"; the lock's signed head catches it.
        assert result.accepted == tuple(original[synced:-1])
        assert "gap" not in result.kinds()
    else:
        assert "gap" in result.kinds()
        assert result.new_synced_seq == dropped.seq - 1
        assert result.pending == tuple(original[dropped.seq:])


@settings(max_examples=300, deadline=None)
@given(scenario(), st.data())
def test_a_changed_event_is_always_reported_and_never_accepted(
    case: tuple[list[LockEvent], int, int], data: st.DataObject
) -> None:
    original, synced, resend_from = case
    upload = list(original[resend_from:])
    if not upload:
        return
    index = data.draw(st.integers(0, len(upload) - 1))
    name = data.draw(st.sampled_from(FIELDS))
    changed = change_field(upload[index], name, data.draw(st.integers(1, 10_000)))
    assert changed != upload[index]
    upload[index] = changed
    if data.draw(st.booleans()):
        upload = data.draw(st.permutations(upload))
    result = run(upload, original, synced)
    assert result.anomalies, "a changed event went unreported"
    assert result.kinds() & {"rewritten", "bad_mac", "foreign_lock", "broken_chain", "malformed"}
    assert changed not in result.accepted and changed not in result.pending


@settings(max_examples=150, deadline=None)
@given(scenario(), st.data())
def test_without_a_key_content_changes_are_still_caught(
    case: tuple[list[LockEvent], int, int], data: st.DataObject
) -> None:
    original, synced, resend_from = case
    upload = list(original[resend_from:])
    if not upload:
        return
    index = data.draw(st.integers(0, len(upload) - 1))
    name = data.draw(st.sampled_from([f for f in FIELDS if f != "mac"]))
    changed = change_field(upload[index], name, data.draw(st.integers(1, 10_000)))
    upload[index] = changed
    result = run(upload, original, synced, key=None)
    assert result.anomalies
    assert changed not in result.accepted and changed not in result.pending
