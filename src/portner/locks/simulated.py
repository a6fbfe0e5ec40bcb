"""The simulated lock: the embedded default backend and the reference offline verifier.

It behaves like a battery-powered door lock with no network of its own: a phone asks for a
challenge, presents a credential with a proof over that challenge, and the lock decides alone,
with its own (possibly wrong) clock, then writes the outcome to its chained event log. Time is
simulated, never slept: the clock reads a `now` callable, so tests and demos step time freely.
Nothing here imports the platform or a database; this is a device.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random as _random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from portner.credentials import (
    DEFAULT_SKEW,
    MAX_SKEW,
    DenyReason,
    IssuerPublicKey,
    RevocationState,
    Verdict,
    verify_presentation,
)
from portner.domain.lock_log import LockEvent, head_attestation_mac
from portner.domain.windows import require_aware
from portner.locks.eventlog import LockEventLog

CHALLENGE_SIZE: Final = 32
_TIME_DOMAIN: Final = b"portner/lock-time/v1"


class BoltState(StrEnum):
    """Where the bolt is; the simulation moves it, a real lock reports it."""

    LOCKED = "locked"
    UNLOCKED = "unlocked"
    JAMMED = "jammed"


class LockReason(StrEnum):
    """Refusals the lock makes itself, before or after checking the credential."""

    UNKNOWN_CHALLENGE = "unknown_challenge"
    STALE_CHALLENGE = "stale_challenge"
    TIME_UNKNOWN = "time_unknown"
    BATTERY_DEPLETED = "battery_depleted"
    JAMMED = "jammed"


# Until portner.credentials has members for these, the Verdict carries the closest one; the
# event log always records the exact lock reason.
_FALLBACK: Final = {
    LockReason.UNKNOWN_CHALLENGE: "bad_proof",
    LockReason.STALE_CHALLENGE: "bad_proof",
    LockReason.TIME_UNKNOWN: "not_yet_valid",
    LockReason.BATTERY_DEPLETED: "malformed",
    LockReason.JAMMED: "malformed",
}


def deny_reason_for(reason: LockReason) -> DenyReason:
    """Return the DenyReason the Verdict carries for a lock-level refusal."""
    members = {m.value: m for m in DenyReason}
    return members.get(reason.value) or members[_FALLBACK[reason]]


def seeded_random(seed: int) -> Callable[[int], bytes]:
    """Return a deterministic byte source for demo runs and tests (never for real locks)."""
    return _random.Random(seed).randbytes  # noqa: S311 - deterministic on purpose


def time_message_mac(lock_key: bytes, lock_id: str, challenge: bytes, at: datetime) -> bytes:
    """MAC a time-set message the platform signs and a phone relays to the lock (goal G6)."""
    micros = (require_aware(at, "time") - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        microseconds=1
    )
    lock = lock_id.encode()
    body = b"".join((
        _TIME_DOMAIN, len(lock).to_bytes(4, "big"), lock, challenge,
        micros.to_bytes(8, "big", signed=True),
    ))
    return hmac.new(lock_key, body, hashlib.sha256).digest()


class LockClock:
    """The lock's real-time clock: true time plus an offset, running `drift_ppm` fast or slow."""

    RTC_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)  # where a reset RTC starts counting

    def __init__(
        self, now: Callable[[], datetime], *, offset: timedelta = timedelta(0),
        drift_ppm: float = 0.0,
    ) -> None:
        self._true = now
        start = self.true_now()
        self._anchor_true, self._anchor_view = start, start + offset
        self._mono_true, self._mono_base = start, timedelta(0)
        self._drift_ppm = drift_ppm
        self.known = True

    def true_now(self) -> datetime:
        """Return real time (what physics, not the lock, sees)."""
        return require_aware(self._true(), "true time")

    def _rate(self) -> float:
        return 1.0 + self._drift_ppm / 1_000_000

    def now(self) -> datetime:
        """Return the lock's view of the current time."""
        return self._anchor_view + (self.true_now() - self._anchor_true) * self._rate()

    def monotonic(self) -> timedelta:
        """Return lock-time elapsed since power-up; setting the clock does not move it."""
        return self._mono_base + (self.true_now() - self._mono_true) * self._rate()

    @property
    def drift_ppm(self) -> float:
        """Return how fast the clock runs, in parts per million (positive = fast)."""
        return self._drift_ppm

    @property
    def offset(self) -> timedelta:
        """Return lock time minus true time."""
        return self.now() - self.true_now()

    def set(self, true_time: datetime) -> None:
        """Set the clock to `true_time` now; the drift rate is physical and stays."""
        self._anchor_true, self._anchor_view = self.true_now(), require_aware(true_time, "time")
        self.known = True

    def set_drift(self, ppm: float) -> None:
        """Change the drift rate from now on (fault hook)."""
        view, mono, now = self.now(), self.monotonic(), self.true_now()
        self._anchor_true, self._anchor_view = now, view
        self._mono_true, self._mono_base = now, mono
        self._drift_ppm = ppm

    def lose(self) -> None:
        """Reset the RTC as a power loss does: it restarts from its epoch, time unknown."""
        now = self.true_now()
        self._anchor_true, self._anchor_view = now, self.RTC_EPOCH
        self._mono_true, self._mono_base = now, timedelta(0)
        self.known = False


