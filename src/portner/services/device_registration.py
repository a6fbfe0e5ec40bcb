"""Register a phone's key with a proof of possession over a one-time, server-made challenge.

The challenge is stateless until it is used: 32 random bytes, an expiry and the holder it was made
for (an account id, or whatever the caller binds it to, e.g. a one-time visitor's invitation id),
MACed with a key derived from the municipality's secrets. The phone signs

    CBOR ["portner-device-registration-v1", challenge, public_key, holder]

with the new key, so the server learns that the phone holds the private key and that the key was
made for this holder, now. A used challenge is recorded (in `idempotency_keys`, in the same
transaction as the device), so it answers exactly one registration: sending the same registration
again returns the same device (a retry after a lost answer), the same challenge with another key
is refused as replayed.

No web framework here: the nurse API and the one-time visitor page both call
`register_device_with_proof`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets as _secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, Engine, insert, select

from portner.domain.errors import PortnerError
from portner.domain.model import ActorId, Device, DeviceId, DeviceStatus
from portner.services.ids import IdSource
from portner.services.keys import MunicipalitySecrets
from portner.storage import tables as t
from portner.storage.audit import AuditEntry, append_audit
from portner.storage.repository import Repository

REGISTRATION_CONTEXT: Final = "portner-device-registration-v1"
CHALLENGE_TTL: Final = timedelta(minutes=5)
_RANDOM: Final = 32
_MAC: Final = 32
# random (32) | expiry, seconds since the epoch (u64) | HMAC-SHA256 over both and the holder.
CHALLENGE_SIZE: Final = _RANDOM + 8 + _MAC
_KEY_LABEL: Final = b"portner-device-registration-challenge-v1"
_MAC_DOMAIN: Final = b"portner/registration-challenge/v1"
# Where a used challenge is recorded: a namespace of idempotency_keys no API client can use.
_SPENT_PRINCIPAL: Final = "system:device-registration"
_SPENT_METHOD: Final = "device-registration-challenge"


class RegistrationRefused(PortnerError):
    """The registration cannot be accepted; `field` names the input at fault."""

    def __init__(self, field: str, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


@dataclass(frozen=True, slots=True)
class Registration:
    device: Device
    created: bool  # False: the same registration was sent again and answered with its device


def challenge_key(secrets: MunicipalitySecrets) -> bytes:
    """The MAC key for challenges, derived from the lock master so no new secret file is needed.

    The label keeps it unrelated to every lock's log key (those use another HMAC message).
    """
    return hmac.new(secrets.lock_master, _KEY_LABEL, hashlib.sha256).digest()


def _mac(key: bytes, holder: str, random: bytes, expiry: bytes) -> bytes:
    who = holder.encode("utf-8")
    body = b"".join((_MAC_DOMAIN, len(who).to_bytes(4, "big"), who, random, expiry))
    return hmac.new(key, body, hashlib.sha256).digest()


def new_registration_challenge(key: bytes, holder: str, *, now: datetime) -> tuple[bytes, datetime]:
    """Make a challenge for `holder`; return it and when it expires."""
    expires = now.astimezone(UTC) + CHALLENGE_TTL
    random = _secrets.token_bytes(_RANDOM)
    expiry = int(expires.timestamp()).to_bytes(8, "big")
    return random + expiry + _mac(key, holder, random, expiry), expires


def registration_message(challenge: bytes, public_key: bytes, holder: str) -> bytes:
    """The bytes the phone signs: CBOR [context, challenge, public key, holder]."""
    return cbor2.dumps([REGISTRATION_CONTEXT, challenge, public_key, holder])


def check_challenge(key: bytes, holder: str, challenge: bytes, *, now: datetime) -> None:
    """Raise RegistrationRefused unless `challenge` is ours, for `holder`, and not expired."""
    if len(challenge) != CHALLENGE_SIZE:
        raise RegistrationRefused("challenge", "is not a registration challenge from this server")
    random, expiry, mac = challenge[:_RANDOM], challenge[_RANDOM:-_MAC], challenge[-_MAC:]
    if not hmac.compare_digest(mac, _mac(key, holder, random, expiry)):
        # Forged, or made for someone else: the same answer either way.
        raise RegistrationRefused("challenge", "was not issued to you by this server")
    if now.timestamp() >= int.from_bytes(expiry, "big"):
        raise RegistrationRefused("challenge", "has expired; ask for a new one")


def verify_registration_proof(
    key: bytes, *, holder: str, public_key: bytes, challenge: bytes, signature: bytes, now: datetime
) -> None:
    """Check the key, the challenge and the signature (no database); raise RegistrationRefused."""
    if len(public_key) != 32:
        raise RegistrationRefused("public_key", "must be a raw Ed25519 public key of 32 bytes")
    try:
        verifier = Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise RegistrationRefused("public_key", "is not an Ed25519 public key") from None
    check_challenge(key, holder, challenge, now=now)
    if len(signature) != 64:
        raise RegistrationRefused("signature", "must be a 64-byte Ed25519 signature")
    try:
        verifier.verify(signature, registration_message(challenge, public_key, holder))
    except InvalidSignature:
        raise RegistrationRefused(
            "signature", "does not verify with this public key over this challenge", status=401
        ) from None


def register_device_with_proof(
    engine: Engine,
    key: bytes,
    *,
    holder: str,
    actor_id: str,
    public_key: bytes,
    challenge: bytes,
    signature: bytes,
    now: datetime,
    ids: IdSource,
    by: str,
) -> Registration:
    """Verify the proof and register `public_key` for `actor_id`, all in one transaction.

    Raises RegistrationRefused (naming public_key, challenge or signature) for a bad proof, and
    for an unknown or disabled actor (field "account", status 403).
    """
    verify_registration_proof(
        key, holder=holder, public_key=public_key, challenge=challenge, signature=signature, now=now
    )
    with engine.begin() as conn:
        return register_verified_device(
            conn, holder=holder, actor_id=actor_id, public_key=public_key, challenge=challenge,
            now=now, ids=ids, by=by,
        )


def register_verified_device(
    conn: Connection,
    *,
    holder: str,
    actor_id: str,
    public_key: bytes,
    challenge: bytes,
    now: datetime,
    ids: IdSource,
    by: str,
) -> Registration:
    """The database half of `register_device_with_proof`, in the caller's transaction.

    Only for callers that have just verified the proof with `verify_registration_proof` (an API
    handler that runs inside an idempotency-key transaction).
    """
    spent = hashlib.sha256(challenge).hexdigest()
    request_hash = hashlib.sha256(public_key + holder.encode()).hexdigest()
    repo = Repository(conn)
    actor = repo.get_actor(actor_id)
    if actor is None or not actor.active:
        raise RegistrationRefused("account", "is unknown or disabled", status=403)
    used = conn.execute(
        select(t.idempotency_keys.c.request_hash, t.idempotency_keys.c.response).where(
            t.idempotency_keys.c.principal == _SPENT_PRINCIPAL,
            t.idempotency_keys.c.key == spent,
        )
    ).first()
    if used is not None:
        if used.request_hash != request_hash:
            raise RegistrationRefused("challenge", "has already been used; ask for a new one")
        device = repo.get_device(json.loads(used.response)["device_id"])
        if device is None:  # pragma: no cover - the row and the device commit together
            raise RegistrationRefused("challenge", "has already been used; ask for a new one")
        return Registration(device, created=False)
    same_key = conn.execute(
        select(t.devices.c.id, t.devices.c.actor_id, t.devices.c.status).where(
            t.devices.c.public_key == public_key
        )
    ).all()
    if any(r.status != DeviceStatus.ACTIVE.value or r.actor_id != actor_id for r in same_key):
        # A revoked (lost) phone's key stays revoked; a key is never shared by two people.
        raise RegistrationRefused("public_key", "cannot be registered; make a new key")
    existing = same_key[0] if same_key else None
    if existing is not None:
        device = repo.get_device(existing.id)
        assert device is not None
        created = False
    else:
        device = Device(DeviceId(ids.new("dev")), ActorId(actor_id), public_key, registered_at=now)
        repo.add_device(device)
        append_audit(
            conn,
            [AuditEntry(now, by, "device:registered", device.id,
                        {"actor": actor_id, "proof": "registration-v1"})],
        )
        created = True
    conn.execute(
        insert(t.idempotency_keys).values(
            principal=_SPENT_PRINCIPAL, key=spent, method_path=_SPENT_METHOD,
            request_hash=request_hash, status_code=201,
            response=json.dumps({"device_id": device.id}), created_at=now,
        )
    )
    return Registration(device, created=created)
