"""Fixed test inputs and byte-level builders shared by the credential tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2

from portner.credentials import DeviceKey, IssuerKey, cwt
from portner.credentials.cose import ALG_BY_NAME, sig_structure

# RFC 8032 §7.1 TEST 1 and TEST 2 secret keys: public test keys, never used outside tests.
ISSUER_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
DEVICE_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
CTI = bytes.fromhex("00112233445566778899aabbccddeeff")
SUBJECT = "act-3f9c0a1b2c4d5e6f"
DOORS = ("d-000123", "d-000124", "d-000125")
NOT_BEFORE = datetime(2025, 3, 3, 7, 45, tzinfo=UTC)
NOT_AFTER = datetime(2025, 3, 3, 15, 30, tzinfo=UTC)
ISSUED_AT = datetime(2025, 3, 3, 6, 0, tzinfo=UTC)
CHALLENGE = bytes(range(32))
INSIDE = NOT_BEFORE + timedelta(hours=2)


def claims(device: DeviceKey, **overrides: Any) -> dict[int, Any]:
    """A profile claims map; override by claim key name (sub, exp, nbf, ...)."""
    base: dict[str, Any] = {
        "sub": SUBJECT,
        "exp": int(NOT_AFTER.timestamp()),
        "nbf": int(NOT_BEFORE.timestamp()),
        "iat": int(ISSUED_AT.timestamp()),
        "cti": CTI,
        "cnf": {1: {1: 1, -1: 6, -2: device.public_key_bytes}},
        "doors": list(DOORS),
        "actions": 3,
    }
    base.update(overrides)
    keys = {
        "sub": cwt.SUB,
        "exp": cwt.EXP,
        "nbf": cwt.NBF,
        "iat": cwt.IAT,
        "cti": cwt.CTI,
        "cnf": cwt.CNF,
        "doors": cwt.DOORS,
        "actions": cwt.ACTIONS,
    }
    return {keys[name]: value for name, value in base.items() if value is not None}


def sign_raw(
    issuer: IssuerKey,
    protected: bytes,
    payload: bytes,
    *,
    aad: bytes = cwt.CREDENTIAL_AAD,
    unprotected: bytes = b"\xa0",
    tag: bytes = b"\xd2",
) -> bytes:
    """Assemble a COSE_Sign1 from exact byte pieces, validly signed over exactly those bytes."""
    signature = issuer.sign(sig_structure(protected, aad, payload))
    body = cbor2.dumps(protected) + unprotected + cbor2.dumps(payload) + cbor2.dumps(signature)
    return tag + b"\x84" + body


def protected_for(issuer: IssuerKey, alg: int | None = None) -> bytes:
    """The profile's protected header bytes {1: alg, 4: kid}."""
    return cbor2.dumps({1: ALG_BY_NAME[issuer.alg] if alg is None else alg, 4: issuer.kid})
