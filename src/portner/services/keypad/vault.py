"""Keypad codes at rest: AES-GCM under a per-municipality key, and a keyed MAC to find codes.

Both keys are derived with HKDF-SHA256 from the municipality's existing lock master secret
(`MunicipalitySecrets.lock_master`), each with its own `info` label, so no new secret file is
needed and the two keys are independent of each other and of the lock-log keys. The MAC lets the
platform compare a code read back from a lock with the codes it issued (duplicates, foreign codes,
reappearing codes) without storing or decrypting digits. The code id is the AES-GCM associated
data: a ciphertext copied onto another row does not decrypt.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from portner.domain.errors import PortnerError
from portner.locks.port import KeypadCode
from portner.services.keys import MunicipalitySecrets

_NONCE = 12
_ENC_INFO = b"portner-keypad-code-aead-v1|"
_MAC_INFO = b"portner-keypad-code-mac-v1|"


class CodeDecryptionError(PortnerError):
    """A stored keypad code does not decrypt under the key it names (wrong key or tampering)."""


def _hkdf(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


@dataclass(frozen=True, slots=True)
class KeypadKeys:
    """One municipality's keypad-code keys. The repr shows only the key id."""

    municipality_id: str
    encryption_key: bytes = field(repr=False)
    mac_key: bytes = field(repr=False)

    @classmethod
    def from_secrets(cls, secrets: MunicipalitySecrets, municipality_id: str) -> KeypadKeys:
        if not secrets.lock_master:
            raise ValueError("secrets: the municipality has no lock master secret to derive from")
        return cls.from_master(secrets.lock_master, municipality_id)

    @classmethod
    def from_master(cls, master: bytes, municipality_id: str) -> KeypadKeys:
        label = municipality_id.encode()
        return cls(municipality_id, _hkdf(master, _ENC_INFO + label), _hkdf(master, _MAC_INFO + label))

    @property
    def key_id(self) -> str:
        """Names the key without revealing it (a hash of the key, truncated)."""
        return "kc1-" + hashlib.sha256(b"key-id|" + self.encryption_key).hexdigest()[:16]

    def mac(self, code: KeypadCode) -> bytes:
        return hmac.new(self.mac_key, code.reveal().encode(), hashlib.sha256).digest()

    def encrypt(self, code: KeypadCode, code_id: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + AESGCM(self.encryption_key).encrypt(nonce, code.reveal().encode(), code_id.encode())

    def decrypt(self, blob: bytes, code_id: str, key_id: str) -> KeypadCode:
        if key_id != self.key_id:
            raise CodeDecryptionError(f"keypad code {code_id} is under key {key_id}, not {self.key_id}")
        try:
            plain = AESGCM(self.encryption_key).decrypt(blob[:_NONCE], blob[_NONCE:], code_id.encode())
        except InvalidTag:
            raise CodeDecryptionError(f"keypad code {code_id} does not decrypt (tampered?)") from None
        return KeypadCode(plain.decode())
