"""Revocation lists: signed, versioned, auto-expiring; and what the lock does with them."""

from __future__ import annotations

from datetime import timedelta

import cbor2
import pytest

from portner.credentials import (
    DEFAULT_SKEW,
    DenyReason,
    DeviceKey,
    IssuerKey,
    IssuerPublicKey,
    ListVerdict,
    RevocationState,
    device_thumbprint,
    issue_revocation_list,
)
from portner.credentials.cose import encode
from portner.credentials.revocation import PRUNE_AFTER

from .conftest import Present
from .helpers import CTI, INSIDE, ISSUED_AT, NOT_AFTER, claims, protected_for, sign_raw

OTHER_CTI = bytes(16)
Issuers = dict[bytes, IssuerPublicKey]


def _list(issuer: IssuerKey, version: int, *, creds=(), devices=()) -> bytes:  # type: ignore[no-untyped-def]
    return issue_revocation_list(
        issuer, version=version, issued_at=ISSUED_AT, credentials=list(creds), devices=list(devices)
    )


def _state(
    issuer: IssuerKey, issuers: dict[bytes, IssuerPublicKey], blob: bytes
) -> RevocationState:
    state = RevocationState()
    assert state.apply(blob, issuers, INSIDE) == (True, "ok")
    return state


def test_revoked_credential_denied(issuer: IssuerKey, issuers: Issuers, present: Present) -> None:
    state = _state(issuer, issuers, _list(issuer, 1, creds=[(CTI, NOT_AFTER)]))
    verdict = present(revocations=state)
    assert verdict.reason is DenyReason.REVOKED and verdict.credential_id == CTI
    # Other credentials are unaffected.
    other = _state(issuer, issuers, _list(issuer, 1, creds=[(OTHER_CTI, NOT_AFTER)]))
    assert present(revocations=other).allowed


def test_revoked_device_kills_all_its_credentials(
    issuer: IssuerKey, issuers: Issuers, device: DeviceKey, present: Present
) -> None:
    lost = device_thumbprint(device.public_key_bytes)
    assert lost == device.thumbprint
    state = _state(
        issuer, issuers, _list(issuer, 1, devices=[(lost, NOT_AFTER + timedelta(hours=12))])
    )
    assert present(revocations=state).reason is DenyReason.REVOKED


def test_revocation_in_force_through_the_skew_window(
    issuer: IssuerKey, issuers: Issuers, present: Present
) -> None:
    # The entry expires with the credential, yet the lock accepts the credential up to exp + skew;
    # the revocation must hold exactly as long.
    state = _state(issuer, issuers, _list(issuer, 1, creds=[(CTI, NOT_AFTER)]))
    last_second = NOT_AFTER + DEFAULT_SKEW - timedelta(seconds=1)
    assert present(revocations=state, now=last_second).reason is DenyReason.REVOKED
    assert state.is_revoked(CTI, b"", NOT_AFTER - timedelta(seconds=1))
    assert not state.is_revoked(CTI, b"", NOT_AFTER)


def test_rolled_back_or_equal_list_rejected(
    issuer: IssuerKey, issuers: Issuers, present: Present
) -> None:
    state = RevocationState()
    v2 = _list(issuer, 2, creds=[(CTI, NOT_AFTER)])
    assert state.apply(v2, issuers, INSIDE) == (True, ListVerdict.OK)
    assert state.version == 2
    v1_clean = _list(issuer, 1)
    assert state.apply(v1_clean, issuers, INSIDE) == (False, ListVerdict.STALE_VERSION)
    v2_clean = _list(issuer, 2)
    assert state.apply(v2_clean, issuers, INSIDE) == (False, ListVerdict.STALE_VERSION)
    assert state.apply(v2, issuers, INSIDE) == (False, "stale_version")  # replay of the same list
    # The rejected lists changed nothing: the credential is still revoked.
    assert state.version == 2
    assert present(revocations=state).reason is DenyReason.REVOKED
    # A newer list replaces the whole set (un-revoking is possible, by the issuer only).
    assert state.apply(_list(issuer, 3), issuers, INSIDE) == (True, "ok")
    assert present(revocations=state).allowed


def test_list_signed_by_unknown_key_rejected(issuer: IssuerKey, issuers: Issuers) -> None:
    stranger = IssuerKey.generate()
    state = RevocationState()
    assert state.apply(_list(stranger, 99), issuers, INSIDE) == (False, ListVerdict.UNKNOWN_ISSUER)
    impostor = IssuerKey.generate(kid=issuer.kid)
    assert state.apply(_list(impostor, 99), issuers, INSIDE) == (False, ListVerdict.BAD_SIGNATURE)
    assert state.version == 0


