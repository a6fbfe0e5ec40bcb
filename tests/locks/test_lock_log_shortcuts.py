"""check_upload's shortcuts for the usual upload must decide exactly what the full checks decide.

`_Screener` screens well-formed, authentic events without diagnosing them and hands everything
else to `_screen`; an upload that simply extends the verified chain skips the general walk.
These tests hold both against the full path, event by hostile event and upload by upload.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portner.domain import lock_log
from portner.domain.lock_log import GENESIS_HASH, LockEvent, check_upload, event_mac, seal_event
from portner.locks.eventlog import LockEventLog

KEY = b"\x33" * 32
LOCK = "lock-s"
T0 = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)


def build_log(n: int) -> list[LockEvent]:
    log = LockEventLog(LOCK, KEY)
    for i in range(n):
        log.append(at=T0 + timedelta(seconds=41 * i, microseconds=i), kind="unlock",
                   allowed=(True, False, None)[i % 3], reason=("ok", "", "expired")[i % 3],
                   credential_id=f"{i:032x}" if i % 2 else None,
                   subject=f"stf-{i % 3}" if i % 4 else None)
    return list(log.events)


def _text(value: object) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode()  # type: ignore[attr-defined]
    return b"\x01" + len(raw).to_bytes(4, "big") + raw


def _resealed(ev: LockEvent) -> LockEvent | None:
    """`ev` with the hash and MAC its fields would get, whatever their types, by the encoding
    in lock_log's docstring (written out again here); None if they cannot be encoded at all.
    So only the structural checks stand between such an event and acceptance."""
    try:
        micros = (ev.at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        flag = b"\x02" if ev.allowed is None else (b"\x01" if ev.allowed else b"\x00")
        encoded = b"".join((
            b"portner/lock-event/v1", _text(ev.lock_id), ev.seq.to_bytes(8, "big"),
            micros.to_bytes(8, "big", signed=True), _text(ev.kind), flag, _text(ev.reason),
            _text(ev.credential_id), _text(ev.subject),
            b"\x01" + len(ev.prev_hash).to_bytes(4, "big") + bytes(ev.prev_hash),
        ))
    except (AttributeError, TypeError, ValueError, OverflowError, UnicodeError):
        return None
    digest = hashlib.sha256(encoded).digest()
    return dataclasses.replace(ev, hash=digest, mac=event_mac(KEY, digest))


class _Text(str):
    """A str subclass: equal to the text, but not of type str."""


class _Bytes(bytes):
    pass


def _variants(ev: LockEvent) -> list[object]:
    """The event, and ways of getting each field wrong (or unusual but right)."""
    oslo = ZoneInfo("Europe/Oslo")
    changes: list[dict[str, object]] = [
        {}, {"lock_id": "lock-t"}, {"lock_id": _Text(LOCK)}, {"lock_id": ""},
        {"seq": 0}, {"seq": -1}, {"seq": 2**63}, {"seq": True}, {"seq": float(ev.seq)},
        {"seq": ev.seq + 1},
        {"at": ev.at.astimezone(oslo)}, {"at": ev.at.astimezone(timezone(timedelta(hours=-3)))},
        {"at": ev.at.replace(tzinfo=None)}, {"at": ev.at.isoformat()},
        {"at": ev.at + timedelta(microseconds=1)},
        {"at": datetime.max.replace(tzinfo=timezone(timedelta(hours=-1)))},  # beyond UTC's range
        {"at": datetime.min.replace(tzinfo=timezone(timedelta(hours=1)))},
        {"kind": ""}, {"kind": "x" * 33}, {"kind": "x" * 32}, {"kind": 7}, {"kind": _Text("unlock")},
        {"kind": "\ud800"}, {"kind": "unlöck"}, {"kind": "un\tlock"},
        {"allowed": 1}, {"allowed": 0}, {"allowed": "yes"}, {"allowed": not ev.allowed},
        {"reason": "r" * 65}, {"reason": "r" * 64}, {"reason": None}, {"reason": ""},
        {"reason": b"ok"}, {"reason": "\udfff"},
        {"credential_id": "c" * 65}, {"credential_id": ""}, {"credential_id": 5},
        {"credential_id": None if ev.credential_id else "c"}, {"credential_id": _Text("c")},
        {"subject": "s" * 65}, {"subject": 3.5}, {"subject": "stf-9"}, {"subject": "\ud83d"},
        {"prev_hash": ev.prev_hash[:31]}, {"prev_hash": bytearray(ev.prev_hash)},
        {"prev_hash": _Bytes(ev.prev_hash)}, {"prev_hash": b"\x01" * 32}, {"prev_hash": None},
        {"hash": ev.hash + b"\x00"}, {"hash": ev.hash.hex()}, {"hash": _Bytes(ev.hash)},
        {"hash": bytes(32)},
        {"mac": None}, {"mac": ev.mac[:16]}, {"mac": bytes(32)},  # type: ignore[index]
        {"mac": bytearray(ev.mac)}, {"mac": _Bytes(ev.mac)}, {"mac": ev.mac.hex()},  # type: ignore[arg-type,union-attr]
    ]
    out: list[object] = []
    for change in changes:
        changed = dataclasses.replace(ev, **change)  # type: ignore[arg-type]
        out.append(changed)
        if not {"hash", "mac"} & set(change) and (sealed := _resealed(changed)) is not None:
            out.append(sealed)
    # Changed content with a hash to match: only the MAC can tell.
    forged = dataclasses.replace(ev, reason="forged")
    out.append(dataclasses.replace(forged, hash=forged.computed_hash()))
    return [*out, None, "event", (ev,), dataclasses.asdict(ev)]


@pytest.mark.parametrize("key", [KEY, None], ids=["with key", "without key"])
def test_the_screening_shortcut_agrees_with_the_full_checks(key: bytes | None) -> None:
    events = build_log(6)
    checked = 0
    for ev in events:
        for variant in _variants(ev):
            fast_report, slow_report = lock_log._Report(), lock_log._Report()
            fast = lock_log._Screener(LOCK, key, fast_report).screen([variant])
            slow = lock_log._screen(variant, LOCK, key, slow_report)
            assert fast == ([] if slow is None else [slow]), variant
            assert fast_report.items == slow_report.items, variant
            checked += 1
    assert checked > 300


def test_the_shortcut_is_what_screens_the_usual_event() -> None:
    """Genuine events, in UTC as the wire gives them, never need the slow path."""
    screener = lock_log._Screener(LOCK, KEY, lock_log._Report())
    assert all(screener._authentic(ev) for ev in build_log(9))
    unkeyed = lock_log._Screener(LOCK, None, lock_log._Report())
    assert all(unkeyed._authentic(ev) for ev in build_log(9))


@pytest.mark.parametrize("lock_id", ["", "l" * 65, "\ud800", 7, None])
def test_an_unusable_lock_id_gets_the_full_checks(lock_id: object) -> None:
    ev = build_log(1)[0]
    hostile = dataclasses.replace(ev, lock_id=lock_id)  # type: ignore[arg-type]
    for candidate in (ev, hostile):
        fast_report, slow_report = lock_log._Report(), lock_log._Report()
        fast = lock_log._Screener(lock_id, KEY, fast_report).screen([candidate])  # type: ignore[arg-type]
        slow = lock_log._screen(candidate, lock_id, KEY, slow_report)  # type: ignore[arg-type]
        assert fast == ([] if slow is None else [slow])
        assert fast_report.items == slow_report.items


@st.composite
def uploads(draw: st.DrawFn) -> tuple[list[LockEvent], list[LockEvent], int, list[LockEvent]]:
    """A log, what the platform verified of it, what it holds, and an upload: mostly the usual
    next events in order, sometimes shuffled, repeated, cut or tampered with."""
    original = build_log(draw(st.integers(1, 10)))
    synced = draw(st.integers(0, len(original)))
    start = draw(st.integers(0, synced))
    stop = draw(st.integers(start, len(original)))
    upload = list(original[start:stop])
    if upload and draw(st.booleans()):
        edits = ["shuffle", "repeat", "drop", "tamper", "foreign", "fork"]
        edit = draw(st.sampled_from(edits))
        i = draw(st.integers(0, len(upload) - 1))
        if edit == "shuffle":
            upload = draw(st.permutations(upload))
        elif edit == "repeat":
            upload.insert(i, upload[i])
        elif edit == "drop":
            del upload[i]
        elif edit == "tamper":
            upload[i] = dataclasses.replace(upload[i], subject="stf-evil")
        elif edit == "foreign":
            upload[i] = dataclasses.replace(upload[i], lock_id="lock-t")
        else:  # sealed with the lock's key, but not linking to the event before it
            fields = {f: getattr(upload[i], f) for f in (
                "lock_id", "seq", "at", "kind", "allowed", "reason", "credential_id", "subject")}
            upload[i] = seal_event(**fields, prev_hash=b"\x01" * 32, lock_key=KEY)
    held = list(original[stop + 1 :]) if draw(st.booleans()) else []
    return original, held, synced, upload


@settings(max_examples=300, deadline=None)
@given(uploads(), st.sampled_from([KEY, None]))
def test_the_in_order_shortcut_matches_the_general_walk(
    case: tuple[list[LockEvent], list[LockEvent], int, list[LockEvent]], key: bytes | None
) -> None:
    original, held, synced, upload = case
    head = original[synced - 1].hash if synced else GENESIS_HASH
    kwargs = dict(synced_seq=synced, synced_hash=head, lock_key=key, pending=held,
                  known_hash=lambda seq: original[seq - 1].hash)
    got = check_upload(LOCK, upload, **kwargs)  # type: ignore[arg-type]
    extends, lock_log._extends = lock_log._extends, lambda *_: False
    try:
        want = check_upload(LOCK, upload, **kwargs)  # type: ignore[arg-type]
    finally:
        lock_log._extends = extends
    assert got == want
