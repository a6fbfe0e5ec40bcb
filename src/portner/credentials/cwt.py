"""The door credential: a CWT (RFC 8392) claims set in a COSE_Sign1, and its strict parser."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import cbor2

from portner.credentials.cose import (
    ALG_BY_NAME,
    ALG_NAME,
    HDR_ALG,
    HDR_KID,
    CoseFormatError,
    Sign1,
    array_head,
    decode_sign1,
    encode,
    loads_raw,
    sign1_from_bytes,
    tstr,
    uint,
)
from portner.credentials.keys import (
    CRV,
    CRV_ED25519,
    KID_MAX,
    KID_MIN,
    KTY,
    KTY_OKP,
    IssuerKey,
    X,
    device_cose_key,
)
from portner.credentials.proof import ACTION_BITS
from portner.domain.windows import MAX_CREDENTIAL_LIFETIME, require_aware

# Claim keys. 2..8 are registered (RFC 8392, RFC 8747); the private-use range starts below -65536.
SUB: Final = 2
EXP: Final = 4
NBF: Final = 5
IAT: Final = 6
CTI: Final = 7
CNF: Final = 8
DOORS: Final = -65537
ACTIONS: Final = -65538
CNF_COSE_KEY: Final = 1  # RFC 8747 §3.2
# In RFC 8949 deterministic order: unsigned keys ascending, then -65537 (3a00010000), -65538.
_CLAIM_ORDER: Final = (SUB, EXP, NBF, IAT, CTI, CNF, DOORS, ACTIONS)

# Signed as external_aad so that no other issuer-signed object can pass for a credential.
CREDENTIAL_AAD: Final = b"portner-credential-v1"
CREDENTIAL_ID_SIZE: Final = 16
MAX_SUBJECT: Final = 64
MAX_DOOR_ID: Final = 32
MAX_DOORS: Final = 16
# Budget for one door path (up to 3 doors); the hard limit is what a lock reads at all.
CREDENTIAL_SIZE_BUDGET: Final = 256
MAX_CREDENTIAL_SIZE: Final = 1024
_MAX_TIME: Final = 2**32 - 1  # NumericDate as uint32: fits lock firmware, good until 2106
_DEFAULT_ACTIONS: Final = ("unlock", "lock")
_BARE_NATIONAL_ID = re.compile(r"\d{11}")
_ACTION_MASK_ALL: Final = sum(ACTION_BITS.values())
_MAX_LIFETIME_S: Final = MAX_CREDENTIAL_LIFETIME.total_seconds()


@dataclass(frozen=True, slots=True)
class CredentialClaims:
    """What a credential says, decoded without any verification (tooling and display only)."""

    credential_id: bytes
    subject: str
    device_public_key: bytes
    door_ids: tuple[str, ...]
    actions: tuple[str, ...]
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    kid: bytes
    alg: str

    @property
    def lifetime(self) -> timedelta:
        """How long the credential is valid (without the lock's skew allowance)."""
        return self.not_after - self.not_before


@dataclass(frozen=True, slots=True)
class RawClaims:
    """The parsed claims as the verifier uses them: integer seconds, no datetime objects."""

    cti: bytes
    sub: str
    cnf_x: bytes
    doors: tuple[str, ...]
    action_mask: int
    nbf: int
    exp: int
    iat: int


def profile_header(msg: Sign1) -> tuple[Any, bytes]:
    """Return (alg, kid) from a protected header of exactly {1: alg, 4: kid}; nothing unprotected.

    `alg` is returned unchecked so that the caller can tell "unsupported" from "malformed".
    """
    if msg.unprotected:
        raise CoseFormatError("unprotected header must be empty")
    prot = msg.protected
    if set(prot) != {HDR_ALG, HDR_KID}:
        raise CoseFormatError("protected header must hold exactly alg and kid")
    kid = prot[HDR_KID]
    if type(kid) is not bytes or not KID_MIN <= len(kid) <= KID_MAX:
        raise CoseFormatError("bad kid")
    return prot[HDR_ALG], kid


def _time(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= _MAX_TIME:
        raise CoseFormatError("times are whole seconds since the epoch, as uint32")
    return value


def parse_claims(payload: bytes) -> RawClaims:
    """Parse and check the claims set: exactly the profile's claims, each of its exact type.

    Specialised rather than generic because it runs on every door opening: every value's type is
    checked exactly, key order is checked as a tuple, and one re-encoding proves the encoding.
    """
    claims = loads_raw(payload)
    if type(claims) is not dict or tuple(claims) != _CLAIM_ORDER:
        raise CoseFormatError("claims set must hold exactly the profile's claims, in order")
    sub, cti, doors, mask = claims[SUB], claims[CTI], claims[DOORS], claims[ACTIONS]
    if type(sub) is not str or not 1 <= len(sub) <= MAX_SUBJECT:
        raise CoseFormatError("bad sub")
    if type(cti) is not bytes or len(cti) != CREDENTIAL_ID_SIZE:
        raise CoseFormatError("bad cti")
    cnf = claims[CNF]
    if type(cnf) is not dict or tuple(cnf) != (CNF_COSE_KEY,):
        raise CoseFormatError("cnf must hold exactly a COSE_Key")
    key = cnf[CNF_COSE_KEY]
    if type(key) is not dict or tuple(key) != (KTY, CRV, X):
        raise CoseFormatError("cnf key must be {kty, crv, x}")
    kty, crv, x = key[KTY], key[CRV], key[X]
    if type(kty) is not int or type(crv) is not int or type(x) is not bytes:
        raise CoseFormatError("cnf key must be OKP Ed25519")
    if kty != KTY_OKP or crv != CRV_ED25519 or len(x) != 32:
        raise CoseFormatError("cnf key must be OKP Ed25519")
    if type(doors) is not list or not 1 <= len(doors) <= MAX_DOORS:
        raise CoseFormatError("bad door list")
    for door in doors:
        if type(door) is not str or not 1 <= len(door) <= MAX_DOOR_ID:
            raise CoseFormatError("bad door id")
    if len(set(doors)) != len(doors):
        raise CoseFormatError("repeated door id")
    if type(mask) is not int or not 1 <= mask <= _ACTION_MASK_ALL:
        raise CoseFormatError("bad action mask")
    nbf, exp, iat = _time(claims[NBF]), _time(claims[EXP]), _time(claims[IAT])
    if exp <= nbf:
        raise CoseFormatError("exp must be after nbf")
    # Every value is now known to be of a plain type, so re-encoding reproduces the input
    # exactly when (and only when) it used shortest heads and had nothing after it.
    if cbor2.dumps(claims) != payload:
        raise CoseFormatError("not in deterministic encoding")
    return RawClaims(cti, sub, x, tuple(doors), mask, nbf, exp, iat)


def _seconds(value: datetime, what: str, *, round_up: bool) -> int:
    if value.utcoffset() is None:  # naive (or a zone that gives no offset)
        require_aware(value, what)  # raises
    ts = value.timestamp()  # of the instant, whatever zone it is written in
    # Rounding nbf up and exp down can only shorten validity, never lengthen it.
    return math.ceil(ts) if round_up else math.floor(ts)


def _utc(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


@lru_cache(maxsize=4096)
def _pseudonymous(subject: str) -> bool:
    # A pseudonymous actor id never has spaces (names do) and is never a bare 11-digit number.
    # Cached: a shift issues many credentials to each of a few hundred staff members.
    return not any(ch.isspace() for ch in subject) and not _BARE_NATIONAL_ID.fullmatch(subject)


@lru_cache(maxsize=16)
def _protected_bytes(cose_alg: int, kid: bytes) -> bytes:
    return encode({HDR_ALG: cose_alg, HDR_KID: kid})


# The fixed parts of the claims map, in deterministic order (see _CLAIM_ORDER): the map head,
# each key, and the cnf wrapper {1: {1: 1, -1: 6, -2: h'..32 bytes..'}} up to the key bytes.
_MAP_OF_8: Final = b"\xa8"
_KEY_SUB: Final = b"\x02"
_KEY_EXP: Final = b"\x04"
_KEY_NBF: Final = b"\x05"
_KEY_IAT: Final = b"\x06"
_KEY_CTI_16: Final = b"\x07\x50"  # key 7, then the head of a 16-byte bstr
_KEY_CNF_OKP: Final = b"\x08\xa1\x01\xa3\x01\x01\x20\x06\x21\x58\x20"
_KEY_DOORS: Final = b"\x3a\x00\x01\x00\x00"  # -65537
_KEY_ACTIONS: Final = b"\x3a\x00\x01\x00\x01"  # -65538


@lru_cache(maxsize=65536)
def _text_item(value: str) -> bytes:
    return tstr(value)


@lru_cache(maxsize=65536)
def _doors_item(doors: tuple[str, ...]) -> bytes:
    return _KEY_DOORS + array_head(len(doors)) + b"".join(map(tstr, doors))


def _time_item(value: int) -> bytes:
    # Every real NumericDate is at least 2**16, so its head is 0x1a and four bytes (uint32).
    return b"\x1a" + value.to_bytes(4, "big") if value >= 65536 else uint(value)


def _claims_bytes(
    sub: str, exp: int, nbf: int, iat: int, cti: bytes, x: bytes, doors: list[str], mask: int
) -> bytes:
    """The deterministic CBOR of the claims map, written directly (one pass, no generic encoder).

    The same bytes as cbor2.dumps of the map in _CLAIM_ORDER (which `encode` would produce):
    every value is of a plain type, heads are shortest-form, keys are in RFC 8949 order.
    """
    return b"".join(
        (
            _MAP_OF_8, _KEY_SUB, _text_item(sub), _KEY_EXP, _time_item(exp), _KEY_NBF,
            _time_item(nbf), _KEY_IAT, _time_item(iat), _KEY_CTI_16, cti, _KEY_CNF_OKP, x,
            _doors_item(tuple(doors)), _KEY_ACTIONS, uint(mask),
        )
    )


def issue_credential(
    issuer: IssuerKey,
    *,
    credential_id: bytes,
    subject: str,
    device_public_key: bytes,
    door_ids: Sequence[str],
    not_before: datetime,
    not_after: datetime,
    issued_at: datetime,
    actions: Sequence[str] = _DEFAULT_ACTIONS,
) -> bytes:
    """Sign a door credential. Raises ValueError for anything a lock would refuse."""
    if type(credential_id) is not bytes or len(credential_id) != CREDENTIAL_ID_SIZE:
        raise ValueError(f"credential_id must be {CREDENTIAL_ID_SIZE} bytes")
    if not isinstance(subject, str) or not 1 <= len(subject) <= MAX_SUBJECT:
        raise ValueError(f"subject must be 1..{MAX_SUBJECT} characters")
    subject = str(subject)
    if not _pseudonymous(subject):
        raise ValueError("subject must be a pseudonymous actor id, not a name or national id")
    if isinstance(door_ids, str) or not 1 <= len(door_ids) <= MAX_DOORS:
        raise ValueError(f"door_ids must be a sequence of 1..{MAX_DOORS} door ids")
    doors = [str(d) for d in door_ids]
    if any(not 1 <= len(d) <= MAX_DOOR_ID for d in doors) or len(set(doors)) != len(doors):
        raise ValueError(f"door ids must be distinct and 1..{MAX_DOOR_ID} characters")
    if isinstance(actions, str) or not actions or any(a not in ACTION_BITS for a in actions):
        raise ValueError(f"actions must be drawn from {sorted(ACTION_BITS)}")
    nbf = _seconds(not_before, "not_before", round_up=True)
    exp = _seconds(not_after, "not_after", round_up=False)
    iat = _seconds(issued_at, "issued_at", round_up=False)
    if exp <= nbf:
        raise ValueError("not_after must be after not_before")
    if exp - nbf > _MAX_LIFETIME_S:
        raise ValueError(f"a credential lives at most {MAX_CREDENTIAL_LIFETIME}")
    if not (0 <= nbf <= _MAX_TIME and 0 <= exp <= _MAX_TIME and 0 <= iat <= _MAX_TIME):
        raise ValueError("times out of range")
    x = device_cose_key(bytes(device_public_key))[X]  # checks the key is 32 bytes
    mask = sum({ACTION_BITS[a] for a in actions})
    payload = _claims_bytes(subject, exp, nbf, iat, credential_id, x, doors, mask)
    protected = _protected_bytes(ALG_BY_NAME[issuer.alg], issuer.kid)
    blob = sign1_from_bytes(protected, payload, issuer.sign, external_aad=CREDENTIAL_AAD)
    if len(blob) > MAX_CREDENTIAL_SIZE:
        raise ValueError("credential too large")
    return blob


def decode_credential(blob: bytes) -> CredentialClaims:
    """Decode a credential WITHOUT verifying it (debug display). Raises ValueError if malformed."""
    if len(blob) > MAX_CREDENTIAL_SIZE:
        raise CoseFormatError("credential too large")
    msg = decode_sign1(bytes(blob))
    alg, kid = profile_header(msg)
    if type(alg) is not int or alg not in ALG_NAME:
        raise CoseFormatError("unsupported algorithm")
    raw = parse_claims(msg.payload)
    actions = tuple(name for name, bit in ACTION_BITS.items() if raw.action_mask & bit)
    return CredentialClaims(
        credential_id=raw.cti,
        subject=raw.sub,
        device_public_key=raw.cnf_x,
        door_ids=raw.doors,
        actions=actions,
        not_before=_utc(raw.nbf),
        not_after=_utc(raw.exp),
        issued_at=_utc(raw.iat),
        kid=kid,
        alg=ALG_NAME[alg],
    )