@dataclass
class Battery:
    """A battery that each operation costs and that discharges slowly by itself (percent)."""

    percent: float = 100.0
    motor_cost: float = 0.01  # one bolt movement; ~10 000 movements per set of batteries
    radio_cost: float = 0.001  # one challenge, verification or list install
    self_discharge_per_day: float = 0.01
    low_threshold: float = 20.0
    _last: datetime | None = None
    _low_reported: bool = False

    def elapse(self, true_now: datetime) -> None:
        """Apply self-discharge up to `true_now`."""
        if self._last is not None and true_now > self._last:
            days = (true_now - self._last) / timedelta(days=1)
            self.spend(days * self.self_discharge_per_day)
        self._last = true_now if self._last is None else max(self._last, true_now)

    def spend(self, amount: float) -> None:
        """Take `amount` percent from the battery."""
        self.percent = max(0.0, self.percent - amount)

    @property
    def depleted(self) -> bool:
        """Say whether the lock can no longer drive its electronics."""
        return self.percent <= 0.0

    def take_low_warning(self) -> bool:
        """Return True exactly once when the charge first falls to the low threshold."""
        if self.percent <= self.low_threshold and not self._low_reported:
            self._low_reported = True
            return True
        return False

    def replace(self, percent: float = 100.0) -> None:
        """Fit new batteries, re-arming the low warning."""
        self.percent = percent
        self._low_reported = percent <= self.low_threshold


@dataclass(frozen=True, slots=True)
class LockStatus:
    """What a lock reports about itself at each sync (goal G15)."""

    lock_id: str
    battery_percent: float
    lock_time: datetime
    time_known: bool
    bolt: BoltState
    head_seq: int
    head_hash: bytes
    revocation_version: int


Verifier = Callable[..., Verdict]


