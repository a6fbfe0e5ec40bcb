"""The device's proof of possession at the door: what it signs over the lock's challenge."""

from __future__ import annotations

from typing import Final

import cbor2

# Domain separation: this signature can never be mistaken for any other Ed25519 signature.
PROOF_CONTEXT: Final = "portner-door-proof-v1"
PROOF_SIZE: Final = 64
# The lock generates 32 random bytes; anything below 128 bits is refused, above 64 is pointless.
MIN_CHALLENGE: Final = 16
MAX_CHALLENGE: Final = 64

# Door actions and their bit in the credential's action mask (private claim -65538).
ACTION_BITS: Final = {"unlock": 1, "lock": 2}


def proof_message(challenge: bytes, door_id: str, action: str) -> bytes:
    """Return the signed bytes: CBOR ["portner-door-proof-v1", challenge, door_id, action]."""
    if type(challenge) is not bytes or not MIN_CHALLENGE <= len(challenge) <= MAX_CHALLENGE:
        raise ValueError(f"a challenge is {MIN_CHALLENGE}..{MAX_CHALLENGE} bytes")
    if type(door_id) is not str or type(action) is not str:
        raise ValueError("door id and action are text")
    return cbor2.dumps([PROOF_CONTEXT, challenge, door_id, action])
