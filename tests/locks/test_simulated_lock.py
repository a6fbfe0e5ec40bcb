"""Tests for the simulated lock as the reference offline verifier, with real credentials."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from portner.credentials import (
    DenyReason,
    DeviceKey,
    IssuerKey,
    issue_credential,
    issue_revocation_list,
)
from portner.domain.lock_log import check_upload, head_attestation_mac
from portner.locks.simulated import (
    Battery,
    BoltState,
    LockClock,
    LockReason,
    SimulatedLock,
    deny_reason_for,
    seeded_random,
    time_message_mac,
)

T0 = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
LOCK_KEY = bytes(range(32))
ISSUER = IssuerKey.from_seed(b"\x11" * 32)


class TrueTime:
    """The simulation's true time, stepped by hand."""

    def __init__(self, start: datetime = T0) -> None:
        self.value = start

    def __call__(self) -> datetime:
        return self.value

    def advance(self, **kwargs: float) -> None:
        self.value += timedelta(**kwargs)


def make_lock(time: TrueTime, *, lock_id: str = "lock-a", door_id: str = "door-a",
              battery: Battery | None = None, drift_ppm: float = 0.0) -> SimulatedLock:
    return SimulatedLock(
        lock_id=lock_id, door_id=door_id, issuers={ISSUER.kid: ISSUER.public},
        lock_key=LOCK_KEY, clock=LockClock(time, drift_ppm=drift_ppm), battery=battery,
        random=seeded_random(sum(lock_id.encode())),
    )


def credential(device: DeviceKey, *, start: datetime, hours: float = 1.0,
               doors: tuple[str, ...] = ("door-a",), cid: bytes = b"\x01" * 16) -> bytes:
    return issue_credential(
        ISSUER, credential_id=cid, subject="actor-7", device_public_key=device.public_key_bytes,
        door_ids=doors, not_before=start, not_after=start + timedelta(hours=hours),
        issued_at=start,
    )


def tap(lock: SimulatedLock, device: DeviceKey, cred: bytes, action: str = "unlock"):
    challenge = lock.challenge()
    proof = device.sign_proof(challenge, lock.door_id, action)
    return lock.present(cred, proof, challenge=challenge, action=action), challenge, proof


@pytest.fixture
def time() -> TrueTime:
    return TrueTime()


@pytest.fixture
def device() -> DeviceKey:
    return DeviceKey.from_private_bytes(b"\x22" * 32)