class SimulatedLock:
    """A door lock that verifies credentials offline and keeps a tamper-evident log."""

    backend: Final = "simulated"

    def __init__(
        self, *, lock_id: str, door_id: str, issuers: Mapping[bytes, IssuerPublicKey],
        lock_key: bytes, clock: LockClock, battery: Battery | None = None,
        skew: timedelta = DEFAULT_SKEW, random: Callable[[int], bytes] = os.urandom,
        relock_after: timedelta = timedelta(seconds=5), max_challenges: int = 4,
        challenge_ttl: timedelta = timedelta(seconds=30), verifier: Verifier = verify_presentation,
    ) -> None:
        self.lock_id, self.door_id = lock_id, door_id
        self.clock = clock
        self.battery = battery if battery is not None else Battery()
        if not timedelta(0) <= skew <= MAX_SKEW:
            raise ValueError(f"a lock's clock-skew allowance must be between 0 and {MAX_SKEW}")
        self.skew, self.relock_after = skew, relock_after
        self.max_challenges, self.challenge_ttl = max_challenges, challenge_ttl
        self.online = False  # whether the simulation lets this lock reach the platform
        self._issuers = MappingProxyType(dict(issuers))
        self._random, self._verify = random, verifier
        self._revocations = RevocationState()
        self._log = LockEventLog(lock_id, lock_key)
        self._key = lock_key
        # Challenges live in RAM only: a power cycle forgets them, so a proof made before it
        # can never be used after it (goal G4).
        self._challenges: dict[bytes, timedelta] = {}
        self._bolt = BoltState.LOCKED
        self._relock_at: timedelta | None = None
        self._jammed = False
        self.battery.elapse(clock.true_now())
        self._append("boot", reason="installed")

    # -- reading ----------------------------------------------------------------------------

    @property
    def log(self) -> Sequence[LockEvent]:
        """Return a read-only snapshot of the event log."""
        self._settle()
        return self._log.events

    def events_since(self, seq: int) -> list[LockEvent]:
        """Return the events after `seq` for a phone to upload."""
        self._settle()
        return self._log.since(seq)

    @property
    def bolt(self) -> BoltState:
        """Return the bolt's state now."""
        self._settle()
        if self._jammed and self._bolt is not BoltState.LOCKED:
            return BoltState.JAMMED
        return self._bolt

    @property
    def revocation_version(self) -> int:
        """Return the version of the revocation list in force."""
        return int(self._revocations.version)

    def status(self) -> LockStatus:
        """Return the lock's self-report for a sync."""
        self._settle()
        seq, digest = self._log.head
        return LockStatus(
            lock_id=self.lock_id, battery_percent=self.battery.percent,
            lock_time=self.clock.now(), time_known=self.clock.known, bolt=self.bolt,
            head_seq=seq, head_hash=digest, revocation_version=self.revocation_version,
        )

    def attest_head(self, nonce: bytes) -> tuple[int, bytes, bytes]:
        """Return (head seq, head hash, MAC) for a platform nonce; exposes a withheld tail."""
        self._settle()
        if not isinstance(nonce, bytes) or not 16 <= len(nonce) <= 64:
            raise ValueError("a nonce is 16..64 bytes")
        seq, digest = self._log.head
        return seq, digest, head_attestation_mac(self._key, self.lock_id, nonce, seq, digest)

    # -- the protocol -----------------------------------------------------------------------

    def challenge(self) -> bytes:
        """Issue a fresh single-use challenge; the oldest is dropped beyond `max_challenges`."""
        self._settle()
        self._spend(self.battery.radio_cost)
        now = self.clock.monotonic()
        self._challenges = {
            c: t for c, t in self._challenges.items() if now - t <= self.challenge_ttl
        }
        while len(self._challenges) >= self.max_challenges:
            del self._challenges[next(iter(self._challenges))]
        value = self._random(CHALLENGE_SIZE)
        if len(value) != CHALLENGE_SIZE:
            raise RuntimeError("random source returned the wrong number of bytes")
        self._challenges[value] = now
        return value

    def _take_challenge(self, challenge: bytes) -> LockReason | None:
        """Consume `challenge`, whatever happens next; say why it is unusable, if it is."""
        issued = self._challenges.pop(challenge, None) if isinstance(challenge, bytes) else None
        if issued is None:
            return LockReason.UNKNOWN_CHALLENGE
        if self.clock.monotonic() - issued > self.challenge_ttl:
            return LockReason.STALE_CHALLENGE
        return None

    def present(
        self, credential: bytes, proof: bytes, *, challenge: bytes, action: str = "unlock"
    ) -> Verdict:
        """Decide on a presented credential offline, log the outcome and move the bolt."""
        self._settle()
        problem = self._take_challenge(challenge)
        self._spend(self.battery.radio_cost)
        if self.battery.depleted:
            problem = LockReason.BATTERY_DEPLETED  # says so rather than failing silently
        elif problem is None and not self.clock.known:
            # An RTC that lost power may say any date: a time-bound credential means nothing.
            problem = LockReason.TIME_UNKNOWN
        if problem is not None:
            self._append("denied", allowed=False, reason=problem.value)
            return self._refusal(problem)
        verdict = self._verify(
            credential, proof, challenge=challenge, door_id=self.door_id, action=action,
            now=self.clock.now(), issuers=self._issuers, revocations=self._revocations,
            skew=self.skew,
        )
        cred = verdict.credential_id.hex() if verdict.credential_id else None
        if not verdict.allowed:
            self._append("denied", allowed=False, reason=str(verdict.reason),
                         credential_id=cred, subject=verdict.subject)
            return verdict
        if self._jammed:
            self._append("jammed", allowed=False, reason=LockReason.JAMMED.value,
                         credential_id=cred, subject=verdict.subject)
            return self._refusal(LockReason.JAMMED, verdict)
        self._spend(self.battery.motor_cost)
        if action == "lock":
            self._bolt, self._relock_at = BoltState.LOCKED, None
            self._append("locked", allowed=True, reason="credential", credential_id=cred,
                         subject=verdict.subject)
        else:
            self._bolt = BoltState.UNLOCKED
            self._relock_at = self.clock.monotonic() + self.relock_after
            self._append(action, allowed=True, reason=str(verdict.reason),
                         credential_id=cred, subject=verdict.subject)
        return verdict

    def install_revocation_list(self, blob: bytes) -> bool:
        """Apply a signed revocation list if it is valid and newer; log either way."""
        self._settle()
        self._spend(self.battery.radio_cost)
        if self.battery.depleted:
            return False
        applied, why = self._revocations.apply(blob, self._issuers, self.clock.now())
        if applied:
            self._append("revocation_applied", reason=f"version {self.revocation_version}"[:64])
        else:
            self._append("revocation_rejected", reason=str(why)[:64])
        return bool(applied)

    def set_time(self, true_time: datetime, *, challenge: bytes, mac: bytes) -> bool:
        """Set the clock from a platform-MACed time message bound to a fresh challenge."""
        self._settle()
        problem = self._take_challenge(challenge)
        good_mac = False
        if problem is None and isinstance(mac, bytes) and isinstance(true_time, datetime):
            expected = time_message_mac(self._key, self.lock_id, challenge, true_time)
            good_mac = hmac.compare_digest(mac, expected)
        if problem is not None or not good_mac:
            reason = problem.value if problem is not None else "bad_mac"
            self._append("clock_rejected", allowed=False, reason=reason)
            return False
        before, was_known = self.clock.now(), self.clock.known
        self.clock.set(true_time)
        delta = (self.clock.now() - before).total_seconds()
        # A backward jump is allowed only because the message is challenge-fresh; it is
        # always logged so the platform can see expired-credential replay attempts (G6).
        self._append("clock_set", reason=f"{delta:+.0f}s" if was_known else "from_unknown")
        return True

    def record_exit(self, *, source: str = "inside") -> LockEvent:
        """Record that the door was shut and locked from inside (a departure)."""
        self._settle()
        self._spend(self.battery.motor_cost)
        self._bolt, self._relock_at = BoltState.LOCKED, None
        return self._append("locked", reason=source[:64])

    # -- fault hooks ------------------------------------------------------------------------

    def restore(self, events: Sequence[LockEvent], revocation_list: bytes | None = None) -> None:
        """Put back what a real lock keeps in flash across a restart: its log and its newest
        revocation list; then log the restart as the power cycle it was. Raises ValueError when
        the stored log does not verify."""
        self._log = LockEventLog.from_flash(self.lock_id, self._key, events)
        if revocation_list is not None:
            self._revocations.apply(revocation_list, self._issuers, self.clock.now())
        self.power_cycle()

    def set_drift(self, ppm: float) -> None:
        """Make the clock run `ppm` parts per million fast (or slow, if negative)."""
        self._settle()
        self.clock.set_drift(ppm)

    def power_cycle(self, *, rtc_lost: bool = False) -> None:
        """Cut and restore power: RAM (challenges) is lost, the log and lists survive."""
        self._settle()
        self._challenges.clear()
        if rtc_lost:
            self.clock.lose()
        self._append("boot", reason="rtc_lost" if rtc_lost else "power_cycle")
        if self._bolt is BoltState.UNLOCKED:  # fail secure: a rebooting lock relocks
            self._bolt, self._relock_at = BoltState.LOCKED, None
            self._append("locked", reason="boot")

    def jam(self) -> None:
        """Make the bolt stick until `clear_jam`; no timer clears it (F29)."""
        self._settle()
        self._jammed = True

    def clear_jam(self) -> None:
        """Free the bolt (a technician visited); an open bolt then relocks at once."""
        self._settle()
        self._jammed = False
        if self._bolt is BoltState.UNLOCKED:
            self._relock_at = self.clock.monotonic()

    def replace_battery(self, percent: float = 100.0) -> None:
        """Fit new batteries."""
        self._settle()
        self.battery.replace(percent)
        self._append("battery_replaced", reason=f"{percent:.0f}%")

    # -- internals --------------------------------------------------------------------------

    def _refusal(self, reason: LockReason, verdict: Verdict | None = None) -> Verdict:
        return Verdict(
            allowed=False, reason=deny_reason_for(reason),
            credential_id=verdict.credential_id if verdict else None,
            subject=verdict.subject if verdict else None,
        )

    def _append(self, kind: str, *, allowed: bool | None = None, reason: str = "",
                credential_id: str | None = None, subject: str | None = None) -> LockEvent:
        return self._log.append(at=self.clock.now(), kind=kind, allowed=allowed, reason=reason,
                                credential_id=credential_id, subject=subject)

    def _spend(self, amount: float) -> None:
        self.battery.spend(amount)
        self._check_battery()

    def _check_battery(self) -> None:
        if self.battery.take_low_warning():
            self._append("battery_low", reason=f"{self.battery.percent:.1f}%")

    def _settle(self) -> None:
        """Catch up with simulated time: self-discharge, and a relock that fell due."""
        self.battery.elapse(self.clock.true_now())
        self._check_battery()
        if self._relock_at is None:
            return
        late = self.clock.monotonic() - self._relock_at
        if late < timedelta(0):
            return
        self._relock_at = None
        # Logged with the lock time at which it happened, not when we noticed.
        at = self.clock.now() - late
        if self._jammed:
            self._log.append(at=at, kind="jammed", allowed=False, reason="auto_relock_failed")
            return
        self._bolt = BoltState.LOCKED
        self._log.append(at=at, kind="locked", reason="auto_relock")
        self._spend(self.battery.motor_cost)
