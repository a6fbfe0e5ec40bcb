"""A clock for servers under test: starts at a fixed instant and runs at real speed.

The demo municipality is made for a fixed day; a server whose clock starts on that day sees the
same visits whatever the calendar says when the tests run, and time still moves for the parts
that wait (SSE polling, revocation refresh, expiry).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta


class RunningClock:
    def __init__(self, start: datetime) -> None:
        if start.utcoffset() is None:
            raise ValueError("the clock's start must be aware")
        self._start = start
        self._t0 = time.monotonic()
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return self._start + timedelta(seconds=time.monotonic() - self._t0) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta
