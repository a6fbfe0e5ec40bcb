"""Fault injection for the simulated keypad lock, and the lossy radio its reports travel over.

Each field of `Faults` reproduces one kind of real-world misbehaviour from the failure catalogue
(../shared/reference/locks.md, section 5); tests switch them on one at a time. Probabilities draw
from the device's seeded random generator, so a failing run repeats exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class Faults:
    """What is wrong with this lock right now. Counters (`*_next`) count down as they fire."""

    # --- the report radio (F14: duplicates and reordering; F11/F13: lost events) ---
    drop_events: float = 0.0  # probability that a report never arrives
    duplicate_events: float = 0.0  # probability that a report arrives twice (same sequence)
    reorder_events: float = 0.0  # probability that a report is held back behind the next one
    reports_while_offline: str = "buffer"  # "buffer" (delivered on return) or "lose"

    # --- reads (F21, F27) ---
    mask_reads: float = 0.0  # probability that a read shows a stored code as "****"
    read_lag: timedelta = timedelta(0)  # reads EMPTY for this long after an add (Schlage cloud)
    delete_lag: timedelta = timedelta(0)  # after a delete: reads still show the old code, and an
    #                                       add to that slot answers ALREADY_EXISTS, this long
    unreadable: set[int] = field(default_factory=set)  # native users whose reads never answer

    # --- writes (F5, F6, F7, F10) ---
    capacity_limit: int | None = None  # memory holds fewer codes than the lock advertises
    lose_writes_next: int = 0  # next N sets answer ok but store nothing; reads return {} (F10)
    busy_next: int = 0  # next N commands answer BUSY
    sticky: set[int] = field(default_factory=set)  # clears answer ok but the code stays (F27)

    # --- bolt and power (F16, F29) ---
    jam_next: int = 0  # next N bolt movements jam
    offline_periods: list[tuple[datetime, datetime]] = field(default_factory=list)  # true time
    clock_loss_on_battery_swap: bool = True  # the RTC restarts at 2000-01-01 (F16)

    def take(self, counter: str) -> bool:
        """Fire a `*_next` counter once: return True and count it down when it is above zero."""
        left = getattr(self, counter)
        if left > 0:
            setattr(self, counter, left - 1)
            return True
        return False


class ReportRadio:
    """Delivers a device's reports to its listeners, losing, doubling and reordering them as the
    faults say. The device's own event list stays the truth; this is only what reaches the hub."""

    def __init__(self, faults: Faults, rng: random.Random) -> None:
        self._faults = faults
        self._rng = rng
        self._listeners: list[Callable[[object], None]] = []
        self._held: list[object] = []  # reordered: waiting behind the next report
        self._buffered: list[object] = []  # made while offline
        self.delivered = 0

    def listen(self, listener: Callable[[object], None]) -> None:
        self._listeners.append(listener)

    def unlisten(self, listener: Callable[[object], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def send(self, report: object, *, online: bool) -> None:
        """Send one report now (or buffer it while the lock is off the network)."""
        if not online:
            if self._faults.reports_while_offline == "buffer":
                self._buffered.append(report)
            return
        if self._chance(self._faults.drop_events):
            return
        copies = 2 if self._chance(self._faults.duplicate_events) else 1
        if self._chance(self._faults.reorder_events):
            self._held.extend([report] * copies)
            return
        for _ in range(copies):
            self._deliver(report)
        self.flush_held()

    def reconnect(self) -> None:
        """The lock is back on the network: what it buffered goes out, in order."""
        buffered, self._buffered = self._buffered, []
        for report in buffered:
            self._deliver(report)
        self.flush_held()

    def flush_held(self) -> None:
        """Deliver reports held back by reordering (they arrive after the newer one)."""
        held, self._held = self._held, []
        for report in held:
            self._deliver(report)

    def _deliver(self, report: object) -> None:
        self.delivered += 1
        for listener in list(self._listeners):
            listener(report)

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability
