"""What the lock does offline: verify a presented credential and the device's proof."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from portner.credentials.cose import ALG_NAME, CoseFormatError, decode_sign1
from portner.credentials.cwt import (
    CREDENTIAL_AAD,
    MAX_CREDENTIAL_SIZE,
    parse_claims,
    profile_header,
)
from portner.credentials.keys import IssuerPublicKey, device_thumbprint
from portner.credentials.proof import ACTION_BITS, PROOF_SIZE, proof_message
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME

if TYPE_CHECKING:
    from portner.credentials.revocation import RevocationState

# Allowance for the lock's clock drifting from the issuer's (documented in the profile).
DEFAULT_SKEW: Final = timedelta(seconds=120)
# The largest clock-skew allowance a lock may be configured with (goal G6 suggests +-5 min).
MAX_SKEW: Final = timedelta(minutes=10)
_MAX_LIFETIME_S: Final = int(MAX_CREDENTIAL_LIFETIME.total_seconds())


class DenyReason(StrEnum):
    """Why a lock said no (or "ok"); the lock logs it with the event."""

    OK = "ok"
    MALFORMED = "malformed"
    UNSUPPORTED_ALG = "unsupported_alg"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_SIGNATURE = "bad_signature"
    BAD_PROOF = "bad_proof"
    WRONG_DOOR = "wrong_door"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    WRONG_ACTION = "wrong_action"
    # Refusals a lock makes itself before or instead of checking the credential.
    UNKNOWN_CHALLENGE = "unknown_challenge"
    STALE_CHALLENGE = "stale_challenge"
    TIME_UNKNOWN = "time_unknown"
    BATTERY_DEPLETED = "battery_depleted"
    JAMMED = "jammed"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The lock's decision. Ids are set only once the issuer's signature has verified."""

    allowed: bool
    reason: DenyReason
    credential_id: bytes | None
    subject: str | None


_MALFORMED: Final = Verdict(False, DenyReason.MALFORMED, None, None)


def verify_presentation(
    credential: bytes,
    proof: bytes,
    *,
    challenge: bytes,
    door_id: str,
    action: str,
    now: datetime,
    issuers: Mapping[bytes, IssuerPublicKey],
    revocations: RevocationState | None,
    skew: timedelta = DEFAULT_SKEW,
) -> Verdict:
    """Decide offline whether this credential and proof open `door_id` for `action` at `now`.

    Never raises: any unexpected failure on hostile input is a MALFORMED deny.
    """
    if not isinstance(skew, timedelta) or not timedelta(0) <= skew <= MAX_SKEW:
        # A lock configured with a huge allowance would accept expired keys: fail closed.
        return _MALFORMED
    try:
        return _verify(
            credential, proof, challenge, door_id, action, now, issuers, revocations, skew
        )
    except Exception:  # noqa: BLE001 - fail closed on anything we did not foresee
        return _MALFORMED


def _verify(
    credential: bytes,
    proof: bytes,
    challenge: bytes,
    door_id: str,
    action: str,
    now: datetime,
    issuers: Mapping[bytes, IssuerPublicKey],
    revocations: RevocationState | None,
    skew: timedelta,
) -> Verdict:
    # 1. Structure: a strict, canonical, tagged COSE_Sign1 with the profile's header.
    if len(credential) > MAX_CREDENTIAL_SIZE:
        return _MALFORMED
    try:
        msg = decode_sign1(credential if type(credential) is bytes else bytes(credential))
        alg, kid = profile_header(msg)
    except (CoseFormatError, ValueError, TypeError, LookupError):
        return _MALFORMED
    # 2. Algorithm allowlist, 3. issuer by kid, and no algorithm confusion between the two.
    if type(alg) is not int or alg not in ALG_NAME:
        return Verdict(False, DenyReason.UNSUPPORTED_ALG, None, None)
    issuer = issuers.get(kid)
    if issuer is None:
        return Verdict(False, DenyReason.UNKNOWN_ISSUER, None, None)
    if issuer.cose_alg != alg:
        return Verdict(False, DenyReason.UNSUPPORTED_ALG, None, None)
    # 4. Issuer signature, before a single claim is parsed.
    if not issuer.verify(msg.signature, msg.to_be_signed(CREDENTIAL_AAD)):
        return Verdict(False, DenyReason.BAD_SIGNATURE, None, None)
    # 5. Claims.
    try:
        claims = parse_claims(msg.payload)
    except (CoseFormatError, ValueError, TypeError, LookupError):
        return _MALFORMED

    cti, sub = claims.cti, claims.sub
    # 6. Lifetime cap: a lock never honours a credential meant to live longer than 12 h.
    if claims.exp - claims.nbf > _MAX_LIFETIME_S:
        return Verdict(False, DenyReason.LIFETIME_TOO_LONG, cti, sub)
    # 7. Proof of possession over THIS lock's challenge, door and action, with the cnf key.
    if type(challenge) is not bytes:
        challenge = bytes(challenge)
    try:
        message = proof_message(challenge, door_id, action)
    except ValueError:
        return Verdict(False, DenyReason.MALFORMED, cti, sub)
    if len(proof) != PROOF_SIZE:
        return Verdict(False, DenyReason.BAD_PROOF, cti, sub)
    try:
        Ed25519PublicKey.from_public_bytes(claims.cnf_x).verify(proof, message)
    except (InvalidSignature, ValueError):
        return Verdict(False, DenyReason.BAD_PROOF, cti, sub)
    # 8. Door, 9. action.
    if door_id not in claims.doors:
        return Verdict(False, DenyReason.WRONG_DOOR, cti, sub)
    bit = ACTION_BITS.get(action)
    if bit is None or not claims.action_mask & bit:
        return Verdict(False, DenyReason.WRONG_ACTION, cti, sub)
    # 10. Time: valid on [nbf - skew, exp + skew), half-open like the CWT exp rule.
    t = now.timestamp() if now.utcoffset() is not None else None
    if t is None:
        return Verdict(False, DenyReason.MALFORMED, cti, sub)
    allowance = skew.total_seconds()
    if t < claims.nbf - allowance:
        return Verdict(False, DenyReason.NOT_YET_VALID, cti, sub)
    if t >= claims.exp + allowance:
        return Verdict(False, DenyReason.EXPIRED, cti, sub)
    # 11. Revocation. An entry stays in force until its expiry + skew, like the credential.
    if revocations is not None and revocations.is_revoked(
        claims.cti, device_thumbprint(claims.cnf_x), now - skew
    ):
        return Verdict(False, DenyReason.REVOKED, cti, sub)
    return Verdict(True, DenyReason.OK, cti, sub)
