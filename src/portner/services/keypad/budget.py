"""Each lock's radio budget, and the backoff between retries.

Battery locks die of chatty hubs (F25): commands to one lock are spaced by its
`min_command_interval`, and at most `limit` go out in any `window`. Retries back off
exponentially with full jitter (a random delay up to the capped exponential), so a fleet that lost
its network together does not come back in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from portner.services.keypad.store import status_row, update_status


@dataclass(frozen=True, slots=True)
class Backoff:
    base: timedelta = timedelta(seconds=10)
    cap: timedelta = timedelta(minutes=15)

    def delay(self, attempts: int, rng: random.Random, floor: timedelta = timedelta(0)) -> timedelta:
        """The wait before retry number `attempts` (1 = after the first failure): a uniform draw
        in [0, min(cap, base * 2^(attempts-1))], never less than `floor` (the lock's spacing)."""
        ceiling = min(self.cap.total_seconds(), self.base.total_seconds() * 2 ** max(0, attempts - 1))
        return max(floor, timedelta(seconds=rng.uniform(0, ceiling)))


@dataclass(frozen=True, slots=True)
class RadioBudget:
    window: timedelta = timedelta(minutes=10)
    limit: int = 30  # radio operations per lock per window (a read of several slots is one)

    def may_send(self, status: Any, interval: timedelta, now: datetime) -> bool:
        if status.last_command_at is not None and now - status.last_command_at < interval:
            return False
        if status.budget_window_start is None or now - status.budget_window_start >= self.window:
            return True
        return int(status.budget_used or 0) < self.limit

    def spend(self, conn: Connection, lock_id: str, now: datetime, operations: int = 1) -> None:
        status = status_row(conn, lock_id, now)
        if status.budget_window_start is None or now - status.budget_window_start >= self.window:
            update_status(conn, lock_id, now, budget_window_start=now, budget_used=operations,
                          last_command_at=now)
        else:
            update_status(conn, lock_id, now, budget_used=int(status.budget_used or 0) + operations,
                          last_command_at=now)
