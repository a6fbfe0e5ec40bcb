"""Offline door credentials: CWT in COSE_Sign1, device proof of possession, revocation lists.

The profile a lock maker implements is docs/credential-profile.md.
"""

from __future__ import annotations

from portner.credentials.cose import CoseFormatError
from portner.credentials.cwt import (
    CREDENTIAL_SIZE_BUDGET,
    CredentialClaims,
    decode_credential,
    issue_credential,
)
from portner.credentials.keys import DeviceKey, IssuerKey, IssuerPublicKey, device_thumbprint
from portner.credentials.proof import ACTION_BITS, PROOF_CONTEXT
from portner.credentials.revocation import ListVerdict, RevocationState, issue_revocation_list
from portner.credentials.verify import (
    DEFAULT_SKEW,
    MAX_SKEW,
    DenyReason,
    Verdict,
    verify_presentation,
)

__all__ = [
    "ACTION_BITS",
    "CREDENTIAL_SIZE_BUDGET",
    "DEFAULT_SKEW",
    "MAX_SKEW",
    "PROOF_CONTEXT",
    "CoseFormatError",
    "CredentialClaims",
    "DenyReason",
    "DeviceKey",
    "IssuerKey",
    "IssuerPublicKey",
    "ListVerdict",
    "RevocationState",
    "Verdict",
    "decode_credential",
    "device_thumbprint",
    "issue_credential",
    "issue_revocation_list",
    "verify_presentation",
]
