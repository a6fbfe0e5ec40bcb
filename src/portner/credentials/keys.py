"""Issuer and device keys, COSE_Key encodings and RFC 9679 key thumbprints."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from portner.credentials.cose import ALG_BY_NAME, encode
from portner.credentials.proof import proof_message

# COSE_Key labels and values (RFC 9052 §7, RFC 9053 §7).
KTY: Final = 1
KTY_OKP: Final = 1
KTY_EC2: Final = 2
CRV: Final = -1
CRV_P256: Final = 1
CRV_ED25519: Final = 6
X: Final = -2
Y: Final = -3

KID_MIN: Final = 4
KID_MAX: Final = 8
_P256_ORDER: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw


def cose_key_thumbprint(cose_key: Mapping[int, Any]) -> bytes:
    """RFC 9679 thumbprint: SHA-256 of the deterministic encoding of the required parameters."""
    kty = cose_key[KTY]
    required = (KTY, CRV, X) if kty == KTY_OKP else (KTY, CRV, X, Y) if kty == KTY_EC2 else None
    if required is None:
        raise ValueError("unsupported key type")
    return hashlib.sha256(encode({label: cose_key[label] for label in required})).digest()


def device_cose_key(device_public_key: bytes) -> dict[int, Any]:
    """Return a device's COSE_Key: OKP / Ed25519 with the raw 32-byte public key as x."""
    if type(device_public_key) is not bytes or len(device_public_key) != 32:
        raise ValueError("a device public key is 32 raw Ed25519 bytes")
    return {KTY: KTY_OKP, CRV: CRV_ED25519, X: device_public_key}


# Deterministic encoding of {1: 1, -1: 6, -2: h'<32 bytes>'} up to the key bytes.
_OKP_ED25519_PREFIX: Final = bytes.fromhex("a301012006215820")


def device_thumbprint(device_public_key: bytes) -> bytes:
    """RFC 9679 COSE key thumbprint (32 bytes, SHA-256) of a device's Ed25519 public key."""
    if type(device_public_key) is not bytes or len(device_public_key) != 32:
        raise ValueError("a device public key is 32 raw Ed25519 bytes")
    # Same bytes as cose_key_thumbprint(device_cose_key(...)), without the generic encoder.
    return hashlib.sha256(_OKP_ED25519_PREFIX + device_public_key).digest()


def _check_kid(kid: bytes) -> bytes:
    if type(kid) is not bytes or not KID_MIN <= len(kid) <= KID_MAX:
        raise ValueError(f"kid must be {KID_MIN}..{KID_MAX} bytes")
    return kid


