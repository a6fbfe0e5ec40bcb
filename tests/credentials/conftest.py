"""Fixtures for the credential tests: real keys, real signatures, fixed times."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from portner.credentials import (
    DeviceKey,
    IssuerKey,
    IssuerPublicKey,
    RevocationState,
    Verdict,
    issue_credential,
    verify_presentation,
)

from .helpers import (
    CHALLENGE,
    CTI,
    DEVICE_SEED,
    DOORS,
    INSIDE,
    ISSUED_AT,
    ISSUER_SEED,
    NOT_AFTER,
    NOT_BEFORE,
    SUBJECT,
)


@pytest.fixture(scope="session")
def issuer() -> IssuerKey:
    """The test municipality's Ed25519 issuer key."""
    return IssuerKey.from_seed(ISSUER_SEED)


@pytest.fixture(scope="session")
def device() -> DeviceKey:
    """The test nurse's phone key."""
    return DeviceKey.from_private_bytes(DEVICE_SEED)


@pytest.fixture(scope="session")
def issuers(issuer: IssuerKey) -> dict[bytes, IssuerPublicKey]:
    """What a lock trusts: the issuer's public key by kid."""
    return {issuer.kid: issuer.public}


@pytest.fixture(scope="session")
def credential(issuer: IssuerKey, device: DeviceKey) -> bytes:
    """A valid credential for the three doors of one path."""
    return issue_credential(
        issuer,
        credential_id=CTI,
        subject=SUBJECT,
        device_public_key=device.public_key_bytes,
        door_ids=DOORS,
        not_before=NOT_BEFORE,
        not_after=NOT_AFTER,
        issued_at=ISSUED_AT,
    )


@pytest.fixture(scope="session")
def proof(device: DeviceKey) -> bytes:
    """The device's proof for unlocking the flat door over CHALLENGE."""
    return device.sign_proof(CHALLENGE, DOORS[2], "unlock")


Present = Callable[..., Verdict]


@pytest.fixture
def present(credential: bytes, proof: bytes, issuers: dict[bytes, IssuerPublicKey]) -> Present:
    """verify_presentation with the happy-path arguments, any of which a test may override."""

    def call(**overrides: Any) -> Verdict:
        args: dict[str, Any] = {
            "credential": credential,
            "proof": proof,
            "challenge": CHALLENGE,
            "door_id": DOORS[2],
            "action": "unlock",
            "now": INSIDE,
            "issuers": issuers,
            "revocations": RevocationState(),
        }
        args.update(overrides)
        cred, prf = args.pop("credential"), args.pop("proof")
        return verify_presentation(cred, prf, **args)

    return call