def test_es256_list_and_alg_confusion(issuer: IssuerKey, issuers: Issuers) -> None:
    es = IssuerKey.generate("ES256")
    state = RevocationState()
    assert state.apply(_list(es, 1), {es.kid: es.public}, INSIDE) == (True, "ok")
    payload = cbor2.loads(cbor2.loads(_list(issuer, 5)).value[2])
    confused = sign_raw(
        issuer, protected_for(issuer, alg=-7), encode(payload), aad=b"portner-revocation-v1"
    )
    assert RevocationState().apply(confused, issuers, INSIDE) == (False, "unsupported_alg")


def test_credential_is_not_a_revocation_list(
    issuer: IssuerKey, issuers: Issuers, credential: bytes
) -> None:
    # Different external_aad: the signature cannot verify in the other role.
    assert RevocationState().apply(credential, issuers, INSIDE) == (False, "bad_signature")


def test_malformed_lists_rejected_without_raising(
    issuer: IssuerKey, issuers: Issuers, device: DeviceKey
) -> None:
    state = RevocationState()
    for junk in (b"", b"\x00", b"\xd2\x84", bytes(100), _list(issuer, 1) + b"\x00"):
        assert state.apply(junk, issuers, INSIDE) == (False, ListVerdict.MALFORMED)
    aad = b"portner-revocation-v1"
    bad_bodies = [
        {1: 0, 2: 1, 3: [], 4: []},  # version 0
        {1: 1, 2: 1, 3: [[CTI, 5], [CTI, 6]], 4: []},  # repeated entry
        {1: 1, 2: 1, 3: [[b"\xff" * 16, 5], [CTI, 6]], 4: []},  # unsorted
        {1: 1, 2: 1, 3: [[b"\x01" * 15, 5]], 4: []},  # short id
        {1: 1, 2: 1, 3: [], 4: [[b"\x01" * 16, 5]]},  # short thumbprint
        {1: 1, 2: 1, 3: []},  # missing devices
        claims(device),  # a credential's claims
    ]
    for body in bad_bodies:
        blob = sign_raw(issuer, protected_for(issuer), encode(body), aad=aad)
        assert state.apply(blob, issuers, INSIDE) == (False, "malformed"), body
    assert state.version == 0


def test_entries_auto_expire(issuer: IssuerKey, issuers: Issuers, device: DeviceKey) -> None:
    long_gone = INSIDE - PRUNE_AFTER - timedelta(seconds=1)
    blob = _list(issuer, 1, creds=[(CTI, NOT_AFTER), (OTHER_CTI, long_gone)])
    state = _state(issuer, issuers, blob)
    assert state.entry_count == 1  # the long-expired entry is not stored at all
    assert state.is_revoked(CTI, device.thumbprint, INSIDE)
    assert not state.is_revoked(CTI, device.thumbprint, NOT_AFTER + timedelta(seconds=1))


def test_capacity_is_bounded(issuer: IssuerKey, issuers: Issuers) -> None:
    ids = [i.to_bytes(16, "big") for i in range(1, 6)]
    blob = _list(issuer, 1, creds=[(i, NOT_AFTER) for i in ids])
    small = RevocationState(capacity=4)
    assert small.apply(blob, issuers, INSIDE) == (False, ListVerdict.OVER_CAPACITY)
    fits = RevocationState(capacity=5)
    assert fits.apply(blob, issuers, INSIDE) == (True, "ok")
    assert fits.load == 1.0


def test_issue_list_dedupes_and_sorts(issuer: IssuerKey) -> None:
    later = NOT_AFTER + timedelta(hours=1)
    a = _list(issuer, 1, creds=[(CTI, NOT_AFTER), (OTHER_CTI, NOT_AFTER), (CTI, later)])
    b = _list(issuer, 1, creds=[(OTHER_CTI, NOT_AFTER), (CTI, later)])
    assert a == b  # Ed25519 is deterministic, so the same content gives the same bytes
    with pytest.raises(ValueError):
        _list(issuer, 0)
    with pytest.raises(ValueError):
        _list(issuer, 1, creds=[(b"short", NOT_AFTER)])
    with pytest.raises(ValueError):
        _list(issuer, 1, devices=[(bytes(32), NOT_AFTER.replace(tzinfo=None))])
