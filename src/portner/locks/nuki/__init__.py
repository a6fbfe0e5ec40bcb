"""Nuki Web API adapter (https://api.nuki.io): Nuki smart locks with keypads, through Nuki's cloud.

Configuration (`BackendConfig(name="nuki", url=..., options=...)`): `url` is the API base (default
https://api.nuki.io); options `token` (the Web API token, required), `poll_interval` (seconds between
log polls, default 30), `slots` (how many keypad codes Portner may manage per lock, default 100),
`name_prefix` (default "portner-slot-"), `confirm_polls`/`confirm_interval` (how often and how far
apart a write or a remote action is read back before it counts as unconfirmed; default 5 x 2 s),
`timeout` (seconds per HTTP request, default 10). A lock's address is its smartlockId.

How Portner's terms map onto Nuki's, and where each part lives:
- wire: Nuki's numeric codes, the keypad firmware's code rules (6 digits, 1-9 only, never starting
  with "12"; F24) and its time format;
- auths: slots are auth names ("portner-slot-07"), found again after a restart (F19);
- client: HTTP and the mapping of its answers to the port's refusals;
- lock: the LockPort (writes confirmed by reading back, F21 reconciliation, remote actions
  confirmed only by the lock, F26);
- log: events from polling the log, deduplicated on the entry's id (F14);
- backend: the LockBackend (options, locks, the poller's task).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from portner.locks.nuki.auths import Auth, SlotNames
from portner.locks.nuki.backend import NukiBackend
from portner.locks.nuki.client import NotFound, NukiApi, Refused
from portner.locks.nuki.lock import NukiLock
from portner.locks.nuki.wire import (
    DEFAULT_URL,
    KEYPAD_CODE,
    NAME_LIMIT,
    NUKI_RULES,
    check_nuki_code,
)
from portner.locks.port import BackendConfig

__all__ = ["DEFAULT_URL", "KEYPAD_CODE", "NAME_LIMIT", "NUKI_RULES", "Auth", "NotFound", "NukiApi",
           "NukiBackend", "NukiLock", "Refused", "SlotNames", "check_nuki_code", "create_backend"]


def create_backend(config: BackendConfig, *, now: Callable[[], datetime]) -> NukiBackend:
    return NukiBackend(config, now=now)
