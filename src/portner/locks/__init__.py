"""Lock backends; the simulated lock is the default and the reference offline verifier."""

from __future__ import annotations

from portner.locks.eventlog import LockEventLog
from portner.locks.simulated import (
    Battery,
    BoltState,
    LockClock,
    LockReason,
    LockStatus,
    SimulatedLock,
    deny_reason_for,
    seeded_random,
    time_message_mac,
)

__all__ = [
    "Battery",
    "BoltState",
    "LockClock",
    "LockEventLog",
    "LockReason",
    "LockStatus",
    "SimulatedLock",
    "deny_reason_for",
    "seeded_random",
    "time_message_mac",
]