def test_challenge_response_opens_and_relocks_by_time(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    verdict, _, _ = tap(lock, device, credential(device, start=T0))
    assert verdict.allowed and verdict.reason is DenyReason.OK
    assert lock.bolt is BoltState.UNLOCKED
    unlock = lock.log[-1]
    assert (unlock.kind, unlock.allowed, unlock.credential_id, unlock.subject) == (
        "unlock", True, "01" * 16, "actor-7")
    time.advance(seconds=4)
    assert lock.bolt is BoltState.UNLOCKED
    time.advance(seconds=60)
    assert lock.bolt is BoltState.LOCKED
    relock = lock.log[-1]
    assert (relock.kind, relock.reason) == ("locked", "auto_relock")
    assert relock.at == unlock.at + timedelta(seconds=5)  # when it happened, not when noticed


def test_replayed_proof_is_denied(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    first, challenge, proof = tap(lock, device, cred)
    assert first.allowed
    replay = lock.present(cred, proof, challenge=challenge)
    assert not replay.allowed
    assert replay.reason is deny_reason_for(LockReason.UNKNOWN_CHALLENGE)
    assert (lock.log[-1].kind, lock.log[-1].reason) == ("denied", "unknown_challenge")


def test_a_failed_attempt_also_consumes_the_challenge(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    challenge = lock.challenge()
    bad = lock.present(cred, b"\x00" * 64, challenge=challenge)
    assert (bad.allowed, bad.reason) == (False, DenyReason.BAD_PROOF)
    good = lock.present(cred, device.sign_proof(challenge, "door-a", "unlock"), challenge=challenge)
    assert not good.allowed
    assert lock.log[-1].reason == "unknown_challenge"


def test_proof_for_another_locks_challenge_is_denied(time: TrueTime, device: DeviceKey) -> None:
    lock_a = make_lock(time)
    lock_b = make_lock(time, lock_id="lock-b", door_id="door-b")
    cred = credential(device, start=T0, doors=("door-a", "door-b"))
    # Relay: B's challenge and a proof for B, presented at A.
    challenge_b = lock_b.challenge()
    proof_b = device.sign_proof(challenge_b, "door-b", "unlock")
    relayed = lock_a.present(cred, proof_b, challenge=challenge_b)
    assert not relayed.allowed
    assert lock_a.log[-1].reason == "unknown_challenge"
    # A proof over A's challenge but made for B's door does not open A either.
    challenge_a = lock_a.challenge()
    wrong_door = lock_a.present(cred, device.sign_proof(challenge_a, "door-b", "unlock"),
                                challenge=challenge_a)
    assert (wrong_door.allowed, wrong_door.reason) == (False, DenyReason.BAD_PROOF)
    # B itself still honours its own challenge.
    assert lock_b.present(cred, proof_b, challenge=challenge_b).allowed


def test_challenge_expires_after_30_seconds(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    challenge = lock.challenge()
    time.advance(seconds=29)
    assert lock.present(cred, device.sign_proof(challenge, "door-a", "unlock"),
                        challenge=challenge).allowed
    challenge = lock.challenge()
    time.advance(seconds=31)
    late = lock.present(cred, device.sign_proof(challenge, "door-a", "unlock"),
                        challenge=challenge)
    assert not late.allowed
    assert lock.log[-1].reason == "stale_challenge"


def test_at_most_four_outstanding_challenges(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    challenges = [lock.challenge() for _ in range(5)]
    assert len(set(challenges)) == 5
    oldest = lock.present(cred, device.sign_proof(challenges[0], "door-a", "unlock"),
                          challenge=challenges[0])
    assert not oldest.allowed and lock.log[-1].reason == "unknown_challenge"
    newest = lock.present(cred, device.sign_proof(challenges[4], "door-a", "unlock"),
                          challenge=challenges[4])
    assert newest.allowed


def test_revoked_while_offline_and_rollback_rejected(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    assert lock.online is False
    cred = credential(device, start=T0, hours=8)
    assert tap(lock, device, cred)[0].allowed
    # Another nurse's phone, which synced after the revocation, carries the newer list.
    time.advance(minutes=30)
    v1 = issue_revocation_list(ISSUER, version=1, issued_at=time(), credentials=[],
                               devices=[])
    v2 = issue_revocation_list(ISSUER, version=2, issued_at=time(),
                               credentials=[(b"\x01" * 16, T0 + timedelta(hours=8))], devices=[])
    assert lock.install_revocation_list(v2)
    assert (lock.log[-1].kind, lock.revocation_version) == ("revocation_applied", 2)
    verdict = tap(lock, device, cred)[0]
    assert (verdict.allowed, verdict.reason) == (False, DenyReason.REVOKED)
    assert lock.log[-1].reason == "revoked"
    # A phone replays the older list (which did not revoke it): refused and logged.
    assert not lock.install_revocation_list(v1)
    assert (lock.log[-1].kind, lock.log[-1].reason) == ("revocation_rejected", "stale_version")
    assert lock.revocation_version == 2
    assert not tap(lock, device, cred)[0].allowed
    # Garbage from a hostile phone is refused too, never crashes the lock.
    assert not lock.install_revocation_list(b"\xff" * 40)
    assert lock.log[-1].reason == "malformed"


@pytest.mark.parametrize(("days", "allowed"), [(10, True), (30, False)])
def test_clock_drift_against_skew_at_the_window_edge(
    time: TrueTime, device: DeviceKey, days: int, allowed: bool
) -> None:
    # 100 ppm fast: 86 s ahead after 10 days (inside the 120 s skew), 259 s after 30 days.
    lock = make_lock(time, drift_ppm=100.0)
    time.advance(days=days)
    cred = credential(device, start=time())
    time.advance(minutes=59)  # one true minute before it expires
    verdict = tap(lock, device, cred)[0]
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.reason is DenyReason.EXPIRED
        # The platform corrects the clock with a MACed, challenge-bound time message.
        challenge = lock.challenge()
        mac = time_message_mac(LOCK_KEY, "lock-a", challenge, time())
        assert lock.set_time(time(), challenge=challenge, mac=mac)
        assert lock.log[-1].kind == "clock_set" and lock.log[-1].reason.startswith("-")
        assert tap(lock, device, cred)[0].allowed


def test_clock_loss_denies_until_authenticated_time_set(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    pending_challenge = lock.challenge()
    lock.power_cycle(rtc_lost=True)
    assert (lock.log[-1].kind, lock.log[-1].reason) == ("boot", "rtc_lost")
    # The challenge issued before the power cut is gone (G4).
    stale = lock.present(cred, device.sign_proof(pending_challenge, "door-a", "unlock"),
                         challenge=pending_challenge)
    assert not stale.allowed and lock.log[-1].reason == "unknown_challenge"
    denied = tap(lock, device, cred)[0]
    assert denied.reason is deny_reason_for(LockReason.TIME_UNKNOWN)
    assert lock.log[-1].reason == "time_unknown"
    assert lock.log[-1].at.year == 2000  # the RTC restarted from its epoch
    # A time message with a wrong MAC, or without a fresh challenge, is refused.
    challenge = lock.challenge()
    assert not lock.set_time(time(), challenge=challenge, mac=b"\x00" * 32)
    assert lock.log[-1].kind == "clock_rejected"
    mac = time_message_mac(LOCK_KEY, "lock-a", challenge, time())
    assert not lock.set_time(time(), challenge=challenge, mac=mac)  # challenge already used
    challenge = lock.challenge()
    mac = time_message_mac(LOCK_KEY, "lock-a", challenge, time())
    assert lock.set_time(time(), challenge=challenge, mac=mac)
    assert lock.log[-1].reason == "from_unknown"
    assert tap(lock, device, cred)[0].allowed


def test_battery_drains_and_warns_once(time: TrueTime, device: DeviceKey) -> None:
    battery = Battery(percent=21.0, motor_cost=0.3, radio_cost=0.05, self_discharge_per_day=0.1)
    lock = make_lock(time, battery=battery)
    before = battery.percent
    time.advance(days=2)
    lock.status()
    assert battery.percent == pytest.approx(before - 0.2)
    cred = credential(device, start=time(), hours=12)
    for _ in range(4):
        assert tap(lock, device, cred)[0].allowed
        time.advance(seconds=10)
    kinds = [e.kind for e in lock.log]
    assert kinds.count("battery_low") == 1
    low = next(e for e in lock.log if e.kind == "battery_low")
    assert float(low.reason.rstrip("%")) <= 20.0
    # Drain to nothing: the lock refuses electronically and says so.
    battery.spend(100)
    verdict = tap(lock, device, cred)[0]
    assert verdict.reason is deny_reason_for(LockReason.BATTERY_DEPLETED)
    assert lock.log[-1].reason == "battery_depleted"
    assert [e.kind for e in lock.log].count("battery_low") == 1
    lock.replace_battery()
    assert tap(lock, device, cred)[0].allowed


def test_jam_blocks_until_cleared(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    lock.jam()
    verdict = tap(lock, device, cred)[0]
    assert not verdict.allowed and verdict.credential_id == b"\x01" * 16
    assert (lock.log[-1].kind, lock.log[-1].reason) == ("jammed", "jammed")
    time.advance(hours=2)  # no timer clears a jam (F29)
    assert lock.log[-1].kind == "jammed"
    lock.clear_jam()
    assert tap(lock, device, credential(device, start=time()))[0].allowed


def test_departure_is_logged_as_locked(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    assert tap(lock, device, cred)[0].allowed
    time.advance(minutes=25)
    exit_event = lock.record_exit()
    assert (exit_event.kind, exit_event.reason, exit_event.subject) == ("locked", "inside", None)
    assert exit_event.at == T0 + timedelta(minutes=25)
    # Locking from outside with the credential is attributable.
    verdict = tap(lock, device, cred, action="lock")[0]
    assert verdict.allowed
    assert (lock.log[-1].kind, lock.log[-1].subject) == ("locked", "actor-7")


def test_log_chain_verifies_and_uploads_incrementally(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    cred = credential(device, start=T0)
    tap(lock, device, cred)
    time.advance(minutes=1)
    tap(lock, device, b"junk")
    first = check_upload("lock-a", lock.events_since(0), synced_seq=0, synced_hash=None,
                         lock_key=LOCK_KEY)
    assert first.anomalies == () and len(first.accepted) == len(lock.log)
    lock.record_exit()
    lock.power_cycle()
    second = check_upload("lock-a", lock.events_since(first.new_synced_seq),
                          synced_seq=first.new_synced_seq, synced_hash=first.new_synced_hash,
                          lock_key=LOCK_KEY)
    assert second.anomalies == ()
    assert [e.kind for e in second.accepted] == ["locked", "boot"]
    assert second.new_synced_hash == lock.status().head_hash
    assert lock.log[0].kind == "boot"


def test_seeded_random_is_deterministic(time: TrueTime) -> None:
    a = make_lock(time, lock_id="same")
    b = make_lock(time, lock_id="same")
    assert [a.challenge() for _ in range(3)] == [b.challenge() for _ in range(3)]


def test_head_attestation_exposes_a_withheld_tail(time: TrueTime, device: DeviceKey) -> None:
    lock = make_lock(time)
    tap(lock, device, credential(device, start=T0))
    # The relay uploads all but the newest event and claims the sync is complete.
    events = lock.events_since(0)
    result = check_upload("lock-a", events[:-1], synced_seq=0, synced_hash=None,
                          lock_key=LOCK_KEY)
    assert result.anomalies == ()
    nonce = b"\x42" * 16  # chosen by the platform for this sync
    seq, digest, mac = lock.attest_head(nonce)
    assert mac == head_attestation_mac(LOCK_KEY, "lock-a", nonce, seq, digest)
    assert seq > result.new_synced_seq  # the platform knows events are missing
    # A relay that lowers the head to match cannot make the MAC verify.
    lowered = head_attestation_mac(b"\x00" * 32, "lock-a", nonce, result.new_synced_seq,
                                   result.new_synced_hash)
    assert lowered != head_attestation_mac(LOCK_KEY, "lock-a", nonce, seq, digest)
    assert mac != head_attestation_mac(LOCK_KEY, "lock-a", nonce, result.new_synced_seq,
                                       result.new_synced_hash)
