"""verify_presentation: what an offline lock allows and denies, and why."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import cbor2
import pytest

from portner.credentials import (
    CREDENTIAL_SIZE_BUDGET,
    DEFAULT_SKEW,
    DenyReason,
    DeviceKey,
    IssuerKey,
    decode_credential,
    issue_credential,
)
from portner.credentials.cose import encode
from portner.domain.model import Actor, ActorId, MunicipalityId, Role

from .conftest import Present
from .helpers import (
    CHALLENGE,
    CTI,
    DOORS,
    INSIDE,
    ISSUED_AT,
    NOT_AFTER,
    NOT_BEFORE,
    SUBJECT,
    claims,
    protected_for,
    sign_raw,
)


def _issue(issuer: IssuerKey, device: DeviceKey, **overrides: object) -> bytes:
    args: dict[str, object] = {
        "credential_id": CTI,
        "subject": SUBJECT,
        "device_public_key": device.public_key_bytes,
        "door_ids": DOORS,
        "not_before": NOT_BEFORE,
        "not_after": NOT_AFTER,
        "issued_at": ISSUED_AT,
    }
    args.update(overrides)
    return issue_credential(issuer, **args)  # type: ignore[arg-type]


def test_round_trip_allows(present: Present, credential: bytes) -> None:
    verdict = present()
    assert verdict.allowed and verdict.reason is DenyReason.OK
    assert verdict.credential_id == CTI and verdict.subject == SUBJECT
    shown = decode_credential(credential)
    assert shown.door_ids == DOORS and shown.subject == SUBJECT and shown.credential_id == CTI
    assert (shown.not_before, shown.not_after, shown.issued_at) == (
        NOT_BEFORE,
        NOT_AFTER,
        ISSUED_AT,
    )
    assert shown.actions == ("unlock", "lock") and shown.alg == "EdDSA"


def test_every_door_of_the_path_opens(present: Present, device: DeviceKey) -> None:
    for door in DOORS:
        proof = device.sign_proof(CHALLENGE, door, "unlock")
        assert present(proof=proof, door_id=door).allowed


def test_replayed_proof_against_new_challenge_denied(present: Present) -> None:
    verdict = present(challenge=bytes(reversed(CHALLENGE)))
    assert verdict.reason is DenyReason.BAD_PROOF and not verdict.allowed


def test_proof_for_other_door_or_action_is_bad(present: Present, device: DeviceKey) -> None:
    # A proof signed for the stairwell does not open the flat door, even with the same challenge.
    assert (
        present(proof=device.sign_proof(CHALLENGE, DOORS[1], "unlock")).reason
        is DenyReason.BAD_PROOF
    )
    assert (
        present(proof=device.sign_proof(CHALLENGE, DOORS[2], "lock")).reason is DenyReason.BAD_PROOF
    )


def test_proof_from_another_device_denied(present: Present) -> None:
    thief = DeviceKey.generate()
    assert (
        present(proof=thief.sign_proof(CHALLENGE, DOORS[2], "unlock")).reason
        is DenyReason.BAD_PROOF
    )


def test_wrong_door(present: Present, device: DeviceKey) -> None:
    verdict = present(proof=device.sign_proof(CHALLENGE, "d-999999", "unlock"), door_id="d-999999")
    assert verdict.reason is DenyReason.WRONG_DOOR and verdict.credential_id == CTI


def test_wrong_action(issuer: IssuerKey, device: DeviceKey, present: Present) -> None:
    unlock_only = _issue(issuer, device, actions=["unlock"])
    lock_proof = device.sign_proof(CHALLENGE, DOORS[2], "lock")
    assert (
        present(credential=unlock_only, proof=lock_proof, action="lock").reason
        is DenyReason.WRONG_ACTION
    )
    odd_proof = device.sign_proof(CHALLENGE, DOORS[2], "open-sesame")
    assert present(proof=odd_proof, action="open-sesame").reason is DenyReason.WRONG_ACTION
    assert present(credential=unlock_only).allowed


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (NOT_BEFORE - DEFAULT_SKEW, DenyReason.OK),
        (NOT_BEFORE - DEFAULT_SKEW - timedelta(seconds=1), DenyReason.NOT_YET_VALID),
        (NOT_AFTER + DEFAULT_SKEW - timedelta(seconds=1), DenyReason.OK),
        (NOT_AFTER + DEFAULT_SKEW, DenyReason.EXPIRED),
        (NOT_AFTER + DEFAULT_SKEW + timedelta(seconds=1), DenyReason.EXPIRED),
        (datetime(2025, 3, 3, 3, 0, tzinfo=UTC), DenyReason.NOT_YET_VALID),  # 03:00, goal G2
    ],
)
def test_validity_window_with_default_skew(
    present: Present, now: datetime, reason: DenyReason
) -> None:
    assert present(now=now).reason is reason


def test_skew_is_a_parameter(present: Present) -> None:
    at = NOT_AFTER + timedelta(seconds=30)
    assert present(now=at, skew=timedelta(seconds=31)).allowed
    assert present(now=at, skew=timedelta(seconds=30)).reason is DenyReason.EXPIRED
    assert (
        present(now=NOT_BEFORE - timedelta(seconds=1), skew=timedelta(0)).reason
        is DenyReason.NOT_YET_VALID
    )


def test_now_in_another_zone_is_the_same_instant(present: Present) -> None:
    from zoneinfo import ZoneInfo

    assert present(now=INSIDE.astimezone(ZoneInfo("Europe/Oslo"))).allowed
    assert present(now=INSIDE.replace(tzinfo=None)).reason is DenyReason.MALFORMED


def test_lifetime_over_12h_denied(issuer: IssuerKey, device: DeviceKey, present: Present) -> None:
    with pytest.raises(ValueError):
        _issue(issuer, device, not_after=NOT_BEFORE + timedelta(hours=12, seconds=1))
    # A lock must not trust the issuer to have checked: sign one by hand.
    nbf = int(NOT_BEFORE.timestamp())
    too_long = encode(claims(device, exp=nbf + 12 * 3600 + 1))
    blob = sign_raw(issuer, protected_for(issuer), too_long)
    assert present(credential=blob).reason is DenyReason.LIFETIME_TOO_LONG
    exactly = sign_raw(issuer, protected_for(issuer), encode(claims(device, exp=nbf + 12 * 3600)))
    assert present(credential=exactly).allowed


def test_unknown_kid_denied(present: Present, issuer: IssuerKey) -> None:
    other = IssuerKey.generate()
    assert present(issuers={other.kid: other.public}).reason is DenyReason.UNKNOWN_ISSUER
    assert present(issuers={}).reason is DenyReason.UNKNOWN_ISSUER


def test_same_kid_other_key_is_bad_signature(present: Present, issuer: IssuerKey) -> None:
    impostor = IssuerKey.generate(kid=issuer.kid)
    assert present(issuers={issuer.kid: impostor.public}).reason is DenyReason.BAD_SIGNATURE


def test_key_rotation_by_kid(device: DeviceKey, present: Present, issuer: IssuerKey) -> None:
    new = IssuerKey.generate()
    fresh = _issue(new, device)
    both = {issuer.kid: issuer.public, new.kid: new.public}
    assert present(issuers=both).allowed
    assert present(credential=fresh, issuers=both).allowed
    # Once the old key is retired from the lock, its credentials stop working.
    assert present(issuers={new.kid: new.public}).reason is DenyReason.UNKNOWN_ISSUER
    assert present(credential=fresh, issuers={new.kid: new.public}).allowed


def test_alg_confusion_denied(issuer: IssuerKey, device: DeviceKey, present: Present) -> None:
    # Header claims ES256 under the Ed25519 issuer's kid, and is validly Ed25519-signed.
    blob = sign_raw(issuer, protected_for(issuer, alg=-7), encode(claims(device)))
    assert present(credential=blob).reason is DenyReason.UNSUPPORTED_ALG


@pytest.mark.parametrize("alg", [-35, -257, -19, 0, "EdDSA", "none"])
def test_alg_not_in_allowlist(
    issuer: IssuerKey, device: DeviceKey, present: Present, alg: object
) -> None:
    protected = cbor2.dumps({1: alg, 4: issuer.kid})
    blob = sign_raw(issuer, protected, encode(claims(device)))
    assert present(credential=blob).reason is DenyReason.UNSUPPORTED_ALG


def test_unprotected_alg_or_kid_denied(
    issuer: IssuerKey, device: DeviceKey, present: Present
) -> None:
    payload = encode(claims(device))
    kid_only = cbor2.dumps({4: issuer.kid})
    moved_alg = sign_raw(issuer, kid_only, payload, unprotected=cbor2.dumps({1: -8}))
    assert present(credential=moved_alg).reason is DenyReason.MALFORMED
    extra = sign_raw(issuer, protected_for(issuer), payload, unprotected=cbor2.dumps({1: -8}))
    assert present(credential=extra).reason is DenyReason.MALFORMED
    alg_only = cbor2.dumps({1: -8})
    moved_kid = sign_raw(issuer, alg_only, payload, unprotected=cbor2.dumps({4: issuer.kid}))
    assert present(credential=moved_kid).reason is DenyReason.MALFORMED


def test_signed_but_non_canonical_payloads_denied(
    issuer: IssuerKey, device: DeviceKey, present: Present
) -> None:
    good = encode(claims(device))
    assert present(credential=sign_raw(issuer, protected_for(issuer), good)).allowed
    # exp as an 8-byte integer: same value, non-shortest form.
    exp = int(NOT_AFTER.timestamp())
    long_exp = good.replace(
        b"\x04\x1a" + exp.to_bytes(4, "big"), b"\x04\x1b" + exp.to_bytes(8, "big")
    )
    assert long_exp != good
    # Duplicate sub: the first says one thing, the second another (cbor2 would keep the last).
    dup_sub = bytes([good[0] + 1]) + b"\x02\x65other" + good[1:]
    # Keys out of order: exp before sub.
    pairs = claims(device)
    swapped = cbor2.dumps({k: pairs[k] for k in sorted(pairs, key=lambda k: (k != 4, k))})
    # Indefinite-length door array.
    indefinite = good.replace(b"\x83\x68d-000123", b"\x9f\x68d-000123").replace(
        b"\x68d-000125", b"\x68d-000125\xff"
    )
    for payload in (long_exp, dup_sub, swapped, indefinite, good + b"\x00"):
        blob = sign_raw(issuer, protected_for(issuer), payload)
        assert present(credential=blob).reason is DenyReason.MALFORMED, payload.hex()


def test_duplicate_key_in_protected_header_denied(
    issuer: IssuerKey, device: DeviceKey, present: Present
) -> None:
    protected = b"\xa3\x01\x27\x01\x27\x04" + cbor2.dumps(issuer.kid)
    blob = sign_raw(issuer, protected, encode(claims(device)))
    assert present(credential=blob).reason is DenyReason.MALFORMED


@pytest.mark.parametrize(
    "override",
    [
        {"cti": b"\x00" * 15},
        {"sub": ""},
        {"sub": 12345},
        {"doors": []},
        {"doors": ["d-000123", "d-000123"]},
        {"doors": "d-000123"},
        {"actions": 0},
        {"actions": 4},
        {"exp": int(NOT_BEFORE.timestamp())},
        {"nbf": None},
        {"cnf": {1: {1: 2, -1: 1, -2: b"\x00" * 32}}},
        {"cnf": {3: b"\x00" * 32}},
        {"iat": -1},
    ],
)
def test_bad_claims_denied_even_when_signed(
    issuer: IssuerKey, device: DeviceKey, present: Present, override: dict[str, object]
) -> None:
    blob = sign_raw(issuer, protected_for(issuer), encode(claims(device, **override)))
    assert present(credential=blob).reason is DenyReason.MALFORMED


def test_unknown_claim_denied(issuer: IssuerKey, device: DeviceKey, present: Present) -> None:
    payload = claims(device)
    payload[3] = "aud-sneaked-in"
    blob = sign_raw(issuer, protected_for(issuer), encode(payload))
    assert present(credential=blob).reason is DenyReason.MALFORMED


def test_credential_signed_without_the_credential_aad_denied(
    issuer: IssuerKey, device: DeviceKey, present: Present
) -> None:
    # A plain CWT (empty external_aad) from the same key is not a Portner door credential.
    blob = sign_raw(issuer, protected_for(issuer), encode(claims(device)), aad=b"")
    assert present(credential=blob).reason is DenyReason.BAD_SIGNATURE


def test_es256_issuer_works(device: DeviceKey, present: Present) -> None:
    es = IssuerKey.generate("ES256")
    blob = _issue(es, device)
    assert present(credential=blob, issuers={es.kid: es.public}).allowed
    assert decode_credential(blob).alg == "ES256"
    stored = es.public.to_bytes()
    assert len(stored) == 65
    lock_copy = type(es.public).from_bytes("ES256", es.kid, stored)
    assert present(credential=blob, issuers={es.kid: lock_copy}).allowed
    flipped = blob[:-1] + bytes([blob[-1] ^ 1])
    assert (
        present(credential=flipped, issuers={es.kid: es.public}).reason is DenyReason.BAD_SIGNATURE
    )


def test_size_budget_for_three_doors(
    credential: bytes, issuer: IssuerKey, device: DeviceKey
) -> None:
    assert len(credential) <= CREDENTIAL_SIZE_BUDGET
    es = _issue(IssuerKey.generate("ES256"), device)
    assert len(es) <= CREDENTIAL_SIZE_BUDGET
    # Worst realistic path: three 8-character door ids and a 32-character actor id.
    big = _issue(
        issuer, device, subject="act-" + "f" * 28, door_ids=["d-999991", "d-999992", "d-999993"]
    )
    assert len(big) <= CREDENTIAL_SIZE_BUDGET


def test_no_names_or_national_ids_inside(issuer: IssuerKey, device: DeviceKey) -> None:
    actor = Actor(
        id=ActorId(SUBJECT),
        municipality_id=MunicipalityId("m-0301"),
        role=Role.HOME_NURSING,
        organisation="Hjemmesykepleien Sagene",
        display_name="Kari Nordmann",
        national_id="01017000027",
        hpr_number="9144889",
    )
    blob = _issue(issuer, device, subject=actor.id)
    assert re.search(rb"\d{11}", blob) is None
    for secret in (
        actor.display_name,
        "Kari",
        "Nordmann",
        actor.national_id,
        actor.hpr_number,
        actor.organisation,
    ):
        assert secret is not None and secret.encode() not in blob
    with pytest.raises(ValueError):
        _issue(issuer, device, subject=actor.national_id)
    with pytest.raises(ValueError):
        _issue(issuer, device, subject=actor.display_name)


@pytest.mark.parametrize(
    "override",
    [
        {"credential_id": b"short"},
        {"door_ids": []},
        {"door_ids": "d-000123"},
        {"door_ids": ["d-1", "d-1"]},
        {"not_after": NOT_BEFORE},
        {"not_before": NOT_BEFORE.replace(tzinfo=None)},
        {"actions": ["open"]},
        {"device_public_key": b"\x00" * 31},
        {"subject": "x" * 65},
    ],
)
def test_issue_refuses_bad_input(
    issuer: IssuerKey, device: DeviceKey, override: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        _issue(issuer, device, **override)


def test_issue_rounds_towards_shorter_validity(issuer: IssuerKey, device: DeviceKey) -> None:
    blob = _issue(
        issuer,
        device,
        not_before=NOT_BEFORE + timedelta(microseconds=1),
        not_after=NOT_AFTER + timedelta(microseconds=999_999),
    )
    shown = decode_credential(blob)
    assert shown.not_before == NOT_BEFORE + timedelta(seconds=1)
    assert shown.not_after == NOT_AFTER


@pytest.mark.parametrize(
    "junk",
    [
        b"",
        b"\x00",
        b"\xd2",
        b"\xd2\x84",
        b"\xff" * 300,
        b"\x81" * 5000,
        b"\xd2" * 1025,
        bytes(2000),
    ],
)
def test_hostile_bytes_never_raise(present: Present, junk: bytes) -> None:
    verdict = present(credential=junk)
    assert not verdict.allowed and verdict.reason is DenyReason.MALFORMED
    assert verdict.credential_id is None and verdict.subject is None
    assert not present(proof=junk).allowed
    assert not present(challenge=junk).allowed


def test_hostile_types_never_raise(present: Present) -> None:
    for kwargs in (
        {"credential": None},
        {"proof": 42},
        {"challenge": "text"},
        {"door_id": b"d-000125"},
        {"action": None},
        {"now": "2025-03-03"},
        {"issuers": None},
        {"skew": 5},
    ):
        verdict = present(**kwargs)
        assert not verdict.allowed, kwargs


def test_short_challenge_refused(present: Present, device: DeviceKey) -> None:
    short = CHALLENGE[:15]
    with pytest.raises(ValueError):
        device.sign_proof(short, DOORS[2], "unlock")
    assert present(challenge=short).reason is DenyReason.MALFORMED
    sixteen = CHALLENGE[:16]
    assert present(challenge=sixteen, proof=device.sign_proof(sixteen, DOORS[2], "unlock")).allowed


def test_decode_credential_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        decode_credential(b"\xd2\x84\x40\xa0\x40\x40")


def test_a_huge_skew_allowance_fails_closed() -> None:
    """A lock misconfigured to allow years of skew must not accept an expired credential."""
    from datetime import timedelta

    from portner.credentials import (
        MAX_SKEW,
        DenyReason,
        DeviceKey,
        IssuerKey,
        issue_credential,
        verify_presentation,
    )
    from tests.credentials.helpers import (
        CHALLENGE,
        CTI,
        DEVICE_SEED,
        DOORS,
        ISSUED_AT,
        ISSUER_SEED,
        NOT_AFTER,
        NOT_BEFORE,
        SUBJECT,
    )

    issuer, device = IssuerKey.from_seed(ISSUER_SEED), DeviceKey.from_private_bytes(DEVICE_SEED)
    blob = issue_credential(
        issuer, credential_id=CTI, subject=SUBJECT, device_public_key=device.public_key_bytes,
        door_ids=DOORS, not_before=NOT_BEFORE, not_after=NOT_AFTER, issued_at=ISSUED_AT,
    )
    proof = device.sign_proof(CHALLENGE, DOORS[0], "unlock")

    def at(now_offset: timedelta, skew: timedelta) -> DenyReason:
        return verify_presentation(
            blob, proof, challenge=CHALLENGE, door_id=DOORS[0], action="unlock",
            now=NOT_AFTER + now_offset, issuers={issuer.kid: issuer.public}, revocations=None,
            skew=skew,
        ).reason

    assert at(timedelta(minutes=9), MAX_SKEW) is DenyReason.OK  # within the largest allowance
    assert at(timedelta(days=3650), timedelta(days=36500)) is DenyReason.MALFORMED
    assert at(timedelta(minutes=9), MAX_SKEW + timedelta(seconds=1)) is DenyReason.MALFORMED
