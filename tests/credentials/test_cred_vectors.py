"""Profile test vectors: the code, tests/credentials/vectors.json and the profile doc must agree.

Regenerate after a deliberate format change with:
    .venv/bin/python -m tests.credentials.test_cred_vectors --write
(then paste the printed hex into docs/credential-profile.md; the test tells you what is missing).
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from portner.credentials import (
    DenyReason,
    DeviceKey,
    IssuerKey,
    IssuerPublicKey,
    RevocationState,
    decode_credential,
    issue_credential,
    issue_revocation_list,
    verify_presentation,
)
from portner.credentials.cose import decode_sign1
from portner.credentials.cwt import CREDENTIAL_AAD
from portner.credentials.proof import proof_message

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "vectors.json"
DOC = HERE.parents[1] / "docs" / "credential-profile.md"

INPUTS: dict[str, Any] = {
    # RFC 8032 §7.1 TEST 1 / TEST 2 secrets and RFC 8392 A.2.3 d: published, test-only keys.
    "issuer_seed_hex": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "device_seed_hex": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "es256_d_hex": "6c1382765aec5358f117733d281c1c7bdc39884d04a45a1e6c67c858bc206c19",
    "cti_hex": "00112233445566778899aabbccddeeff",
    "subject": "act-3f9c0a1b2c4d5e6f",
    "door_ids": ["d-000123", "d-000124", "d-000125"],
    "not_before": "2025-03-03T07:45:00+00:00",
    "not_after": "2025-03-03T15:30:00+00:00",
    "issued_at": "2025-03-03T06:00:00+00:00",
    "challenge_hex": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    "revocation_version": 7,
    "revocation_issued_at": "2025-03-03T08:00:00+00:00",
}

# (name, door, action, signed_door, challenge_hex or None for the fixed one, now, revoked, expected)
CASES: list[tuple[str, str, str, str, str | None, str, bool, str]] = [
    (
        "unlock flat door",
        "d-000125",
        "unlock",
        "d-000125",
        None,
        "2025-03-03T09:45:00+00:00",
        False,
        "ok",
    ),
    (
        "lock building door",
        "d-000123",
        "lock",
        "d-000123",
        None,
        "2025-03-03T15:31:59+00:00",
        False,
        "ok",
    ),
    (
        "at nbf - skew",
        "d-000125",
        "unlock",
        "d-000125",
        None,
        "2025-03-03T07:43:00+00:00",
        False,
        "ok",
    ),
    (
        "1 s before nbf - skew",
        "d-000125",
        "unlock",
        "d-000125",
        None,
        "2025-03-03T07:42:59+00:00",
        False,
        "not_yet_valid",
    ),
    (
        "at exp + skew",
        "d-000125",
        "unlock",
        "d-000125",
        None,
        "2025-03-03T15:32:00+00:00",
        False,
        "expired",
    ),
    (
        "other door",
        "d-000999",
        "unlock",
        "d-000999",
        None,
        "2025-03-03T09:45:00+00:00",
        False,
        "wrong_door",
    ),
    (
        "replayed proof, new challenge",
        "d-000125",
        "unlock",
        "d-000125",
        "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100",
        "2025-03-03T09:45:00+00:00",
        False,
        "bad_proof",
    ),
    (
        "after revocation list",
        "d-000125",
        "unlock",
        "d-000125",
        None,
        "2025-03-03T09:45:00+00:00",
        True,
        "revoked",
    ),
]


def _t(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def _keys() -> tuple[IssuerKey, DeviceKey, IssuerKey]:
    issuer = IssuerKey.from_seed(bytes.fromhex(INPUTS["issuer_seed_hex"]))
    device = DeviceKey.from_private_bytes(bytes.fromhex(INPUTS["device_seed_hex"]))
    d = int(INPUTS["es256_d_hex"], 16)
    es = IssuerKey(ec.derive_private_key(d, ec.SECP256R1()))
    return issuer, device, es


def _credential(issuer: IssuerKey, device: DeviceKey) -> bytes:
    return issue_credential(
        issuer,
        credential_id=bytes.fromhex(INPUTS["cti_hex"]),
        subject=INPUTS["subject"],
        device_public_key=device.public_key_bytes,
        door_ids=INPUTS["door_ids"],
        not_before=_t(INPUTS["not_before"]),
        not_after=_t(INPUTS["not_after"]),
        issued_at=_t(INPUTS["issued_at"]),
    )


def build(es256_credential_hex: str | None = None) -> dict[str, Any]:
    """Compute every vector from INPUTS. ES256 is randomised, so its credential is passed in."""
    issuer, device, es = _keys()
    cred = _credential(issuer, device)
    msg = decode_sign1(cred)
    challenge = bytes.fromhex(INPUTS["challenge_hex"])
    rl = issue_revocation_list(
        issuer,
        version=INPUTS["revocation_version"],
        issued_at=_t(INPUTS["revocation_issued_at"]),
        credentials=[(bytes.fromhex(INPUTS["cti_hex"]), _t(INPUTS["not_after"]))],
        devices=[],
    )
    cases = []
    for name, door, action, signed_door, ch_hex, now, revoked, expected in CASES:
        ch = bytes.fromhex(ch_hex) if ch_hex else challenge
        cases.append(
            {
                "name": name,
                "door_id": door,
                "action": action,
                "challenge_hex": ch.hex(),
                "proof_hex": device.sign_proof(challenge, signed_door, action).hex(),
                "now": now,
                "revocation_list_applied": revoked,
                "expected": expected,
            }
        )
    if es256_credential_hex is None:
        es256_credential_hex = _credential(es, device).hex()
    return {
        "inputs": INPUTS,
        "issuer": {
            "alg": "EdDSA",
            "pkcs8_hex": issuer.to_private_bytes().hex(),
            "public_key_hex": issuer.public.to_bytes().hex(),
            "kid_hex": issuer.kid.hex(),
        },
        "device": {
            "public_key_hex": device.public_key_bytes.hex(),
            "thumbprint_hex": device.thumbprint.hex(),
        },
        "credential": {
            "protected_hex": msg.protected_bytes.hex(),
            "payload_hex": msg.payload.hex(),
            "sig_structure_hex": msg.to_be_signed(CREDENTIAL_AAD).hex(),
            "signature_hex": msg.signature.hex(),
            "credential_hex": cred.hex(),
            "size": len(cred),
        },
        "proof": {
            "door_id": "d-000125",
            "action": "unlock",
            "message_hex": proof_message(challenge, "d-000125", "unlock").hex(),
            "proof_hex": device.sign_proof(challenge, "d-000125", "unlock").hex(),
        },
        "revocation_list": {"list_hex": rl.hex(), "size": len(rl)},
        "es256": {
            "public_key_hex": es.public.to_bytes().hex(),
            "kid_hex": es.kid.hex(),
            "credential_hex": es256_credential_hex,
            "expected_at": "2025-03-03T09:45:00+00:00",
            "expected": "ok",
        },
        "cases": cases,
    }


def _stored() -> dict[str, Any]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))


def _hex_values(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k.endswith("_hex") and isinstance(v, str)] + [
            h for v in node.values() for h in _hex_values(v)
        ]
    if isinstance(node, list):
        return [h for v in node for h in _hex_values(v)]
    return []


def test_code_reproduces_the_stored_vectors() -> None:
    stored = _stored()
    assert build(stored["es256"]["credential_hex"]) == stored


def test_stored_cases_give_the_expected_verdicts() -> None:
    stored = _stored()
    issuer_pub = IssuerPublicKey.from_bytes(
        "EdDSA",
        bytes.fromhex(stored["issuer"]["kid_hex"]),
        bytes.fromhex(stored["issuer"]["public_key_hex"]),
    )
    issuers = {issuer_pub.kid: issuer_pub}
    credential = bytes.fromhex(stored["credential"]["credential_hex"])
    listed = RevocationState()
    assert listed.apply(
        bytes.fromhex(stored["revocation_list"]["list_hex"]),
        issuers,
        _t("2025-03-03T08:00:00+00:00"),
    ) == (True, "ok")
    seen = set()
    for case in stored["cases"]:
        verdict = verify_presentation(
            credential,
            bytes.fromhex(case["proof_hex"]),
            challenge=bytes.fromhex(case["challenge_hex"]),
            door_id=case["door_id"],
            action=case["action"],
            now=_t(case["now"]),
            issuers=issuers,
            revocations=listed if case["revocation_list_applied"] else RevocationState(),
        )
        assert verdict.reason == case["expected"], case["name"]
        assert verdict.allowed == (case["expected"] == DenyReason.OK)
        seen.add(case["expected"])
    assert {"ok", "expired", "not_yet_valid", "wrong_door", "bad_proof", "revoked"} <= seen


def test_stored_es256_credential_verifies() -> None:
    stored = _stored()["es256"]
    pub = IssuerPublicKey.from_bytes(
        "ES256", bytes.fromhex(stored["kid_hex"]), bytes.fromhex(stored["public_key_hex"])
    )
    proof = bytes.fromhex(_stored()["proof"]["proof_hex"])
    verdict = verify_presentation(
        bytes.fromhex(stored["credential_hex"]),
        proof,
        challenge=bytes.fromhex(INPUTS["challenge_hex"]),
        door_id="d-000125",
        action="unlock",
        now=_t(stored["expected_at"]),
        issuers={pub.kid: pub},
        revocations=None,
    )
    assert verdict.reason == stored["expected"]
    assert decode_credential(bytes.fromhex(stored["credential_hex"])).alg == "ES256"


def test_vector_credential_claims_decode_as_documented() -> None:
    payload = cbor2.loads(bytes.fromhex(_stored()["credential"]["payload_hex"]))
    assert payload[2] == INPUTS["subject"]
    assert payload[-65537] == INPUTS["door_ids"]
    assert _stored()["credential"]["size"] <= 256


def test_doc_carries_every_vector() -> None:
    doc = DOC.read_text(encoding="utf-8")
    missing = [h for h in _hex_values(_stored()) if h not in doc]
    assert not missing, (
        f"docs/credential-profile.md lacks {len(missing)} vector(s), e.g. {missing[0][:40]}..."
    )
    for case in _stored()["cases"]:
        assert case["name"] in doc and case["expected"] in doc


if __name__ == "__main__":
    if "--write" in sys.argv:
        VECTORS.write_text(json.dumps(build(), indent=2) + "\n", encoding="utf-8")
    print(json.dumps(_stored(), indent=2))
