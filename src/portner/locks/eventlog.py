"""The lock's own append-only, hash-chained and MACed event log (what the phone relays)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from portner.domain.lock_log import (
    GENESIS_HASH,
    LockEvent,
    UploadCheck,
    check_upload,
    seal_event,
)


class LockEventLog:
    """Events in seq order; entries are only ever appended, never changed or removed.

    On a real lock this lives in non-volatile memory: it and its sequence counter survive
    power loss, so a reboot can never reuse a sequence number.
    """

    def __init__(self, lock_id: str, lock_key: bytes) -> None:
        if len(lock_key) < 16:
            raise ValueError("lock key too short")  # never include the key itself
        self.lock_id = lock_id
        self._key = lock_key
        self._events: list[LockEvent] = []

    @classmethod
    def from_flash(cls, lock_id: str, lock_key: bytes, events: Sequence[LockEvent]) -> LockEventLog:
        """Load a log back from storage (the simulation's stand-in for flash that survives a power
        cut). The events must form one unbroken, authentic chain from genesis."""
        log = cls(lock_id, lock_key)
        log._events.extend(events)
        check = log.verify()
        if len(check.accepted) != len(events) or check.anomalies:
            raise ValueError(f"the stored log of lock {lock_id} does not verify from genesis")
        return log

    def append(
        self, *, at: datetime, kind: str, allowed: bool | None = None, reason: str = "",
        credential_id: str | None = None, subject: str | None = None,
    ) -> LockEvent:
        """Seal and append the next event, chained to the current head."""
        seq, prev = self.head
        event = seal_event(
            lock_id=self.lock_id, seq=seq + 1, at=at, kind=kind, allowed=allowed,
            reason=reason, credential_id=credential_id, subject=subject, prev_hash=prev,
            lock_key=self._key,
        )
        self._events.append(event)
        return event

    @property
    def head(self) -> tuple[int, bytes]:
        """Return (seq, hash) of the last event, or (0, genesis) for an empty log."""
        if not self._events:
            return 0, GENESIS_HASH
        last = self._events[-1]
        return last.seq, last.hash

    @property
    def events(self) -> Sequence[LockEvent]:
        """Return a read-only snapshot of the whole log."""
        return tuple(self._events)

    def since(self, seq: int) -> list[LockEvent]:
        """Return the events after `seq`, in order, for upload."""
        # seq numbers are 1-based and dense, so the index is seq itself.
        return list(self._events[max(seq, 0):])

    def verify(self) -> UploadCheck:
        """Check the whole log from genesis as the platform would."""
        return check_upload(
            self.lock_id, self._events, synced_seq=0, synced_hash=None, lock_key=self._key
        )

    def __len__(self) -> int:
        return len(self._events)
