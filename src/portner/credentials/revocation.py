"""Signed, versioned revocation lists and the state a lock keeps from the newest one it accepted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from portner.credentials.cose import (
    ALG_BY_NAME,
    ALG_NAME,
    HDR_ALG,
    HDR_KID,
    CoseFormatError,
    decode_sign1,
    encode,
    encode_sign1,
    strict_loads,
)
from portner.credentials.cwt import CREDENTIAL_ID_SIZE, profile_header
from portner.credentials.keys import IssuerKey, IssuerPublicKey
from portner.domain.windows import require_aware

# Payload keys of the revocation list map.
RL_VERSION: Final = 1
RL_ISSUED_AT: Final = 2
RL_CREDENTIALS: Final = 3
RL_DEVICES: Final = 4
_RL_KEYS: Final = frozenset({RL_VERSION, RL_ISSUED_AT, RL_CREDENTIALS, RL_DEVICES})

# Signed as external_aad: a revocation list can never verify as a credential or vice versa.
REVOCATION_AAD: Final = b"portner-revocation-v1"
THUMBPRINT_SIZE: Final = 32
MAX_LIST_SIZE: Final = 4 * 1024 * 1024
# SimonsVoss holds 500, Salto 65,535; a lock alarms at 80 % of its capacity (goal G5).
DEFAULT_CAPACITY: Final = 65_535
# Entries are dropped once this far past their expiry; far beyond any sane clock-skew setting.
PRUNE_AFTER: Final = timedelta(days=1)
_MAX_UINT: Final = 2**63 - 1
_MAX_TIME: Final = 2**32 - 1


class ListVerdict(StrEnum):
    """Why a lock accepted or refused a revocation list; `apply` returns one with a bool."""

    OK = "ok"
    MALFORMED = "malformed"
    UNSUPPORTED_ALG = "unsupported_alg"
    UNKNOWN_ISSUER = "unknown_issuer"
    BAD_SIGNATURE = "bad_signature"
    STALE_VERSION = "stale_version"
    OVER_CAPACITY = "over_capacity"


def _entries(raw: Any, id_size: int) -> dict[bytes, int]:
    """Parse [[id, exp], ...] sorted by id, strictly ascending (so no repeats)."""
    if type(raw) not in (list, tuple):
        raise CoseFormatError("entries must be an array")
    out: dict[bytes, int] = {}
    previous = b""
    for entry in raw:
        if type(entry) not in (list, tuple) or len(entry) != 2:
            raise CoseFormatError("an entry is [id, exp]")
        ident, exp = entry
        if type(ident) is not bytes or len(ident) != id_size or ident <= previous:
            raise CoseFormatError("entry ids must be sized and strictly ascending")
        if type(exp) is not int or not 0 <= exp <= _MAX_TIME:
            raise CoseFormatError("bad entry expiry")
        out[ident] = exp
        previous = ident
    return out


def _encode_entries(entries: Sequence[tuple[bytes, datetime]], id_size: int) -> list[list[Any]]:
    latest: dict[bytes, int] = {}
    for ident, expiry in entries:
        if type(ident) is not bytes or len(ident) != id_size:
            raise ValueError(f"entry ids are {id_size} bytes")
        ts = int(require_aware(expiry, "entry expiry").timestamp())
        if not 0 <= ts <= _MAX_TIME:
            raise ValueError("entry expiry out of range")
        latest[ident] = max(ts, latest.get(ident, 0))
    return [[ident, latest[ident]] for ident in sorted(latest)]


def issue_revocation_list(
    issuer: IssuerKey,
    *,
    version: int,
    issued_at: datetime,
    credentials: Sequence[tuple[bytes, datetime]],
    devices: Sequence[tuple[bytes, datetime]],
) -> bytes:
    """Sign a complete revocation list: (credential id, expiry) and (device thumbprint, expiry)."""
    if type(version) is not int or not 1 <= version <= _MAX_UINT:
        raise ValueError("version is a positive integer")
    payload = {
        RL_VERSION: version,
        RL_ISSUED_AT: int(require_aware(issued_at, "issued_at").timestamp()),
        RL_CREDENTIALS: _encode_entries(credentials, CREDENTIAL_ID_SIZE),
        RL_DEVICES: _encode_entries(devices, THUMBPRINT_SIZE),
    }
    protected = {HDR_ALG: ALG_BY_NAME[issuer.alg], HDR_KID: issuer.kid}
    return encode_sign1(protected, encode(payload), issuer.sign, external_aad=REVOCATION_AAD)


class RevocationState:
    """What a lock holds: the newest accepted list's version and its still-relevant entries."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        """Start empty at version 0, so any validly signed list is newer."""
        self.version: int = 0
        self.issued_at: datetime | None = None
        self.capacity = capacity
        self._credentials: dict[bytes, int] = {}
        self._devices: dict[bytes, int] = {}

    @property
    def entry_count(self) -> int:
        """How many entries the lock stores."""
        return len(self._credentials) + len(self._devices)

    @property
    def load(self) -> float:
        """Fraction of capacity used; a lock raises an alarm at 0.8."""
        return self.entry_count / self.capacity if self.capacity else 1.0

    def apply(
        self, blob: bytes, issuers: Mapping[bytes, IssuerPublicKey], now: datetime
    ) -> tuple[bool, str]:
        """Replace the state with `blob` if it verifies and is newer; return (accepted, reason)."""
        try:
            return self._apply(blob, issuers, now)
        except Exception:  # noqa: BLE001 - a hostile list must never crash the lock
            return False, ListVerdict.MALFORMED

    def _apply(
        self, blob: bytes, issuers: Mapping[bytes, IssuerPublicKey], now: datetime
    ) -> tuple[bool, str]:
        if len(blob) > MAX_LIST_SIZE:
            return False, ListVerdict.MALFORMED
        try:
            msg = decode_sign1(bytes(blob))
            alg, kid = profile_header(msg)
        except (CoseFormatError, ValueError, TypeError, LookupError):
            return False, ListVerdict.MALFORMED
        if type(alg) is not int or alg not in ALG_NAME:
            return False, ListVerdict.UNSUPPORTED_ALG
        issuer = issuers.get(kid)
        if issuer is None:
            return False, ListVerdict.UNKNOWN_ISSUER
        if issuer.cose_alg != alg:
            return False, ListVerdict.UNSUPPORTED_ALG
        if not issuer.verify(msg.signature, msg.to_be_signed(REVOCATION_AAD)):
            return False, ListVerdict.BAD_SIGNATURE
        try:
            body = strict_loads(msg.payload)
            if not isinstance(body, Mapping) or set(body) != _RL_KEYS:
                raise CoseFormatError("revocation list must hold exactly its four fields")
            version, issued = body[RL_VERSION], body[RL_ISSUED_AT]
            if type(version) is not int or not 1 <= version <= _MAX_UINT:
                raise CoseFormatError("bad version")
            if type(issued) is not int or not 0 <= issued <= _MAX_TIME:
                raise CoseFormatError("bad issued_at")
            credentials = _entries(body[RL_CREDENTIALS], CREDENTIAL_ID_SIZE)
            devices = _entries(body[RL_DEVICES], THUMBPRINT_SIZE)
        except (CoseFormatError, ValueError, TypeError, LookupError):
            return False, ListVerdict.MALFORMED
        # Rollback and replay protection: only a strictly newer version replaces what we hold.
        if version <= self.version:
            return False, ListVerdict.STALE_VERSION
        cutoff = require_aware(now, "now").timestamp() - PRUNE_AFTER.total_seconds()
        credentials = {k: v for k, v in credentials.items() if v > cutoff}
        devices = {k: v for k, v in devices.items() if v > cutoff}
        if len(credentials) + len(devices) > self.capacity:
            return False, ListVerdict.OVER_CAPACITY
        self.version = version
        self.issued_at = datetime.fromtimestamp(issued, UTC)
        self._credentials = credentials
        self._devices = devices
        return True, ListVerdict.OK

    def is_revoked(self, credential_id: bytes, device_key_thumbprint: bytes, now: datetime) -> bool:
        """Tell whether the credential or its device has an entry still in force at `now`.

        An entry is in force while `now` is before its expiry; `verify_presentation` asks with
        `now - skew` so that a revoked credential stays denied for as long as it could be accepted.
        """
        t = now.timestamp()
        exp = self._credentials.get(credential_id)
        if exp is not None and t < exp:
            return True
        exp = self._devices.get(device_key_thumbprint)
        return exp is not None and t < exp