class IssuerPublicKey:
    """An issuer's public key as a lock holds it: the key id, the algorithm and the loaded key."""

    __slots__ = ("kid", "alg", "cose_alg", "_key")

    def __init__(self, alg: str, kid: bytes, key: Ed25519PublicKey | ec.EllipticCurvePublicKey):
        """Wrap an already loaded public key; prefer `from_bytes`."""
        if alg == "EdDSA" and not isinstance(key, Ed25519PublicKey):
            raise ValueError("EdDSA needs an Ed25519 key")
        if alg == "ES256" and not (
            isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)
        ):
            raise ValueError("ES256 needs a P-256 key")
        if alg not in ALG_BY_NAME:
            raise ValueError("unsupported algorithm")
        self.alg: str = alg
        self.cose_alg: int = ALG_BY_NAME[alg]
        self.kid: bytes = _check_kid(kid)
        self._key = key

    @classmethod
    def from_bytes(cls, alg: str, kid: bytes, data: bytes) -> IssuerPublicKey:
        """Load from `to_bytes` form: raw 32 bytes (EdDSA) or uncompressed SEC1 point (ES256)."""
        if alg == "EdDSA":
            if len(data) != 32:
                raise ValueError("an Ed25519 public key is 32 bytes")
            return cls(alg, kid, Ed25519PublicKey.from_public_bytes(bytes(data)))
        if alg == "ES256":
            if len(data) != 65 or data[0] != 0x04:
                raise ValueError("an ES256 public key is a 65-byte uncompressed point")
            return cls(
                alg, kid, ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(data))
            )
        raise ValueError("unsupported algorithm")

    def to_bytes(self) -> bytes:
        """Raw 32 bytes for EdDSA; 65-byte uncompressed SEC1 point for ES256."""
        if isinstance(self._key, Ed25519PublicKey):
            return self._key.public_bytes(_RAW, _RAW_PUB)
        return self._key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

    def cose_key(self) -> dict[int, Any]:
        """Return the public key as a COSE_Key map (without kid or alg)."""
        raw = self.to_bytes()
        if self.alg == "EdDSA":
            return {KTY: KTY_OKP, CRV: CRV_ED25519, X: raw}
        return {KTY: KTY_EC2, CRV: CRV_P256, X: raw[1:33], Y: raw[33:]}

    def thumbprint(self) -> bytes:
        """RFC 9679 thumbprint of this key."""
        return cose_key_thumbprint(self.cose_key())

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Check a COSE signature (Ed25519, or ECDSA as raw r||s); never raises."""
        try:
            if isinstance(self._key, Ed25519PublicKey):
                self._key.verify(signature, message)
                return True
            if len(signature) != 64:
                return False
            r = int.from_bytes(signature[:32], "big")
            s = int.from_bytes(signature[32:], "big")
            if not (0 < r < _P256_ORDER and 0 < s < _P256_ORDER):
                return False
            self._key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError, TypeError):
            return False

    def __eq__(self, other: object) -> bool:
        """Equal when algorithm, kid and key bytes are equal."""
        if not isinstance(other, IssuerPublicKey):
            return NotImplemented
        return (self.alg, self.kid, self.to_bytes()) == (other.alg, other.kid, other.to_bytes())

    def __hash__(self) -> int:
        """Hash by kid and algorithm."""
        return hash((self.alg, self.kid))

    def __repr__(self) -> str:
        """Show the algorithm and kid."""
        return f"IssuerPublicKey(alg={self.alg!r}, kid={self.kid.hex()})"


class IssuerKey:
    """The municipality's private issuer key. Its repr never shows key material."""

    __slots__ = ("alg", "kid", "_key", "_public")

    def __init__(
        self, key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey, kid: bytes | None = None
    ):
        """Wrap a loaded private key; the kid defaults to the first 8 bytes of its thumbprint."""
        if isinstance(key, Ed25519PrivateKey):
            alg = "EdDSA"
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            alg = "ES256"
        else:
            raise ValueError("issuer keys are Ed25519 or P-256")
        self._key = key
        self.alg: str = alg
        # Build the public key once with a placeholder kid to derive the default kid from it.
        provisional = IssuerPublicKey(alg, b"\0" * KID_MAX, key.public_key())
        self.kid: bytes = _check_kid(kid) if kid is not None else provisional.thumbprint()[:KID_MAX]
        self._public = IssuerPublicKey(alg, self.kid, key.public_key())

    @classmethod
    def generate(cls, alg: str = "EdDSA", kid: bytes | None = None) -> IssuerKey:
        """Create a fresh issuer key ("EdDSA" = Ed25519, or "ES256" = P-256)."""
        if alg == "EdDSA":
            return cls(Ed25519PrivateKey.generate(), kid)
        if alg == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()), kid)
        raise ValueError("unsupported algorithm")

    @classmethod
    def from_seed(cls, seed: bytes, alg: str = "EdDSA", kid: bytes | None = None) -> IssuerKey:
        """Derive a key from 32 secret bytes (tests and reproducible demos only)."""
        if len(seed) != 32:
            raise ValueError("a seed is 32 bytes")
        if alg == "EdDSA":
            return cls(Ed25519PrivateKey.from_private_bytes(bytes(seed)), kid)
        if alg == "ES256":
            scalar = int.from_bytes(seed, "big") % (_P256_ORDER - 1) + 1
            return cls(ec.derive_private_key(scalar, ec.SECP256R1()), kid)
        raise ValueError("unsupported algorithm")

    @classmethod
    def from_private_bytes(cls, data: bytes, kid: bytes | None = None) -> IssuerKey:
        """Load an unencrypted PKCS#8 DER private key (Ed25519 or P-256)."""
        key = serialization.load_der_private_key(bytes(data), password=None)
        if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
            raise ValueError("issuer keys are Ed25519 or P-256")
        return cls(key, kid)

    def to_private_bytes(self) -> bytes:
        """Export as unencrypted PKCS#8 DER; store it where only the service can read it."""
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public(self) -> IssuerPublicKey:
        """The public half, as a lock would hold it."""
        return self._public

    def sign(self, message: bytes) -> bytes:
        """Sign in COSE form: 64-byte Ed25519 signature, or ECDSA P-256 as raw r||s (64 bytes)."""
        if isinstance(self._key, Ed25519PrivateKey):
            return self._key.sign(message)
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def __repr__(self) -> str:
        """Show the algorithm and kid only."""
        return f"IssuerKey(alg={self.alg!r}, kid={self.kid.hex()})"


class DeviceKey:
    """A staff phone's Ed25519 key; the credential's cnf claim binds to its public half."""

    __slots__ = ("_key", "public_key_bytes")

    def __init__(self, key: Ed25519PrivateKey):
        """Wrap a loaded Ed25519 private key."""
        self._key = key
        self.public_key_bytes: bytes = key.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls) -> DeviceKey:
        """Create a fresh device key (a real phone keeps it in its keystore)."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> DeviceKey:
        """Load from the raw 32-byte Ed25519 private key (seed)."""
        if len(data) != 32:
            raise ValueError("a device private key is 32 raw bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(data)))

    def to_private_bytes(self) -> bytes:
        """Export the raw 32-byte private key."""
        return self._key.private_bytes(
            _RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )

    @property
    def thumbprint(self) -> bytes:
        """RFC 9679 thumbprint of the public key, as revocation lists name lost devices."""
        return device_thumbprint(self.public_key_bytes)

    def sign_proof(self, challenge: bytes, door_id: str, action: str) -> bytes:
        """Sign the door proof: 64-byte Ed25519 signature over the proof message."""
        return self._key.sign(proof_message(challenge, door_id, action))

    def __repr__(self) -> str:
        """Show the public key's thumbprint prefix only."""
        return f"DeviceKey(thumbprint={self.thumbprint[:8].hex()})"
